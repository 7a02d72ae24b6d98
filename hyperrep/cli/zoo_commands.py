"""`hyperrep zoo build | import | export | info`."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from hyperrep.cli.common import TqdmProgress, default_artifact, epoch_list
from hyperrep.runtime import settings


def cmd_zoo_build(args: argparse.Namespace) -> None:
    from hyperrep.nets.cnn import get_architecture
    from hyperrep.runtime.memory import check_models_fit
    from hyperrep.zoo.build import BuildConfig, build_zoo

    config = BuildConfig.from_file(args.config)
    check_models_fit(f"{args.config}: n_models {config.n_models}", config.n_models,
                     get_architecture(config.architecture).n_params, epochs=len(config.saved_epochs()))
    progress = TqdmProgress(f"training zoo {config.name}")
    if args.ray is not None:
        from hyperrep.zoo.ray_build import build_zoo_on_ray

        zoo = build_zoo_on_ray(config, args.out, address=args.ray or None, data_dir=args.data_dir,
                               cpus_per_chunk=args.cpus_per_chunk, progress=progress)
    else:
        zoo = build_zoo(config, args.out, data_dir=args.data_dir, workers=args.workers, progress=progress)
    progress.close()
    print_zoo_info(zoo)


def cmd_zoo_import(args: argparse.Namespace) -> None:
    from hyperrep.paper.importing import import_paper_dataset, looks_like_paper_dataset, paper_datasets_in
    from hyperrep.zoo.public_import import import_modelzoo

    epochs = sorted({e for part in args.epochs for e in part}) if args.epochs else None
    if looks_like_paper_dataset(args.modelzoo_dir):
        single = args.modelzoo_dir.is_file() or (args.modelzoo_dir / "dataset.pt").is_file()
        sources = [(args.modelzoo_dir, args.out)] if single else [
            (folder, args.out / folder.name) for folder in paper_datasets_in(args.modelzoo_dir)]
        for source, out in sources:  # an unzipped hyper_reps/ gives one zoo per dataset: OUT/<dataset>
            zoo, paper_report = import_paper_dataset(source, out, activation=args.activation,
                                                     dataset=args.dataset, epochs=epochs)
            print("\n".join(paper_report.lines()))
            print_zoo_info(zoo)
        return
    progress = TqdmProgress(f"importing {args.modelzoo_dir.name}")
    zoo, report = import_modelzoo(
        args.modelzoo_dir, args.out, architecture=args.architecture, activation=args.activation,
        dataset=args.dataset, epochs=epochs, weight_threshold=args.weight_threshold, progress=progress,
    )
    progress.close()
    print("\n".join(report.lines()))
    print_zoo_info(zoo)


def cmd_zoo_export(args: argparse.Namespace) -> None:
    from hyperrep.pipeline.artifacts import load_our_zoo
    from hyperrep.zoo.export import export_modelzoo

    if not args.modelzoo:
        raise ValueError("zoo export: name the layout to write; there is one: --modelzoo")
    zoo = load_our_zoo(args.zoo)
    progress = TqdmProgress(f"exporting {zoo.name}")
    out = export_modelzoo(zoo, args.out, progress=progress)
    progress.close()
    print(f"{zoo.n_models} models x {len(zoo.epochs)} epochs written to {out} in the Model Zoo layout")


def cmd_zoo_info(args: argparse.Namespace) -> None:
    from hyperrep.pipeline.artifacts import load_our_zoo

    print_zoo_info(load_our_zoo(default_artifact(args.path, settings.default_zoo_path(), "zoo", "HYPERREP_ZOO", "PATH")))



def print_zoo_info(zoo) -> None:
    dropped = zoo.manifest.get("dropped", {})
    print(f"zoo {zoo.name} at {zoo.path}")
    print(f"  architecture {zoo.architecture.name} ({zoo.architecture.n_params} parameters), activation {zoo.activation}")
    print(f"  dataset {zoo.manifest.get('dataset', {}).get('name', '?')}")
    print(f"  models {zoo.n_models}, saved epochs {zoo.epochs}")
    print("  splits " + ", ".join(f"{k} {len(v)}" for k, v in zoo.splits.items()))
    if dropped:
        print("  dropped " + ", ".join(f"{k} {v}" for k, v in dropped.items() if isinstance(v, int)))
    print("  test accuracy per saved epoch:")
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print("    " + zoo.summary().to_string().replace("\n", "\n    "))




def add_zoo_commands(commands) -> None:

    zoo = commands.add_parser("zoo", help="build, import, export or inspect a model zoo").add_subparsers(dest="zoo_command", required=True)
    build = zoo.add_parser("build", help="train a zoo from a JSON config (resumes if OUT has a partial build)")
    build.add_argument("config", type=Path)
    build.add_argument("out", type=Path)
    build.add_argument("--data-dir", type=Path, default=None, help="folder of IDX files (default: HYPERREP_DATA or Debian's Fashion-MNIST)")
    build.add_argument("--workers", type=int, default=None,
                       help="processes on a CPU, one chunk each (default 1: one process stacks each chunk on all threads)")
    build.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="train the chunks as tasks on a Ray cluster (ADDRESS as `ray start --head` prints it; "
                            "without it Ray's default); needs pip install 'hyperrep[ray]'")
    build.add_argument("--cpus-per-chunk", type=int, default=1, help="with --ray: CPU threads of each chunk's task (default 1)")
    build.set_defaults(run=cmd_zoo_build)
    imp = zoo.add_parser("import", help="convert a public Model Zoo directory (modelzoos.cc, ray-tune layout) or the "
                                        "paper's dataset.pt (or its hyper_reps/<dataset>/ folder) to a zoo")
    imp.add_argument("modelzoo_dir", type=Path, metavar="SOURCE", help="Model Zoo directory, dataset.pt, or a folder holding one")
    imp.add_argument("out", type=Path)
    imp.add_argument("--epochs", type=epoch_list, nargs="+", default=None, help="epochs to keep, e.g. 21-25 or 0,5,10 (default: those every model has)")
    imp.add_argument("--activation", default=None, help="default: the trials' model::nlin")
    imp.add_argument("--architecture", default=None, help="default: detected from the checkpoint shapes")
    imp.add_argument("--dataset", default=None, help="default: params.json or the directory name")
    imp.add_argument("--weight-threshold", type=float, default=None, help="drop models with |w| above this (default 100)")
    imp.set_defaults(run=cmd_zoo_import)
    export = zoo.add_parser("export", help="write a zoo in the public Model Zoo layout (trial folders, params.json, "
                                           "result.json, checkpoint_<N>/checkpoints) for other weight-space tools")
    export.add_argument("zoo", type=Path)
    export.add_argument("out", type=Path, metavar="DIR", help="a new (or empty) folder")
    export.add_argument("--modelzoo", action="store_true", help="the public Model Zoo (ray-tune) layout; `zoo import` reads it back")
    export.set_defaults(run=cmd_zoo_export)
    info = zoo.add_parser("info", help="models, epochs, parameters and accuracy quantiles of a zoo")
    info.add_argument("path", type=Path, nargs="?", default=None,
                      help="zoo directory (default: HYPERREP_ZOO, else data/zoo of the checkout or the current folder)")
    info.set_defaults(run=cmd_zoo_info)
