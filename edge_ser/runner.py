"""The chain runner: what one run of the model is, whoever asks for it.

Plan a run under the budgets (the deepest exit that fits, from a device profile or this process's own
measurements), run the segments to an answer (stopping early when the stop rule is sure, never starting a
segment that would break the budget), and assemble the Result. Classifier (clips, files, windows), Stream
(utterances, whose encoder may already have run) and the service all run through one ChainRunner, so a budget
means the same thing everywhere; neither entry point reaches into the other.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .audio import encoder_input
from .engine import Engine
from .errors import BudgetError
from .manifest import Exit, Manifest, Segment
from .options import RunOptions
from .policy import StopRule, softmax
from .profile import DeviceProfile, OnlineEstimate

PROBE_SECONDS = 0.5  # the clip a runner without a profile times once, to plan its first budgeted run


STREAM_FIELDS = ("start", "end", "ended_by", "endpoint_delay_ms")


@dataclass(frozen=True)
class Result:
    label: str
    probabilities: dict[str, float]
    exit_layer: int
    segments_run: list[str]
    latency_ms: float  # preprocessing + segments + heads + stop rule: what a budget covers
    seconds: float  # audio duration
    stopped_by: str  # confident | exit | last | budget | memory (| windows for long audio)
    budget_ms: float | None = None
    budget_met: bool | None = None
    estimated: bool = False  # True when no device profile backed the plan
    decode_ms: float | None = None  # file decoding + resampling, outside the budget
    load_ms: float = 0.0  # opening segment files this run needed for the first time (once per process), outside the budget
    windows: list[Result] = field(default_factory=list)  # long audio: one result per window
    source: str | None = None
    warning: str | None = None  # e.g. the budget could not be planned for: answered from the first exit
    speech: bool | None = None  # False: the clip holds no speech (silence, a tone, steady noise: see warning);
    # the label is then the model's answer to no voice at all. None: not judged (stream utterances)
    # Streams only (Classifier.stream): where the utterance lies in the stream, in seconds, and how it ended
    # (silence | max_length | marked); endpoint_delay_ms is the audio heard after its end before the end was
    # decided (the endpointer's min_silence wait), which latency_ms does not include.
    start: float | None = None
    end: float | None = None
    ended_by: str | None = None
    endpoint_delay_ms: float | None = None

    def to_dict(self) -> dict:
        """Plain values for JSON: a non-finite number becomes None, so every line is valid JSON (no NaN)."""
        data = {k: _finite_or_none(v) for k, v in self.__dict__.items()
                if k != "windows" and (v is not None or k not in STREAM_FIELDS)}
        if self.windows:
            data["windows"] = [w.to_dict() for w in self.windows]
        return data


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Plan:
    last_exit: int  # deepest exit this run may reach
    adaptive: bool
    predicted_ms: dict[int, float]  # exit -> predicted cost (high quantile) of a run that stops there
    fits: bool  # False: not even the first exit fits; the first exit answers anyway
    estimated: bool
    limited_by: str | None = None  # "memory" or "budget" when a budget, not the request, set last_exit


class ChainRunner:
    """Plans and runs the chain of one model on one Engine; safe to share between threads.

    profile: a device profile (planning from it), or None (planning from this process's own measurements,
    flagged as estimates). stop_rule: the adaptive rule, or None for a model without calibrated thresholds.
    """

    def __init__(self, manifest: Manifest, engine: Engine, profile: DeviceProfile | None = None,
                 stop_rule: StopRule | None = None):
        self.manifest, self.engine, self.profile, self.stop_rule = manifest, engine, profile, stop_rule
        self.online = OnlineEstimate()
        self._online_lock = threading.Lock()
        self._probed = False
        self._probe_lock = threading.Lock()

    # ---- planning -------------------------------------------------------------------------

    def segments_between(self, previous: Exit | None, exit_: Exit, done: int = 0) -> list[Segment]:
        """Chain segments from after `previous` up to `exit_`, less the first `done` of the chain (already run)."""
        chain = self.manifest.chain_to(exit_)
        return chain[max(done, len(self.manifest.chain_to(previous)) if previous else 0) :]

    def _predict(self, segment: Segment, seconds: float) -> float | None:
        if self.profile is not None and segment.name in self.profile.segments:
            return self.profile.predict_ms(segment.name, seconds)
        with self._online_lock:
            known = self.online.predict_ms(segment.name, seconds)
            if known is not None or segment.kind not in ("blocks", "head"):
                return known
            if segment.kind == "head":  # an unseen head: heads share one design, so the dearest one seen
                heads = [self.online.predict_ms(e.head.name, seconds) for e in self.manifest.exits]
                return max((ms for ms in heads if ms is not None), default=None)
            # An unseen block run: scale the per-layer cost of blocks already seen.
            per_layer = [
                self.online.predict_ms(s.name, seconds) / (s.layers[1] - s.layers[0])
                for s in self.manifest.chain
                if s.kind == "blocks" and self.online.predict_ms(s.name, seconds) is not None
            ]
        return max(per_layer) * (segment.layers[1] - segment.layers[0]) if per_layer else None

    def probe(self) -> float:
        """Without a profile, time the path to the first exit once, on PROBE_SECONDS of quiet noise (twice: the
        first run of a session pays its warm-up), so that a budget is planned from the first clip and no segment
        of unknown cost runs past it. Returns the ms it took: one-time set-up, outside every budget."""
        with self._probe_lock:
            if self._probed:
                return 0.0
            start = time.perf_counter()
            samples = (0.01 * np.random.default_rng(0).standard_normal(round(PROBE_SECONDS * self.manifest.sample_rate)))
            first = self.manifest.exits[0]
            for timed in (False, True):
                value = self.preprocess(samples.astype(np.float32))
                for segment in self.manifest.chain_to(first) + [first.head]:
                    began = time.perf_counter()
                    out = self.engine.run(segment, value)
                    if timed:
                        with self._online_lock:
                            self.online.observe(segment.name, PROBE_SECONDS, 1000 * (time.perf_counter() - began))
                    value = out if segment.kind != "head" else value
            self._probed = True
            return 1000 * (time.perf_counter() - start)

    def memory_mb(self, exit_: Exit) -> float:
        """Memory the segments up to `exit_` add: profiled, or the file sizes when there is no profile."""
        parts = self.manifest.chain_to(exit_) + [exit_.head]
        if self.profile is not None:
            return sum(self.profile.segments[s.name].memory_mb for s in parts if s.name in self.profile.segments)
        return sum(s.file_for(self.engine.precision).bytes for s in parts) / 2**20

    def plan(self, seconds: float, options: RunOptions, done: int = 0) -> Plan:
        """Deepest exit that fits the budgets, for a clip of `seconds`.

        done: chain segments already run (a stream has run the encoder while audio arrived): not counted.
        """
        budget_ms, memory_mb, exit = options.budget_ms, options.memory_mb, options.exit
        exits = self.manifest.exits
        adaptive = exit in (None, "auto") and self.stop_rule is not None
        if exit not in (None, "auto"):
            exits = exits[: exits.index(self.manifest.exit_at(int(exit))) + 1]
        predicted: dict[int, float] = {}
        estimated = self.profile is None
        total = 0.0
        if self.profile is not None and self.profile.preprocess is not None and done == 0:
            total += self.profile.preprocess.predict_ms(seconds)
        heads_so_far = 0.0
        previous = None
        for e in exits:
            for seg in self.segments_between(previous, e, done):
                ms = self._predict(seg, seconds)
                total += ms if ms is not None else math.nan
            head = self._predict(e.head, seconds) or 0.0
            predicted[e.layer] = total + heads_so_far + head
            heads_so_far += head if adaptive else 0.0
            previous = e
        allowed = [e for e in exits if memory_mb is None or self.memory_mb(e) <= memory_mb]
        limited_by = "memory" if len(allowed) < len(exits) else None
        if budget_ms is not None:
            # An unknown cost (NaN) never fits: only what can be shown to fit is planned (the first exit still
            # answers when nothing fits, unless strict).
            within = [e for e in allowed if predicted[e.layer] <= budget_ms]
            limited_by = "budget" if len(within) < len(allowed) else limited_by
            allowed = within
        fits = bool(allowed)
        last = allowed[-1].layer if allowed else exits[0].layer
        return Plan(last, adaptive, predicted, fits, estimated, limited_by)

    # ---- running ------------------------------------------------------------------------

    def run(self, value: np.ndarray, seconds: float, options: RunOptions, *, done: int = 0,
            started: float | None = None, annotations: dict | None = None) -> Result:
        """Plan and run the chain on `value`, the output of its first `done` segments, to an answer.

        done=0: `value` is the preprocessed waveform (1, S); done=1 (a stream): `value` is the encoder's frames,
        built chunk by chunk while the audio arrived. `seconds` is the audio's length; `started` (perf_counter) is when the budget's
        clock started (default: now). The budget covers everything from `started` to the answer. annotations:
        fields the caller knows about this audio (a clip's speech check), set as the Result is made (it is frozen).
        """
        budget_ms, memory_mb, exit = options.budget_ms, options.memory_mb, options.exit
        probe_ms = self.probe() if budget_ms is not None and self.profile is None else 0.0
        start = time.perf_counter() if started is None else started + probe_ms / 1000
        plan = self.plan(seconds, options, done=done)
        warning = None
        if not plan.fits:
            first = self.manifest.exits[0]
            need = plan.predicted_ms.get(first.layer, math.nan)
            warning = (
                f"not even exit {first.layer} fits: predicted {need:.1f} ms for {seconds:.2f} s of audio"
                + (f" against {budget_ms:g} ms" if budget_ms is not None else "")
                + (f", {self.memory_mb(first):.0f} MB against {memory_mb:g} MB" if memory_mb is not None else "")
            )
            if options.strict:
                raise BudgetError(warning)
            warning += f"; answered from exit {first.layer}"
        loads: list[float] = []
        elapsed = lambda: 1000 * (time.perf_counter() - start) - sum(loads)  # noqa: E731
        ran: list[str] = []
        seen: list[np.ndarray] = []
        answered: tuple[Exit, np.ndarray] | None = None
        pending: tuple[Exit, np.ndarray] | None = None  # passed exit whose head has not run (fixed mode)
        stopped_by, previous = "last", None
        for e in self.manifest.exits:
            if e.layer > plan.last_exit:
                break
            segments = self.segments_between(previous, e, done)
            if budget_ms is not None and (answered or pending):
                upcoming = [self._predict(s, seconds) for s in segments + [e.head]]
                if None in upcoming or elapsed() + sum(upcoming) > budget_ms:  # unknown cost: not run past a budget
                    stopped_by = "budget"
                    break
            for seg in segments:
                value = self._timed(seg, value, seconds, ran, loads)
            previous = e
            if plan.adaptive or e.layer == plan.last_exit:
                probs = softmax(self._timed(e.head, value, seconds, ran, loads)[0])
                seen.append(probs)
                answered, pending = (e, probs), None
                if plan.adaptive and e.layer < plan.last_exit and self.stop_rule.should_stop(seen):
                    stopped_by = "confident"
                    break
            else:
                pending = (e, value)
        if pending is not None:  # stopped for the budget between exits: answer from the exit passed last
            probs = softmax(self._timed(pending[0].head, pending[1], seconds, ran, loads)[0])
            answered = (pending[0], probs)
        if stopped_by == "last" and plan.limited_by:
            stopped_by = plan.limited_by  # the plan stopped short of the exit asked for
        elif stopped_by == "last" and exit not in (None, "auto"):
            stopped_by = "exit"
        exit_used, probs = answered
        latency = elapsed()
        return Result(
            label=self.manifest.labels[int(probs.argmax())],
            probabilities={label: float(p) for label, p in zip(self.manifest.labels, probs, strict=True)},
            exit_layer=exit_used.layer,
            segments_run=ran,
            latency_ms=latency,
            seconds=seconds,
            stopped_by=stopped_by,
            budget_ms=budget_ms,
            budget_met=None if budget_ms is None else latency <= budget_ms,
            estimated=plan.estimated,
            warning=warning,
            load_ms=sum(loads) + probe_ms,
            **(annotations or {}),
        )

    def combine(self, results: list[Result], budget_ms: float | None) -> Result:
        """One answer for audio classified window by window: mean probabilities; each window had its own budget."""
        probs = np.mean([[r.probabilities[label] for label in self.manifest.labels] for r in results], axis=0)
        best = int(probs.argmax())
        return Result(
            label=self.manifest.labels[best],
            probabilities={label: float(p) for label, p in zip(self.manifest.labels, probs, strict=True)},
            exit_layer=max(r.exit_layer for r in results),
            segments_run=sorted({s for r in results for s in r.segments_run}, key=self._order),
            latency_ms=sum(r.latency_ms for r in results),
            load_ms=sum(r.load_ms for r in results),
            seconds=sum(r.seconds for r in results),
            stopped_by="windows",
            budget_ms=budget_ms,
            budget_met=None if budget_ms is None else all(r.budget_met for r in results),
            estimated=any(r.estimated for r in results),
            speech=None if any(r.speech is None for r in results) else any(r.speech for r in results),
            windows=results,
            warning=next((r.warning for r in results if r.warning), None),
        )

    def _order(self, name: str) -> int:
        names = [s.name for s in self.manifest.chain] + [e.head.name for e in self.manifest.exits]
        return names.index(name)

    def _timed(self, segment: Segment, value: np.ndarray, seconds: float, ran: list[str], loads: list[float]) -> np.ndarray:
        if not self.engine.is_open(segment):  # lazy open: one-time setup, timed apart from inference
            start = time.perf_counter()
            self.engine.session(segment)
            loads.append(1000 * (time.perf_counter() - start))
        start = time.perf_counter()
        out = self.engine.run(segment, value)
        ms = 1000 * (time.perf_counter() - start)
        with self._online_lock:
            self.online.observe(segment.name, seconds, ms)
        ran.append(segment.name)
        return out

    def preprocess(self, samples: np.ndarray) -> np.ndarray:
        """Mono samples at the model's rate -> the encoder's input (1, S), as in training."""
        return encoder_input(samples, self.manifest.normalize)

    def exit_probabilities(self, samples: np.ndarray) -> dict[int, np.ndarray]:
        """Probabilities at every exit for mono samples at the model's rate (evaluation, calibration)."""
        value = self.preprocess(samples)
        out, previous = {}, None
        for e in self.manifest.exits:
            for seg in self.segments_between(previous, e):
                value = self.engine.run(seg, value)
            out[e.layer] = softmax(self.engine.run(e.head, value)[0])
            previous = e
        return out
