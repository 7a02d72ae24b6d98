"""The shipped-artifact list, the sidebar picker built on it, and the two-zoo lesson page, on an
artifacts folder with a tiny shared-start zoo (and its hyper-representation) and a tiny seed zoo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import point_app_at
from streamlit.testing.v1 import AppTest

from hyperrep.ae.config import TrainConfig
from hyperrep.ae.model import ModelConfig
from hyperrep.ae.train import train_hyperrep
from hyperrep.io.files import ArtifactError
from hyperrep.pipeline.artifacts import HYPERREP, ZOO, dataset_source
from hyperrep.pipeline.experiment import QUICK_IMAGES
from hyperrep.pipeline.report_files import report_budget_differences, report_choices, report_of, report_summary
from hyperrep.pipeline.shipped import BUILDING, load_zoo, shipped_artifacts, shipped_pairs
from hyperrep.zoo.build import BuildConfig, build_zoo
from hyperrep.zoo.format import Zoo
from hyperrep.zoo.references import zoo_references

APP = Path(__file__).resolve().parent.parent / "app.py"
SEED_REPORT = APP.parent / "docs" / "report-seed"
TINY = dict(n_models=8, epochs=1, train_images=600, train_metric_images=200, test_images=300, batch_size=32,
            learning_rate=3e-3, model_split=[0.5, 0.25, 0.25])


@pytest.fixture(scope="module")
def shelf(tmp_path_factory, idx_dir) -> Path:
    """An artifacts folder: shared-start zoo + its hyper-representation, a seed zoo, and clutter."""
    root = tmp_path_factory.mktemp("shelf")
    build_zoo(BuildConfig(name="tiny-shared", init_families=1, **TINY), root / "shared", data_dir=idx_dir, workers=1)
    build_zoo(BuildConfig(name="tiny-seed", init="uniform", **TINY), root / "seed", data_dir=idx_dir, workers=1)
    config = TrainConfig(model=ModelConfig(d_model=16, n_heads=2, n_blocks=1, d_ff=32, latent_dim=8), epochs=1,
                         batch_size=4, eval_images=50, final_eval_images=50, map_method="pca")
    train_hyperrep(root / "shared", root / "shared-hyperrep", config, data_dir=idx_dir)
    (root / "unfinished" / "partial").mkdir(parents=True)  # a build that has not finished a model yet
    with pytest.raises(Stop):
        build_zoo(BuildConfig(name="tiny-building", init="uniform", **{**TINY, "n_models": 12}), root / "building",
                  data_dir=idx_dir, workers=1, progress=stop_after(8))
    (root / "images").mkdir()
    (root / "notes.txt").write_text("not an artifact")
    return root


class Stop(Exception):
    pass


def stop_after(models: int):
    """A progress callback that stops a build once `models` models are written (a killed build)."""
    def progress(done, total):
        if done >= models:
            raise Stop
    return progress


@pytest.fixture()
def app_env(monkeypatch, shelf, idx_dir, tmp_path):
    monkeypatch.setenv("HYPERREP_ARTIFACTS", str(shelf))
    point_app_at(monkeypatch, tmp_path, zoo=shelf / "shared", model=shelf / "shared-hyperrep", data=idx_dir)


def test_shipped_artifacts_are_the_zoos_and_hyperreps_with_their_zoo(shelf):
    found = {a.path.name: a for a in shipped_artifacts(shelf)}
    assert set(found) == {"shared", "seed", "shared-hyperrep", "building"}
    written = len(list((shelf / "building" / "partial").glob("model_*.safetensors")))
    assert found["building"].kind == BUILDING and found["building"].name == f"tiny-building (building: {written} of 12 models)"
    partial = load_zoo(shelf / "building")
    assert 8 <= partial.n_models == written < 12 and partial.path == shelf / "building"
    assert partial.manifest["build"]["init"] == "uniform" and sum(map(len, partial.splits.values())) == written
    assert load_zoo(shelf / "seed").n_models == 8
    assert found["shared"].kind == ZOO and found["shared"].name == "tiny-shared" and found["shared"].zoo is None
    assert found["shared-hyperrep"].kind == HYPERREP and found["shared-hyperrep"].zoo == (shelf / "shared").resolve()
    pairs = {p.label: p for p in shipped_pairs(shelf)}
    assert set(pairs) == {"shared + shared-hyperrep", "seed (zoo only)"}
    assert pairs["shared + shared-hyperrep"].hyperrep == shelf / "shared-hyperrep"
    assert pairs["seed (zoo only)"].hyperrep is None
    assert shipped_artifacts(shelf / "missing") == []


def test_the_sidebar_picker_loads_a_shipped_zoo(app_env, shelf):
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="shipped_pair")
    assert picker.value == "shared + shared-hyperrep"  # the loaded paths are a shipped pair
    picker.set_value("seed (zoo only)").run()
    assert not at.exception, at.exception
    assert at.text_input(key="zoo_path").value == str(shelf / "seed")
    assert at.text_input(key="model_path").value == str(shelf / "shared-hyperrep")  # kept: the seed zoo has none
    assert any("tiny-seed: 8 models" in c.value for c in at.sidebar.caption)
    at.text_input(key="zoo_path").set_value(str(shelf / "shared")).run()
    assert at.selectbox(key="shipped_pair").value == "shared + shared-hyperrep"


TUNING = {"images": {"validation": {"images": 2000, "source": "v"}, "test": {"images": 2000, "source": "t"}},
          "anchor_fraction": 0.1, "anchors": 147, "sampler_params": {"kde": {"bandwidth": 0.2}, "gmm": {"n_components": 8}},
          "frontier_sigmas": [0.01, 1.04], "step_sizes": {"guided": {"5": 1.0, "10": 0.3}}, "budgets": [5, 10]}


def committed_report(root: Path, hyperrep: str) -> Path:
    """A report folder under `root` naming `hyperrep`, with the seed report's committed table."""
    folder = root / "report-x"
    folder.mkdir(parents=True)
    shutil.copy(SEED_REPORT / "report.csv", folder / "report.csv")
    (folder / "tuning.json").write_text(json.dumps(TUNING))
    pd.DataFrame({"comparison": ["guided − weight steps (same decoded starts)"] * 2, "a": "guided",
                  "b": "weights from decoded", "budget": [5, 10], "epoch": 0, "difference": [0.012, -0.034],
                  "difference_lo": [-0.01, -0.05], "difference_hi": [0.03, -0.02], "difference_p": [0.3, 0.001]}
                 ).to_csv(folder / "budget_differences.csv", index=False)
    (folder / "report_config.json").write_text(json.dumps({"hyperrep": hyperrep, "seed": 42}))
    return folder


def test_a_committed_report_is_found_by_its_hyperrep_and_read_at_both_epochs(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERREP_HOME", str(tmp_path))
    folder = committed_report(tmp_path / "docs", "data/seed-hyperrep")
    assert report_of(tmp_path / "data" / "seed-hyperrep") == folder  # relative names: against the artifact root
    assert report_of(tmp_path / "data" / "hyperrep") is None and report_of(tmp_path / "x", tmp_path / "none") is None
    raw = pd.read_csv(folder / "report.csv")
    box = raw["method"].str.startswith("S_U box") & (raw["epoch"] == 0)
    raw.loc[box, ["frontier_delta", "frontier_delta_lo", "frontier_delta_hi"]] = np.nan  # beyond every reference's reach
    raw.to_csv(folder / "report.csv", index=False)
    table = report_summary(folder).set_index("method")
    legacy = next(m for m in table.index if m.startswith("S_KDE (kde_legacy"))
    rows = raw[raw["method"] == legacy].set_index("epoch")
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    pp = lambda v: f"{100 * v:+.1f}"  # noqa: E731
    kde = table.loc[legacy]
    for epoch, name in ((0, "zero-shot"), (1, "after 1 epochs")):
        r = rows.loc[epoch]
        assert kde[f"{name} (%)"] == f"{pct(r['mean'])} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]"
        assert kde[f"Δ {name} (pp)"] == f"{pp(r['frontier_delta'])} [{pp(r['frontier_delta_lo'])}, {pp(r['frontier_delta_hi'])}]"
    np.testing.assert_equal(kde["distance to train models"], round(float(rows.loc[0].get("distance_train_median", np.nan)), 2))
    assert kde["distance to any checkpoint"] == round(rows.loc[0, "distance_median"], 2)
    assert list(table.columns)[-2:] == ["distance to train models", "distance to any checkpoint"]
    beyond = raw[(raw["epoch"] == 0) & raw["frontier_delta"].isna() & (raw["kind"] != "frontier")]["method"]
    assert len(beyond) == 1 and all(table.loc[m, "Δ zero-shot (pp)"] == "–" for m in beyond)
    choices = report_choices(folder).set_index("choice")["chosen"]
    assert choices["anchors"] == "top 10% of the train rows by validation accuracy (147 rows)"
    assert choices["kde bandwidth"] == "0.2" and choices["gmm n_components"] == "8" and choices["noise σ reach"] == "1.04"
    assert choices["step size: guided"] == "1 at 5 steps, 0.3 at 10 steps"
    assert choices["images"] == "chosen on 2,000 validation images, reported on 2,000 test images"
    differences = report_budget_differences(folder)
    assert differences["Δ difference, pp [95 % CI]"].tolist() == ["+1.2 [-1.0, +3.0]", "-3.4 [-5.0, -2.0]"]
    (folder / "tuning.json").unlink()
    assert report_choices(folder) is None
    (folder / "report.csv").write_text("method,mean\nx,0.5\n")
    with pytest.raises(ArtifactError, match="not a report table.*kind"):
        report_summary(folder)


def test_the_two_zoo_page_shows_both_zoos_references_and_the_map(app_env, shelf, idx_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERREP_REPORTS", str(tmp_path / "reports"))
    committed_report(tmp_path / "reports", str(shelf / "shared-hyperrep"))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.switch_page("pages/two_zoos.py").run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Two zoos"
    assert at.selectbox(key="two_zoos_left").value == "shared" and at.selectbox(key="two_zoos_right").value == "building"
    assert any("build in progress" in c.value for c in at.caption)
    at.selectbox(key="two_zoos_right").set_value("seed").run()
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    values = [m.value for m in at.metric]
    mean_values = [v for label, v in zip(labels, values) if label == "mean model's accuracy"]
    for name, shown in zip(("shared", "seed"), mean_values):
        zoo = Zoo.load(shelf / name)
        images = dataset_source(zoo.manifest).rule.load("test", idx_dir).first(QUICK_IMAGES)
        expected = zoo_references(zoo, [zoo.epochs[-1]], images, components=(32,))
        assert shown == f"{expected['mean_model']['acc_reconstructed']:.1%}"
    assert len(mean_values) == 2 and "seed zoo: each model from its own uniform initialisation" in \
        "\n".join(c.value for c in at.caption)
    assert [c.proto.id.rsplit("-", 1)[-1] for c in at.get("plotly_chart")] == ["two_zoos_map_left"]
    assert any("No shipped hyper-representation of this zoo yet" in i.value for i in at.info)
    # the shared zoo's hyper-representation: its held-out rebuilds against the nearest train model, live
    from hyperrep.ae.artifact import load_hyperrep
    from hyperrep.evaluation.heldout import heldout_reconstruction

    zoo = Zoo.load(shelf / "shared")
    images = dataset_source(zoo.manifest).rule.load("test", idx_dir).first(QUICK_IMAGES)
    expected = heldout_reconstruction(load_hyperrep(shelf / "shared-hyperrep"), zoo, images, resamples=1000)
    shown = dict(zip(labels, values))
    assert shown["autoencoder's rebuild: same predictions"] == f"{expected['agreement']['rebuilt'][0]:.1%}"
    assert shown["nearest train model, trained epochs: same predictions"] == f"{expected['agreement']['nearest'][0]:.1%}"
    assert any(c.value.startswith("Rebuilt − nearest:") and "--heldout" in c.value for c in at.caption)
    # and the committed report made from it (only the shared zoo's hyper-representation has one)
    assert len(at.dataframe) == 3  # the table, the choices, the step-budget comparisons
    shown_table = at.dataframe[0].value.set_index("method")
    expected = report_summary(tmp_path / "reports" / "report-x").set_index("method")
    assert shown_table.equals(expected)
    assert at.dataframe[1].value.equals(report_choices(tmp_path / "reports" / "report-x"))
    assert any("What sampling from shared-hyperrep gives" in m.value for m in at.markdown)


def test_the_committed_data_folder_stays_within_100_mb():
    """data/ may hold 100 MB (10^8 bytes) in all: the files git tracks there, checkpoints excluded."""
    import subprocess

    root = APP.parent
    listed = subprocess.run(["git", "ls-files", "-z", "data"], cwd=root, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    sizes = {name: (root / name).stat().st_size for name in listed.stdout.split("\0") if (root / name).is_file()}
    assert sizes and sum(sizes.values()) <= 100_000_000, f"data/ holds {sum(sizes.values()) / 1e6:.1f} MB"
