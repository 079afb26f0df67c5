"""How well the energy rule finds utterances in speech nobody here wrote, per SNR, in pink noise (the other
detectors, and babble and music, are in bench_rooms.py).

espeak-ng sentences (8 voices, random rates and levels from -26 to -14 dBFS) with pauses of 0.8-2.5 s,
in digital silence and in pink noise at several SNRs; the endpointer runs with its default settings
(as `edge-ser listen` does: 6 dB over the floor) and with a 10 dB threshold, and, for comparison, with
WebRTC's voice-activity detector (`pip install webrtcvad-wheels`, MIT; a benchmark-only candidate) deciding
each 20 ms frame inside the same state machine; each true utterance is counted as found, split, merged or missed
(benchmarks/speech.py:score), with false alarms and the median start/end error of found utterances.

    apt-get install espeak-ng
    python benchmarks/bench_endpoint.py            # ~1 minute
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402
from speech import RATE, lay_out, score, utterances  # noqa: E402

from edge_ser.endpoint import DEFAULT_ENDPOINT, EndpointOptions, Endpointer  # noqa: E402

SNRS = (None, 30, 20, 10, 5, 0)
ENERGY = replace(DEFAULT_ENDPOINT, detector="energy")
THRESHOLDS_DB = (6.0, 10.0)  # the default, and what it was before this benchmark
RECORDINGS = 3
PER_RECORDING = 40


class WebRtcEndpointer(Endpointer):
    """The same state machine (min speech, min silence, pads), with WebRTC's VAD deciding each frame."""

    def __init__(self, options: EndpointOptions, sample_rate: int, aggressiveness: int):
        import webrtcvad

        super().__init__(replace(options, detector="energy"), sample_rate)  # its 20 ms frames; is_speech replaced
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        pcm = np.clip(np.round(frame * 32767), -32768, 32767).astype("<i2").tobytes()
        return self._vad.is_speech(pcm, RATE)


def detect(audio: np.ndarray, options: EndpointOptions, endpointer: Endpointer | None = None) -> list[tuple[int, int]]:
    endpointer = endpointer or Endpointer(options, RATE)
    frame, spans, start = endpointer.frame_samples, [], None
    for k in range(0, audio.size - frame + 1, frame):
        for b in endpointer.step(audio[k : k + frame]):
            if b.kind == "start":
                start = b.sample
            elif b.kind == "end":
                spans.append((start, b.sample))
    end = endpointer.end_now()
    if end is not None and end.kind == "end":
        spans.append((start, end.sample))
    return spans


def main() -> None:
    clips = [utterances(PER_RECORDING, seed=r) for r in range(RECORDINGS)]
    rows = {}
    for threshold in THRESHOLDS_DB:
        options = EndpointOptions(threshold_db=threshold, detector="energy")
        rows[f"threshold {threshold:g} dB"] = by_snr(clips, options)
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        print("webrtcvad-wheels not installed: the WebRTC comparison is left out", flush=True)
    else:
        for aggressiveness in (1, 3):
            rows[f"webrtc {aggressiveness}"] = by_snr(
                clips, ENERGY, lambda a=aggressiveness: WebRtcEndpointer(ENERGY, RATE, a))
    save("endpoint", {"options": ENERGY.__dict__, "recordings": RECORDINGS, "utterances_each": PER_RECORDING,
                      "noise": "pink", "rows": rows})


def by_snr(clips: list[list[np.ndarray]], options: EndpointOptions, make=None) -> dict:
    rows = {}
    for snr in SNRS:
        total: dict[str, float] = {}
        start_err, end_err = [], []
        for r, recording_clips in enumerate(clips):
            rec = lay_out(recording_clips, snr, seed=r)
            found = detect(rec.audio, options, make() if make else None)
            for key, value in score(rec.truth, found).items():
                total[key] = total.get(key, 0) + value
            for t in rec.truth:
                hits = [f for f in found if f[0] < t[1] and t[0] < f[1]]
                if len(hits) == 1:
                    start_err.append((hits[0][0] - t[0]) / RATE * 1000)
                    end_err.append((hits[0][1] - t[1]) / RATE * 1000)
        total["median_start_ms"] = float(np.median(start_err)) if start_err else None
        total["median_end_ms"] = float(np.median(end_err)) if end_err else None
        rows["clean" if snr is None else f"{snr} dB"] = total
        print(f"{'webrtc' if make else f'threshold {options.threshold_db:g} dB'}, "
              f"{'clean' if snr is None else f'{snr} dB':>6}: " + ", ".join(
            f"{k} {v:.0f}" if isinstance(v, (int, float)) else f"{k} -" for k, v in total.items()), flush=True)
    return rows


if __name__ == "__main__":
    main()
