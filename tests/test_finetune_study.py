"""The fine-tuning study (hyperrep.pipeline.finetune_study): populations on validation-chosen
anchors, fine-tuned on nested data fractions, Δ against both B_T and the noise copies, the files
it writes, the command and the app's section, all on the tiny zoo."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import point_app_at
from streamlit.testing.v1 import AppTest

from hyperrep.ae.artifact import load_hyperrep
from hyperrep.cli import main
from hyperrep.evaluation.statistics import bootstrap_difference_ci
from hyperrep.pipeline import finetune_study
from hyperrep.pipeline.finetune_study import StudyConfig, fraction_subsets, run_study, study_anchors
from hyperrep.pipeline.finetune_study_files import study_of, study_summary
from hyperrep.sampling.baselines import scratch_baseline
from hyperrep.pipeline.tuning import ImageSplit, load_image_split, validation_anchor_rows, with_validation_accuracy
from hyperrep.zoo.format import Zoo

APP = Path(__file__).resolve().parent.parent / "app.py"
TINY_STUDY = dict(methods=["kde", "gaussian"], fractions=[0.1, 0.02], epochs=[2, 1], models=3, test_images=300,
                  validation_images=200, bootstrap_resamples=200)
FILES = {"study.csv", "study.md", "study.png", "members.csv", "study_config.json"}


@pytest.fixture(scope="module")
def study(tiny_hyperrep_path, idx_dir, tmp_path_factory):
    """The study on the tiny zoo (2 samplers, 2 fractions × 2 epochs, 3 models), with every
    fine-tuning call's training images recorded."""
    calls = []
    real = finetune_study.fine_tune_population

    def recording(weights, zoo, train, test, epochs, seed, **kwargs):
        calls.append((weights.clone(), train.images.clone(), len(test)))
        return real(weights, zoo, train, test, epochs, seed, **kwargs)

    out = tmp_path_factory.mktemp("study") / "tiny-study"
    patch = pytest.MonkeyPatch()
    patch.setattr(finetune_study, "fine_tune_population", recording)
    seen = []
    try:
        summary = run_study(tiny_hyperrep_path, out, StudyConfig(**TINY_STUDY), data_dir=idx_dir, command="tiny study",
                            progress=lambda done, total: seen.append((done, total)))
    finally:
        patch.undo()
    return {"summary": summary, "out": out, "calls": calls, "progress": seen}


def test_fraction_subsets_are_seeded_prefixes_of_one_permutation():
    part = np.arange(100, 300)
    subsets = fraction_subsets(part, [0.05, 0.2, 1.0], seed=3)
    assert [len(s) for s in subsets.values()] == [10, 40, 200]
    assert set(subsets[0.05]) < set(subsets[0.2]) < set(subsets[1.0]) == set(part)
    assert all((np.diff(s) > 0).all() for s in subsets.values())
    again = fraction_subsets(part, [0.2], seed=3)
    assert np.array_equal(again[0.2], subsets[0.2])
    assert not np.array_equal(fraction_subsets(part, [0.2], seed=4)[0.2], subsets[0.2])


def test_the_difference_ci_holds_the_difference_of_means():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.7, 0.02, 30), np.r_[rng.normal(0.6, 0.02, 30), np.nan]
    low, high = bootstrap_difference_ci(a, b, 2_000)
    assert low < a.mean() - np.nanmean(b) < high and 0.08 < low and high < 0.12
    assert np.isnan(bootstrap_difference_ci(a, np.array([np.nan]), 100)[0])


def test_the_study_writes_every_file_with_one_row_per_method_fraction_and_epoch(study):
    out, summary = study["out"], study["summary"]
    assert FILES <= {p.name for p in out.iterdir()}
    table = pd.read_csv(out / "study.csv")
    assert len(table) == 6 * 2 * 2 and list(table["method"].unique()) == list(summary["method"].unique())
    assert set(table["kind"]) == {"sampler", "B_F", "noise", "B_T zoo init", "B_T kaiming"}
    assert sorted(table["fraction"].unique()) == [0.02, 0.1] and sorted(table["epoch"].unique()) == [1, 2]
    assert (table["models"] == 3).all() and study["progress"][-1] == (12, 12)
    config = json.loads((out / "study_config.json").read_text())
    assert config["command"] == "tiny study" and config["epochs"] == [1, 2] and config["fractions"] == [0.02, 0.1]
    assert config["images"]["test"]["images"] == 300 and config["images"]["validation"]["images"] == 200
    text = (out / "study.md").read_text()
    assert "Command: `tiny study`" in text and "validation part" in text and "![accuracy while fine-tuning](study.png)" in text
    assert text.count("\n- ") == 2 * 2  # one generated reading per fraction and epoch
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"


def test_every_delta_is_the_method_mean_minus_the_baseline_mean(study):
    table = pd.read_csv(study["out"] / "study.csv")
    members = pd.read_csv(study["out"] / "members.csv")
    for (fraction, epoch), group in table.groupby(["fraction", "epoch"]):
        means = group.set_index("kind")["mean"]
        for stem, kind in (("kaiming", "B_T kaiming"), ("zoo_init", "B_T zoo init"), ("noise", "noise")):
            own = group[group["kind"] != kind]
            np.testing.assert_allclose(own[f"delta_{stem}"], own["mean"] - means[kind], atol=1e-5)
            assert (own[f"delta_{stem}_lo"] <= own[f"delta_{stem}"] + 1e-6).all()
            assert (own[f"delta_{stem}"] <= own[f"delta_{stem}_hi"] + 1e-6).all()
            assert group.loc[group["kind"] == kind, f"delta_{stem}"].isna().all()  # no Δ against itself
        for _, row in group.iterrows():
            picked = members[(members["method"] == row["method"]) & np.isclose(members["fraction"], fraction)]
            assert row["mean"] == pytest.approx(picked[f"acc_epoch_{epoch}"].mean(), abs=1e-5)
    samplers = table[table["kind"] == "sampler"]
    assert samplers["p_vs_kaiming"].between(0, 1).all() and (samplers["p_holm"] >= samplers["p_vs_kaiming"] - 1e-12).all()
    assert table.loc[table["kind"] != "sampler", "p_holm"].isna().all()


def test_every_population_fine_tunes_on_the_same_nested_images_per_fraction(study):
    calls = study["calls"]
    assert len(calls) == 6 * 2 and all(n_test == 300 for _, _, n_test in calls)
    by_size: dict[int, list[torch.Tensor]] = {}
    for _, images, _ in calls:
        by_size.setdefault(len(images), []).append(images)
    assert len(by_size) == 2 and all(len(v) == 6 for v in by_size.values())
    for images in by_size.values():
        assert all(torch.equal(images[0], other) for other in images[1:])
    small, large = (by_size[k][0].flatten(1) for k in sorted(by_size))
    assert all((large == row).all(dim=1).any() for row in small)  # the smaller fraction lies in the larger


def test_the_kaiming_b_t_differs_from_the_zoos_init(study, tiny_zoo):
    kaiming = study["calls"][5][0]  # populations in order: 2 samplers, B_F, noise, B_T zoo init, B_T kaiming
    assert torch.equal(kaiming, scratch_baseline(tiny_zoo, 3, 42, init="kaiming_uniform").weights)
    assert torch.equal(study["calls"][4][0], scratch_baseline(tiny_zoo, 3, 42).weights)
    zoo_drawn, standard = scratch_baseline(tiny_zoo, 12, 42), scratch_baseline(tiny_zoo, 12, 42, init="kaiming_uniform")
    assert not torch.equal(zoo_drawn.weights, standard.weights)  # the tiny zoo draws U(0, 1) for some seeds
    labels = list(study["summary"]["method"].unique())
    assert labels[-1] == "B_T (kaiming_uniform)" and labels[-2].startswith("B_T (zoo's init:")


def test_the_anchors_are_chosen_on_validation_images_whatever_the_test_images(tiny_hyperrep_path, idx_dir):
    hyperrep = load_hyperrep(tiny_hyperrep_path)
    zoo = Zoo.load(hyperrep.zoo_path)
    split = load_image_split(zoo, 200, 300, idx_dir)
    rows, scored = study_anchors(hyperrep.latent_table, zoo, split, 0.3)
    noise = torch.Generator().manual_seed(0)
    other_test = split.test.subset(torch.randperm(len(split.test), generator=noise)[:50])
    other_test = dataclasses.replace(other_test, labels=torch.randint(0, 10, (50,), generator=noise))
    other = ImageSplit(split.validation, other_test, split.validation_source, "shuffled")
    assert np.array_equal(study_anchors(hyperrep.latent_table, zoo, other, 0.3)[0], rows)
    expected = validation_anchor_rows(with_validation_accuracy(hyperrep.latent_table, zoo, split.validation), 0.3)
    assert np.array_equal(rows, expected) and scored["val_acc"].notna().any()


def test_a_committed_study_is_found_by_its_hyperrep_and_read_back(study, tiny_hyperrep_path, tmp_path):
    assert study_of(tiny_hyperrep_path, study["out"].parent) == study["out"]
    assert study_of(tmp_path / "other", study["out"].parent) is None and study_of(tiny_hyperrep_path, tmp_path) is None
    table = study_summary(study["out"])
    assert len(table) == 6 * 2 and list(table.columns[:2]) == ["training images", "method"]
    assert {"epoch 1 (%)", "Δ vs B_T kaiming, epoch 2 (pp)"} <= set(table.columns)
    assert (table.loc[table["method"] == "B_T (kaiming_uniform)", "Δ vs B_T kaiming, epoch 1 (pp)"] == "–").all()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "study.csv").write_text("method,mean\nx,0.5\n")
    with pytest.raises(Exception, match="not a fine-tuning study table"):
        study_summary(broken)


@pytest.mark.parametrize("flags, message", [
    (["--methods", "kde", "nope"], "unknown: nope"),
    (["--fractions", "0.1", "0.1"], "fractions must be distinct"),
    (["--methods", "kde", "kde"], "methods repeat"),
])
def test_the_command_refuses_bad_settings_before_writing_anything(flags, message, tiny_hyperrep_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["finetune-study", "--hyperrep", str(tiny_hyperrep_path), "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("flags", [["--fractions", "1.5"], ["--fractions", "0"], ["--epochs", "-1"], ["--models", "0"]])
def test_the_command_refuses_bad_numbers_as_argument_errors(flags, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["finetune-study", "--out", str(tmp_path / "out"), *flags])
    assert exit_.value.code == 2 and not (tmp_path / "out").exists()


def test_the_command_refuses_a_missing_hyperrep(tmp_path, capsys):
    assert main(["finetune-study", "--hyperrep", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert "hyperrep: error" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_fine_tune_page_shows_the_committed_study_or_says_there_is_none(study, monkeypatch, tmp_path,
                                                                            tiny_zoo_path, tiny_hyperrep_path, idx_dir):
    point_app_at(monkeypatch, tmp_path, zoo=tiny_zoo_path, model=tiny_hyperrep_path, data=idx_dir)
    monkeypatch.setenv("HYPERREP_REPORTS", str(tmp_path / "none"))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception, at.exception
    assert any("No committed fine-tuning study" in c.value for c in at.caption)
    monkeypatch.setenv("HYPERREP_REPORTS", str(study["out"].parent))
    at.run()
    assert not at.exception, at.exception
    shown = at.dataframe[0].value
    assert list(shown["method"]) == list(study_summary(study["out"])["method"])
    assert any("tiny-study/study.md" in m.value for m in at.markdown)
    assert any("one panel per amount of fine-tuning data" in m.value for m in at.markdown)
    assert any("Sample a population first" in i.value for i in at.info)  # the live comparison still waits for samples
