"""`edge-ser calibrate`: measure every segment on this device and fit its latency model.

Each clip length is run `repeats` times, lengths interleaved, so that a burst of
load on a shared machine spreads over all lengths instead of bending one. Memory
per segment is the growth of this process's resident set when the segment is
opened and first run (onnxruntime allocates its arena on first use).
"""
from __future__ import annotations

import time

import numpy as np
import psutil

from .classifier import Classifier
from .options import OptionError, check_positive
from .precision import DeviceChoice
from .profile import DeviceProfile, fit_cost


def check_calibration(seconds: tuple[float, ...], repeats: int, quantile: float = 0.99) -> tuple[float, ...]:
    """The calibration's settings, checked before any work (the CLI calls it first): the clip lengths."""
    if not seconds:
        raise OptionError("seconds must list at least one clip length")
    seconds = tuple(check_positive("each clip length in seconds", s, 600.0, " s") for s in seconds)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= 1000:
        raise OptionError(f"repeats must be a whole number from 1 to 1000, got {repeats!r}")
    if not 0.5 <= quantile <= 1.0:
        raise OptionError(f"quantile must lie in [0.5, 1], got {quantile!r}")
    return seconds


def calibrate_profile(
    classifier: Classifier,
    seconds: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 12.0),
    repeats: int = 5,
    quantile: float = 0.99,
    progress=None,
) -> DeviceProfile:
    seconds = check_calibration(seconds, repeats, quantile)
    manifest = classifier.manifest
    engine = classifier.engine
    process = psutil.Process()
    rng = np.random.default_rng(0)

    memory: dict[str, float] = {}
    value = classifier.runner.preprocess(0.1 * rng.standard_normal(manifest.sample_rate).astype(np.float32))
    hidden = None
    for seg in manifest.chain:  # open in chain order: each opens on the output of the one before
        before = process.memory_info().rss
        out = engine.run(seg, value if seg.kind == "encoder" else hidden)
        memory[seg.name] = max(0.0, (process.memory_info().rss - before) / 2**20)
        hidden = out
        for e in manifest.exits:
            if e.after == seg.name:
                before = process.memory_info().rss
                engine.run(e.head, hidden)
                memory[e.head.name] = max(0.0, (process.memory_info().rss - before) / 2**20)

    timings, prep = time_segments(classifier, seconds, repeats, rng, progress)

    def fit(samples, mem=0.0):
        arr = np.array(samples)
        return fit_cost(arr[:, 0], arr[:, 1], quantile, mem)

    return DeviceProfile(
        model=manifest.name,
        precision=engine.precision,
        threads=engine.threads,
        fingerprint=manifest.fingerprint(engine.precision),
        providers=list(engine.providers),
        quantile=quantile,
        segments={name: fit(samples, memory.get(name, 0.0)) for name, samples in timings.items()},
        preprocess=fit(prep),
    )


def time_segments(
    classifier: Classifier, seconds: tuple[float, ...], repeats: int, rng: np.random.Generator, progress=None
) -> tuple[dict[str, list[tuple[float, float]]], list[tuple[float, float]]]:
    """(clip seconds, ms) per segment name and for preprocessing: every segment and head run on noise clips of
    each length, `repeats` rounds with the lengths interleaved. Shared by calibration and the benchmarks, so
    that what the planner fits is what the latency-against-length figures show."""
    manifest, engine, rate = classifier.manifest, classifier.engine, classifier.manifest.sample_rate
    timings: dict[str, list[tuple[float, float]]] = {s.name: [] for s in manifest.chain}
    timings |= {e.head.name: [] for e in manifest.exits}
    prep: list[tuple[float, float]] = []
    clips = {s: rng.standard_normal(int(s * rate)).astype(np.float32) * 0.1 for s in seconds}
    total = repeats * len(seconds)
    for r in range(repeats):
        for s in seconds:
            start = time.perf_counter()
            value = classifier.runner.preprocess(clips[s])
            prep.append((s, 1000 * (time.perf_counter() - start)))
            for seg in manifest.chain:
                start = time.perf_counter()
                value = engine.run(seg, value)
                timings[seg.name].append((s, 1000 * (time.perf_counter() - start)))
                for e in manifest.exits:
                    if e.after == seg.name:
                        start = time.perf_counter()
                        engine.run(e.head, value)
                        timings[e.head.name].append((s, 1000 * (time.perf_counter() - start)))
            if progress:
                progress(r * len(seconds) + seconds.index(s) + 1, total)
    return timings, prep


def time_full_depth(model_dir, precisions: list[str], seconds: float = 3.0, rounds: int = 5, **classifier_options
                    ) -> dict[str, float]:
    """Median ms of a run through every exit of a noise clip, per precision, the precisions interleaved so that
    a load burst on a shared machine hits them all alike; the first round warms the sessions up. It uses the
    process-wide thread pool, as a device app does (the export runs it in a process of its own for that).
    classifier_options: threads, providers, public_key, as the runs will use them."""
    return time_classifiers({p: Classifier(model_dir, precision=p, **classifier_options) for p in precisions},
                            seconds, rounds)


def time_classifiers(classifiers: dict[str, Classifier], seconds: float = 3.0, rounds: int = 5) -> dict[str, float]:
    """time_full_depth on Classifiers already open (one per precision, in the order given)."""
    precisions = list(classifiers)
    rate = next(iter(classifiers.values())).manifest.sample_rate
    clip = (0.1 * np.random.default_rng(0).standard_normal(int(seconds * rate))).astype(np.float32)
    times: dict[str, list[float]] = {p: [] for p in precisions}
    for round_ in range(rounds + 1):
        for precision, classifier in classifiers.items():
            start = time.perf_counter()
            classifier.exit_probabilities(clip)
            if round_:
                times[precision].append(1000 * (time.perf_counter() - start))
    return {p: float(np.median(t)) for p, t in times.items()}


def describe_profile(profile: DeviceProfile, seconds: tuple[float, ...] = (1.0, 3.0, 10.0)) -> str:
    lines = [f"device profile for {profile.model} ({profile.precision}, {profile.threads or 'default'} threads) on {profile.device}"]
    lines.append(f"{'segment':<16}" + "".join(f"{f'{s:g} s (ms)':>12}" for s in seconds) + f"{'fit err':>9}{'high x':>8}{'mem MB':>8}")
    for name, cost in profile.segments.items():
        row = "".join(f"{cost.predict_ms(s, high=False):>12.2f}" for s in seconds)
        lines.append(f"{name:<16}{row}{100 * cost.fit_error:>8.1f}%{cost.high_ratio:>8.2f}{cost.memory_mb:>8.1f}")
    return "\n".join(lines)


def choose_precision(model_dir, classifier_options: dict, rounds: int = 5) -> tuple[DeviceChoice, Classifier]:
    """Time every precision the manifest's accuracy rule allows, here, at full depth on a 3 s clip, and choose
    the fastest (edge_ser.precision): what the export machine chose is not what this device runs fastest.
    Returns the choice and the chosen precision's Classifier (opened, checked and warmed up: profile it)."""
    from .precision import fastest, max_precision_loss, verified_precisions

    first = Classifier(model_dir, precision="fp32", **classifier_options)
    manifest = first.manifest
    candidates = verified_precisions(manifest)
    classifiers = {p: first if p == "fp32" else Classifier(model_dir, precision=p, **classifier_options)
                   for p in candidates}
    ms = time_classifiers(classifiers, rounds=rounds)
    choice = DeviceChoice(model=manifest.name, precision=fastest(ms),
                          fingerprints={p: manifest.fingerprint(p) for p in candidates}, full_depth_ms=ms,
                          max_precision_loss=max_precision_loss(manifest), threads=first.engine.threads,
                          providers=list(first.engine.providers))
    return choice, classifiers[choice.precision]
