"""`hyperrep report`, `hyperrep transfer` and `hyperrep finetune-study`: the paper-style comparisons."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from hyperrep.cli.common import TqdmProgress, count, count_or_zero, default_artifact, fraction
from hyperrep.runtime import settings


def check_populations_fit(args: argparse.Namespace, methods: int, frontier: int = 0) -> None:
    """Size the populations of `hyperrep report` or `transfer` (`methods` of --models, `frontier`
    of --frontier-models) against the available memory before any work (hyperrep.runtime.memory)."""
    from hyperrep.pipeline.artifacts import weights_per_model
    from hyperrep.runtime.memory import check_models_fit

    request = f"--models {args.models} in {methods} populations"
    if frontier:
        request += f", --frontier-models {args.frontier_models} in {frontier}"
    total = methods * args.models + frontier * (args.frontier_models if frontier else 0)
    check_models_fit(request, total, weights_per_model(args.hyperrep))


def cmd_report(args: argparse.Namespace) -> None:
    from hyperrep.pipeline.report import run_report
    from hyperrep.pipeline.report_types import ReportConfig
    from hyperrep.pipeline.tuning import TuningConfig

    args.hyperrep = default_artifact(args.hyperrep, settings.default_hyperrep_path(), "hyper-representation", "HYPERREP_MODEL",
                                     "--hyperrep")
    if args.ablation is None:
        args.ablation = settings.artifact_root() / "data" / "hyperrep-no-lwln"
    config = ReportConfig(models_per_method=args.models, test_images=args.test_images,
                          fine_tune_images=args.fine_tune_images, seed=args.seed, fine_tune_epochs=args.epochs,
                          fine_tune_models=None if args.fine_tune_models == 0 else args.fine_tune_models,
                          frontier_models=args.frontier_models,
                          tuning=TuningConfig(validation_images=args.validation_images, models=args.tuning_models,
                                              budgets=args.step_budgets, images=args.step_images),
                          **({"frontier_sigmas": args.frontier_sigmas} if args.frontier_sigmas else {}))
    ablation = args.ablation if args.ablation is not None and args.ablation.exists() else None
    check_populations_fit(args, *config.populations_held(ablation=ablation is not None))
    if args.ablation is not None and ablation is None:
        print(f"note: no ablation hyper-representation at {args.ablation}; the report has no no-LWLN rows", file=sys.stderr)
    progress = TqdmProgress("report")
    progress.unit = "population"
    summary = run_report(args.hyperrep, args.out, ablation_dir=ablation, config=config, data_dir=args.data_dir,
                         workers=args.workers, progress=progress, log=tqdm.write)
    progress.close()
    print(f"report written to {args.out}/report.md ({summary['method'].nunique()} methods)")
    if args.readme is not None:
        from hyperrep.pipeline.report_files import update_readme

        update_readme(args.readme, Path(args.out) / "report.md")
        print(f"table, readings and frontier plot written into {args.readme}")


def cmd_transfer(args: argparse.Namespace) -> None:
    from hyperrep.pipeline.report_types import ReportConfig
    from hyperrep.pipeline.transfer import run_transfer

    config = ReportConfig(models_per_method=args.models, test_images=args.test_images,
                          fine_tune_images=args.fine_tune_images, fine_tune_epochs=args.epochs,
                          samplers=args.samplers, ablation_samplers=[], noise_sigmas=[], seed=args.seed,
                          fine_tune_models=None)
    check_populations_fit(args, config.populations_held(guided=False, ablation=False)[0])
    progress = TqdmProgress("transfer")
    progress.unit = "population"
    summary = run_transfer(args.hyperrep, args.data_dir, args.out, dataset=args.dataset, config=config,
                           workers=args.workers, progress=progress)
    progress.close()
    from hyperrep.pipeline.report_files import markdown_table

    print(markdown_table(summary))
    print(f"transfer table written to {args.out}/transfer.md")


def cmd_finetune_study(args: argparse.Namespace) -> None:
    from hyperrep.pipeline.finetune_study import StudyConfig, run_study

    args.hyperrep = default_artifact(args.hyperrep, settings.default_hyperrep_path(), "hyper-representation",
                                     "HYPERREP_MODEL", "--hyperrep")
    given = {name: getattr(args, name) for name in ("methods", "fractions", "epochs", "models", "test_images",
                                                    "validation_images", "seed")}
    config = StudyConfig(**{name: value for name, value in given.items() if value is not None})
    config.validate()
    command = " ".join(["hyperrep finetune-study", f"--hyperrep {args.hyperrep}", f"--out {args.out}",
                        "--methods", *config.methods, "--fractions", *map(str, config.fractions),
                        "--epochs", *map(str, config.epochs), f"--models {config.models}",
                        f"--test-images {config.test_images}", f"--validation-images {config.validation_images}",
                        f"--seed {config.seed}", f"--workers {args.workers}"]
                       + ([f"--data-dir {args.data_dir}"] if args.data_dir else []))
    progress = TqdmProgress("finetune-study")
    progress.unit = "population"
    summary = run_study(args.hyperrep, args.out, config, data_dir=args.data_dir, workers=args.workers,
                        command=command, progress=progress)
    progress.close()
    print(f"study written to {args.out}/study.md ({summary['method'].nunique()} methods, {len(summary)} rows)")


def add_report_command(commands) -> None:
    report = commands.add_parser("report", help="the paper-style table: samplers vs baselines, fine-tuned 0/1/5 epochs")
    report.add_argument("--hyperrep", type=Path, default=None,
                        help="hyper-representation: ours, or a paper hyper_reps/<dataset>/ folder, which brings its zoo, "
                             "samples/ and zoo_testsplit.pt (default: HYPERREP_MODEL, else data/hyperrep of the checkout "
                             "or the current folder)")
    report.add_argument("--ablation", type=Path, default=None,
                        help="hyper-rep trained without LWLN (default: data/hyperrep-no-lwln next to the default artifacts; "
                             "left out with a note when trained on another zoo)")
    report.add_argument("--out", type=Path, default=Path("docs/report"))
    report.add_argument("--models", type=count, default=100, help="models per method, all evaluated zero-shot (default 100)")
    report.add_argument("--epochs", type=int, nargs="+", default=[0, 1, 5], help="fine-tuning epochs reported (default 0 1 5)")
    report.add_argument("--fine-tune-models", type=count_or_zero, default=10, help="of those, fine-tuned per method (0: all; default 10)")
    report.add_argument("--frontier-models", type=count, default=40, help="models per frontier reference population")
    report.add_argument("--frontier-sigmas", type=float, nargs="+", default=None,
                        help="σ of the noise references (default 0.01 to 0.32, distances up to about 16 on CNN-s; "
                             "a seed zoo's samples lie farther, so extend it there)")
    report.add_argument("--validation-images", type=count, default=2_000,
                        help="images of the train split's validation part that every tuned choice is made on (default 2000)")
    report.add_argument("--tuning-models", type=count, default=24, help="models per candidate of each search (default 24)")
    report.add_argument("--step-budgets", type=count, nargs="+", default=[5, 10, 20],
                        help="gradient-step budgets of the guided vs weight-step comparison (default 5 10 20)")
    report.add_argument("--step-images", type=count, default=256, help="training images every gradient step uses")
    report.add_argument("--test-images", type=count, default=2_000)
    report.add_argument("--fine-tune-images", type=count, default=2_000)
    report.add_argument("--seed", type=int, default=42)
    report.add_argument("--data-dir", type=Path, default=None, help="folder of IDX files (needs the train split)")
    report.add_argument("--workers", type=int, default=None, help="processes on a CPU (default: one per core)")
    report.add_argument("--readme", type=Path, default=None, help="also write the table between this file's report markers")
    report.set_defaults(run=cmd_report)


def add_transfer_command(commands) -> None:
    transfer = commands.add_parser("transfer", help="samples of a hyper-representation vs B_T and B_F, fine-tuned on another dataset")
    transfer.add_argument("hyperrep", type=Path, metavar="HYPERREP_DIR")
    transfer.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="the target dataset (IDX, CIFAR-10, SVHN or STL-10 files)")
    transfer.add_argument("--out", type=Path, default=Path("runs/transfer"))
    transfer.add_argument("--dataset", default=None, help="target name (default: its format, else the folder name)")
    transfer.add_argument("--samplers", nargs="+", default=["kde", "gaussian"], help="sampler names (default kde gaussian)")
    transfer.add_argument("--models", type=count, default=20, help="models per population (default 20)")
    transfer.add_argument("--epochs", type=int, nargs="+", default=[0, 1, 5], help="fine-tuning epochs reported (default 0 1 5)")
    transfer.add_argument("--test-images", type=count, default=5_000)
    transfer.add_argument("--fine-tune-images", type=count, default=2_000)
    transfer.add_argument("--seed", type=int, default=42)
    transfer.add_argument("--workers", type=int, default=None, help="processes on a CPU (default: one per core)")
    transfer.set_defaults(run=cmd_transfer)


def add_finetune_study_command(commands) -> None:
    study = commands.add_parser("finetune-study", help="are sampled models good initialisations? samplers vs B_T "
                                "(zoo's init and kaiming-uniform), B_F and noise copies, fine-tuned on data fractions")
    study.add_argument("--hyperrep", type=Path, default=None,
                       help="hyper-representation (default: HYPERREP_MODEL, else data/hyperrep of the checkout)")
    study.add_argument("--out", type=Path, default=Path("docs/finetune-study"))
    # None: StudyConfig's default (imported only when the command runs, so --help answers at once)
    study.add_argument("--methods", nargs="+", default=None,
                       help="sampler names of `hyperrep sample` (default kde_legacy kde gaussian)")
    study.add_argument("--fractions", type=fraction, nargs="+", default=None,
                       help="fractions of the training part to fine-tune on (default 0.01 0.1 1)")
    study.add_argument("--epochs", type=count_or_zero, nargs="+", default=None,
                       help="epochs after which the test accuracy is reported (default 1 3 10)")
    study.add_argument("--models", type=count, default=None, help="models per method (default 10)")
    study.add_argument("--test-images", type=count, default=None,
                       help="first images of the test split, every figure (default 10,000)")
    study.add_argument("--validation-images", type=count, default=None,
                       help="first images of the validation part, which choose the anchors (default 2,000)")
    study.add_argument("--seed", type=int, default=None, help="seed of samples, baselines, subsets (default 42)")
    study.add_argument("--workers", type=count, default=1, help="processes on a CPU (default 1)")
    study.add_argument("--data-dir", type=Path, default=None, help="folder of IDX files (needs the train split)")
    study.set_defaults(run=cmd_finetune_study)
