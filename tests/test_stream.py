"""Live audio: the endpointer's decisions at their boundaries, streaming equal to whole-clip, bad chunks, bounded memory."""
import re
import threading

import numpy as np
import pytest

from edge_ser import AudioError, Classifier, EndpointOptions, StreamError
from edge_ser.endpoint import Endpointer
from edge_ser.stream import MAX_PIECE_SECONDS, check_streaming

from conftest import TINY_LABELS, fingerprint, quiet, speechlike

RATE = 16000
FRAME = 320  # 20 ms
ENERGY = EndpointOptions(detector="energy")  # the rule these made signals are built for (a learnt detector
# judges speech-like harmonics as not speech; it is measured on real speech in benchmarks/bench_rooms.py)


def feed(stream, signal, chunk):
    results = []
    for offset in range(0, signal.size, chunk):
        results += stream.accept(signal[offset : offset + chunk])
    return results + stream.flush()


def scene(*parts):
    """('q', seconds) quiet or ('s', seconds) speech-like, joined; returns the signal."""
    return np.concatenate([(quiet if kind == "q" else speechlike)(sec, seed=i) for i, (kind, sec) in enumerate(parts)])


def boundaries(signal, options=ENERGY):
    endpointer = Endpointer(options, RATE)
    return [(b.kind, b.sample, b.reason) for k in range(0, signal.size - FRAME + 1, FRAME)
            for b in endpointer.step(signal[k : k + FRAME])]


# ---- endpointer ----------------------------------------------------------------------------

def test_an_utterance_starts_and_ends_one_pad_around_its_speech():
    signal = scene(("q", 1.0), ("s", 1.0), ("q", 1.0))
    assert boundaries(signal) == [("start", 16000 - 3200, None), ("end", 32000 + 3200, "silence")]


def test_min_speech_is_met_exactly_and_one_frame_less_is_not():
    options = EndpointOptions(min_speech_ms=100, pad_ms=0, detector="energy")
    exactly = scene(("q", 1.0), ("s", 0.1), ("q", 1.0))
    short = scene(("q", 1.0), ("s", 0.08), ("q", 1.0))
    assert [b[0] for b in boundaries(exactly, options)] == ["start", "end"]
    assert boundaries(short, options) == []


def test_a_pause_of_min_silence_splits_and_one_frame_less_does_not():
    options = EndpointOptions(min_silence_ms=300, pad_ms=0, detector="energy")
    split = scene(("q", 1.0), ("s", 0.6), ("q", 0.3), ("s", 0.6), ("q", 1.0))
    joined = scene(("q", 1.0), ("s", 0.6), ("q", 0.28), ("s", 0.6), ("q", 1.0))
    assert [b[0] for b in boundaries(split, options)] == ["start", "end", "start", "end"]
    assert [b[0] for b in boundaries(joined, options)] == ["start", "end"]


def test_long_speech_is_cut_at_max_utterance_and_goes_on():
    options = EndpointOptions(max_utterance_s=1.0, pad_ms=0, detector="energy")
    got = boundaries(scene(("q", 1.0), ("s", 2.5), ("q", 1.0)), options)
    assert got == [("start", 16000, None), ("end", 32000, "max_length"), ("start", 32000, None),
                   ("end", 48000, "max_length"), ("start", 48000, None), ("end", 56000, "silence")]


@pytest.mark.parametrize("signal", [np.zeros(3 * RATE, np.float32), np.full(3 * RATE, 0.2, np.float32),
                                    quiet(3.0, level=1e-4)], ids=["digital-silence", "dc-offset", "hiss"])
def test_silence_dc_and_hiss_are_never_speech(signal):
    assert boundaries(signal) == []


def test_speech_from_the_first_frame_is_found_once_the_floor_settles():
    # No background heard yet: the floor is learnt from the speech itself, and its quiet syllable dips.
    got = boundaries(scene(("s", 1.0), ("q", 1.0)))
    assert [b[0] for b in got] == ["start", "end"] and got[0][1] <= 0.3 * RATE and got[1][1] == 16000 + 3200


@pytest.mark.parametrize("field,value", [("threshold_db", float("nan")), ("min_silence_ms", -1), ("frame_ms", 0),
                                         ("max_utterance_s", float("inf")), ("pad_ms", "200")])
def test_endpoint_options_are_checked_and_named(field, value):
    with pytest.raises(StreamError, match=field):
        EndpointOptions(**{field: value})
    with pytest.raises(StreamError, match="pad_ms"):
        EndpointOptions(pad_ms=600, min_silence_ms=500)


# ---- streaming equals whole-clip -----------------------------------------------------------

def test_the_export_records_which_models_stream_exactly(stream_export, tiny_export):
    streaming = Classifier(stream_export, shared_pool=False).manifest.streaming
    assert all(v.exact and v.max_abs_diff <= 1e-4 for v in streaming.precisions.values())
    assert set(streaming.precisions) == {"fp32", "int8", "int8-blocks"} and 20.0 in streaming.chunk_ms
    normalised = Classifier(tiny_export, shared_pool=False)
    assert not normalised.manifest.streams_exactly("fp32") and "normalisation" in normalised.manifest.streaming.reason
    with pytest.raises(StreamError, match="does not stream its encoder exactly"):
        normalised.stream(RATE, incremental=True, endpoint=ENERGY)


@pytest.mark.parametrize("chunk", [FRAME, 800, 5333, 10**7], ids=["20ms", "50ms", "333ms", "whole"])
@pytest.mark.parametrize("exit", [1, 3, 4, "auto"])
def test_streaming_and_whole_clip_agree_on_every_utterance(stream_export, chunk, exit):
    c = Classifier(stream_export, shared_pool=False)
    signal = scene(("q", 0.7), ("s", 1.3), ("q", 0.9), ("s", 0.7), ("q", 0.8))
    results = feed(c.stream(RATE, exit=exit, endpoint=ENERGY), signal, chunk)
    assert len(results) == 2 and all(r.segments_run[:2] == ["encoder", "context"] for r in results)
    for r in results:
        whole = c.classify(signal[round(r.start * RATE) : round(r.end * RATE)], RATE, exit=exit)
        assert r.label == whole.label and r.exit_layer == whole.exit_layer
        assert r.probabilities == pytest.approx(whole.probabilities, abs=1e-4)


def test_a_normalised_model_streams_by_running_everything_at_the_end(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)
    signal = scene(("q", 0.7), ("s", 1.0), ("q", 0.9))
    stream = c.stream(RATE, exit=3, endpoint=ENERGY)
    assert not stream.incremental
    [r] = feed(stream, signal, 800)
    whole = c.classify(signal[round(r.start * RATE) : round(r.end * RATE)], RATE, exit=3)
    assert r.probabilities == pytest.approx(whole.probabilities, abs=1e-6)


def test_pcm_chunks_match_float_chunks(stream_export):
    c = Classifier(stream_export, shared_pool=False)
    signal = scene(("q", 0.7), ("s", 1.0), ("q", 0.9))
    pcm = np.round(signal * 32767).astype(np.int16)
    [from_float] = feed(c.stream(RATE, exit=4, endpoint=ENERGY), pcm.astype(np.float32) / 32767, 800)
    [from_pcm] = feed(c.stream(RATE, exit=4, endpoint=ENERGY), pcm, 800)
    assert from_pcm.probabilities == pytest.approx(from_float.probabilities, abs=1e-6)


@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_rates_are_resampled_on_the_fly(stream_export, rate):
    import soxr

    c = Classifier(stream_export, shared_pool=False)
    signal = scene(("q", 0.7), ("s", 1.0), ("q", 0.9))
    [r] = feed(c.stream(rate, exit=4, endpoint=ENERGY), soxr.resample(signal, RATE, rate), 1000)
    assert r.start == pytest.approx(0.5, abs=0.03) and r.end == pytest.approx(1.9, abs=0.03)


def test_push_to_talk_marks_the_utterance(stream_export):
    c = Classifier(stream_export, shared_pool=False)
    first, second = speechlike(0.8, 1), speechlike(0.6, 2)
    stream = c.stream(RATE, exit=4, endpoint=None)
    assert stream.accept(first[:5000]) == []
    [a] = stream.accept(first[5000:], end_of_utterance=True)
    [b] = stream.accept(second, end_of_utterance=True)
    assert stream.accept(np.zeros(0, np.float32), end_of_utterance=True) == []  # nothing since the last mark
    assert (a.start, a.end, a.ended_by) == (0.0, first.size / RATE, "marked") and b.start == a.end
    assert a.probabilities == pytest.approx(c.classify(first, RATE, exit=4).probabilities, abs=1e-4)
    assert b.probabilities == pytest.approx(c.classify(second, RATE, exit=4).probabilities, abs=1e-4)


def test_a_marked_end_closes_the_utterance_the_endpointer_opened(stream_export):
    c = Classifier(stream_export, shared_pool=False)
    stream = c.stream(RATE, exit=1, endpoint=ENERGY)
    stream.accept(quiet(0.5))
    [r] = stream.accept(speechlike(0.6), end_of_utterance=True)
    assert r.ended_by == "marked" and r.end == pytest.approx(1.1) and r.endpoint_delay_ms == 0


def test_a_stream_plan_does_not_count_the_encoder_it_already_ran(stream_export):
    from edge_ser.profile import DeviceProfile, SegmentCost

    costs = {"encoder": 100, "context": 1, "blocks_00_01": 10, "blocks_01_03": 20, "blocks_03_04": 10,
             "exit_01": 1, "exit_03": 1, "exit_04": 1}
    profile = DeviceProfile("tiny-stream", "fp32", 1, fingerprint=fingerprint(stream_export), segments={
        name: SegmentCost([0.0, ms, 0.0], 1.0, 0.0, 1.0) for name, ms in costs.items()})
    c = Classifier(stream_export, profile=profile, shared_pool=False)
    # 1 s to exit 3 at a fixed exit: context 1 + blocks 30 + head 1 = 32 ms once the encoder has run
    assert c.plan(1.0, budget_ms=32, exit=3, done=1).last_exit == 3
    assert c.plan(1.0, budget_ms=31.99, exit=3, done=1).last_exit == 1
    assert c.plan(1.0, budget_ms=32, exit=3).last_exit == 1  # a whole clip pays the encoder too


# ---- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("chunk,message", [
    (np.array([0.1, np.nan], np.float32), "NaN or infinite"),
    (np.array([0.1, np.inf]), "NaN or infinite"),
    (np.zeros((8, 8), np.float32), r"shape \(8, 8\) is ambiguous"),  # 2-D: channels either way round, if unambiguous
    (np.zeros(100, np.uint8), "dtype uint8"),
    (np.zeros(100, np.complex64), "dtype complex64"),
    (np.array(["a", "b"]), "dtype <U1"),
])
def test_a_bad_chunk_is_refused_and_the_stream_goes_on(stream_export, chunk, message):
    c = Classifier(stream_export, shared_pool=False)
    signal = scene(("q", 0.7), ("s", 1.0), ("q", 0.9))
    clean = feed(c.stream(RATE, exit=4, endpoint=ENERGY), signal, 800)
    stream = c.stream(RATE, exit=4, endpoint=ENERGY)
    stream.accept(signal[:16000])
    with pytest.raises(AudioError, match=message):
        stream.accept(chunk)
    rest = feed(stream, signal[16000:], 800)
    assert [(r.start, r.end, r.label) for r in rest] == [(r.start, r.end, r.label) for r in clean]


def test_rate_changes_and_accept_after_flush_are_refused(stream_export):
    stream = Classifier(stream_export, shared_pool=False).stream(RATE, endpoint=ENERGY)
    with pytest.raises(AudioError, match="16000 Hz.*44100"):
        stream.accept(np.zeros(100, np.float32), sample_rate=44100)
    stream.accept(np.zeros(100, np.float32), sample_rate=RATE)
    assert stream.flush() == [] and stream.flush() == []
    with pytest.raises(StreamError, match="accept after flush"):
        stream.accept(np.zeros(100, np.float32))
    with pytest.raises(StreamError, match="sample_rate"):
        Classifier(stream_export, shared_pool=False).stream(0)


# ---- memory and threads --------------------------------------------------------------------

def test_memory_stays_bounded_over_a_long_feed(stream_export):
    c = Classifier(stream_export, shared_pool=False)
    options = EndpointOptions(max_utterance_s=2.0, detector="energy")
    stream = c.stream(RATE, exit=1, endpoint=options)
    block = scene(("s", 3.1), ("q", 0.9), ("s", 0.5), ("q", 1.0))  # 5.5 s: one cut, two pauses
    found, largest = 0, 0
    for _ in range(12):  # 66 s
        for offset in range(0, block.size, 1600):
            found += len(stream.accept(block[offset : offset + 1600]))
            held = stream._recent.data.size
            if stream._utterance is not None:
                encoder = stream._utterance.encoder
                held += encoder._pending.size + sum(f.shape[1] for f in encoder._frames) * 32
            largest = max(largest, held)
    assert found == 12 * 3  # per block: speech cut at 2 s, its 1.1 s rest, the short burst
    assert stream._recent.capacity <= stream.endpointer.lookback_samples + MAX_PIECE_SECONDS * RATE + 2 * FRAME
    assert largest < 2 * RATE + 2.0 * RATE / FRAME * 32  # a look-back plus one max-length utterance's frames


def test_several_streams_share_one_classifier(stream_export):
    c = Classifier(stream_export, shared_pool=False)
    signals = [scene(("q", 0.5), ("s", 0.8 + 0.1 * i), ("q", 0.8)) for i in range(4)]
    expected = [[r.probabilities for r in feed(c.stream(RATE, exit=4, endpoint=ENERGY), s, 800)] for s in signals]
    got: dict[int, list] = {}

    def run(i):
        got[i] = [r.probabilities for r in feed(c.stream(RATE, exit=4, endpoint=ENERGY), signals[i], 800)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(4)] == expected and all(len(e) == 1 for e in expected)
    assert set(expected[0][0]) == set(TINY_LABELS)


def test_check_streaming_finds_a_chunk_dependent_encoder(stream_export, monkeypatch):
    c = Classifier(stream_export, shared_pool=False)
    assert check_streaming(c.runner)["exact"]
    original = c.engine.run

    def clip_dependent(segment, value):  # what group normalisation over time does: output depends on the chunk
        out = original(segment, value)
        return out - out.mean(axis=1, keepdims=True) if segment.kind == "encoder" else out

    monkeypatch.setattr(c.engine, "run", clip_dependent)
    verdict = check_streaming(c.runner)
    assert not verdict["exact"] and "differs from whole-clip" in verdict["reason"]


def test_manifest_versions_and_segment_kinds_are_checked(stream_export, tmp_path):
    import shutil

    import yaml

    from edge_ser import ManifestError
    from edge_ser.manifest import load_manifest

    target = tmp_path / "m"
    shutil.copytree(stream_export, target)
    raw = yaml.safe_load((target / "manifest.yaml").read_text())
    for version, ok in ((1, True), (2, True), (3, False)):
        (target / "manifest.yaml").write_text(yaml.safe_dump(raw | {"format_version": version}))
        if ok:
            assert load_manifest(target).format_version == version
        else:
            with pytest.raises(ManifestError, match="format version 3; this runtime reads versions 1, 2"):
                load_manifest(target)
    raw["chain"][1]["kind"] = "mystery"
    (target / "manifest.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match="unknown kind 'mystery'"):
        load_manifest(target)


class FakeSoundDevice:
    """A stand-in for sounddevice: `devices` maps names to (max input channels, rates they take, default rate);
    its InputStream calls back with blocks k = 0, 1, 2 (k in every channel), the second one flagged overflowed."""

    PortAudioError = RuntimeError

    def __init__(self, devices: dict):
        self.devices, self.opened = devices, {}
        fake = self

        class InputStream:
            def __init__(self, device, channels, samplerate, dtype, blocksize, callback):
                fake.opened.update(device=device, channels=channels, samplerate=samplerate, dtype=dtype,
                                   blocksize=blocksize)
                self.callback = callback

            def __enter__(self):
                import types

                for k in range(3):
                    status = types.SimpleNamespace(input_overflow=k == 1)
                    block = np.full((fake.opened["blocksize"], fake.opened["channels"]), k, np.float32)
                    self.callback(block, fake.opened["blocksize"], None, status)
                return self

            def __exit__(self, *exc):
                return False

        self.InputStream = InputStream

    def query_devices(self, device=None, kind=None):
        if device is None:
            return [{"name": n, "max_input_channels": c} for n, (c, _, _) in self.devices.items()]
        if device not in self.devices:
            raise ValueError(f"No input device matching {device!r}")
        channels, _, default = self.devices[device]
        return {"name": device, "max_input_channels": channels, "default_samplerate": float(default)}

    def check_input_settings(self, device, channels, samplerate, dtype):
        max_channels, rates, _ = self.devices[device]
        if channels != max_channels or samplerate not in rates:
            raise self.PortAudioError("Invalid number of channels" if channels != max_channels else "Invalid sample rate")


def test_microphone_chunks_flow_through_sounddevice(monkeypatch, capsys):
    """The mic path with a stand-in for sounddevice: the callback's blocks arrive in order as mono float32, and
    the device, rate and block size asked for are the ones passed on; an overflow is said on stderr."""
    import sys

    from edge_ser.listen import mic_chunks

    fake = FakeSoundDevice({"USB Audio": (1, {16000, 48000}, 48000)})
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    rate, chunks = mic_chunks("USB Audio", 16000, 0.02)
    got = [next(chunks) for _ in range(3)]
    assert rate == 16000
    assert fake.opened == {"device": "USB Audio", "channels": 1, "samplerate": 16000, "dtype": "float32", "blocksize": 320}
    assert [c.tolist() for c in got] == [[float(k)] * 320 for k in range(3)]
    assert "overflowed 1 time(s)" in capsys.readouterr().err


def test_a_microphone_that_takes_only_48_khz_stereo_is_recorded_so_and_averaged(monkeypatch, capsys):
    import sys

    from edge_ser.listen import mic_chunks

    fake = FakeSoundDevice({"hw:1": (2, {44100, 48000}, 48000)})
    monkeypatch.setitem(sys.modules, "sounddevice", fake)
    rate, chunks = mic_chunks("hw:1", 16000, 0.02)
    first = next(chunks)
    assert rate == 48000 and fake.opened["channels"] == 2 and fake.opened["blocksize"] == 960
    assert first.shape == (960,) and first.dtype == np.float32
    assert "records stereo (averaged) at 48000 Hz" in capsys.readouterr().err


def test_a_missing_microphone_is_one_line_naming_the_ones_there_are(monkeypatch):
    import sys

    from edge_ser import EdgeSerError
    from edge_ser.listen import mic_chunks

    monkeypatch.setitem(sys.modules, "sounddevice", FakeSoundDevice({"pulse": (32, {16000}, 44100),
                                                                     "default": (32, {16000}, 44100)}))
    with pytest.raises(EdgeSerError, match=r"^no microphone 'nope'; input devices here: 'pulse', 'default'$"):
        mic_chunks("nope", 16000, 0.02)


def test_a_missing_mic_extra_is_one_clear_error(monkeypatch):
    import sys

    from edge_ser import EdgeSerError
    from edge_ser.listen import mic_chunks

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
    with pytest.raises(EdgeSerError, match=r"mic extra.*pip install 'edge-ser\[mic\]'"):
        next(mic_chunks("default", 16000, 0.02))


@pytest.mark.parametrize("above_db,speech", [(6.01, True), (5.99, False)])
def test_a_frame_is_speech_from_threshold_db_over_the_floor(above_db, speech):
    endpointer = Endpointer(ENERGY, RATE)
    square = np.resize(np.array([1.0, -1.0], np.float32), FRAME)
    heard = [endpointer.is_speech(0.01 * square) for _ in range(10)]  # -40 dBFS: the floor
    assert heard == [True] + [False] * 9  # before any audio the floor is silence_dbfs (-55)
    assert endpointer.is_speech(0.01 * 10 ** (above_db / 20) * square) is speech
    assert not endpointer.is_speech(10 ** (-56 / 20) * square)  # below silence_dbfs, whatever the floor


def test_the_shipped_demo_streams_exactly_and_agrees_with_whole_clips():
    import soundfile as sf

    from edge_ser.classifier import DEFAULT_MODEL

    c = Classifier(DEFAULT_MODEL, precision="int8", shared_pool=False)
    assert c.manifest.streams_exactly("fp32") and c.manifest.streams_exactly("int8")
    sample, rate = sf.read(DEFAULT_MODEL / "samples" / "easy_high-rising.wav", dtype="float32")
    signal = np.concatenate([quiet(0.8), sample, quiet(0.8, 1)])
    [r] = feed(c.stream(rate, exit=3, endpoint=ENERGY), signal, 640)
    whole = c.classify(signal[round(r.start * RATE) : round(r.end * RATE)], RATE, exit=3)
    assert r.label == whole.label == "high-rising" and r.probabilities == pytest.approx(whole.probabilities, abs=1e-4)


def test_a_strict_refusal_keeps_the_chunks_other_results_and_the_stream_whole(stream_export):
    from edge_ser import BudgetError
    from edge_ser.profile import DeviceProfile, SegmentCost

    names = ["encoder", "context", "blocks_00_01", "blocks_01_03", "blocks_03_04", "exit_01", "exit_03", "exit_04"]
    profile = DeviceProfile("tiny-stream", "fp32", 1, fingerprint=fingerprint(stream_export), segments={
        name: SegmentCost([0.0, 10.0, 0.0], 1.0, 0.0, 1.0) for name in names})  # 10 ms per second of audio each
    c = Classifier(stream_export, profile=profile, shared_pool=False)
    # exit 1 after streaming: context + blocks_00_01 + exit_01 = 30 ms per second of utterance
    signal = scene(("q", 0.7), ("s", 2.0), ("q", 0.9), ("s", 0.4), ("q", 0.9), ("s", 1.6), ("q", 0.9))
    stream = c.stream(RATE, exit=1, strict=True, budget_ms=45, endpoint=ENERGY)  # fits 1.5 s, not 2.4 s or 2.0 s
    with pytest.raises(BudgetError, match="not even exit 1 fits") as refused:
        stream.accept(signal[: int(5.0 * RATE)])  # the long utterance (refused) and the short one end in here
    [short] = refused.value.results
    assert short.start == pytest.approx(3.4) and short.end == pytest.approx(4.2)
    with pytest.raises(BudgetError):
        stream.accept(signal[int(5.0 * RATE) :])  # the last utterance is 2.0 s long with its pads
    assert stream.flush() == []
    relaxed = feed(c.stream(RATE, exit=1, budget_ms=45, endpoint=ENERGY), signal, 800)  # not strict: answered, flagged
    assert [round(r.end - r.start, 2) for r in relaxed] == [2.4, 0.8, 2.0] and relaxed[0].warning


@pytest.mark.parametrize("seconds", [2.5, 2.49, 0.9], ids=["half-window-tail", "tail-under-half", "one-window"])
@pytest.mark.parametrize("chunk", [FRAME, 5333])
def test_a_long_utterance_is_windowed_as_a_file_would_be(stream_export, seconds, chunk):
    c = Classifier(stream_export, window_seconds=1.0, shared_pool=False)
    speech = speechlike(seconds, 4)
    stream = c.stream(RATE, exit=3, endpoint=None)
    results = [r for k in range(0, speech.size, chunk) for r in stream.accept(speech[k : k + chunk])]
    [r] = results + stream.accept(np.zeros(0, np.float32), end_of_utterance=True)
    whole = c.classify(speech, RATE, exit=3)
    assert [w.seconds for w in r.windows] == [w.seconds for w in whole.windows]
    assert r.probabilities == pytest.approx(whole.probabilities, abs=1e-4) and r.label == whole.label
    assert r.latency_ms == (r.windows[-1].latency_ms if r.windows else r.latency_ms)  # only the last ran after the end


def test_an_endpointed_long_utterance_is_windowed_and_its_memory_bounded(stream_export):
    c = Classifier(stream_export, window_seconds=1.0, shared_pool=False)
    signal = scene(("q", 0.6), ("s", 12.3), ("q", 0.9))
    stream = c.stream(RATE, exit=1, endpoint=ENERGY)
    results, held = [], 0
    for k in range(0, signal.size, 800):
        results += stream.accept(signal[k : k + 800])
        if stream._utterance is not None:
            held = max(held, sum(f.shape[1] for f in stream._utterance.encoder._frames))
    [r] = results + stream.flush()
    whole = c.classify(signal[round(r.start * RATE) : round(r.end * RATE)], RATE, exit=1)
    assert len(r.windows) == len(whole.windows) == 13  # 12.7 s with its pads: the 0.7 s tail stands alone
    assert r.probabilities == pytest.approx(whole.probabilities, abs=1e-4)
    assert held <= 1.5 * 50 + 800 // FRAME + 2  # frames of at most a window and a half, plus one chunk's


@pytest.mark.parametrize("change,message", [
    (lambda m: m.update(normalize="false"), "field normalize is 'false'"),
    (lambda m: m.update(sample_rate=16000.5), "field sample_rate is 16000.5"),
    (lambda m: m.update(labels=["calm", "calm", "tense"]), "field labels"),
    (lambda m: m.update(labels=["calm"]), "field labels"),
    (lambda m: m["chain"][0]["files"]["fp32"].update(sha256="abc"), "sha256 of segment 'encoder'"),
    (lambda m: m["chain"][2].update(layers=[3, 1]), "layers of segment 'blocks_00_01'"),
    (lambda m: m["policy"]["measures"]["max_prob"].update(threshold=float("nan")), "threshold"),
    (lambda m: m["exits"][1].update(layer=1), "exits"),
    (lambda m: m.update(default_precision="int4"), "field default_precision is 'int4'; allowed: fp32, int8, int8-blocks"),
    (lambda m: m.update(default_precision=True), "field default_precision is True"),
    (lambda m: [s["files"].pop("int8", None) for s in m["chain"]] and m.update(default_precision="int8"),
     "field default_precision is 'int8'; allowed: fp32 (this model ships no int8 files)"),
])
def test_every_manifest_field_is_checked_and_named(stream_export, tmp_path, change, message):
    import shutil

    import yaml

    from edge_ser import ManifestError
    from edge_ser.manifest import load_manifest

    target = tmp_path / "m"
    shutil.copytree(stream_export, target)
    raw = yaml.safe_load((target / "manifest.yaml").read_text())
    change(raw)
    (target / "manifest.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ManifestError, match=re.escape(message)):
        load_manifest(target)
