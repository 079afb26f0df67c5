"""manifest.yaml: the contract between `edge-ser export` and the runtime.

A model directory holds the manifest and ONNX files. The chain is

    encoder -> context -> blocks_00_03 -> blocks_03_08 -> ... -> blocks_10_12
                               |               |                       |
                            exit_03         exit_08                 exit_12

The encoder (CNN + projection) sees 25 ms of audio per frame; the context
(positional convolution) looks ahead over the whole utterance. The cut between
them is what lets a stream run the encoder while audio arrives; `streaming`
records whether the export found chunked encoder output equal to whole-clip
output (format 1 directories have no context segment and never stream).

Every file is listed with its sha256. Loading a manifest checks structure and
that no path leaves the directory; a file's hash is checked when the file is
first opened, so a run that stops at exit 3 never reads later files.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ManifestError
from .options import RATE_RULE, is_rate
from .policy import Calibrated, Policy

CALIBRATED_FIELDS = ("threshold", "patience", "dev_uar", "full_uar", "mean_exit_layer", "compute_share")

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
PRECISIONS = ("fp32", "int8")  # what a file can be
# What a run can ask for: a precision per segment kind. int8-blocks keeps the CNN encoder fp32,
# for models whose exits lose accuracy with a static-int8 encoder.
RUN_PRECISIONS = {
    "fp32": {"encoder": "fp32", "context": "fp32", "blocks": "fp32", "head": "fp32"},
    "int8": {"encoder": "int8", "context": "int8", "blocks": "int8", "head": "int8"},
    "int8-blocks": {"encoder": "fp32", "context": "fp32", "blocks": "int8", "head": "fp32"},
}
SEGMENT_KINDS = ("encoder", "context", "blocks", "head")



@dataclass(frozen=True)
class FileRef:
    file: str  # relative to the model directory
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Segment:
    """One ONNX graph: the encoder, a run of transformer layers, or an exit head."""

    name: str
    kind: str  # encoder | context | blocks | head
    input: str
    output: str
    parameters: int
    files: dict[str, FileRef]  # precision -> file
    layers: tuple[int, int] = (0, 0)  # blocks: (first layer before, last layer after), 1-based exclusive start

    def file_for(self, precision: str) -> FileRef:
        """The file a run at `precision` (see RUN_PRECISIONS) uses; fp32 where this segment has no such file."""
        wanted = RUN_PRECISIONS[precision][self.kind] if precision in RUN_PRECISIONS else precision
        return self.files.get(wanted) or self.files["fp32"]


@dataclass(frozen=True)
class Exit:
    layer: int
    after: str  # name of the chain segment whose output feeds this head
    head: Segment
    path_parameters: int  # encoder + layers up to here + this head
    dev_uar: float | None = None
    test_uar: float | None = None


@dataclass(frozen=True)
class PrecisionRecord:
    """What the export measured of one run precision, on the exported files through the runtime."""

    dev_uar: dict[int, float] = field(default_factory=dict)  # exit layer -> dev UAR
    quantized: tuple[str, ...] = ()  # the segments whose files are int8 at this precision
    full_depth_ms: float | None = None  # a run through every exit of a 3 s clip, on the export machine


@dataclass(frozen=True)
class StreamCheck:
    exact: bool = False  # chunked encoder output equal to whole-clip output within the tolerance
    max_abs_diff: float | None = None


@dataclass(frozen=True)
class Streaming:
    """Whether the encoder runs on chunks exactly, per precision: the export's check (stream.check_streaming)."""

    precisions: dict[str, StreamCheck] = field(default_factory=dict)
    tolerance: float | None = None
    chunk_ms: tuple[float, ...] = ()
    reason: str | None = None  # why it does not (per-clip normalisation, a chunk-dependent encoder ...)

    @property
    def exact_at(self) -> list[str]:
        """The precisions at which the export found chunked encoder output equal to whole-clip output."""
        return [p for p, check in self.precisions.items() if check.exact]


@dataclass(frozen=True)
class Provenance:
    """Where the model comes from. The runtime reads `synthetic`; the rest is for people (edge-ser info)."""

    synthetic: bool = False  # trained on the synthetic style corpus: its labels are not emotions
    default_precision_rule: str | None = None  # how the export chose default_precision
    verify_max_abs_diff: float | None = None  # the export's onnxruntime-vs-torch check
    extra: dict[str, Any] = field(default_factory=dict)  # anything else the exporter recorded (created, torch ...)

    def items(self) -> list[tuple[str, Any]]:
        """Every recorded entry, as the manifest holds them."""
        known = {"synthetic": self.synthetic or None, "default_precision_rule": self.default_precision_rule,
                 "verify_max_abs_diff": self.verify_max_abs_diff}
        return list(self.extra.items()) + [(k, v) for k, v in known.items() if v is not None]


@dataclass
class Manifest:
    name: str
    description: str
    sample_rate: int
    normalize: bool  # zero-mean unit-variance per clip before the encoder
    min_samples: int  # shortest input that gives one encoder frame
    samples_per_frame: int
    labels: list[str]
    chain: list[Segment]  # encoder, then blocks in order
    exits: list[Exit]  # in layer order; the last is the teacher
    policy: Policy | None = None  # calibrated early-exit rules; None for a model exported without dev data
    precisions: dict[str, PrecisionRecord] = field(default_factory=dict)  # run precision -> what the export measured
    provenance: Provenance = field(default_factory=Provenance)
    streaming: Streaming = field(default_factory=Streaming)
    # What a run uses when it names no precision: the export's fastest variant (timed at full depth on the export
    # machine) whose dev UAR stayed within its limit of fp32 at every exit; fp32 for models exported without dev data.
    default_precision: str = "fp32"
    # The accuracy rule for precisions: a variant may lose this much dev UAR against fp32 at any exit and still be
    # chosen (by the export, or by `edge-ser calibrate` on the device: edge_ser.precision). None: written before
    # the field existed; the exporter's default applies.
    max_precision_loss: float | None = None
    format_version: int = FORMAT_VERSION

    def fingerprint(self, precision: str) -> str:
        """sha256 over the files a run at `precision` uses: what a device profile measured, whatever the name says."""
        import hashlib

        refs = [s.file_for(precision) for s in self.chain + [e.head for e in self.exits]]
        return hashlib.sha256("\n".join(f"{r.file} {r.sha256}" for r in refs).encode()).hexdigest()

    def streams_exactly(self, precision: str) -> bool:
        """True when the export checked that the encoder, run chunk by chunk, gives whole-clip output at `precision`."""
        entry = self.streaming.precisions.get(precision)
        return entry is not None and entry.exact and len(self.chain) > 1 and self.chain[1].kind == "context"

    @property
    def receptive_samples(self) -> int:
        """Samples one encoder frame looks at (the CNN has no padding): the shortest input that gives a frame."""
        return self.min_samples

    def exit_at(self, layer: int) -> Exit:
        for e in self.exits:
            if e.layer == layer:
                return e
        raise ManifestError(f"this model has no exit at layer {layer}; exits: {', '.join(str(e.layer) for e in self.exits)}")

    def chain_to(self, exit_: Exit) -> list[Segment]:
        """Chain segments that must run before `exit_`'s head, in order."""
        names = [s.name for s in self.chain]
        return self.chain[: names.index(exit_.after) + 1]

    def to_dict(self) -> dict[str, Any]:
        """Plain values in the manifest's YAML layout (exit layers as string keys, lists for tuples)."""
        data = asdict(self)
        for seg in data["chain"] + [e["head"] for e in data["exits"]]:
            seg["layers"] = list(seg["layers"])
        data["policy"] = self.policy.to_dict() if self.policy else {}
        data["precisions"] = {p: {"dev_uar": {str(k): v for k, v in r.dev_uar.items()},
                                  **({"quantized": list(r.quantized)} if r.quantized else {}),
                                  **({"full_depth_ms": r.full_depth_ms} if r.full_depth_ms is not None else {})}
                              for p, r in self.precisions.items()}
        data["provenance"] = dict(self.provenance.items())
        data["streaming"] = ({} if self.streaming == Streaming() else
                             {"tolerance": self.streaming.tolerance, "chunk_ms": list(self.streaming.chunk_ms),
                              "reason": self.streaming.reason,
                              "precisions": {p: asdict(c) for p, c in self.streaming.precisions.items()}})
        return data

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / "manifest.yaml"
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, width=120))
        return path


def _segment(raw: dict[str, Any], where: str) -> Segment:
    try:
        files = {p: FileRef(**ref) for p, ref in raw["files"].items()}
        if "fp32" not in files:
            raise ManifestError(f"{where}: segment {raw['name']!r} has no fp32 file")
        unknown = set(files) - set(PRECISIONS)
        if unknown:
            raise ManifestError(f"{where}: unknown precision(s) {sorted(unknown)}")
        return Segment(
            name=raw["name"], kind=raw["kind"], input=raw["input"], output=raw["output"],
            parameters=int(raw["parameters"]), files=files, layers=tuple(raw.get("layers", (0, 0))),
        )
    except (KeyError, TypeError) as err:
        raise ManifestError(f"{where}: malformed segment ({err})") from None


def _check_inside(directory: Path, segments: list[Segment]) -> None:
    root = directory.resolve()
    for seg in segments:
        for ref in seg.files.values():
            target = (root / ref.file).resolve()
            if root not in target.parents:
                raise ManifestError(f"{directory}: file {ref.file!r} of segment {seg.name!r} lies outside the model directory")


MAX_MANIFEST_BYTES = 4 * 2**20  # a manifest is a few KiB: a larger file is refused before it is read whole


def read_manifest_bytes(directory: str | Path) -> bytes:
    """DIRECTORY/manifest.yaml's bytes, read once (a signature is checked on them, then they are parsed)."""
    path = Path(directory) / "manifest.yaml"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise ManifestError(f"{directory}: not a model directory (no manifest.yaml)") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err.strerror or err})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path}: over {MAX_MANIFEST_BYTES // 2**20} MiB; not a manifest")
    return data


def load_manifest(directory: str | Path, data: bytes | None = None) -> Manifest:
    """Read and validate `directory`/manifest.yaml (structure and paths; hashes are checked on open), or parse
    `data`, its bytes as already read (edge_ser.signing checks a signature on them first)."""
    directory = Path(directory)
    path = directory / "manifest.yaml"
    if data is None:
        data = read_manifest_bytes(directory)
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text; not a manifest") from None
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: not a manifest")
    version = raw.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ManifestError(f"{path}: format version {version!r}; this runtime reads versions "
                            f"{', '.join(map(str, READABLE_VERSIONS))}")
    try:
        chain = [_segment(s, str(path)) for s in raw["chain"]]
        exits = [
            Exit(
                layer=int(e["layer"]), after=e["after"], head=_segment(e["head"], str(path)),
                path_parameters=int(e["path_parameters"]), dev_uar=e.get("dev_uar"), test_uar=e.get("test_uar"),
            )
            for e in raw["exits"]
        ]
        manifest = Manifest(
            name=raw["name"], description=raw.get("description", ""), sample_rate=int(raw["sample_rate"]),
            normalize=bool(raw["normalize"]), min_samples=int(raw["min_samples"]),
            samples_per_frame=int(raw["samples_per_frame"]), labels=list(raw["labels"]), chain=chain, exits=exits,
            policy=parse_policy(raw.get("policy"), str(path)), precisions=_precisions(raw.get("precisions"), str(path)),
            provenance=parse_provenance(raw.get("provenance")), streaming=parse_streaming(raw.get("streaming"), str(path)),
            default_precision=raw.get("default_precision", "fp32"),
            max_precision_loss=raw.get("max_precision_loss"), format_version=version,
        )
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ManifestError):
            raise
        raise ManifestError(f"{path}: missing or malformed field ({err})") from None
    names = [s.name for s in chain]
    if not chain or chain[0].kind != "encoder":
        raise ManifestError(f"{path}: the chain must start with the encoder")
    for seg in chain + [e.head for e in exits]:
        if seg.kind not in SEGMENT_KINDS:
            raise ManifestError(f"{path}: segment {seg.name!r} has unknown kind {seg.kind!r}; "
                                f"allowed: {', '.join(SEGMENT_KINDS)}")
    for e in exits:
        if e.after not in names:
            raise ManifestError(f"{path}: exit {e.layer} follows unknown segment {e.after!r}")
    if [e.layer for e in exits] != sorted(e.layer for e in exits) or not exits:
        raise ManifestError(f"{path}: exits must be listed in layer order")
    _check_fields(raw, manifest, str(path))
    _check_inside(directory, chain + [e.head for e in exits])
    return manifest


def _section(raw: Any, where: str, name: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: field {name} is {raw!r}; allowed: a mapping")
    return raw


def parse_policy(raw: Any, where: str = "policy") -> Policy | None:
    """The `policy` section as a Policy (None when there is none), every measure a Calibrated rule."""
    raw = _section(raw, where, "policy")
    if not raw:
        return None
    measures = _section(raw.get("measures"), where, "policy.measures")
    try:
        rules = {name: Calibrated(**{k: (rule or {}).get(k) for k in CALIBRATED_FIELDS}) for name, rule in measures.items()}
    except (TypeError, AttributeError):
        raise ManifestError(f"{where}: field policy.measures is {measures!r}; allowed: a rule per measure") from None
    return Policy(rules, raw.get("default", "max_prob"), raw.get("max_accuracy_loss"), raw.get("calibrated_on_clips"))


def _precisions(raw: Any, where: str) -> dict[str, PrecisionRecord]:
    records = {}
    for precision, entry in _section(raw, where, "precisions").items():
        entry = _section(entry, where, f"precisions.{precision}")
        try:
            dev = {int(k): v for k, v in _section(entry.get("dev_uar"), where, f"precisions.{precision}.dev_uar").items()}
        except (TypeError, ValueError):
            raise ManifestError(f"{where}: field precisions.{precision}.dev_uar has a key that is not an exit "
                                "layer") from None
        records[precision] = PrecisionRecord(dev, tuple(entry.get("quantized") or ()), entry.get("full_depth_ms"))
    return records


def parse_streaming(raw: Any, where: str = "streaming") -> Streaming:
    """The `streaming` section (the export's check, or a verdict from stream.check_streaming) as a Streaming."""
    raw = _section(raw, where, "streaming")
    checks = {p: StreamCheck(bool((c or {}).get("exact")), (c or {}).get("max_abs_diff"))
              for p, c in _section(raw.get("precisions"), where, "streaming.precisions").items()}
    return Streaming(checks, raw.get("tolerance"), tuple(raw.get("chunk_ms") or ()), raw.get("reason"))


def parse_provenance(raw: Any) -> Provenance:
    raw = dict(raw) if isinstance(raw, dict) else {}
    return Provenance(bool(raw.pop("synthetic", False)), raw.pop("default_precision_rule", None),
                      raw.pop("verify_max_abs_diff", None), raw)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _need(ok: bool, where: str, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ManifestError(f"{where}: field {field} is {value!r}; allowed: {allowed}")


def _is_int(value: Any, low: int = 0, high: float = float("inf")) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_fields(raw: dict[str, Any], manifest: Manifest, where: str) -> None:
    """Every field typed and in range, one message naming the field (a string 'false' is not a bool, 16000.5 Hz
    is not a rate): the manifest comes from storage, and storage on a device can be anything."""
    _need(isinstance(raw["name"], str) and raw["name"] != "", where, "name", raw["name"], "a non-empty string")
    _need(is_rate(raw["sample_rate"]), where, "sample_rate", raw["sample_rate"], RATE_RULE)
    _need(isinstance(raw["normalize"], bool), where, "normalize", raw["normalize"], "true or false")
    for key in ("min_samples", "samples_per_frame"):
        _need(_is_int(raw[key], 1, 10**6), where, key, raw[key], "a whole number from 1 to 1000000")
    labels = raw["labels"]
    _need(isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) and x for x in labels)
          and len(set(labels)) == len(labels), where, "labels", labels, "a list of two or more distinct strings")
    for seg in manifest.chain + [e.head for e in manifest.exits]:
        at = f"segment {seg.name!r}"
        for key in ("name", "input", "output"):
            _need(isinstance(getattr(seg, key), str) and getattr(seg, key) != "", where, f"{key} of {at}",
                  getattr(seg, key), "a non-empty string")
        _need(_is_int(seg.parameters), where, f"parameters of {at}", seg.parameters, "a whole number >= 0")
        _need(len(seg.layers) == 2 and all(_is_int(x) for x in seg.layers) and seg.layers[0] <= seg.layers[1],
              where, f"layers of {at}", list(seg.layers), "two whole numbers, first <= second")
        for precision, ref in seg.files.items():
            _need(isinstance(ref.file, str) and ref.file != "", where, f"files.{precision}.file of {at}", ref.file,
                  "a file name inside the model directory")
            _need(isinstance(ref.sha256, str) and len(ref.sha256) == 64
                  and all(c in "0123456789abcdef" for c in ref.sha256), where, f"files.{precision}.sha256 of {at}",
                  ref.sha256, "64 lowercase hex digits")
            _need(_is_int(ref.bytes), where, f"files.{precision}.bytes of {at}", ref.bytes, "a whole number >= 0")
    layers = [e.layer for e in manifest.exits]
    _need(all(x >= 1 for x in layers) and len(set(layers)) == len(layers), where, "exits' layers", layers,
          "distinct layer numbers from 1")
    for measure, rule in (manifest.policy.measures if manifest.policy else {}).items():
        _need(rule.threshold is None or (_is_number(rule.threshold) and 0.0 <= rule.threshold <= 1.0), where,
              f"policy.measures.{measure}.threshold", rule.threshold, "a number from 0 to 1")
        _need(rule.patience is None or _is_int(rule.patience), where, f"policy.measures.{measure}.patience",
              rule.patience, "a whole number >= 0")
    if manifest.policy is not None:
        _need(manifest.policy.default in manifest.policy.measures, where, "policy.default", manifest.policy.default,
              ", ".join(manifest.policy.measures))
    for precision, record in manifest.precisions.items():
        _need(precision in RUN_PRECISIONS, where, "precisions", precision, ", ".join(RUN_PRECISIONS))
        _need(all(_is_number(v) and 0 <= v <= 1 for v in record.dev_uar.values()), where,
              f"precisions.{precision}.dev_uar", record.dev_uar, "a UAR from 0 to 1 per exit")
    loss = manifest.max_precision_loss
    _need(loss is None or (isinstance(loss, (int, float)) and not isinstance(loss, bool) and 0 <= loss <= 1), where,
          "max_precision_loss", loss, "a number from 0 to 1 (dev UAR as a fraction)")
    has_int8 = any("int8" in s.files for s in manifest.chain)
    _need(manifest.default_precision == "fp32" or (manifest.default_precision in RUN_PRECISIONS and has_int8), where,
          "default_precision", manifest.default_precision,
          ", ".join(RUN_PRECISIONS) if has_int8 else "fp32 (this model ships no int8 files)")
