"""onnxruntime sessions for the segments of one model directory, opened lazily.

Why one process-wide thread pool: each InferenceSession has its own intra-op
pool by default, and on a small CPU the spinning threads of one segment fight
the next segment's. With a shared global pool a chain of segments runs level
with one monolithic graph (measured in benchmarks/bench_base.py: 0.99x vs 1.89x with per-session pools).
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .errors import ProviderError
from .integrity import checked_model
from .manifest import RUN_PRECISIONS, Manifest, ManifestError, Segment

log = logging.getLogger(__name__)
# Graph rewrites left out on CPU-only runs. onnxruntime 1.32's CPU SkipLayerNormalization kernel ran ~7x slower
# than the Add + LayerNormalization it replaces (149x768, 1 or 2 threads), and the base-size int8 blocks 1.15-1.19x
# faster without it, fp32 outputs equal to 2e-6 (benchmarks/bench_base.py compares both). GPU providers keep it.
CPU_DISABLED_OPTIMIZERS: tuple[str, ...] = ("SkipLayerNormFusion",)
_GLOBAL_POOL_THREADS: int | None = None
_GLOBAL_POOL_LOCK = threading.Lock()


def global_pool_threads() -> int | None:
    """The size of the process-wide pool this runtime made, or None before any Engine made it (a quantiser that
    opens sessions with threads of their own must run before)."""
    return _GLOBAL_POOL_THREADS


def _ensure_global_pool(threads: int) -> int:
    """Size onnxruntime's process-wide pool once; later calls get the size already set."""
    global _GLOBAL_POOL_THREADS
    with _GLOBAL_POOL_LOCK:
        if _GLOBAL_POOL_THREADS is None:
            try:
                ort.capi._pybind_state.set_global_thread_pool_sizes(threads, 1)
            except Exception:  # another library in this process created the pools first: share them
                pass
            _GLOBAL_POOL_THREADS = threads
        return _GLOBAL_POOL_THREADS


def usable_providers(wanted: list[str]) -> list[str]:
    """The providers of `wanted` (in order of preference) that this onnxruntime build has. Missing ones are dropped
    with a warning as long as one that is listed remains (list CPUExecutionProvider last for a fallback); if none
    remains, one error that lists what is available."""
    available = ort.get_available_providers()
    if any(not isinstance(p, str) or not p for p in wanted):
        raise ProviderError(f"execution providers are names such as CPUExecutionProvider, got {wanted!r}")
    usable = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if not usable:
        raise ProviderError(f"execution provider(s) {', '.join(missing)} not available here; available: "
                            f"{', '.join(available)} (list CPUExecutionProvider last to fall back to it)")
    if missing:
        log.warning("execution provider(s) %s not available here: running on %s", ", ".join(missing), ", ".join(usable))
    return usable


class Engine:
    """Runs named segments; opens (and hash-checks) each file the first time it is needed.

    threads: intra-op threads (0 = onnxruntime's choice, one per core).
    shared_pool: use one process-wide pool for all segments (the first Engine fixes its size).
             Once it exists, every onnxruntime session in the process must opt in to it, so an app
             that runs other onnxruntime models itself (a VAD, say) passes shared_pool=False.
    providers: onnxruntime execution providers, e.g. ["CUDAExecutionProvider", "CPUExecutionProvider"].
    """

    def __init__(
        self,
        directory: str | Path,
        manifest: Manifest,
        precision: str = "fp32",
        threads: int = 0,
        providers: list[str] | None = None,
        shared_pool: bool = True,
    ):
        files = {p for seg in manifest.chain for p in seg.files}
        have = [p for p, kinds in RUN_PRECISIONS.items() if set(kinds.values()) & files - {"fp32"} or p == "fp32"]
        if precision not in have:
            raise ManifestError(f"this model has no {precision} files; available: {', '.join(have)}")
        self.directory = Path(directory)
        self.manifest = manifest
        self.precision = precision
        self.providers = usable_providers(providers or ["CPUExecutionProvider"])
        if not shared_pool and _GLOBAL_POOL_THREADS is not None:
            # onnxruntime refuses per-session threads once a process-wide pool exists: join it instead of failing.
            log.info("a process-wide onnxruntime pool already exists: this Engine shares it (shared_pool=False ignored)")
            shared_pool = True
        self.shared_pool = shared_pool
        self.threads = _ensure_global_pool(threads) if shared_pool else threads
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        self.opened: list[str] = []  # files opened so far, in order (lazy loading is observable)

    def _options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.use_per_session_threads = not self.shared_pool
        if not self.shared_pool:
            options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Audio has a shape per length, and onnxruntime keeps a memory pattern per input shape it has seen: with
        # patterns on, a process classifying clips of every length grew without end (benchmarks/bench_memory.py).
        options.enable_mem_pattern = False
        options.log_severity_level = 3
        return options

    def session(self, segment: Segment) -> ort.InferenceSession:
        with self._lock:
            session = self._sessions.get(segment.name)
            if session is None:
                ref = segment.file_for(self.precision)
                with checked_model(self.directory, ref) as model:  # the file hashed is the file run (integrity.py)
                    session = self.open_session(model, self._options())
                if segment.kind == "head":
                    self._check_classes(self.directory / ref.file, session)
                self._sessions[segment.name] = session
                self.opened.append(ref.file)
            return session

    @property
    def disabled_optimizers(self) -> list[str]:
        return list(CPU_DISABLED_OPTIMIZERS) if self.providers == ["CPUExecutionProvider"] else []

    def open_session(self, model: Path | str | bytes, options: ort.SessionOptions) -> ort.InferenceSession:
        """A model (a file, or its bytes) as this engine opens it (providers, rewrites left out); no hash check:
        session() hands it what integrity.checked_model checked."""
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                    providers=self.providers, disabled_optimizers=self.disabled_optimizers)

    def _check_classes(self, path: Path, session: ort.InferenceSession) -> None:
        """A head must score exactly the manifest's labels, or every answer would be mislabelled."""
        classes = session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.manifest.labels):
            raise ManifestError(f"{path}: head scores {classes} classes but the manifest lists "
                                f"{len(self.manifest.labels)} labels")

    def run(self, segment: Segment, value: np.ndarray) -> np.ndarray:
        """One segment: its single input -> its single output. Sessions are thread-safe for run()."""
        return self.session(segment).run([segment.output], {segment.input: value})[0]

    def is_open(self, segment: Segment) -> bool:
        return segment.name in self._sessions
