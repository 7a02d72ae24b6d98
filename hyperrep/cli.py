"""The `hyperrep` command: the same API the app uses, from a terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hyperrep.files import ArtifactError


class TqdmProgress:
    """A `progress(done, total)` callback that drives one tqdm bar."""

    def __init__(self, description: str):
        self.bar = None
        self.description = description

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit="model", dynamic_ncols=True)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_zoo_build(args: argparse.Namespace) -> None:
    from hyperrep.zoo_build import BuildConfig, build_zoo

    config = BuildConfig.from_file(args.config)
    progress = TqdmProgress(f"training zoo {config.name}")
    zoo = build_zoo(config, args.out, data_dir=args.data_dir, workers=args.workers, progress=progress)
    progress.close()
    print_zoo_info(zoo)


def cmd_zoo_info(args: argparse.Namespace) -> None:
    from hyperrep.zoo import Zoo

    print_zoo_info(Zoo.load(args.path))


def print_zoo_info(zoo) -> None:
    dropped = zoo.manifest.get("dropped", {})
    print(f"zoo {zoo.name} at {zoo.path}")
    print(f"  architecture {zoo.architecture.name} ({zoo.architecture.n_params} parameters), activation {zoo.activation}")
    print(f"  dataset {zoo.manifest.get('dataset', {}).get('name', '?')}")
    print(f"  models {zoo.n_models}, saved epochs {zoo.epochs}")
    print("  splits " + ", ".join(f"{k} {len(v)}" for k, v in zoo.splits.items()))
    if dropped:
        print("  dropped " + ", ".join(f"{k} {v}" for k, v in dropped.items() if not k.endswith("_ids")))
    print("  test accuracy per saved epoch:")
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print("    " + zoo.summary().to_string().replace("\n", "\n    "))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperrep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    zoo = commands.add_parser("zoo", help="build, import or inspect a model zoo").add_subparsers(dest="zoo_command", required=True)
    build = zoo.add_parser("build", help="train a zoo from a JSON config (resumes if OUT has a partial build)")
    build.add_argument("config", type=Path)
    build.add_argument("out", type=Path)
    build.add_argument("--data-dir", type=Path, default=None, help="folder of IDX files (default: HYPERREP_DATA or Debian's Fashion-MNIST)")
    build.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    build.set_defaults(run=cmd_zoo_build)
    info = zoo.add_parser("info", help="models, epochs, parameters and accuracy quantiles of a zoo")
    info.add_argument("path", type=Path)
    info.set_defaults(run=cmd_zoo_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ArtifactError, ValueError, KeyError) as err:
        print(f"hyperrep: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
