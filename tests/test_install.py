"""Installed, not only editable: `pip install` of the package into a fresh virtual environment, then the command
and the app find the default artifacts from the checkout, and say where to point them elsewhere.

The fresh environment has no system site-packages and gets hyperrep only from the wheel pip builds
of a copy of the source. Its third-party dependencies (torch and the rest, too large to install
per test run, and nothing may be downloaded) come from this interpreter's site-packages through a
plain path line in a .pth file: a plain line adds the folder but runs none of its .pth hooks, so
the editable hyperrep of the development environment stays invisible (checked below).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

if not (ROOT / "data" / "zoo" / "zoo.json").is_file() or not (ROOT / "data" / "hyperrep" / "model.safetensors").is_file():
    pytest.skip("the default artifacts (data/zoo, data/hyperrep) are not in this checkout", allow_module_level=True)


def clean_env() -> dict[str, str]:
    """The environment without any HYPERREP_* variable (so only the defaults are in play)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HYPERREP_") and k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with hyperrep installed by `pip install <copy of the source>`."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "hyperrep", source / "hyperrep", ignore=shutil.ignore_patterns("__pycache__"))
    venv.create(root / "venv", with_pip=True, system_site_packages=False)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    # `pip install .` in two steps: the wheel is built with this environment's setuptools (the fresh
    # venv's bundled one is too old to build wheels and nothing may be downloaded), then installed.
    quiet = ["--quiet", "--no-deps", "--no-index", "--disable-pip-version-check"]
    subprocess.run([sys.executable, "-m", "pip", "wheel", *quiet, "--no-build-isolation", "-w", str(root / "dist"),
                    str(source)], check=True, env=clean_env(), cwd=root, capture_output=True, timeout=600)
    wheel = next((root / "dist").glob("hyperrep-*.whl"))
    subprocess.run([python, "-m", "pip", "install", *quiet, str(wheel)], check=True, env=clean_env(), cwd=root,
                   capture_output=True, timeout=600)
    return root / "venv" / "bin"


def run(command: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300)


def test_the_installed_package_is_the_one_imported(installed, tmp_path):
    found = run([installed / "python", "-c", "import hyperrep; print(hyperrep.__file__)"], tmp_path)
    assert found.returncode == 0, found.stderr
    assert str(installed.parent) in found.stdout and str(ROOT) not in found.stdout


def test_hyperrep_zoo_info_finds_the_default_zoo_from_the_checkout(installed):
    info = run([installed / "hyperrep", "zoo", "info"], ROOT)
    assert info.returncode == 0, info.stderr
    assert "models 200" in info.stdout and str(ROOT / "data" / "zoo") in info.stdout


def test_hyperrep_elsewhere_says_where_to_point_it(installed, tmp_path):
    info = run([installed / "hyperrep", "zoo", "info"], tmp_path)
    assert info.returncode == 2
    assert f"{tmp_path / 'data' / 'zoo'}: no zoo here; pass PATH or set HYPERREP_ZOO" in info.stderr
    report = run([installed / "hyperrep", "report", "--out", str(tmp_path / "r")], tmp_path)
    assert report.returncode == 2 and "pass --hyperrep or set HYPERREP_MODEL" in report.stderr
    pointed = subprocess.run([installed / "hyperrep", "zoo", "info"], cwd=tmp_path, capture_output=True, text=True,
                             env=clean_env() | {"HYPERREP_HOME": str(ROOT)}, timeout=300)
    assert pointed.returncode == 0 and "models 200" in pointed.stdout


APP_CHECK = """
import sys
sys.path.insert(0, sys.argv[1])  # what `streamlit run app.py` does: the app's folder comes first
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout=240).run()
assert not at.exception, at.exception
print("ERRORS:", [e.value for e in at.sidebar.error])
print("CAPTIONS:", [c.value for c in at.sidebar.caption])
"""


def test_the_app_from_the_checkout_finds_the_default_artifacts(installed, tmp_path):
    found = run([installed / "python", "-P", "-c", APP_CHECK, str(ROOT)], ROOT)
    assert found.returncode == 0, found.stderr[-2000:]
    assert "ERRORS: []" in found.stdout and "200 models" in found.stdout and "latent dim" in found.stdout
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    for name in ("app.py", "pages"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, elsewhere / name)
    moved = subprocess.run([installed / "python", "-P", "-c", APP_CHECK.replace("sys.path.insert(0, sys.argv[1])", "sys.path.insert(0, '.')"),
                            str(elsewhere)], cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert "no zoo here; set HYPERREP_ZOO" in moved.stdout and "set HYPERREP_MODEL" in moved.stdout
