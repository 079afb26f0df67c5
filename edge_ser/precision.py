"""Which precision a run uses: the accuracy rule, and the device's own choice.

The export writes `default_precision`: the fastest variant *on the export machine* among those whose dev UAR
stayed within `max_precision_loss` of fp32 at every exit. That machine is not the device: on some ARM boards
int8 runs slower than fp32 (onnxruntime issue 20052). `edge-ser calibrate` therefore times every variant the
rule allows on the device itself and writes the fastest to MODEL/device.yaml; classify, listen, serve and the
Python API follow it. The order, first that applies: the precision asked for; the device profile's; the
device's choice (if it was made for these model files); the manifest's default.
"""
from __future__ import annotations

import datetime
import logging
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ProfileError
from .manifest import RUN_PRECISIONS, Manifest
from .profile import finite_number, load_versioned_yaml, save_yaml

log = logging.getLogger(__name__)

CHOICE_NAME = "device.yaml"
CHOICE_VERSION = 1
DEFAULT_MAX_PRECISION_LOSS = 0.005  # the exporter's default (--max-precision-loss), for manifests that predate the field


def max_precision_loss(manifest: Manifest) -> float:
    return DEFAULT_MAX_PRECISION_LOSS if manifest.max_precision_loss is None else manifest.max_precision_loss


def shipped_precisions(manifest: Manifest) -> list[str]:
    """The run precisions this model's files allow (fp32 always; int8 and int8-blocks where int8 files exist)."""
    has_int8 = any("int8" in s.files for s in manifest.chain)
    return [p for p in RUN_PRECISIONS if p == "fp32" or has_int8]


def within_loss(dev_uar: dict[str, dict[str, float]], max_loss: float) -> list[str]:
    """fp32, and each precision of `dev_uar` (precision -> exit -> dev UAR) whose UAR is at least fp32's minus
    max_loss at every exit. A loss of exactly max_loss qualifies (1e-9 absorbs the rounding of UARs such as
    0.95625 - 0.005); a precision without UARs, or missing an exit, was never verified and is left out."""
    reference = dev_uar.get("fp32") or {}
    verified = ["fp32"]
    for precision, uar in dev_uar.items():
        if precision != "fp32" and reference and uar and all(
                k in uar and uar[k] >= reference[k] - max_loss - 1e-9 for k in reference):
            verified.append(precision)
    return verified


def verified_precisions(manifest: Manifest) -> list[str]:
    """The shipped precisions within the manifest's accuracy rule (within_loss at its max_precision_loss)."""
    dev = {p: record.dev_uar for p, record in manifest.precisions.items()}
    shipped = shipped_precisions(manifest)
    return [p for p in within_loss(dev, max_precision_loss(manifest)) if p in shipped]


def fastest(ms: dict[str, float]) -> str:
    """The precision with the least time; on a tie the first listed (fp32 first: the reference wins a tie)."""
    return min(ms, key=lambda p: (ms[p], list(ms).index(p)))


@dataclass
class DeviceChoice:
    """The precision this device runs a model at, chosen by `edge-ser calibrate` from timings made here."""

    model: str
    precision: str
    fingerprints: dict[str, str]  # Manifest.fingerprint(p) of every precision timed: the files the choice is for
    full_depth_ms: dict[str, float]  # median ms of a run through every exit of a 3 s clip, per precision timed
    max_precision_loss: float
    threads: int = 0
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    device: str = field(default_factory=lambda: f"{platform.machine()} {platform.processor() or platform.node()}")
    date: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    version: int = CHOICE_VERSION

    def timings(self) -> str:
        """"fp32 10.1 ms, int8 7.0 ms, ...": what calibrate timed, as info and calibrate print it."""
        return ", ".join(f"{p} {ms:.1f} ms" for p, ms in self.full_depth_ms.items())

    def fits(self, manifest: Manifest) -> bool:
        """True when the choice was made for this model's current files (an update over the air makes it stale)."""
        return self.model == manifest.name and all(
            manifest.fingerprint(p) == f for p, f in self.fingerprints.items()) and self.precision in self.fingerprints

    def save(self, path: str | Path) -> Path:
        return save_yaml(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> DeviceChoice:
        """Read and check a choice file: every field typed and in range, or one ProfileError naming it."""
        raw = load_versioned_yaml(path, "device's precision choice", CHOICE_VERSION)
        try:
            choice = cls(**raw)
        except TypeError as err:
            raise ProfileError(f"{path}: malformed precision choice ({err})") from None
        checks = (
            ("model", isinstance(choice.model, str) and choice.model != ""),
            ("precision", choice.precision in RUN_PRECISIONS),
            ("fingerprints", isinstance(choice.fingerprints, dict) and bool(choice.fingerprints) and all(
                p in RUN_PRECISIONS and isinstance(f, str) and len(f) == 64 for p, f in choice.fingerprints.items())),
            ("full_depth_ms", isinstance(choice.full_depth_ms, dict) and all(
                p in RUN_PRECISIONS and _positive(ms) for p, ms in choice.full_depth_ms.items())),
            ("max_precision_loss", finite_number(choice.max_precision_loss) and 0 <= choice.max_precision_loss <= 1),
            ("threads", isinstance(choice.threads, int) and not isinstance(choice.threads, bool) and choice.threads >= 0),
        )
        for name, ok in checks:
            if not ok:
                raise ProfileError(f"{path}: field {name} is {getattr(choice, name)!r}; see edge-ser calibrate for "
                                   "what it writes")
        return choice


def _positive(value) -> bool:
    return finite_number(value) and value > 0


def choice_path(model_dir: str | Path) -> Path:
    return Path(model_dir) / CHOICE_NAME


def device_choice(model_dir: str | Path, manifest: Manifest) -> DeviceChoice | None:
    """MODEL/device.yaml when it is there and was made for these files; None (with a warning) when it is stale."""
    path = choice_path(model_dir)
    if not path.is_file():
        return None
    choice = DeviceChoice.load(path)
    if not choice.fits(manifest):
        log.warning("%s was chosen for other model files (the model was updated): using the model's default "
                    "precision %s until edge-ser calibrate runs again", path, manifest.default_precision)
        return None
    return choice


def run_precision(model_dir: str | Path, manifest: Manifest, asked: str | None = None,
                  profile_precision: str | None = None) -> tuple[str, str]:
    """(precision, why): the precision asked for, else the profile's, else the device's choice, else the
    manifest's default; why is 'asked', 'profile', 'device' or 'manifest'."""
    if asked:
        return asked, "asked"
    if profile_precision:
        return profile_precision, "profile"
    choice = device_choice(model_dir, manifest)
    if choice is not None:
        return choice.precision, "device"
    return manifest.default_precision, "manifest"
