"""The device API: Classifier(model_dir).classify(audio) -> Result.

A run goes segment by segment: encoder, transformer blocks up to an exit, that
exit's head. It stops at the first exit the stop rule is sure of (adaptive
mode), at the exit asked for, or before a segment that would break the budget
(anytime: the best answer so far is returned). Budgets cover the work from
decoded samples to the answer; decoding is timed apart (decode_ms).

The Classifier opens the model (manifest, signature, precision, profile, engine) and turns clips, files and
long audio into runs of the ChainRunner (edge_ser.runner), which Stream uses for utterances too.
"""
from __future__ import annotations

import importlib.resources
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .audio import (DEFAULT_WINDOW_SECONDS, AudioError, check_samples, decode, duration_seconds, resample,
                    stream_windows, window_bounds, window_samples)
from .endpoint import DEFAULT_ENDPOINT, EndpointOptions, no_speech
from .engine import Engine
from .manifest import Manifest, load_manifest
from .options import OptionError, RunOptions, check_positive, check_threads
from .policy import StopRule
from .precision import run_precision
from .profile import DeviceProfile
from .runner import PROBE_SECONDS, ChainRunner, Plan, Result
from .signing import KeyPaths, load_signed_manifest, require_files
from .stream import Stream

__all__ = ["DEFAULT_MODEL", "PROBE_SECONDS", "Classifier", "Plan", "Result"]


def _shipped_demo() -> Path:
    """The demo model: models/demo in a source checkout, edge_ser/demo_model (package data) in an installed wheel."""
    checkout = Path(__file__).resolve().parent.parent / "models" / "demo"
    if (checkout / "manifest.yaml").is_file():
        return checkout
    return Path(str(importlib.resources.files("edge_ser") / "demo_model"))


DEFAULT_MODEL = _shipped_demo()


class Classifier:
    """Speech emotion classification with exits; one instance is safe to share between threads.

    model_dir: an exported model directory (default: the shipped demo model).
    profile:   a device profile YAML from `edge-ser calibrate` (or a DeviceProfile); without one,
               budgets are planned from this process's own measurements and flagged as estimates.
    precision: fp32, int8 or int8-blocks (where the model ships int8 files); None: the profile's
               precision if a profile is given, else the device's choice (MODEL/device.yaml, written
               by `edge-ser calibrate`), else the model's default_precision (edge_ser.precision).
    measure:   the adaptive stop rule: max_prob (default), entropy or patience.
    window_seconds: longer audio is classified window by window, each window on its own budget.
    shared_pool: one onnxruntime thread pool for all segments (see Engine); False if the app runs
               other onnxruntime sessions in the same process.
    public_key: a PEM file, a folder of them, or a list: the model must be signed by one of these keys
               (`edge-ser sign`), and every file this run can open must match the signed manifest; both are
               checked here, before anything is loaded (edge_ser.signing).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        profile: str | Path | DeviceProfile | None = None,
        precision: str | None = None,
        threads: int = 0,
        providers: list[str] | None = None,
        measure: str | None = None,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        shared_pool: bool = True,
        public_key: KeyPaths | None = None,
    ):
        threads = check_threads(threads)
        window_seconds = check_positive("window_seconds", window_seconds, 3600.0, " s")
        self.model_dir = Path(model_dir) if model_dir else DEFAULT_MODEL
        self.manifest: Manifest = (load_manifest(self.model_dir) if public_key is None
                                   else load_signed_manifest(self.model_dir, public_key))
        profile = DeviceProfile.load(profile) if isinstance(profile, (str, Path)) else profile
        precision, self.precision_source = run_precision(self.model_dir, self.manifest, precision,
                                                         profile.precision if profile else None)
        self.engine = Engine(self.model_dir, self.manifest, precision, threads, providers, shared_pool)
        if public_key is not None:
            require_files(self.model_dir, self.manifest, precision)
        if profile is not None:
            profile.check_fits(self.manifest.name, precision, self.manifest.fingerprint(precision), self.engine.providers)
        if measure and not self.manifest.policy:
            raise OptionError(f"measure={measure!r}: {self.model_dir} has no calibrated early-exit thresholds (export "
                              "it with dev data)")
        stop_rule = StopRule.from_policy(self.manifest.policy, measure) if self.manifest.policy else None
        self.runner = ChainRunner(self.manifest, self.engine, profile, stop_rule)
        self.window_seconds = window_seconds
        self.window_samples = window_samples(window_seconds, self.manifest.sample_rate, self.manifest.samples_per_frame)

    # The runner holds what planning uses; these stay settable here (a benchmark calibrates, then plans).
    @property
    def profile(self) -> DeviceProfile | None:
        return self.runner.profile

    @profile.setter
    def profile(self, profile: DeviceProfile | None) -> None:
        self.runner.profile = profile

    @property
    def stop_rule(self) -> StopRule | None:
        return self.runner.stop_rule

    @stop_rule.setter
    def stop_rule(self, rule: StopRule | None) -> None:
        self.runner.stop_rule = rule

    # ---- planning -------------------------------------------------------------------------

    def plan(self, seconds: float, budget_ms: float | None = None, memory_mb: float | None = None,
             exit: int | str | None = None, *, done: int = 0) -> Plan:
        """Deepest exit that fits the budgets, for a clip of `seconds` (done: chain segments already run)."""
        return self.runner.plan(seconds, RunOptions(budget_ms, memory_mb, exit), done)

    def probe(self) -> float:
        """Without a profile, time the path to the first exit once (ChainRunner.probe); returns the ms it took."""
        return self.runner.probe()

    def memory_mb(self, exit_) -> float:
        """Memory the segments up to `exit_` add: profiled, or the file sizes when there is no profile."""
        return self.runner.memory_mb(exit_)

    # ---- running --------------------------------------------------------------------------

    def classify(
        self,
        audio: str | Path | np.ndarray,
        sample_rate: int | None = None,
        *,
        budget_ms: float | None = None,
        memory_mb: float | None = None,
        exit: int | str | None = None,
        strict: bool = False,
        options: RunOptions | None = None,
    ) -> Result:
        """Classify a file path or samples (mono float or PCM ints; sample_rate required for arrays).

        exit: an exit layer to run to, or "auto"/None for adaptive early exit.
        strict: raise BudgetError instead of answering from the first exit when nothing fits.
        options: all four at once, as a RunOptions (what a service keeps per client), instead of the keywords.
        """
        options = _run_options(options, budget_ms, memory_mb, exit, strict)
        budget_ms = options.budget_ms
        rate = self.manifest.sample_rate
        decode_ms = None
        if isinstance(audio, (str, Path)):
            if Path(audio).is_file() and duration_seconds(audio) * rate >= self.window_samples * 1.5:
                return self._classify_long_file(Path(audio), options)
            start = time.perf_counter()
            samples = decode(audio, rate)
            decode_ms = 1000 * (time.perf_counter() - start)
            source = str(audio)
        else:
            if sample_rate is None:
                raise AudioError("sample_rate is required when passing samples")
            samples = check_samples(audio, sample_rate, 1)
            if sample_rate != rate:
                samples = resample(samples, sample_rate, rate)
            source = None
        samples = check_samples(samples, rate, self.manifest.min_samples)
        results = [self._classify_samples(samples[a:b], options)
                   for a, b in window_bounds(samples.size, self.window_samples)]
        result = results[0] if len(results) == 1 else self.runner.combine(results, budget_ms)
        return replace(result, decode_ms=decode_ms, source=source)

    def _classify_long_file(self, path: Path, options: RunOptions) -> Result:
        """A long file, window by window as it is read: only per-window results are kept."""
        results, decode_ms = [], 0.0
        windows = stream_windows(path, self.manifest.sample_rate, self.window_samples)
        while True:
            start = time.perf_counter()
            window = next(windows, None)
            decode_ms += 1000 * (time.perf_counter() - start)
            if window is None:
                break
            window = check_samples(window, self.manifest.sample_rate, self.manifest.min_samples)
            results.append(self._classify_samples(window, options))
        result = results[0] if len(results) == 1 else self.runner.combine(results, options.budget_ms)
        return replace(result, decode_ms=decode_ms, source=str(path))

    def _classify_samples(self, samples: np.ndarray, options: RunOptions) -> Result:
        """One window of a clip: its no-speech check, then a run of the chain (both inside the budget)."""
        start = time.perf_counter()
        silent = no_speech(samples, self.manifest.sample_rate)
        result = self.runner.run(self.runner.preprocess(samples), samples.size / self.manifest.sample_rate, options,
                                 started=start)
        return replace(result, speech=silent is None,
                       warning="; ".join(w for w in (result.warning, silent) if w) or None)

    def stream(
        self,
        sample_rate: int,
        *,
        budget_ms: float | None = None,
        memory_mb: float | None = None,
        exit: int | str | None = None,
        strict: bool = False,
        endpoint: EndpointOptions | None = DEFAULT_ENDPOINT,
        incremental: bool | None = None,
        options: RunOptions | None = None,
    ) -> Stream:
        """A live stream at `sample_rate` (see edge_ser.stream): accept(chunk) -> results of utterances that ended.

        endpoint: the endpointer's settings (its detector among them), or None when the app marks every end itself.
        incremental: run the encoder as audio arrives; default: where the manifest says it streams exactly.
        options: the budgets, exit and strictness as one RunOptions, instead of the keywords.
        """
        return Stream(self.runner, sample_rate, _run_options(options, budget_ms, memory_mb, exit, strict),
                      window_samples=self.window_samples, endpoint=endpoint, incremental=incremental)

    def exit_probabilities(self, samples: np.ndarray) -> dict[int, np.ndarray]:
        """Probabilities at every exit for mono samples at the model's rate (evaluation, calibration)."""
        return self.runner.exit_probabilities(samples)


def _run_options(options: RunOptions | None, budget_ms, memory_mb, exit, strict) -> RunOptions:
    """The keywords as a RunOptions (checked there), or `options` itself: not both."""
    if options is None:
        return RunOptions(budget_ms, memory_mb, exit, strict)
    if not isinstance(options, RunOptions):
        raise OptionError(f"options must be a RunOptions, got {type(options).__name__}")
    if (budget_ms, memory_mb, exit, strict) != (None, None, None, False):
        raise OptionError("give the budgets, exit and strict either as keywords or as options=RunOptions(...), not both")
    return options
