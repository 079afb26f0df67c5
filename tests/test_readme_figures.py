"""Every figure the README and docs/ quote is held by a results file that a committed script wrote.

A block (paragraph, list or table) names its source as `benchmarks/results/NAME.json`; a table takes the source
of the paragraph right before it, and nothing else is inherited: a block with figures and no source fails.
Every measured-looking number in a block (one with a decimal point, or followed by a unit) must equal, at the
precision shown, a value in the files it cites, at the scale its unit implies (a % is a fraction or a percent;
ms are ms or seconds; MB are MB, bytes or MiB; x is a ratio as it is). A block marked "historical: commit
<hash>" (figures from a run that cannot be repeated here, e.g. on a GPU) is exempt, and so is a table right
after it. Numbers inside `code` are commands and options, not figures. A test below changes figures in a copy
and checks that the check notices.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITED = re.compile(r"benchmarks/results/([\w.-]+\.(?:json|yaml))")
HISTORICAL = re.compile(r"historical[^|]{0,80}?commit ([0-9a-f]{7,40})")
FIGURE = re.compile(r"(?<![\w./-])([-+]?\d[\d,]*\.\d+(?:e[-+]?\d+)?|\d[\d,]*)"
                    r"(\s?%|x\b|\s?ms\b|\s?MiB\b|\s?MB\b|\s?GB\b|\s?G\b|\s?s\b)?")
# The scales a figure may be shown at, by its unit: what is stored, times a scale, prints as the figure.
UNIT_SCALES = {"": (1.0,), "%": (100.0, 1.0), "x": (1.0,), "ms": (1.0, 1000.0), "s": (1.0, 1e-3),
               "MB": (1.0, 1e-6, 2.0**-20), "MiB": (1.0, 2.0**-20), "GB": (1.0, 1e-9, 2.0**-30), "G": (1e-9, 1.0)}
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


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """(block, results files it draws on): what it cites, or for a table, what the paragraph right before cites."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    out: list[tuple[str, list[str]]] = []
    previous: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        sources = CITED.findall(block) or (previous if block.lstrip().startswith("|") else [])
        out.append((block, sources))
        previous = sources
    return out


def shown(value: float, token: str, unit: str = "") -> bool:
    """Whether `value`, at a scale `unit` allows, prints as `token` (0.5312 as 0.53, 0.945 as 94.5 %,
    7.42e9 multiply-adds as 7.42 G, 5.96e-06 as 6.0e-06)."""
    target = abs(float(token))
    scales = UNIT_SCALES[unit]
    if "e" in token:  # scientific: compare the printed mantissa
        digits = len(token.split("e")[0].split(".")[1])
        return any(f"{abs(value) * scale:.{digits}e}" == f"{target:.{digits}e}" for scale in scales)
    decimals = len(token.split(".")[1]) if "." in token else 0
    return any(round(abs(value) * scale, decimals) == target for scale in scales)


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


def results_values() -> dict[str, set[float]]:
    return {path.name: numbers(load(path), set()) for path in RESULTS.iterdir() if path.suffix in (".json", ".yaml")}


# "2.27-3.64 s", "99.5 / 98.2 / 87.0%", "0.5 to 30 s": the unit after a range or series is every member's
RANGE_UNIT = re.compile(r"(?:\s?(?:-|–|/|to)\s?[\d.,]+)+(\s?%|x\b|\s?ms\b|\s?MiB\b|\s?MB\b|\s?GB\b|\s?G\b|\s?s\b)")


def unit_of(match: re.Match, text: str) -> str:
    """A figure's unit: its own, or that of the range or series it opens."""
    if match.group(2):
        return match.group(2).strip()
    shared = RANGE_UNIT.match(text, match.end())
    return shared.group(1).strip() if shared else ""


def checked(match: re.Match, text: str) -> bool:
    """Whether a FIGURE match is a measured-looking figure (not a plain count, nor whole seconds of a setting)."""
    token, unit = match.group(1), unit_of(match, text)
    return ("." in token or bool(unit)) and not (unit == "s" and "." not in token)


def block_misses(block: str, sources: list[str], values: dict[str, set[float]]) -> list[str]:
    """The figures of one block that no results file it cites holds, each with where it stands."""
    unknown = [s for s in sources if s not in values]
    assert not unknown, f"a page cites results files that do not exist: {unknown}"
    pool = set().union(*(values[s] for s in sources)) if sources else set()
    prose = re.sub(r"`[^`]*`", "", block)
    exempt = exempt_spans(prose)
    missing = []
    for m in FIGURE.finditer(prose):
        if not checked(m, prose) or any(a <= m.start() < b for a, b in exempt):
            continue
        token, unit = m.group(1).replace(",", "").lstrip("+"), unit_of(m, prose)
        if not any(shown(v, token, unit) for v in pool):
            where = prose[max(0, m.start() - 50) : m.end() + 10].replace("\n", " ")
            why = f"sources {sources}" if sources else "the block cites no results file"
            missing.append(f"{m.group(0)!r} ({why}): ...{where}...")
    return missing


def checked_blocks(text: str) -> list[tuple[str, list[str]]]:
    """The blocks the check covers: all but historical ones (and the table right after one)."""
    out, historical = [], False
    for block, sources in blocks(text):
        historical = bool(HISTORICAL.search(block)) or (historical and block.lstrip().startswith("|"))
        if not historical:
            out.append((block, sources))
    return out


def unheld_figures(text: str, values: dict[str, set[float]]) -> list[str]:
    return [miss for block, sources in checked_blocks(text) for miss in block_misses(block, sources, values)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_every_figure_is_in_the_results_file_it_cites(document):
    missing = unheld_figures(document.read_text(), results_values())
    assert not missing, f"{document.name}: figures no cited results file holds:\n" + "\n".join(missing)


def test_the_check_notices_a_changed_figure():
    """Checked figures of every page, changed in a copy (the last digit moved by 3), must mostly be reported: the
    old check (any file, any scale) let most such changes through. Not all are caught: a figure is compared with
    every value of the file it cites, not with one place in it, so a two-digit figure in a file of thousands of
    numbers (a bench report's table) can land on another value by chance."""
    values = results_values()
    changed = caught = 0
    for document in DOCUMENTS:
        for block, sources in checked_blocks(document.read_text()):
            prose = re.sub(r"`[^`]*`", "", block)
            exempt = exempt_spans(prose)
            for m in FIGURE.finditer(prose):
                if not checked(m, prose) or any(a <= m.start() < b for a, b in exempt):
                    continue
                end = m.end(1)
                altered = prose[: end - 1] + str((int(prose[end - 1]) + 3) % 10) + prose[end:]
                changed += 1
                caught += len(block_misses(altered, sources, values)) > len(block_misses(prose, sources, values))
    assert changed > 100  # the pages quote hundreds of measured figures
    print(f"{caught} of {changed} changed figures noticed")
    assert caught >= 0.75 * changed, f"{changed - caught} of {changed} changed figures went unnoticed"


@pytest.mark.parametrize("token, value, ok", [("0.53", 0.5312, True), ("0.53", 0.536, False),
                                             ("19.4", 19.44, True), ("19.4", 19.46, False),
                                             ("6.0e-06", 5.96e-6, True), ("6.0e-06", 6.6e-6, False)])
def test_a_figure_matches_only_at_the_precision_shown(token, value, ok):
    assert shown(value, token) is ok


@pytest.mark.parametrize("token, unit, value, ok", [("94.5", "%", 0.945, True), ("45", "%", 45.0, True),
                                                   ("45", "ms", 0.045, True), ("45", "ms", 45e-6, False),
                                                   ("0.45", "", 45.0, False), ("1.5", "x", 0.015, False),
                                                   ("2.0", "MB", 2_000_000, True), ("2.0", "MB", 2 * 2**20, True),
                                                   ("2.0", "MB", 0.002, False), ("7.42", "G", 7.42e9, True)])
def test_a_figure_matches_only_at_the_scale_its_unit_implies(token, unit, value, ok):
    assert shown(value, token, unit) is ok


def test_the_historical_marker_needs_a_commit():
    assert HISTORICAL.search("How it was built (historical: commit a6af8ad, scripts/build_demo.sh)")
    assert not HISTORICAL.search("figures from training runs are marked historical with their commit")
