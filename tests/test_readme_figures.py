"""Every figure the README quotes is held by a results file that a committed script wrote (issue #14).

A README block (paragraph or table) names its source as `benchmarks/results/NAME.json`; a block that names none
takes the source of the block before it in the same section. Every measured-looking number in the block (one
with a decimal point, or followed by %, x, ms or MB) must equal, at the precision shown, a value in that file
(or 100 times one, for percentages). A block marked "historical: commit <hash>" (figures from a run that cannot
be repeated here, e.g. on a GPU) is exempt, and so is a table right after it. Numbers inside `code` are commands
and options, not figures.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CITED = re.compile(r"benchmarks/results/([\w.-]+\.(?:json|yaml))")
HISTORICAL = re.compile(r"historical[^|]{0,80}?commit ([0-9a-f]{7,40})")
FIGURE = re.compile(r"(?<![\w./-])([-+]?\d[\d,]*\.\d+(?:e[-+]?\d+)?|\d[\d,]*)(\s?%|x\b|\s?ms\b|\s?MB\b)?")
# Phrases in the README whose numbers are settings, goals or facts, not measurements, each with why.
NOT_FIGURES = {
    "Python 3.10": "the minimum Python version",
    "onnxruntime** (1.18 or later": "the minimum onnxruntime version",
    "44.1 kHz": "a sample rate a test uses",
    "12.7 s utterance": "the length of an utterance a test feeds",
    "0.5 s probe": "the probe's length, a constant of the runtime (PROBE_SECONDS)",
    "95.2M parameters": "the size of the wav2vec2-base layout",
    "at 0.5, 1, 3.3 and 7 s": "the clip lengths the export verifies at",
    "goal (4x": "issue #13's goal",
    "pauses 0.8-2.5 s": "how the endpoint benchmark spaces its sentences",
}
SCALES = (1.0, 100.0, 1e-3, 1e-6, 1e-9)  # as stored; percent; k, M, G (e.g. multiply-adds shown in G)


def numbers(value, out: set[float]) -> set[float]:
    if isinstance(value, bool):
        return out
    if isinstance(value, int | float):
        out.add(float(value))
    elif isinstance(value, dict):
        for v in value.values():
            numbers(v, out)
    elif isinstance(value, list):
        for v in value:
            numbers(v, out)
    elif isinstance(value, str):  # figures inside recorded text (a machine line, a missed clip's description)
        out.update(float(m) for m in re.findall(r"-?\d+(?:\.\d+)?", value))
    return out


def load(path: Path):
    return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())


def blocks() -> list[tuple[str, list[str]]]:
    """(block text without code, results files it draws on), in README order."""
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    out, sources = [], []
    for block in re.split(r"\n\s*\n", text):
        if block.lstrip().startswith("#"):
            sources = []
        sources = CITED.findall(block) or sources
        out.append((block, sources))
    return out


def shown(value: float, token: str) -> bool:
    """Whether `value`, or a unit scaling of it, prints as `token` (0.5312 as 0.53, 0.945 as 94.5 for a
    percentage, 7.42e9 multiply-adds as 7.42 G, 5.96e-06 as 6.0e-06)."""
    target = abs(float(token))
    if "e" in token:  # scientific: compare the printed mantissa
        digits = len(token.split("e")[0].split(".")[1])
        return f"{abs(value):.{digits}e}" == f"{target:.{digits}e}"
    decimals = len(token.split(".")[1]) if "." in token else 0
    return any(round(abs(value) * scale, decimals) == target for scale in SCALES)


def exempt_spans(block: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for phrase in NOT_FIGURES for m in re.finditer(re.escape(phrase), block)]


def test_every_results_file_records_how_it_was_made():
    for path in sorted(RESULTS.glob("*.json")):
        data = load(path)
        if isinstance(data, dict) and "historical" in data:
            assert HISTORICAL.search(data["historical"]), f"{path.name}: historical without its commit"
            continue
        machine = "machine" in data or "device" in data  # edge-ser bench reports describe the device in full
        assert isinstance(data, dict) and machine and {"command", "date"} <= set(data), \
            f"{path.name} does not record the command, machine and date of its run"


def test_every_readme_figure_is_in_the_results_file_it_cites():
    values = {path.name: numbers(load(path), set()) for path in RESULTS.iterdir() if path.suffix in (".json", ".yaml")}
    missing, historical = [], False
    for block, sources in blocks():
        historical = bool(HISTORICAL.search(block)) or (historical and block.lstrip().startswith("|"))
        if historical:
            continue
        unknown = [s for s in sources if s not in values]
        assert not unknown, f"README cites results files that do not exist: {unknown}"
        pool = set().union(*(values[s] for s in sources)) if sources else set().union(*values.values())
        prose = re.sub(r"`[^`]*`", "", block)
        exempt = exempt_spans(prose)
        for m in FIGURE.finditer(prose):
            token = m.group(1).replace(",", "").lstrip("+")
            if ("." not in token and not m.group(2)) or any(a <= m.start() < b for a, b in exempt):
                continue
            if not any(shown(v, token) for v in pool):
                where = prose[max(0, m.start() - 50) : m.end() + 10].replace("\n", " ")
                missing.append(f"{m.group(0)!r} (sources {sources or 'any'}): ...{where}...")
    assert not missing, "README figures no results file holds:\n" + "\n".join(missing)


@pytest.mark.parametrize("token, value, ok", [("0.53", 0.5312, True), ("94.5", 0.945, True), ("0.53", 0.536, False),
                                             ("19.4", 19.44, True), ("19.4", 19.46, False), ("7.42", 7.42e9, True),
                                             ("6.0e-06", 5.96e-6, True), ("6.0e-06", 6.6e-6, False)])
def test_a_figure_matches_only_at_the_precision_shown(token, value, ok):
    assert shown(value, token) is ok


def test_the_historical_marker_needs_a_commit():
    assert HISTORICAL.search("How it was built (historical: commit a6af8ad, scripts/build_demo.sh)")
    assert not HISTORICAL.search("figures from training runs are marked historical with their commit")
