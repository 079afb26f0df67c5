"""`edge-ser listen`: live audio in, one line per utterance out.

Sources: raw PCM on standard input (`arecord -t raw -f S16_LE -r 16000 -c 1 | edge-ser listen -`),
an audio file read as fast as it decodes or paced as if live (`--realtime`), or a microphone
through the optional `mic` extra (sounddevice). A program in any language embeds the runtime
by starting `edge-ser listen - --json` and reading its lines.

It ends cleanly at the end of input, on Ctrl-C and on SIGTERM: the utterance in progress is
classified and printed first. A bad chunk (NaN in float input), an input that ends mid-sample
or an utterance --strict refuses is one line on stderr; the lines already printed stand and,
where it can, listening goes on. Exit status: 0, 1 when anything was dropped, 3 when --strict
refused an utterance (and nothing worse happened), 130 when interrupted.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import AudioError, BudgetError, EdgeSerError

# Raw PCM layouts on standard input: name -> numpy dtype (little-endian, as arecord's S16_LE, S32_LE, FLOAT_LE).
PCM_FORMATS = {"s16le": "<i2", "s32le": "<i4", "f32le": "<f4"}
MIC_EXTRA = "pip install 'edge-ser[mic]' (sounddevice, and PortAudio from the system: apt install libportaudio2)"


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop reading, flush, exit 130."""


def stdin_chunks(stream, dtype: str, chunk_samples: int) -> Iterator[np.ndarray]:
    """Raw PCM from a binary file object, `chunk_samples` at a time; AudioError if it ends mid-sample."""
    width = np.dtype(dtype).itemsize
    carry = b""
    while True:
        data = stream.read(chunk_samples * width)
        if not data:
            break
        data = carry + data
        whole = len(data) // width * width
        carry = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype=dtype)
    if carry:
        raise AudioError(f"standard input ended mid-sample ({len(carry)} stray byte(s) of a {width}-byte sample); "
                         "the samples before them were used")


def file_chunks(path: Path, chunk_seconds: float, realtime: bool) -> tuple[int, Iterator[np.ndarray]]:
    """(rate, chunks) of a file's mono samples; with `realtime`, each chunk is released when it would be heard."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path}: cannot decode audio ({str(err).strip() or type(err).__name__})") from None

    def chunks() -> Iterator[np.ndarray]:
        size = max(1, round(chunk_seconds * info.samplerate))
        began, played = time.monotonic(), 0
        try:
            for block in sf.blocks(str(path), blocksize=size, dtype="float32", always_2d=True):
                if realtime:
                    time.sleep(max(0.0, began + played / info.samplerate - time.monotonic()))
                played += block.shape[0]
                yield block.mean(axis=1)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioError(f"{path}: cannot decode audio ({str(err).strip()})") from None

    return info.samplerate, chunks()


def input_settings(sd, device: str, rate: int) -> tuple[int, int]:
    """(rate, channels) to open `device` with: `rate` and mono where it takes them, else its own default rate or
    48/44.1 kHz (the stream resamples) and stereo (averaged). One line naming the input devices there are when
    `device` is not one of them."""
    try:
        info = sd.query_devices(device, "input")
    except (ValueError, sd.PortAudioError):
        names = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
        raise EdgeSerError(f"no microphone {device!r}; input devices here: "
                           f"{', '.join(repr(n) for n in names) or 'none'}") from None
    rates = dict.fromkeys([rate, int(info["default_samplerate"]), 48000, 44100])
    for channels in (1, 2):
        for candidate in rates:
            try:
                sd.check_input_settings(device, channels=channels, samplerate=candidate, dtype="float32")
            except (ValueError, sd.PortAudioError):
                continue
            if candidate != rate or channels != 1:
                print(f"edge-ser: microphone {device!r} records {'stereo (averaged)' if channels == 2 else 'mono'} at "
                      f"{candidate} Hz (resampled to the model's rate)", file=sys.stderr)
            return candidate, channels
    raise EdgeSerError(f"microphone {device!r} takes neither mono nor stereo float samples at {rate}, "
                       f"{int(info['default_samplerate'])}, 48000 or 44100 Hz")


def mic_chunks(device: str, rate: int, chunk_seconds: float) -> tuple[int, Iterator[np.ndarray]]:
    """(rate, chunks): mono float32 chunks from a microphone through sounddevice (the `mic` extra), at `rate`
    where the device takes it (input_settings)."""
    import queue

    try:
        import sounddevice as sd
    except (ImportError, OSError) as err:
        raise EdgeSerError(f"--device needs the mic extra ({err}): {MIC_EXTRA}") from None
    rate, channels = input_settings(sd, device, rate)
    arrived: queue.Queue[np.ndarray] = queue.Queue()
    dropped = [0]

    def callback(indata, frames, when, status):  # PortAudio's thread: hand the samples over, nothing else
        if status.input_overflow:
            dropped[0] += 1
        arrived.put(indata.mean(axis=1, dtype=np.float32) if channels > 1 else indata[:, 0].copy())

    def chunks() -> Iterator[np.ndarray]:
        try:
            with sd.InputStream(device=device, channels=channels, samplerate=rate, dtype="float32",
                                blocksize=max(1, round(chunk_seconds * rate)), callback=callback):
                while True:
                    yield arrived.get()
                    if dropped[0]:
                        print(f"edge-ser: the microphone overflowed {dropped[0]} time(s): audio was lost (the app "
                              "fell behind); listening goes on", file=sys.stderr)
                        dropped[0] = 0
        except (sd.PortAudioError, ValueError) as err:
            raise EdgeSerError(f"microphone {device!r}: {err}") from None

    return rate, chunks()


def format_line(result) -> str:
    budget = "" if result.budget_ms is None else (
        f"  budget {'met' if result.budget_met else 'MISSED'} {result.budget_ms:g} ms" + (" (est.)" if result.estimated else ""))
    return (f"{result.start:8.2f}-{result.end:<8.2f} {result.label:<14} {result.probabilities[result.label]:5.2f}  "
            f"exit {result.exit_layer:<3} {result.latency_ms:7.1f} ms after the end{budget}")


def endpoint_options(args):
    """EndpointOptions from the endpointing flags of listen and serve (checked there: one line naming a bad value)."""
    from .endpoint import EndpointOptions

    return EndpointOptions(threshold_db=args.threshold, min_speech_ms=args.min_speech,
                           min_silence_ms=args.min_silence, max_utterance_s=args.max_utterance / 1000.0,
                           pad_ms=args.pad, detector=args.vad, vad_threshold=args.vad_threshold)


def _raise_interrupted(signum, frame):
    raise Interrupted()


def cmd_listen(args, build_classifier) -> int:
    """Run one stream over the chosen source; print each result as its utterance ends."""
    if (args.source is None) == (args.device is None):
        raise EdgeSerError("give one source: '-' (raw PCM on stdin), an audio file, or --device NAME (microphone)")
    if args.realtime and (args.source in (None, "-")):
        raise EdgeSerError("--realtime paces a file as if live; standard input and microphones are live already")
    endpoint = None if args.push_to_talk else endpoint_options(args)
    chunk_seconds = args.chunk / 1000.0
    if args.source == "-":
        rate, chunks = args.rate, stdin_chunks(sys.stdin.buffer, PCM_FORMATS[args.format], round(chunk_seconds * args.rate))
    elif args.source is not None:
        path = Path(args.source)
        if not path.is_file():
            raise AudioError(f"{path}: no such file")
        rate, chunks = file_chunks(path, chunk_seconds, args.realtime)
    else:
        rate, chunks = mic_chunks(args.device, args.rate, chunk_seconds)

    classifier = build_classifier(args)
    stream = classifier.stream(rate, budget_ms=args.budget, memory_mb=args.memory, exit=args.exit,
                               strict=args.strict, endpoint=endpoint)
    problems, refused, status = 0, 0, 0

    def emit(results) -> None:
        for result in results:
            print(json.dumps(result.to_dict(), allow_nan=False) if args.json else format_line(result), flush=True)

    def attempt(step):
        nonlocal problems, refused
        try:
            emit(step())
        except BudgetError as err:
            emit(err.results)  # the chunk's other utterances still count
            refused += 1
            print(f"edge-ser: utterance refused: {err}", file=sys.stderr, flush=True)
        except AudioError as err:
            emit(err.results)
            problems += 1
            print(f"edge-ser: {err}", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        try:
            for chunk in chunks:
                attempt(lambda chunk=chunk: stream.accept(chunk))
        except AudioError as err:  # the source itself failed (stdin ended mid-sample, a file stopped decoding)
            problems += 1
            print(f"edge-ser: {err}", file=sys.stderr, flush=True)
        except (Interrupted, KeyboardInterrupt):
            status = 130
        attempt(stream.flush)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status:
        print("edge-ser: interrupted; the utterance in progress was classified", file=sys.stderr)
        return status
    return 1 if problems else 3 if refused else 0
