"""The benches: each starts on a fresh checkout, takes --check and --record, fails --check when a
figure misses its goal, records one row set per run; app_latency's docs writer keeps hand-written
text; bench/gpu_check.sh stops with a non-zero status at the first failing step."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import record
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py"))


def load_bench(name: str):
    """A fresh copy of bench/<name>.py, registered in sys.modules as dataclasses need."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
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
    if name != "record.py":  # the shared module, not a bench
        assert "--check" in done.stdout and "--record" in done.stdout


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
    assert f"at 71.2 M: {0.3 + 0.1 * at:.3f}" in lines[1] and "b +0.100 per decade" in lines[1]
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


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_missed_goal_fails_the_check_with_one_line_saying_by_how_much(capsys):
    met = [record.Figure("speedup", 5.0, at_least=4.0), record.Figure("seconds", 8.0, at_most=10.0),
           record.Figure("no goal", -1.0)]
    assert record.check(met) == 0
    assert "2 goal(s) met" in capsys.readouterr().err
    assert record.check(met + [record.Figure("start_s", 12.5, at_most=10.0)]) == 1
    assert capsys.readouterr().err.splitlines() == ["check: start_s = 12.5 missed its goal <= 10 by 2.5 (25%)"]
    assert record.Figure("speedup", 3.0, at_least=4.0).miss() == "check: speedup = 3 missed its goal >= 4 by 1 (25%)"


def test_record_appends_one_row_set_with_the_machine_fields(tmp_path, monkeypatch):
    monkeypatch.setenv(record.RESULTS_ENV, str(tmp_path))
    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "some_bench.py"), "--record"])
    args = argparse.Namespace(record=True, check=False)
    figures = [record.Figure("speedup", 5.0, at_least=4.0), record.Figure("seconds", 12.0, at_most=10.0),
               record.Figure("matmul", 99.0)]
    assert record.finish(args, "some_bench", figures, matmul=123.4) == 0  # --record alone never fails the run
    rows = read_rows(tmp_path / "some_bench.csv")
    assert list(rows[0]) == record.COLUMNS and len(rows) == 3
    assert [(r["figure"], r["goal"], r["met"]) for r in rows] == [("speedup", ">= 4", "true"),
                                                                  ("seconds", "<= 10", "false"), ("matmul", "", "")]
    for row in rows:
        assert row["command"] == "bench/some_bench.py --record" and row["matmul_gflops"] == "123.4"
        assert row["cpu_model"] and int(row["cores"]) >= 1 and row["torch_version"] == torch.__version__
    record.finish(args, "some_bench", figures[:1])
    rows = read_rows(tmp_path / "some_bench.csv")
    assert len(rows) == 4 and float(rows[-1]["matmul_gflops"]) > 0  # measured when the bench gave none
    (tmp_path / "other.csv").write_text("date,value\n")
    with pytest.raises(SystemExit, match="columns"):
        record.append_rows("other", figures, record.machine(1.0), "x")


def test_zoo_train_check_exits_1_when_a_goal_is_missed_and_the_record_holds_the_run(idx_dir, tmp_path, monkeypatch,
                                                                                      capsys):
    bench = load_bench("zoo_train")
    monkeypatch.setenv(record.RESULTS_ENV, str(tmp_path))
    monkeypatch.setattr(bench, "GOALS", {"cpu": {10: 1e6}, "cuda": {10: 1e6}})
    monkeypatch.setattr(sys, "argv", [str(ROOT / "bench" / "zoo_train.py"), "--models", "2", "--images", "20",
                                      "--repeats", "1", "--loop-models", "1", "--data-dir", str(idx_dir),
                                      "--check", "--record"])
    assert bench.main() == 1
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].startswith("stacked, batch 32: ")  # the printed lines are unchanged
    checked = [line for line in err.splitlines() if line.startswith("check:")]
    assert len(checked) == 1 and checked[0].startswith("check: stacked_vs_plain_batch10 = ")
    assert "missed its goal >= 1e+06 by" in checked[0]
    rows = read_rows(tmp_path / "zoo_train.csv")
    assert {r["figure"] for r in rows} == {"stacked_vs_plain_batch10", "stacked_vs_plain_batch32",
                                           "stacked_vs_plain_cpu_seconds_batch10", "stacked_vs_plain_cpu_seconds_batch32",
                                           "projected_zoo_minutes", "matmul_gflops"}
    assert len(rows) == 6 and len({r["date"] for r in rows}) == 1 and rows[0]["command"].endswith("--check --record")


def test_zoo_train_goals_follow_the_device():
    bench = load_bench("zoo_train")
    cpu = bench.bench_figures({10: (25.0, 1e-6, 20.0), 32: (3.5, 1e-6, 3.0)}, 35.0, "cpu", 200.0)
    assert [f.miss() for f in cpu if f.miss()] == ["check: stacked_vs_plain_batch32 = 3.5 missed its goal >= 4 by 0.5 (12%)"]
    assert bench.bench_figures({10: (60.0, 1e-6, 50.0)}, 20.0, "cuda", 1e4)[-2].met() is True
    assert record.check(bench.bench_figures({10: (60.0, 1e-6, 50.0)}, 40.0, "cuda", 1e4)) == 1


@pytest.mark.parametrize("goal, status", [(1e6, 1), (0.0, 0)])
def test_eval_throughput_check_follows_its_speedup_goal(goal, status, tmp_path, monkeypatch):
    bench = load_bench("eval_throughput")
    monkeypatch.setenv(record.RESULTS_ENV, str(tmp_path))
    monkeypatch.setattr(bench, "SPEEDUP_GOAL", {"cpu": goal})
    monkeypatch.setattr(sys, "argv", ["bench/eval_throughput.py", "--models", "2", "--images", "128", "--repeats", "1",
                                      "--check", "--record"])
    assert bench.main() == status
    rows = read_rows(tmp_path / "eval_throughput.csv")
    assert len(rows) == 9 and rows[0]["figure"] == "speedup" and rows[0]["met"] == ("false" if status else "true")


def test_app_latency_goals_are_the_medians_and_ratios():
    bench = load_app_latency()
    figures = fake_figures()
    assert record.check(bench.bench_figures(figures)) == 0  # medians 1.45 s / 10.0 s, ratios 4.0 and 1.5
    figures["start_to_overview"] = 12.0
    assert [f.name for f in bench.bench_figures(figures) if f.met() is False] == ["start_to_overview_s"]
    figures["sessions"] = 3  # the sessions goal is set for 4 sessions
    assert next(f for f in bench.bench_figures(figures) if f.name == "sessions_slowest_vs_one").met() is None


def test_ae_train_goal_is_the_paper_config_from_batch_128():
    bench = load_bench("ae_train")
    figures = bench.bench_figures([("seed", 128, 10.0), ("paper", 16, 10.0), ("paper", 128, 60.0)], 200.0)
    assert [(f.name, f.met()) for f in figures if f.met() is not None] == [("paper_batch128_matmul_percent", False)]


def shim(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("failing, step", [("", None), ("-c", "torch sees a CUDA device"), ("pytest", "tests on CUDA"),
                                           ("bench/zoo_train.py", "bench/zoo_train.py"),
                                           ("hyperrep.cli", "hyperrep sample --compare")])
def test_gpu_check_stops_at_the_first_failing_step(failing, step, tmp_path):
    """Every step through a stand-in python (and nvidia-smi) that fails the calls naming `failing`."""
    python = shim(tmp_path, "python", 'echo "python $*"\ncase " $* " in *" $SHIM_FAIL "*) exit 3;; esac\n')
    shim(tmp_path, "nvidia-smi", "echo 'Stand-in GPU, 80 GiB'\n")
    env = {**os.environ, "PYTHON": str(python), "SHIM_FAIL": failing or "-", "OUT": str(tmp_path / "out"),
           "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    if step is None:
        assert done.returncode == 0, done.stderr
        assert "gpu_check: every step passed" in done.stdout and "--check --record" in done.stdout
    else:
        assert done.returncode != 0 and f"gpu_check: FAILED (exit 3): {step}" in done.stderr + done.stdout
        assert "every step passed" not in done.stdout
