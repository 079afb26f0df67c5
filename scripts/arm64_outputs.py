"""Outputs of the runtime to compare across machines (x86 vs arm64 under emulation): per-exit probabilities of
the shipped samples and a few clips made here, at fp32 and int8, and one streamed utterance. Runtime only.

    python scripts/arm64_outputs.py write out.json
    python scripts/arm64_outputs.py compare x86.json arm64.json [--tests LOG]   # labels equal, fp32 1e-4, int8 1e-3

compare also writes benchmarks/results/arm64.json (with the arm64 pytest summary line from LOG, the command,
machine and date), which the README's arm64 paragraph quotes.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

TOLERANCE = {"fp32": 1e-4, "int8": 1e-3}


def clips() -> dict[str, np.ndarray]:
    import soundfile as sf

    from edge_ser.classifier import DEFAULT_MODEL

    made = {}
    for path in sorted((DEFAULT_MODEL / "samples").glob("*.wav")):
        made[path.name] = sf.read(path, dtype="float32")[0]
    t = np.arange(2 * 16000) / 16000
    for seed, f0 in ((0, 120.0), (1, 210.0), (2, 300.0)):
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
        voiced = sum(np.sin(2 * np.pi * k * f0 * t * (1 + 0.1 * t)) / k for k in range(1, 6))
        noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
        made[f"made_{seed}"] = (0.2 * envelope * voiced + noise).astype(np.float32)
    return made


def write(out: Path) -> None:
    from edge_ser import Classifier

    data: dict = {}
    audio = clips()
    for precision in TOLERANCE:
        classifier = Classifier(precision=precision)
        data[precision] = {name: {str(k): v.tolist() for k, v in classifier.exit_probabilities(x).items()}
                           for name, x in audio.items()}
        signal = np.concatenate([np.zeros(12000, np.float32), audio["made_1"], np.zeros(16000, np.float32)])
        stream = classifier.stream(16000, exit=3)
        results = [r for k in range(0, signal.size, 320) for r in stream.accept(signal[k : k + 320])] + stream.flush()
        data[precision]["stream"] = [[r.start, r.end, r.label, list(r.probabilities.values())] for r in results]
    import platform

    import onnxruntime

    data["platform"] = f"{platform.machine()}, Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"
    out.write_text(json.dumps(data))


def compare(a: Path, b: Path, tests_log: Path | None = None) -> int:
    left, right = json.loads(a.read_text()), json.loads(b.read_text())
    worst, bad = {}, []
    for precision, tolerance in TOLERANCE.items():
        worst[precision] = 0.0
        for name, exits in left[precision].items():
            if name == "stream":
                continue
            for layer, p in exits.items():
                q = right[precision][name][layer]
                diff = float(np.abs(np.array(p) - np.array(q)).max())
                worst[precision] = max(worst[precision], diff)
                if int(np.argmax(p)) != int(np.argmax(q)) or diff > tolerance:
                    bad.append(f"{precision} {name} exit {layer}: diff {diff:.2e}")
        ls, rs = left[precision]["stream"], right[precision]["stream"]
        if [(s[0], s[1], s[2]) for s in ls] != [(s[0], s[1], s[2]) for s in rs]:
            bad.append(f"{precision} stream: utterances or labels differ: {ls} vs {rs}")
    print("max abs diff of probabilities: " + ", ".join(f"{p} {d:.2e}" for p, d in worst.items()))
    print("labels equal, within tolerance" if not bad else "DIFFERENT:\n" + "\n".join(bad))
    summary, failed = None, []
    if tests_log is not None and tests_log.exists():
        log = tests_log.read_text().splitlines()
        lines = [line.strip("= \n") for line in log if " passed" in line]
        summary = lines[-1] if lines else None
        failed = [line.split()[1] for line in log if line.startswith("FAILED ")]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from common import save

    save("arm64", {"max_abs_diff": worst, "tolerance": TOLERANCE, "outputs_equal": not bad, "differences": bad,
                   "arm64_tests": summary, "arm64_failed": failed, "arm64": right.get("platform"),
                   "x86": left.get("platform")})
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["compare"]:
        log = Path(sys.argv[5]) if sys.argv[4:5] == ["--tests"] else None
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3]), log))
    else:
        sys.exit(__doc__)
