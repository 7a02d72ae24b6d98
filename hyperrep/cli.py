"""The `hyperrep` command: the same API the app uses, from a terminal.

Each command imports what it needs inside its function, so that `hyperrep --help` and argument
errors answer at once instead of after importing torch and the rest of the package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hyperrep.io.files import ArtifactError
from hyperrep.runtime import settings


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that never reads a prefix of a long option as that option (`--n` is not
    `--no-evaluate`); `add_subparsers` makes every subcommand's parser of this class too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (models, images)."""
    return _whole_number(text, 1)


def count_or_zero(text: str) -> int:
    """An argparse type: a whole number of at least 0 (where 0 means all)."""
    return _whole_number(text, 0)


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


class TqdmProgress:
    """A `progress(done, total)` callback that drives one tqdm bar."""

    def __init__(self, description: str):
        self.bar = None
        self.description = description
        self.unit = "model"

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit=self.unit, dynamic_ncols=True)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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


def default_artifact(given: Path | None, default: Path, what: str, env: str, flag: str) -> Path:
    """The path given on the command line, else the default one if it exists, else an error saying where to point."""
    if given is not None:
        return given
    if not default.exists():
        raise settings.where_to_point(default, what, env, flag)
    return default


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


def epoch_list(text: str) -> list[int]:
    from hyperrep.zoo.public_import import parse_epochs

    return parse_epochs(text)


def cmd_train(args: argparse.Namespace) -> None:
    from hyperrep.ae.config import TrainConfig
    from hyperrep.ae.train import train_hyperrep
    from hyperrep.pipeline.artifacts import ZOO, expect_kind

    expect_kind(args.zoo, ZOO)
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    progress = TqdmProgress(f"training hyper-representation -> {args.out}")
    progress.unit = "step"
    out = train_hyperrep(args.zoo, args.out, config, resume=args.resume, data_dir=args.data_dir,
                         progress=progress, log=tqdm.write)
    progress.close()
    print(f"hyper-representation written to {out}")


GUIDED_FLAGS = {"base": "--guided-base", "steps": "--guided-steps", "images": "--guided-images",
                "step_size": "--guided-step-size"}  # the guided sampler's parameters -> `hyperrep sample` flags


def sampler_params(args: argparse.Namespace) -> dict:
    """The sampler parameters given on the command line: the --guided-* flags, for --method guided only."""
    from hyperrep.sampling.guided import GUIDED_SPEC

    given = {name: getattr(args, name_of(flag)) for name, flag in GUIDED_FLAGS.items()
             if getattr(args, name_of(flag)) is not None}
    if given and args.method != GUIDED_SPEC.name:
        flags = ", ".join(GUIDED_FLAGS[name] for name in given)
        raise ValueError(f"{flags}: parameters of --method {GUIDED_SPEC.name}, not of --method {args.method}")
    return given


def name_of(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def cmd_sample(args: argparse.Namespace) -> None:
    from hyperrep.pipeline.artifacts import load_hyperrep_with_zoo, weights_per_model
    from hyperrep.pipeline.experiment import choose_anchors, guidance_images_needed, run_sampling
    from hyperrep.pipeline.export import write_population, write_population_zoo
    from hyperrep.runtime.memory import check_models_fit
    from hyperrep.zoo.format import zoo_dataset_rule

    params = sampler_params(args)
    check_models_fit(f"-n {args.n}", args.n, weights_per_model(args.hyperrep))
    hyperrep, zoo, notes = load_hyperrep_with_zoo(args.hyperrep)
    for note in notes:
        print(note, file=sys.stderr)
    spec = args.anchors[0] if len(args.anchors) == 1 and not args.anchors[0].isdigit() else [int(a) for a in args.anchors]
    rows, label = choose_anchors(hyperrep.latent_table, spec, args.anchor_epochs)
    rule = zoo_dataset_rule(zoo.manifest, args.data_dir)
    needed = guidance_images_needed(args.method, params)
    train = rule.training_images(needed, 0, args.data_dir) if needed else None  # the app's guidance images too
    evaluate = not args.no_evaluate or args.format == "zoo" or args.compare
    test = rule.first_images(args.test_images, args.data_dir) if evaluate else None
    steps = TqdmProgress("guided latent steps")
    steps.unit = "step"
    progress = TqdmProgress("evaluating")
    run = run_sampling(hyperrep, zoo, args.method, params, rows, label, args.n, args.seed, test, comparisons=args.compare,
                       train=train, sample_progress=steps, progress=progress, log=tqdm.write)
    steps.close()
    progress.close()
    table = run.members_table()
    if args.format == "zoo":
        out = write_population_zoo(run.population, table, args.out, zoo)
    else:
        out = write_population(args.out, run.population.weights, run.population.latents, table, run.metadata(zoo, hyperrep))
    print(f"{len(run.population)} models from {args.method} on {len(rows)} anchors written to {out}")
    if run.full is not None:
        accuracy = table["test_acc"]
        print(f"  test accuracy on {len(test)} images: mean {accuracy.mean():.3f}, "
              f"max {accuracy.max():.3f}, non-finite {int(accuracy.isna().sum())}")
    if run.comparisons is not None:
        print_comparisons(run)


def print_comparisons(run) -> None:
    """The comparisons of `hyperrep sample --compare`, as the app shows them."""
    from hyperrep.pipeline.summaries import finite_median

    samples = run.members_table()[f"test_acc_first_{run.quick_images}"]
    print(f"  compared on the first {run.quick_images} test images (samples: mean accuracy {samples.mean():.3f}):")
    for label, accuracy in run.baselines.items():
        print(f"    {label}: mean accuracy {pd.Series(accuracy).mean():.3f}")
    for group, part in run.novelty.groupby("group", sort=False):
        print(f"    {group}: median distance to the nearest zoo model {finite_median(part['distance']):.3g}, "
              f"median mistake overlap (IoU) {finite_median(part['misclassification_iou']):.2f}")
    if run.frontier_delta is not None:
        from hyperrep.evaluation.frontier import delta_statement

        print(f"    frontier of the anchors: {delta_statement(run.frontier_delta, run.quick_images)}")
    for label, value in run.ensembles.items():
        print(f"    {label}: {value:.3f}")
    for level, message in run.messages:
        print(f"  {level}: {message}")


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

    args.hyperrep = default_artifact(args.hyperrep, settings.default_hyperrep_path(), "hyper-representation", "HYPERREP_MODEL",
                                     "--hyperrep")
    if args.ablation is None:
        args.ablation = settings.artifact_root() / "data" / "hyperrep-no-lwln"
    config = ReportConfig(models_per_method=args.models, test_images=args.test_images,
                          fine_tune_images=args.fine_tune_images, seed=args.seed, fine_tune_epochs=args.epochs,
                          fine_tune_models=None if args.fine_tune_models == 0 else args.fine_tune_models,
                          frontier_models=args.frontier_models, guided_steps=args.guided_steps,
                          guided_images=args.guided_images, guided_step_size=args.guided_step_size,
                          guided_weight_step_sizes=args.guided_weight_step_sizes,
                          **({"frontier_sigmas": args.frontier_sigmas} if args.frontier_sigmas else {}))
    ablation = args.ablation if args.ablation is not None and args.ablation.exists() else None
    check_populations_fit(args, *config.populations_held(ablation=ablation is not None))
    if args.ablation is not None and ablation is None:
        print(f"note: no ablation hyper-representation at {args.ablation}; the report has no no-LWLN rows", file=sys.stderr)
    progress = TqdmProgress("report")
    progress.unit = "population"
    summary = run_report(args.hyperrep, args.out, ablation_dir=ablation, config=config, data_dir=args.data_dir,
                         workers=args.workers, progress=progress)
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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hyperrep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

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

    train = commands.add_parser("train", help="train a hyper-representation on a zoo (resumable)")
    train.add_argument("zoo", type=Path)
    train.add_argument("out", type=Path)
    train.add_argument("--config", type=Path, default=None, help="JSON config (ours, or the paper's config_ae.json)")
    train.add_argument("--resume", action="store_true", help="continue the unfinished run in OUT")
    train.add_argument("--data-dir", type=Path, default=None, help="folder of IDX files for the accuracy checks")
    train.add_argument("--threads", type=int, default=None, help="CPU threads for torch (1 is fastest on a busy machine)")
    train.set_defaults(run=cmd_train)

    sample = commands.add_parser("sample", help="sample a hyper-representation, decode and export a population")
    sample.add_argument("hyperrep", type=Path, metavar="HYPERREP_DIR")
    sample.add_argument("out", type=Path)
    sample.add_argument("--method", default="kde",
                        help="sampler name (see hyperrep.sampling.samplers.SAMPLERS), or guided (hyperrep.sampling.guided); default kde")
    sample.add_argument("--guided-base", default=None, help="with --method guided: the sampler whose latents are refined (default kde)")
    sample.add_argument("--guided-steps", type=int, default=None, help="with --method guided: Adam steps on the latents (default 10)")
    sample.add_argument("--guided-images", type=int, default=None,
                        help="with --method guided: training images every step uses (default 256)")
    sample.add_argument("--guided-step-size", type=float, default=None,
                        help="with --method guided: Adam step size of the latent steps (default 0.1)")
    sample.add_argument("-n", "--models", dest="n", type=count, default=100, help="models to generate (default 100)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--anchors", nargs="+", default=["top30"], help="top30 (any topNN), all, or model ids")
    sample.add_argument("--anchor-epochs", type=int, nargs="+", default=None, help="epochs of the anchor model ids (default: last)")
    sample.add_argument("--format", choices=["safetensors", "zoo"], default="safetensors",
                        help="a population folder (weights.safetensors + samples.csv, docs/formats.md), or a zoo directory")
    sample.add_argument("--compare", action="store_true",
                        help="also compare with the zoo (novelty), a distance-matched noise baseline, the frontier (Δ), B_T and ensembles")
    sample.add_argument("--no-evaluate", action="store_true", help="skip the test accuracy (safetensors format only)")
    sample.add_argument("--test-images", type=count, default=10_000)
    sample.add_argument("--data-dir", type=Path, default=None, help="folder of IDX files")
    sample.set_defaults(run=cmd_sample)

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
    report.add_argument("--guided-steps", type=int, default=10, help="latent steps of the guided sampler")
    report.add_argument("--guided-images", type=int, default=256, help="training images the guided steps use")
    report.add_argument("--guided-step-size", type=float, default=0.1, help="Adam step size of the guided latent steps")
    report.add_argument("--guided-weight-step-sizes", type=float, nargs="+", default=[],
                        help="more learning rates of the equal-cost weight steps, a row each (the zoo's is always one)")
    report.add_argument("--test-images", type=count, default=2_000)
    report.add_argument("--fine-tune-images", type=count, default=2_000)
    report.add_argument("--seed", type=int, default=42)
    report.add_argument("--data-dir", type=Path, default=None, help="folder of IDX files (needs the train split)")
    report.add_argument("--workers", type=int, default=None, help="processes on a CPU (default: one per core)")
    report.add_argument("--readme", type=Path, default=None, help="also write the table between this file's report markers")
    report.set_defaults(run=cmd_report)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ArtifactError, ValueError, KeyError, ModuleNotFoundError) as err:  # the last: a missing optional dependency
        print(f"hyperrep: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
