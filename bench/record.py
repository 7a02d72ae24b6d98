"""What every bench shares: the machine it ran on, `--check` against its goals, `--record` to a CSV.

A bench measures its figures, wraps each in a `Figure` (with a goal where the bench states one)
and its main returns `finish(args, "zoo_train", figures)`, the exit status. `--record` appends one row
per figure to docs/bench-results/<bench>.csv (or to $HYPERREP_BENCH_RESULTS/<bench>.csv), each row
with the date, the machine and the command line, so a figure quoted in the docs can be traced to
the run that gave it. `--check` makes the bench exit 1, with one line per missed goal, when a
measured figure misses its goal; that line and the record's go to stderr, so the bench's own
printed lines stay as they were. Benches import this as `record` (python puts bench/ first on
sys.path when it runs a script there; the tests add it through pytest's `pythonpath`). Run on its
own, it prints the machine fields.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench-results"
RESULTS_ENV = "HYPERREP_BENCH_RESULTS"
MACHINE_FIELDS = ["cpu_model", "cores", "torch_threads", "torch_version", "matmul_gflops", "gpu", "load_1min"]
COLUMNS = ["date", "bench", "figure", "value", "goal", "met", *MACHINE_FIELDS, "command"]


@dataclass(frozen=True)
class Figure:
    """One measured number; `at_least` / `at_most` is the bench's goal for it (None: no goal)."""

    name: str
    value: float
    at_least: float | None = None
    at_most: float | None = None

    def goal(self) -> str:
        if self.at_least is not None:
            return f">= {self.at_least:g}"
        return "" if self.at_most is None else f"<= {self.at_most:g}"

    def met(self) -> bool | None:
        """True or False against the goal; None when the figure has no goal."""
        if self.at_least is not None:
            return self.value >= self.at_least
        return None if self.at_most is None else self.value <= self.at_most

    def miss(self) -> str | None:
        """The line saying by how much the figure missed its goal, or None if it did not."""
        if self.met() is not False:
            return None
        goal = self.at_least if self.at_least is not None else self.at_most
        short = abs(goal - self.value)
        share = f" ({short / abs(goal):.0%})" if goal else ""
        return f"check: {self.name} = {self.value:.4g} missed its goal {self.goal()} by {short:.4g}{share}"


def matmul_gflops(device: torch.device | str = "cpu", size: int = 2048, seconds: float = 0.5,
                  repeats: int = 3) -> float:
    """The machine's fp32 matmul rate: the best of at least `repeats` size² products, timed for
    about `seconds` after one untimed product. The best, not the mean, because neighbours on a
    shared machine only ever slow a product down."""
    device = torch.device(device)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    out = a @ b
    best, count, deadline = float("inf"), 0, time.perf_counter() + seconds
    while count < repeats or time.perf_counter() < deadline:
        synchronize(device)
        began = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        best, count = min(best, time.perf_counter() - began), count + 1
    return 2 * size**3 / best / 1e9


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


def machine(matmul: float | None = None, device: torch.device | str = "cpu") -> dict[str, str | int | float]:
    """The machine fields of a record; `matmul` reuses a rate the bench measured itself, else a
    brief measurement (half a second) on `device`, the one the bench ran on."""
    return {"cpu_model": cpu_model(), "cores": os.cpu_count() or 0, "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "matmul_gflops": round(matmul if matmul is not None else matmul_gflops(device), 1),
            "gpu": gpu_name(), "load_1min": round(os.getloadavg()[0], 2)}


def add_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The two options every bench takes."""
    parser.add_argument("--check", action="store_true",
                        help="exit 1 (one line per miss, on stderr) when a figure misses the bench's goal")
    parser.add_argument("--record", action="store_true",
                        help=f"append the figures to docs/bench-results/<bench>.csv (folder: ${RESULTS_ENV})")
    return parser


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or RESULTS)


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed, the script relative to the repository where it lies in it."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    if script.is_relative_to(ROOT):
        argv[0] = str(script.relative_to(ROOT))
    return shlex.join(argv)


def append_rows(bench: str, figures: list[Figure], fields: dict, command: str, folder: Path | None = None) -> Path:
    """Append one row per figure to <folder>/<bench>.csv (a header first when the file is new);
    a file with other columns is refused rather than mixed."""
    path = (folder or results_dir()) / f"{bench}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != COLUMNS:
            raise SystemExit(f"{path} has the columns {header}, not {COLUMNS}: move it aside")
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for figure in figures:
            met = figure.met()
            writer.writerow({"date": date, "bench": bench, "figure": figure.name, "value": f"{figure.value:.6g}",
                             "goal": figure.goal(), "met": "" if met is None else str(met).lower(),
                             **fields, "command": command})
    return path


def check(figures: list[Figure]) -> int:
    """Print a line to stderr per missed goal; 1 if any goal was missed, else 0."""
    misses = [line for line in (figure.miss() for figure in figures) if line]
    goals = sum(figure.met() is not None for figure in figures)
    for line in misses:
        print(line, file=sys.stderr)
    if not misses:
        print(f"check: {goals} goal(s) met" if goals else "check: no figure of this run has a goal", file=sys.stderr)
    return 1 if misses else 0


def finish(args: argparse.Namespace, bench: str, figures: list[Figure], matmul: float | None = None,
           device: torch.device | str = "cpu") -> int:
    """What `--record` and `--check` ask for, in that order (a missed goal is recorded too); the
    bench's exit status. `matmul` and `device` as for `machine`."""
    if getattr(args, "record", False):
        if figures:
            path = append_rows(bench, figures, machine(matmul, device), command_line())
            print(f"record: {len(figures)} figure(s) appended to {path}", file=sys.stderr)
        else:
            print("record: this run measured no figure to record", file=sys.stderr)
    return check(figures) if getattr(args, "check", False) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Print the machine fields a bench's --record writes.")
    parser.parse_args()
    for name, value in machine().items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
