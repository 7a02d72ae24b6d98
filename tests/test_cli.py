"""Bad input to the `hyperrep` command: abbreviated options, counts that are negative or too large
for the machine's memory, and a folder of the wrong kind each end in one clear line and write nothing."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from hyperrep.cli import build_parser, main
from hyperrep.io.files import ArtifactError
from hyperrep.pipeline import artifacts
from hyperrep.runtime import memory

ROOT = Path(__file__).resolve().parent.parent
HYPERREP, ZOO = ROOT / "data" / "hyperrep", ROOT / "data" / "zoo"
PAPER = Path(__file__).parent / "fixtures" / "paper"

if not (ZOO / "zoo.json").is_file() or not (HYPERREP / "model.safetensors").is_file():
    pytest.skip("the default artifacts (data/zoo, data/hyperrep) are not in this checkout", allow_module_level=True)


def all_parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from all_parsers(sub)


@pytest.fixture()
def small_memory(tmp_path, monkeypatch):
    """/proc/meminfo replaced by one that says 1 GiB is available."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       4194304 kB\nMemFree:         524288 kB\nMemAvailable:   1048576 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", meminfo)
    return meminfo


def parse_error(argv: list[str], capsys) -> str:
    """argparse's error (exit status 2) for `argv`, as stderr shows it."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_no_parser_takes_abbreviations():
    parsers = list(all_parsers(build_parser()))
    assert len(parsers) == 11  # hyperrep, zoo and its 4 commands, train, sample, report, transfer, finetune-study
    assert all(p.allow_abbrev is False for p in parsers), [p.prog for p in parsers if p.allow_abbrev]


@pytest.mark.parametrize("argv, abbreviation", [
    (["sample", str(HYPERREP), "--n", "-5"], "--n"),  # once read as --no-evaluate, with OUT = "-5"
    (["sample", str(HYPERREP), "out", "--no-eval"], "--no-eval"),
    (["sample", str(HYPERREP), "out", "--model", "5"], "--model"),
    (["report", "--hyperrep", str(HYPERREP), "--fine-tune-model", "4"], "--fine-tune-model"),
    (["transfer", str(HYPERREP), "digits", "--test", "5"], "--test"),
    (["zoo", "build", "config.json", "out", "--work", "2"], "--work"),
])
def test_abbreviated_options_are_argparse_errors_and_write_nothing(argv, abbreviation, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert f"error: unrecognized arguments: {abbreviation}" in parse_error(argv, capsys)
    assert list(tmp_path.iterdir()) == []


def test_the_model_count_has_a_long_name_and_must_be_positive(tmp_path, capsys):
    parser = build_parser()
    assert parser.parse_args(["sample", "H", "O", "-n", "7"]).n == 7
    assert parser.parse_args(["sample", "H", "O", "--models", "7"]).n == 7
    for bad in ("-5", "0"):
        err = parse_error(["sample", str(HYPERREP), str(tmp_path / "out"), "-n", bad], capsys)
        assert f"argument -n/--models: must be at least 1, got {bad}" in err
    assert "expected a whole number, got 'many'" in parse_error(["report", "--models", "many"], capsys)
    assert parser.parse_args(["report", "--fine-tune-models", "0"]).fine_tune_models == 0  # 0: all of them
    assert not (tmp_path / "out").exists()


def test_available_memory_comes_from_meminfo_else_sysconf(small_memory, tmp_path, monkeypatch):
    assert memory.available_bytes() == 1024 ** 3
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "missing")
    monkeypatch.setattr(memory.os, "sysconf", lambda name: {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}[name])
    assert memory.available_bytes() == 4_096_000
    assert [memory.format_bytes(b) for b in (512, 1536, 23 * 1024 ** 3, 985.6e9)] == ["512 bytes", "1.5 KiB", "23 GiB",
                                                                                    "918 GiB"]


def test_a_count_past_the_available_memory_is_refused_in_one_line(small_memory):
    memory.check_models_fit("-n 1000", 1000, 2464)  # 9.4 MiB: fits
    with pytest.raises(memory.TooLarge) as err:
        memory.check_models_fit("-n 1000000", 1_000_000, 2464)
    assert str(err.value) == ("-n 1000000: 1,000,000 models × 2,464 weights need at least 9.2 GiB; "
                              "this machine has 1.0 GiB available")


def test_every_command_taking_a_model_count_checks_it_first(small_memory, tmp_path, capsys):
    out, no_data = tmp_path / "out", str(tmp_path / "no-data")  # without the check each fails fast on the data
    config = tmp_path / "build.json"
    config.write_text(json.dumps({"n_models": 100_000, "epochs": 5}))
    commands = {
        "-n 1000000: 1,000,000 models × 2,464 weights need at least 9.2 GiB":
            ["sample", str(HYPERREP), str(out), "-n", "1000000", "--data-dir", no_data],
        "--models 100000 in 26 populations, --frontier-models 40 in 17: 2,600,680 models":
            ["report", "--hyperrep", str(HYPERREP), "--ablation", str(tmp_path / "none"), "--models", "100000",
             "--out", str(out), "--data-dir", no_data],
        "--models 100000 in 6 populations: 600,000 models":
            ["transfer", str(HYPERREP), no_data, "--models", "100000", "--out", str(out)],
        f"{config}: n_models 100000: 100,000 models × 6 saved epochs × 2,464 weights need at least 5.5 GiB":
            ["zoo", "build", str(config), str(out), "--data-dir", no_data],
    }
    for message, argv in commands.items():
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hyperrep: error: {message}") and "this machine has 1.0 GiB available" in err, err
        assert len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_a_zoo_given_as_the_hyper_representation_says_so(tmp_path, capsys):
    assert main(["sample", str(ZOO), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{ZOO}: this is a hyperrep zoo, not a hyper-representation" in err
    assert "such as data/hyperrep" in err and f"`hyperrep train {ZOO} OUT`" in err
    assert "file not found" not in err and not (tmp_path / "out").exists()
    with pytest.raises(ArtifactError, match="this is a hyperrep zoo, not a hyper-representation; use"):
        artifacts.load_any_hyperrep(ZOO)  # the app's loader says the same


@pytest.mark.parametrize("argv", [["zoo", "info", str(HYPERREP)], ["train", str(HYPERREP), "OUT"],
                                  ["zoo", "export", str(HYPERREP), "OUT", "--modelzoo"]])
def test_a_hyper_representation_given_as_the_zoo_says_so(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{HYPERREP}: this is a hyperrep hyper-representation, not a zoo; use a zoo folder (zoo.json)" in err
    assert f"(this one was trained on {ZOO})" in err and list(tmp_path.iterdir()) == []
    with pytest.raises(ArtifactError, match="not a zoo; use a zoo folder"):
        artifacts.load_any_zoo(HYPERREP)


def test_a_paper_folder_samples_with_its_own_zoo(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYPERREP_IMPORT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "mnist"
    shutil.copytree(PAPER / "hyper_reps" / "mnist", folder)
    out = tmp_path / "out"
    assert main(["sample", str(folder), str(out), "--method", "gaussian", "--anchors", "all", "-n", "3",
                 "--data-dir", str(PAPER / "zoos" / "mnist"), "--test-images", "50"]) == 0
    assert "3 models from gaussian" in capsys.readouterr().out
    assert (out / "weights.safetensors").is_file()


def test_a_zoo_build_of_no_models_is_refused(tmp_path, capsys):
    config = tmp_path / "build.json"
    config.write_text(json.dumps({"n_models": 0}))
    assert main(["zoo", "build", str(config), str(tmp_path / "out")]) == 2
    assert "n_models must be a whole number of at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
