"""The Classifier: lazy loading, budgets, adaptive exit, windows, threads, bad input."""
import dataclasses
import threading

import numpy as np
import pytest

from edge_ser import AudioError, BudgetError, Classifier
from edge_ser.profile import DeviceProfile, SegmentCost

from conftest import TINY_LABELS, fingerprint, speechlike, write_tone


def clip(seconds=1.0, seed=0):
    """Speech-like audio (a steady noise would be flagged as holding no speech)."""
    return speechlike(seconds, seed, level=0.3)


def flat_profile(ms_per_second: dict[str, float], memory: dict[str, float] | None = None, *, model) -> DeviceProfile:
    """A profile whose segments cost exactly ms_per_second * seconds (high_ratio 1)."""
    segments = {
        name: SegmentCost([0.0, rate, 0.0], 1.0, 0.0, (memory or {}).get(name, 1.0)) for name, rate in ms_per_second.items()
    }
    return DeviceProfile(model="tiny", precision="fp32", threads=1, segments=segments, fingerprint=fingerprint(model))


COSTS = {"encoder": 10, "context": 0, "blocks_00_01": 10, "blocks_01_03": 20, "blocks_03_04": 10,
         "exit_01": 1, "exit_03": 1, "exit_04": 1}


def test_classify_array_and_file_give_the_same_answer(tiny_export, tmp_path):
    c = Classifier(tiny_export, shared_pool=False)
    path = write_tone(tmp_path / "a.wav", 1.0)
    from_file = c.classify(path, exit=4)
    from_array = c.classify(c_samples := __import__("soundfile").read(path, dtype="float32")[0], 16000, exit=4)
    assert from_file.label == from_array.label and from_file.label in TINY_LABELS
    assert from_file.probabilities == pytest.approx(from_array.probabilities, abs=1e-6)
    assert from_file.decode_ms is not None and from_array.decode_ms is None
    assert sum(from_file.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert c_samples.size == 16000


def test_exit_3_never_opens_later_files(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)
    r = c.classify(clip(), 16000, exit=3)
    assert r.exit_layer == 3 and r.stopped_by == "exit" and r.load_ms > 0
    assert c.classify(clip(), 16000, exit=3).load_ms == 0  # sessions are reused
    assert r.segments_run == ["encoder", "context", "blocks_00_01", "blocks_01_03", "exit_03"]  # no head it has no use for
    assert c.engine.opened == ["encoder.onnx", "context.onnx", "blocks_00_01.onnx", "blocks_01_03.onnx", "exit_03.onnx"]


def test_latency_budget_picks_the_deepest_exit_that_fits(tiny_export):
    c = Classifier(tiny_export, profile=flat_profile(COSTS, model=tiny_export), shared_pool=False)
    # fixed-exit costs for 1 s: exit1 = 21, exit3 = 41, exit4 = 51; adaptive adds the heads on the way
    plan = c.plan(1.0, budget_ms=45, exit=None)
    assert plan.predicted_ms == pytest.approx({1: 21, 3: 42, 4: 53})
    assert plan.last_exit == 3 and plan.fits and not plan.estimated
    assert c.plan(2.0, budget_ms=45).last_exit == 1  # twice as long a clip: only exit 1 fits
    assert c.plan(2.0, budget_ms=45).limited_by == "budget" and c.plan(1.0, budget_ms=1000).limited_by is None
    assert c.plan(1.0, budget_ms=1000).last_exit == 4


def test_memory_budget_picks_the_deepest_exit_whose_segments_fit(tiny_export):
    memory = {name: 0.0 if name == "context" else 10.0 for name in COSTS}
    c = Classifier(tiny_export, profile=flat_profile(COSTS, memory, model=tiny_export), shared_pool=False)
    assert c.memory_mb(c.manifest.exit_at(3)) == pytest.approx(40)
    assert c.plan(1.0, memory_mb=45).last_exit == 3
    assert c.plan(1.0, memory_mb=35).last_exit == 1
    r = c.classify(clip(), 16000, memory_mb=45, exit=4)
    assert r.exit_layer == 3 and r.stopped_by == "memory"
    assert c.classify(clip(), 16000, memory_mb=1000, exit=4).stopped_by == "exit"


def test_nothing_fits_answers_from_the_first_exit_or_refuses_when_strict(tiny_export):
    c = Classifier(tiny_export, profile=flat_profile(COSTS, model=tiny_export), shared_pool=False)
    r = c.classify(clip(), 16000, budget_ms=5)
    assert r.exit_layer == 1 and r.budget_ms == 5
    assert r.warning.startswith("not even exit 1 fits") and r.warning.endswith("answered from exit 1")
    assert c.classify(clip(), 16000, budget_ms=500).warning is None
    with pytest.raises(BudgetError, match="not even exit 1 fits"):
        c.classify(clip(), 16000, budget_ms=5, strict=True)


def test_anytime_stops_before_a_segment_that_would_break_the_budget(tiny_export):
    # the profile claims blocks_03_04 takes a minute: a run must not start it
    costs = COSTS | {"blocks_03_04": 60_000}
    c = Classifier(tiny_export, profile=flat_profile(costs, model=tiny_export), shared_pool=False)
    c.plan = lambda *a, **k: dataclasses.replace(Classifier.plan(c, 1.0, exit=4), fits=True)  # a bold plan
    r = c.classify(clip(), 16000, budget_ms=10_000, exit=4)
    assert r.stopped_by == "budget" and "blocks_03_04" not in r.segments_run
    assert r.exit_layer == 3 and r.segments_run[-1] == "exit_03"  # answered from the exit passed last


def test_adaptive_exit_stops_when_sure(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)
    c.stop_rule = dataclasses.replace(c.stop_rule, measure="max_prob", threshold=0.0)  # always sure
    r = c.classify(clip(), 16000)
    assert r.exit_layer == 1 and r.stopped_by == "confident" and "blocks_01_03" not in r.segments_run
    c.stop_rule = dataclasses.replace(c.stop_rule, threshold=1.01)  # never sure: every head, to the end
    r = c.classify(clip(), 16000)
    assert r.exit_layer == 4 and r.stopped_by == "last"
    assert [s for s in r.segments_run if s.startswith("exit")] == ["exit_01", "exit_03", "exit_04"]


def test_long_audio_is_classified_in_windows(tiny_export):
    c = Classifier(tiny_export, window_seconds=2.0, shared_pool=False)
    r = c.classify(clip(5.0), 16000, exit=1)
    assert [w.seconds for w in r.windows] == [2.0, 2.0, 1.0] and r.stopped_by == "windows"  # 1.0 s: half, kept
    assert r.seconds == pytest.approx(5.0)
    assert [w.seconds for w in c.classify(clip(4.98), 16000, exit=1).windows] == [2.0, 2.98]  # under half: joins
    mean = np.mean([[w.probabilities[k] for k in TINY_LABELS] for w in r.windows], axis=0)
    assert [r.probabilities[k] for k in TINY_LABELS] == pytest.approx(mean.tolist())


def test_concurrent_calls_give_the_same_answers(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)
    clips = [clip(1.0 + i / 10, seed=i) for i in range(6)]
    expected = [c.classify(x, 16000, exit=4).probabilities for x in clips]
    got = [None] * len(clips)

    def work(i):
        got[i] = c.classify(clips[i], 16000, exit=4).probabilities

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(clips))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(expected, got, strict=True):
        assert a == pytest.approx(b, abs=1e-6)


def test_bad_input_is_refused_clearly(tiny_export, tmp_path):
    c = Classifier(tiny_export, shared_pool=False)
    with pytest.raises(AudioError, match="too short"):
        c.classify(np.zeros(100, np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        c.classify(np.full(16000, np.nan, np.float32), 16000)
    with pytest.raises(AudioError, match="sample_rate is required"):
        c.classify(clip())
    with pytest.raises(AudioError, match="no such file"):
        c.classify(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    with pytest.raises(AudioError, match="cannot decode"):
        c.classify(tmp_path / "bad.wav")
    with pytest.raises(Exception, match="no exit at layer 2"):
        c.classify(clip(), 16000, exit=2)


def test_pcm_and_other_rates_give_the_16k_float_answer(stream_export):
    import soxr

    c = Classifier(stream_export, shared_pool=False)  # raw waveform (no per-clip normalisation): scale matters
    x = speechlike(1.5, seed=7, level=0.5)
    reference = c.exit_probabilities(x)
    pcm16 = np.round(x * 32767).astype(np.int16)
    pcm32 = np.round(x.astype(np.float64) * 2147483647).astype(np.int32)
    for pcm in (pcm16, pcm32):
        r = c.classify(pcm, 16000, exit=4)
        assert r.seconds == pytest.approx(1.5)
        assert np.abs(np.array(list(r.probabilities.values())) - reference[4]).max() < 1e-4
    for rate in (8000, 44100, 48000):  # the same sound at another rate: resampled to 16 kHz on the way in
        r = c.classify(soxr.resample(x, 16000, rate), rate, exit=4)
        assert r.seconds == pytest.approx(1.5, abs=1e-3)
        # measured: under 1e-6 (this sound has little above 4 kHz); unscaled PCM was 0.02 off, a rate taken as 16 kHz 0.008
        assert np.abs(np.array(list(r.probabilities.values())) - reference[4]).max() < 1e-3


def test_no_profile_means_estimated_budgets(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)
    first = c.classify(clip(), 16000, budget_ms=10_000)
    assert first.estimated and first.budget_met
    plan = c.plan(1.0, budget_ms=10_000)
    assert all(v > 0 for v in plan.predicted_ms.values())  # learned from the first run


def test_long_files_stream_in_windows_with_bounded_memory(tiny_export, tmp_path):
    from edge_ser.audio import stream_windows

    rate = 22050
    path = write_tone(tmp_path / "long.wav", seconds=8.8, rate=rate)
    windows = list(stream_windows(path, 16000, 32000))
    assert [round(w.size / 16000, 2) for w in windows] == [2.0, 2.0, 2.0, 2.8]  # the 0.8 s tail joins the last
    whole = __import__("soxr").resample(__import__("soundfile").read(path, dtype="float32")[0], rate, 16000)
    assert abs(sum(w.size for w in windows) - whole.size) <= 2
    c = Classifier(tiny_export, window_seconds=2.0, shared_pool=False)
    r = c.classify(path, exit=1)
    assert len(r.windows) == 4 and r.seconds == pytest.approx(8.8, abs=0.01) and r.decode_ms > 0

    # Memory: reading window by window must not grow with the file; numpy reports its buffers to tracemalloc.
    import tracemalloc

    peaks = {}
    for seconds in (30.0, 120.0):
        long_path = write_tone(tmp_path / f"long{seconds:g}.wav", seconds=seconds, rate=rate)
        tracemalloc.start()
        total = sum(w.size for w in stream_windows(long_path, 16000, 32000))
        peaks[seconds] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert total == pytest.approx(seconds * 16000, abs=2)
    assert peaks[120.0] < 1.25 * peaks[30.0] and peaks[120.0] < 120 * rate * 4 / 8  # the file: 10.6 MB


def test_arrays_and_files_are_windowed_by_one_rule(tiny_export, tmp_path):
    import soundfile as sf

    c = Classifier(tiny_export, window_seconds=2.0, shared_pool=False)
    samples = clip(8.8, seed=3)
    path = tmp_path / "long.wav"
    sf.write(path, samples, 16000, subtype="FLOAT")
    from_array, from_file = c.classify(samples, 16000, exit=3), c.classify(path, exit=3)
    assert [w.seconds for w in from_array.windows] == [w.seconds for w in from_file.windows] == [2.0, 2.0, 2.0, 2.8]
    assert from_array.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)


def test_window_bounds_at_the_half_window_boundary():
    from edge_ser.audio import window_bounds, window_samples

    assert window_bounds(5, 4) == [(0, 5)]  # a 1-sample tail (< 2) joins
    assert window_bounds(6, 4) == [(0, 4), (4, 6)]  # exactly half a window stands alone
    assert window_bounds(3, 4) == [(0, 3)] and window_bounds(8, 4) == [(0, 4), (4, 8)]
    assert window_samples(10.0, 16000, 320) == 160000 and window_samples(3.33, 16000, 320) == 53120  # whole frames


@pytest.mark.parametrize("name,audio,speech", [
    ("digital silence", np.zeros(32000, np.float32), False),
    ("near silence", (1e-4 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32), False),
    ("DC", np.full(32000, 0.3, np.float32), False),
    ("pure tone", (0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)).astype(np.float32), False),
    ("steady noise", (0.1 * np.random.default_rng(1).standard_normal(32000)).astype(np.float32), False),
])
def test_audio_without_speech_is_reported_as_such(tiny_export, name, audio, speech):
    r = Classifier(tiny_export, shared_pool=False).classify(audio, 16000, exit=1)
    assert r.speech is speech and "no speech detected" in r.warning and r.to_dict()["speech"] is False


def test_speech_is_not_flagged_and_the_rule_sits_at_threshold_db():
    from conftest import speechlike

    from edge_ser.endpoint import no_speech

    assert no_speech(speechlike(2.0), 16000) is None
    square = np.resize(np.array([1.0, -1.0], np.float32), 320)
    # 10 frames at -40 dBFS and 10 louder: the 95th-10th percentile spread is exactly the step
    for step_db, flagged in ((6.01, False), (5.99, True)):
        clip = np.concatenate([0.01 * square] * 10 + [0.01 * 10 ** (step_db / 20) * square] * 10)
        assert (no_speech(clip, 16000) is not None) is flagged


def test_result_json_never_holds_nan(tiny_export):
    import json

    r = Classifier(tiny_export, shared_pool=False).classify(clip(), 16000, exit=1)
    r = dataclasses.replace(r, latency_ms=float("nan"), probabilities=r.probabilities | {TINY_LABELS[0]: float("inf")})
    data = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert data["latency_ms"] is None and data["probabilities"][TINY_LABELS[0]] is None


def test_without_a_profile_a_budget_holds_from_the_first_clip(tiny_export):
    # Before: unknown costs counted as fitting, so `--exit 4 --budget 1us --strict` ran all four layers.
    c = Classifier(tiny_export, shared_pool=False)
    with pytest.raises(BudgetError, match="not even exit 1 fits"):
        c.classify(clip(), 16000, exit=4, budget_ms=0.001, strict=True)
    r = Classifier(tiny_export, shared_pool=False).classify(clip(), 16000, exit=4, budget_ms=0.001)
    assert r.exit_layer == 1 and "answered from exit 1" in r.warning and r.estimated
    assert r.segments_run == ["encoder", "context", "blocks_00_01", "exit_01"]


def test_the_probe_runs_once_outside_the_budget_and_plans_the_deeper_exits(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)
    first = c.classify(clip(), 16000, exit=4, budget_ms=10_000)
    assert first.exit_layer == 4 and first.stopped_by == "exit"  # later blocks and heads estimated from the probe
    assert first.load_ms > 0 and c.probe() == 0.0  # the probe ran once, counted with loading, not latency
    plan = c.plan(1.0, budget_ms=10_000, exit=4)
    assert all(ms > 0 for ms in plan.predicted_ms.values()) and plan.estimated


def test_a_segment_of_unknown_cost_is_never_planned_past_a_budget(tiny_export):
    costs = {k: v for k, v in COSTS.items() if k != "blocks_03_04"}  # the profile lacks the last block
    c = Classifier(tiny_export, profile=flat_profile(costs, model=tiny_export), shared_pool=False)
    plan = c.plan(1.0, budget_ms=1000, exit=4)
    assert plan.last_exit == 3 and plan.limited_by == "budget" and np.isnan(plan.predicted_ms[4])


def test_a_profiled_preprocessing_cost_is_planned_for_clips_not_for_streams(tiny_export):
    profile = flat_profile(COSTS, model=tiny_export)
    profile.preprocess = SegmentCost([0.0, 5.0, 0.0], 1.0, 0.0, 0.0)  # 5 ms per second of audio
    c = Classifier(tiny_export, profile=profile, shared_pool=False)
    assert c.plan(2.0, exit=4).predicted_ms == pytest.approx({1: 52, 3: 92, 4: 112})  # fixed-exit costs + 10
    assert c.plan(2.0, budget_ms=51.9, exit=1).fits is False and c.plan(2.0, budget_ms=52, exit=1).fits
    # a stream has already run the encoder on raw samples: neither preprocessing nor encoder is planned
    assert c.plan(2.0, exit=4, done=1).predicted_ms[1] == pytest.approx(22)


def test_lazy_opening_under_real_concurrency_opens_each_file_once(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)  # fresh: nothing open yet
    barrier = threading.Barrier(8)
    errors = []

    def run():
        try:
            barrier.wait()
            c.classify(clip(), 16000, exit=4)
        except Exception as err:  # noqa: BLE001 - any failure in a thread fails the test below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(c.engine.opened) == len(set(c.engine.opened)) == 6  # each file once


def test_pcm_stereo_is_scaled_before_its_channels_are_averaged(stream_export):
    c = Classifier(stream_export, shared_pool=False)  # raw waveform: the scale matters
    mono = clip(1.0)
    pcm = np.round(mono * 32767).astype(np.int16)
    stereo = c.classify(np.stack([pcm, pcm], axis=1), 16000, exit=1)
    assert stereo.probabilities == pytest.approx(c.classify(mono, 16000, exit=1).probabilities, abs=1e-3)
    with pytest.raises(AudioError, match="dtype uint8"):
        c.classify(np.zeros(16000, np.uint8), 16000)


@pytest.mark.parametrize("door", ["array", "short file", "long file"])
def test_budgets_memory_and_strict_hold_through_every_door(tiny_export, tmp_path, door):
    """A clip given as samples, a file decoded whole or a long file read window by window: the same run options
    apply to every window (a long file used to be a separate path, where a dropped option would go unnoticed)."""
    import soundfile as sf

    memory = {name: 0.0 if name == "context" else 10.0 for name in COSTS}
    c = Classifier(tiny_export, profile=flat_profile(COSTS, memory, model=tiny_export), window_seconds=1.0,
                   shared_pool=False)
    seconds = 0.9 if door != "long file" else 3.6  # a long file: at least 1.5 windows, read as a stream
    samples = clip(seconds, seed=4)
    audio = samples if door == "array" else tmp_path / "clip.wav"
    if door != "array":
        sf.write(audio, samples, 16000, subtype="FLOAT")
    rate = 16000 if door == "array" else None
    windows = lambda r: r.windows or [r]  # noqa: E731
    by_memory = c.classify(audio, rate, memory_mb=45, exit=4)
    assert all(w.exit_layer == 3 and w.stopped_by == "memory" for w in windows(by_memory))
    by_budget = c.classify(audio, rate, budget_ms=5)
    assert by_budget.budget_ms == 5 and all(w.budget_ms == 5 and w.exit_layer == 1 for w in windows(by_budget))
    with pytest.raises(BudgetError, match="not even exit 1 fits"):
        c.classify(audio, rate, budget_ms=5, strict=True)
    if door == "long file":
        assert len(by_budget.windows) == 4 and by_budget.decode_ms > 0  # 1+1+1+0.6 s: a tail of half a window or more stands alone and by_budget.source == str(audio)
        as_json = by_budget.to_dict()
        assert [w["exit_layer"] for w in as_json["windows"]] == [1, 1, 1, 1]
        assert "windows" not in as_json["windows"][0] and not set(STREAM_FIELDS_) & set(as_json)


STREAM_FIELDS_ = ("start", "end", "ended_by", "endpoint_delay_ms")  # a clip's JSON leaves out the stream-only fields


def test_the_online_estimate_keeps_the_worst_rate_seen_and_decays_towards_faster_runs():
    from edge_ser.profile import OnlineEstimate

    est = OnlineEstimate()
    assert est.predict_ms("encoder", 2.0) is None  # never run: unknown, not free
    est.observe("encoder", 0.5, 5.0)  # 10 ms per second of audio
    assert est.predict_ms("encoder", 3.0) == pytest.approx(30.0)
    est.observe("encoder", 2.0, 8.0)  # a faster run (4 ms/s) pulls the rate down by a fifth of the gap
    assert est.predict_ms("encoder", 1.0) == pytest.approx(0.8 * 10 + 0.2 * 4)
    est.observe("encoder", 1.0, 20.0)  # a slower run (20 ms/s) is taken at once: budgets plan for the worst seen
    assert est.predict_ms("encoder", 1.0) == pytest.approx(20.0)
    est.observe("context", 0.0, 0.002)  # an empty clip counts as 1 ms of audio, never a division by zero
    assert est.predict_ms("context", 1.0) == pytest.approx(2.0)


def test_unseen_blocks_and_heads_are_estimated_from_what_has_run(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)  # no profile
    seg = {s.name: s for s in c.manifest.chain} | {e.head.name: e.head for e in c.manifest.exits}
    c.runner.online.observe("blocks_00_01", 1.0, 10.0)  # 1 layer: 10 ms per layer-second
    c.runner.online.observe("exit_01", 1.0, 2.0)
    assert c.runner._predict(seg["blocks_01_03"], 1.0) == pytest.approx(20.0)  # 2 layers at the per-layer cost seen
    assert c.runner._predict(seg["blocks_03_04"], 2.0) == pytest.approx(20.0)
    assert c.runner._predict(seg["exit_03"], 1.0) == pytest.approx(2.0)  # an unseen head costs the dearest head seen
    assert c.runner._predict(seg["encoder"], 1.0) is None  # nothing to scale an encoder from: unknown
    c.runner.online.observe("blocks_01_03", 1.0, 12.0)  # once a segment has run, its own figure wins
    assert c.runner._predict(seg["blocks_01_03"], 1.0) == pytest.approx(12.0)
    assert c.runner._predict(seg["blocks_03_04"], 1.0) == pytest.approx(10.0)  # the dearer per-layer rate (10 > 6)


def test_a_memory_budget_exactly_met_fits(tiny_export):
    memory = {name: 0.0 if name == "context" else 10.0 for name in COSTS}
    c = Classifier(tiny_export, profile=flat_profile(COSTS, memory, model=tiny_export), shared_pool=False)
    at = c.memory_mb(c.manifest.exit_at(3))
    assert c.plan(1.0, memory_mb=at).last_exit == 3
    assert c.plan(1.0, memory_mb=np.nextafter(at, 0)).last_exit == 1


def test_windows_combine_into_one_answer_field_by_field():
    from edge_ser.runner import Result

    c = Classifier(shared_pool=False)  # the shipped demo: only its labels and segment order are used
    labels = c.manifest.labels

    def window(i, probs, exit_layer, segments, **kw):
        return Result(label=labels[int(np.argmax(probs))], probabilities=dict(zip(labels, probs, strict=True)),
                      exit_layer=exit_layer, segments_run=segments, latency_ms=10.0 + i, seconds=2.0, stopped_by="exit",
                      load_ms=float(i), **kw)

    first = [0.5, 0.2, 0.1, 0.1, 0.1]
    second = [0.0, 0.6, 0.2, 0.1, 0.1]  # mean: label 1 (0.4) beats label 0 (0.25)
    a = window(0, first, 3, ["encoder", "context", "blocks_00_03", "exit_03"], budget_ms=30.0, budget_met=True,
               estimated=False, speech=True)
    b = window(1, second, 8, ["blocks_03_08", "exit_08", "encoder", "context", "blocks_00_03"], budget_ms=30.0,
               budget_met=False, estimated=True, speech=False, warning="not even exit 3 fits")
    r = c.runner.combine([a, b], 30.0)
    assert r.label == labels[1] and r.probabilities[labels[1]] == pytest.approx(0.4)
    assert r.exit_layer == 8 and r.stopped_by == "windows" and r.windows == [a, b]
    assert r.segments_run == ["encoder", "context", "blocks_00_03", "blocks_03_08", "exit_03", "exit_08"]
    assert (r.latency_ms, r.load_ms, r.seconds) == (21.0, 1.0, 4.0)
    assert r.budget_ms == 30.0 and r.budget_met is False and r.estimated is True
    assert r.speech is True and r.warning == "not even exit 3 fits"  # speech in any window; the first warning
    assert c.runner.combine([a, a], None).budget_met is None
    assert c.runner.combine([a, window(2, first, 3, ["encoder"], speech=None)], None).speech is None


def test_the_refusal_names_each_limit_it_was_given(tiny_export):
    memory = {name: 0.0 if name == "context" else 10.0 for name in COSTS}
    c = Classifier(tiny_export, profile=flat_profile(COSTS, memory, model=tiny_export), shared_pool=False)
    by_budget = c.classify(clip(), 16000, budget_ms=5).warning
    assert by_budget == "not even exit 1 fits: predicted 21.0 ms for 1.00 s of audio against 5 ms; answered from exit 1"
    by_memory = c.classify(clip(), 16000, memory_mb=1).warning
    assert by_memory == ("not even exit 1 fits: predicted 21.0 ms for 1.00 s of audio, 30 MB against 1 MB; "
                         "answered from exit 1")


def test_opening_files_and_the_probe_are_kept_out_of_the_latency(tiny_export):
    c = Classifier(tiny_export, shared_pool=False)
    first = c.classify(clip(), 16000, exit=4, budget_ms=10_000)  # probes, then opens the later files lazily
    second = c.classify(clip(), 16000, exit=4, budget_ms=10_000)
    assert first.load_ms > 0 and second.load_ms == 0
    # The same work twice: the first run's latency may not carry its one-time set-up (probe, opening files).
    assert abs(first.latency_ms - second.latency_ms) < first.load_ms


def test_sessions_keep_no_memory_pattern_per_input_length():
    """onnxruntime keeps a memory pattern per input shape; audio has a shape per length, so a long-running
    device would grow with every new length (benchmarks/bench_memory.py measures it). Every session opts out."""
    c = Classifier(shared_pool=False)
    c.classify(np.zeros(12345, np.float32), 16000, exit=12)  # opens the whole chain
    sessions = [c.engine.session(s) for s in c.manifest.chain + [e.head for e in c.manifest.exits]]
    assert sessions and all(not s.get_session_options().enable_mem_pattern for s in sessions)


def test_run_options_are_one_value_for_classify_and_stream_not_mixed_with_keywords(tiny_export):
    from edge_ser import OptionError, RunOptions

    c = Classifier(tiny_export, shared_pool=False)
    options = RunOptions(exit=3)
    assert c.classify(clip(), 16000, options=options).exit_layer == 3
    assert c.stream(16000, options=options, endpoint=None).options is options
    with pytest.raises(OptionError, match="either as keywords or as options"):
        c.classify(clip(), 16000, exit=1, options=options)
    with pytest.raises(OptionError, match="options must be a RunOptions"):
        c.stream(16000, options={"exit": 3})
