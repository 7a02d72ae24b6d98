"""The docs a user reads stay complete: every module in the README's table, every cited note in
the repository, the app-latency block between its markers, the README's summary quoting only
numbers of its report table."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*ROOT.glob("hyperrep/**/*.py"), *ROOT.glob("pages/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("tests/*.py"),
           ROOT / "app.py", *ROOT.glob("docs/*.md"), ROOT / "README.md"]


def module_table() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("| step | subpackage | modules | what it holds |")
    return text[start: text.index("\n\n", start)]


def test_the_readme_module_table_names_every_subpackage_and_module():
    table = module_table()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"\| `hyperrep\.([a-z_]+)` \| ([^|]*) \|", table)}
    package = ROOT / "hyperrep"
    for folder in sorted(p for p in package.iterdir() if (p / "__init__.py").is_file()):
        assert folder.name in rows, f"hyperrep.{folder.name} is missing from the README's table"
        named = set(re.findall(r"`([a-z_]+)`", rows[folder.name]))
        modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        assert named == modules, f"hyperrep.{folder.name}: the table names {sorted(named)}, the folder holds {sorted(modules)}"


def test_no_file_cites_notes_that_are_not_in_the_repository():
    outside = re.compile(r"paper-notes|DESIGN\.md")
    citing = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES if p.name != "test_docs.py"
              for n, line in enumerate(p.read_text().splitlines(), start=1) if outside.search(line)]
    assert not citing, f"cite docs/formats.md (or the paper) instead of notes outside the repository: {citing}"


def test_the_formats_doc_covers_every_artifact_the_package_names():
    formats = (ROOT / "docs" / "formats.md").read_text()
    for name in ("zoo.json", "weights.safetensors", "models.parquet", "partial/", "config.json", "model.safetensors",
                 "latents.safetensors", "projection.safetensors", "metrics.json", "checkpoint/", "samples.csv",
                 "source.key", "result.json", "params.json", "config_ae.json", "checkpoint_ae.pt", "HYPERREP_IMPORT_CACHE"):
        assert name in formats, f"docs/formats.md does not describe {name}"


def test_the_app_latency_block_is_generated_between_its_markers():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    start, end = "<!-- app-latency:start", "<!-- app-latency:end -->"
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)
    block = text[text.index(start): text.index(end)]
    assert "`bench/app_latency.py" in block and re.search(r"sessions \d+ x \d+ models: slowest results", block)


def test_the_readme_summary_cites_only_numbers_of_the_report_table():
    """The hand-written "In short" readings under the README's report block quote numbers with a
    CI; each must be in the table above it (a Δ as its cell shows it, an accuracy as `mean ± std
    [low, high]`), so a regenerated report that moves a number makes this fail until the reading
    is rewritten."""
    text = (ROOT / "README.md").read_text().replace("−", "-")
    block = text[text.index("<!-- report:start"): text.index("<!-- report:end -->")]
    start = text.index("In short (every number from the table above")
    summary = text[start: text.index("\n\n", start)]
    deltas = re.findall(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", summary)
    accuracies = re.findall(r"(\d+\.\d) % \[(\d+\.\d), (\d+\.\d)\]", summary)
    assert len(deltas) >= 10 and len(accuracies) >= 5, "the summary's cited numbers were not found"
    missing = [d for d in deltas if d not in block]
    missing += [f"{m} % [{lo}, {hi}]" for m, lo, hi in accuracies
                if not re.search(rf"\| {re.escape(m)} ± \d+\.\d \[{re.escape(lo)}, {re.escape(hi)}\] \|", block)]
    assert not missing, f"README summary numbers not in the report table: {missing}"
