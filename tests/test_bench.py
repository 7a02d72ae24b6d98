"""The benches: each starts on a fresh checkout, and app_latency's docs writer keeps hand-written text."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py"))


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_app_latency():
    return load_bench("app_latency")


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_starts_and_explains_itself(name):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / name), "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def fake_figures() -> dict:
    def timing(first, results):
        return {"first": first, "results": results}

    return {
        "models": 100, "session_models": 30, "sessions": 4, "busy": 1, "max_threads": "2", "start_to_overview": 4.0,
        "quiet": [(1.0, timing(1.5, 9.0)), (1.2, timing(1.4, 11.0))],
        "busy_runs": [(2.0, timing(2.0, 14.0)), (2.1, timing(2.5, 16.0))],
        "one_session": [(1.0, timing(0.5, 2.0)), (1.0, timing(0.6, 3.0))],
        "many_sessions": [(1.5, [timing(1, 5.0), timing(1, 9.0), timing(1, 7.0), timing(1, 8.0)]),
                          (1.5, [timing(1, 6.0), timing(1, 11.0), timing(1, 10.0), timing(1, 4.0)])],
    }


def test_the_last_lines_are_the_sharing_ratios_from_medians():
    lines = load_app_latency().report_lines(fake_figures(), "bench/app_latency.py --sessions 4 --busy 1")
    # slowest per round 9 and 11 -> median 10; one session 2 and 3 -> 2.5; busy 14, 16 -> 15; quiet 9, 11 -> 10
    assert lines[-2:] == ["sessions 4 x 30 models: slowest results 10.0 s = 4.0 x one session",
                          "busy 1: results 15.0 s = 1.5 x quiet"]
    assert "`bench/app_latency.py --sessions 4 --busy 1`" in lines[0]


def test_write_docs_replaces_only_the_marked_block(tmp_path):
    bench = load_app_latency()
    docs = tmp_path / "benchmarks.md"
    docs.write_text(f"# Benchmarks\n\n## App latency\n\nHand-written intro.\n\n{bench.DOCS_START}\nold figures\n"
                    f"{bench.DOCS_END}\n\nHand-written reading of the figures.\n\n## Next section\n\nkept\n")
    bench.write_docs(["| new | table |", "", "sessions 4 x 30 models: ..."], docs)
    text = docs.read_text()
    assert "old figures" not in text and "| new | table |" in text
    for kept in ("Hand-written intro.", "Hand-written reading of the figures.", "## Next section\n\nkept\n"):
        assert kept in text
    bench.write_docs(["second"], docs)
    assert docs.read_text().count(bench.DOCS_START) == 1 and "| new | table |" not in docs.read_text()
    fresh = tmp_path / "fresh.md"
    bench.write_docs(["first"], fresh)
    assert bench.DOCS_START in fresh.read_text() and "first" in fresh.read_text()


def test_zoo_train_bench_ends_with_the_two_goal_lines(idx_dir):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "zoo_train.py"), "--models", "4", "--images", "40",
                           "--repeats", "1", "--loop-models", "1", "--data-dir", str(idx_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-2:]
    assert last[0].startswith("stacked, batch 10: ") and " x the plain loop" in last[0]
    assert last[1].startswith("stacked, batch 32: ") and " x the plain loop" in last[1]
    assert "max abs weight difference" in done.stdout


def test_the_scaling_study_shrinks_only_the_train_split(tiny_zoo_path, tmp_path):
    from hyperrep.zoo.format import Zoo

    study = load_bench("seed_ae_scaling")
    whole = Zoo.load(tiny_zoo_path)
    fewer = Zoo.load(study.study_zoo(3, source=tiny_zoo_path, work=tmp_path))
    assert fewer.splits["train"] == whole.splits["train"][:3]
    assert fewer.splits["val"] == whole.splits["val"] and fewer.splits["test"] == whole.splits["test"]
    for model_id in fewer.splits["val"] + fewer.splits["train"]:
        row, source_row = fewer.rows_of([model_id])[0], whole.rows_of([model_id])[0]
        assert torch.equal(fewer.weights[row], whole.weights[source_row])
    assert study.study_zoo(None, source=tiny_zoo_path) == tiny_zoo_path


def test_the_size_fit_extrapolates_a_straight_line_in_log_parameters(tmp_path):
    study = load_bench("seed_ae_scaling")
    rows = ["run,parameters,test_prediction_agreement,test_rsq,train_rsq"]
    for run, params in zip(study.SIZE_RUNS, (1e6, 1e7, 1e8)):
        decades = math.log10(params) - 6
        rows.append(f"{run},{params},{0.3 + 0.1 * decades},{0.2 + 0.2 * decades},{0.5}")
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    lines = study.size_fit(tmp_path / "runs.csv")
    at = math.log10(study.AUTHORS_PARAMETERS) - 6
    assert f"at 71.2 M: {0.3 + 0.1 * at:.3f}" in lines[1] and f"b +0.100 per decade" in lines[1]
    assert f"at 71.2 M: {0.2 + 0.2 * at:.3f}" in lines[2]


def test_the_ablation_table_pairs_the_arms_by_seed(tmp_path):
    study = load_bench("seed_ae_scaling")
    keys = ["train_rsq", "test_rsq", "test_prediction_agreement", "test_acc_ratio_above_threshold"]
    rows = ["run," + ",".join(keys)]
    for offset, runs in zip((0.1, 0.0), study.ABLATION.values()):  # LWLN 0.1 above MSE at every seed
        for seed, run in enumerate(runs):
            rows.append(f"{run}," + ",".join(str(0.5 + 0.05 * seed + offset) for _ in keys))
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    lines = study.ablation_table(tmp_path / "runs.csv")
    assert lines[2].startswith("| LWLN | 0.650 [") and lines[3].startswith("| plain MSE | 0.550 [")
    assert lines[4] == "| LWLN − MSE (paired by seed) | " + " | ".join(["0.100 [0.100, 0.100]"] * 4) + " |"
    (tmp_path / "runs.csv").write_text("\n".join(rows[:-1]) + "\n")
    assert study.ablation_table(tmp_path / "runs.csv")[0].startswith("ablation: needs every run")


def test_a_recorded_row_must_come_from_the_runs_settings(tiny_hyperrep_path, tmp_path):
    study = load_bench("seed_ae_scaling")
    with pytest.raises(SystemExit, match="other settings than run shipped-e150 .*epochs.*model"):
        study.record_run("shipped-e150", tiny_hyperrep_path, tmp_path / "runs.csv")
    assert not (tmp_path / "runs.csv").exists()
