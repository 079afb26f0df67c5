"""Mutation testing of the runtime's decision code with mutmut: which one-token changes does the suite not notice?

mutmut (configured in pyproject.toml, [tool.mutmut]) mutates edge_ser/policy.py, classifier.py, engine.py,
manifest.py and profile.py (stop rules, planning, sessions and hash checks, manifest and profile checks) and
runs, for each mutant, the runtime tests that reach the mutated function. The tiny test models are exported
once into benchmarks/.cache/test-models and reused (EDGE_SER_TEST_MODELS), so each mutant costs a test run, not
an export. Writes benchmarks/results/mutation.json: counts per file and outcome, and every surviving mutant
with its diff and, where one is written below, why it is harmless.

    python scripts/mutation.py [--max-children 2]     # hours on 2 cores (manifest.py's mutants rerun most tests)
    python scripts/mutation.py --report               # only rewrite the results file from mutmut's last run
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import Counter
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import save  # noqa: E402

MODELS = ROOT / "benchmarks" / ".cache" / "test-models"
MUTMUT = [sys.executable, "-m", "mutmut"]

# Surviving mutants that change nothing observable, by the shape of their diff: (pattern on the mutated line, why).
EQUIVALENT = [
    (r"np\.clip\(probabilities, 1e-12, None\)", "probabilities never exceed 1: clipping above 1 changes nothing"),
    (r"probabilities\[1\]\.shape\[0\]", "every exit has the same number of clips"),
    (r"^\s*log\.(info|debug|warning)\(", "a log line's text"),
    (r"\b1001 \* \(time\.perf_counter\(\)", "a timing's unit (ms) off by 0.1%: below any timing's noise"),
    (r"np\.quantile\(values, np\.linspace\(0, 1, 401\)\)|values\.size (>= 400|> 401)",
     "thinning 400+ candidate thresholds to 400 or 401 quantiles: the same candidates within a quantile step"),
    (r"range\(len\(probabilities\) \+ 1, 0, -1\)", "patience beyond the number of exits never stops early"),
]
# Whole functions whose mutants mutmut cannot switch on, by mutant name: (pattern, why).
BY_NAME = [
    (r"\.x__shipped_demo__", "runs once at import (DEFAULT_MODEL), before mutmut switches a mutant on; both of its "
                             "paths are tested (source tree, and the installed wheel in tests/test_device.py)"),
]


def build_models(env: dict) -> None:
    """Export the tiny test models once (the tests that use both fixtures)."""
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                    "tests/test_runtime.py::test_pcm_stereo_is_scaled_before_its_channels_are_averaged",
                    "tests/test_runtime.py::test_exit_3_never_opens_later_files"], cwd=ROOT, env=env, check=True)


def outcomes() -> dict[str, str]:
    out = subprocess.run(MUTMUT + ["results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(re.findall(r"^\s*(\S+): (.+)$", out.stdout, flags=re.M))


def diff(name: str) -> list[str]:
    out = subprocess.run(MUTMUT + ["show", name], cwd=ROOT, capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]


STRING = re.compile(r"""(?:[rbfu]*)("[^"]*"|'[^']*')""")


def why_harmless(lines: list[str], name: str = "") -> str | None:
    """A reason the mutant changes nothing that matters, or None (then it is a gap in the tests to look at)."""
    for pattern, why in BY_NAME:
        if re.search(pattern, name):
            return why
    before = [line[1:] for line in lines if line.startswith("-")]
    after = [line[1:] for line in lines if line.startswith("+")]
    for pattern, why in EQUIVALENT:
        if any(re.search(pattern, line) for line in after):
            return why
    # Only the wording of an error or log message changed: tests match the part of a message that names the
    # value and the rule (match=...), not every word.
    if len(before) == len(after) == 1 and STRING.sub('""', before[0]) == STRING.sub('""', after[0]):
        if re.search(r"Error\(|raise |warn|log\.|message|^\s*f?[\"']", before[0]):
            return "the wording of a message"
    return None


def report() -> dict:
    results = outcomes()
    files = Counter()
    for name, status in results.items():
        files[(name.split(".x")[0], status)] += 1
    survivors = []
    for name, status in sorted(results.items()):
        if status == "survived":
            lines = diff(name)
            survivors.append({"mutant": name, "diff": lines, "harmless_because": why_harmless(lines, name)})
    summary = {
        "mutmut": version("mutmut"),
        "mutants": len(results),
        "by_outcome": dict(Counter(results.values())),
        "by_file": {f"{module} {status}": n for (module, status), n in sorted(files.items())},
        "survived": len(survivors),
        "survived_unexplained": sum(s["harmless_because"] is None for s in survivors),
        "survivors": survivors,
    }
    save("mutation", summary)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--report", action="store_true", help="only write the results file from the last run")
    args = parser.parse_args()
    env = os.environ | {"EDGE_SER_TEST_MODELS": str(MODELS)}
    if not args.report:
        build_models(env)
        subprocess.run(MUTMUT + ["run", "--max-children", str(args.max_children)], cwd=ROOT, env=env)
    summary = report()
    print(f"{summary['mutants']} mutants: {summary['by_outcome']}; survived {summary['survived']}, "
          f"of which unexplained {summary['survived_unexplained']}")
    for s in summary["survivors"]:
        if s["harmless_because"] is None:
            print(s["mutant"], *s["diff"], sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
