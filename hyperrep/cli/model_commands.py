"""`hyperrep train` and `hyperrep sample`: a hyper-representation from a zoo, and populations from it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hyperrep.cli.common import TqdmProgress, count, name_of


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
FLOW_FLAGS = {"steps": "--flow-steps", "width": "--flow-width", "depth": "--flow-depth", "batch_size": "--flow-batch-size",
              "learning_rate": "--flow-learning-rate", "ode_steps": "--flow-ode-steps", "solver": "--flow-solver",
              "random_state": "--flow-seed"}  # the flow samplers' parameters -> flags
FLOW_CFG_FLAGS = FLOW_FLAGS | {"guidance": "--flow-guidance", "target_quantile": "--flow-target-quantile",
                               "target": "--flow-target", "condition_dropout": "--flow-condition-dropout"}
STRATEGY_FLAGS = {"guided": GUIDED_FLAGS, "flow": FLOW_FLAGS, "flow_cfg": FLOW_CFG_FLAGS}  # each strategy's flags
FLOW_METHODS = ("flow", "flow_cfg")


def sampler_params(args: argparse.Namespace, method: str) -> dict:
    """The sampler parameters given on the command line, each flag for the strategies of STRATEGY_FLAGS that take it."""
    flags = {flag: name for table in STRATEGY_FLAGS.values() for name, flag in table.items()}
    given = {flag: getattr(args, name_of(flag)) for flag in flags if getattr(args, name_of(flag)) is not None}
    own = STRATEGY_FLAGS.get(method, {})
    foreign = [flag for flag in given if own.get(flags[flag]) != flag]
    if foreign:
        owners = " or ".join(m for m, table in STRATEGY_FLAGS.items() if foreign[0] in table.values())
        raise ValueError(f"{', '.join(foreign)}: parameters of --method {owners}, not of --method {method}")
    return {flags[flag]: value for flag, value in given.items()}


def chosen_method(args: argparse.Namespace) -> str:
    """--method (default kde); with --sampler the loaded sampler's, which no training flag may change."""
    if args.sampler is not None:
        if args.method not in (None, *FLOW_METHODS) or args.save_sampler is not None:
            raise ValueError("--sampler: draws from a saved flow sampler; leave out --save-sampler and other methods")
        if any(getattr(args, name_of(flag)) is not None for flag in FLOW_CFG_FLAGS.values()):
            raise ValueError("--sampler: a saved sampler keeps the parameters it was trained with; leave out --flow-*")
        return args.method or "flow"
    method = args.method or "kde"
    if args.save_sampler is not None and method not in FLOW_METHODS:
        raise ValueError(f"--save-sampler: only the flow samplers are trained and saved (--method {' or '.join(FLOW_METHODS)})")
    return method


def cmd_sample(args: argparse.Namespace) -> None:
    from hyperrep.pipeline.artifacts import load_hyperrep_with_zoo, weights_per_model
    from hyperrep.pipeline.experiment import build_sampler, choose_anchors, guidance_images_needed, run_sampling
    from hyperrep.pipeline.export import write_population, write_population_zoo
    from hyperrep.runtime.memory import check_models_fit
    from hyperrep.sampling.flow import load_flow_sampler
    from hyperrep.zoo.format import zoo_dataset_rule

    method = chosen_method(args)
    params = sampler_params(args, method)
    check_models_fit(f"-n {args.n}", args.n, weights_per_model(args.hyperrep))
    hyperrep, zoo, notes = load_hyperrep_with_zoo(args.hyperrep)
    for note in notes:
        print(note, file=sys.stderr)
    sampler = load_flow_sampler(args.sampler, hyperrep) if args.sampler is not None else None
    if sampler is not None and args.method is not None and sampler.name != args.method:
        raise ValueError(f"--sampler {args.sampler}: a {sampler.name} sampler, not --method {args.method}")
    method = sampler.name if sampler is not None else method
    spec = args.anchors[0] if len(args.anchors) == 1 and not args.anchors[0].isdigit() else [int(a) for a in args.anchors]
    rows, label = choose_anchors(hyperrep.latent_table, spec, args.anchor_epochs)
    rule = zoo_dataset_rule(zoo.manifest, args.data_dir)
    needed = guidance_images_needed(method, params)
    train = rule.training_images(needed, 0, args.data_dir) if needed else None  # the app's guidance images too
    evaluate = not args.no_evaluate or args.format == "zoo" or args.compare
    test = rule.first_images(args.test_images, args.data_dir) if evaluate else None
    steps = TqdmProgress("training the flow sampler" if method in FLOW_METHODS else "guided latent steps")
    steps.unit = "step"
    if args.save_sampler is not None:
        sampler = build_sampler(hyperrep, method, params, activation=zoo.activation, progress=steps)
    progress = TqdmProgress("evaluating")
    run = run_sampling(hyperrep, zoo, method, params, rows, label, args.n, args.seed, test, comparisons=args.compare,
                       train=train, sample_progress=steps, progress=progress, log=tqdm.write, sampler=sampler)
    steps.close()
    progress.close()
    if args.save_sampler is not None:
        print(f"flow sampler ({sampler.steps_done_} training steps) written to {sampler.save(args.save_sampler)}")
    table = run.members_table()
    if args.format == "zoo":
        out = write_population_zoo(run.population, table, args.out, zoo)
    else:
        out = write_population(args.out, run.population.weights, run.population.latents, table, run.metadata(zoo, hyperrep))
    print(f"{len(run.population)} models from {method} on {len(rows)} anchors written to {out}")
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




def add_train_command(commands) -> None:
    train = commands.add_parser("train", help="train a hyper-representation on a zoo (resumable)")
    train.add_argument("zoo", type=Path)
    train.add_argument("out", type=Path)
    train.add_argument("--config", type=Path, default=None, help="JSON config (ours, or the paper's config_ae.json)")
    train.add_argument("--resume", action="store_true", help="continue the unfinished run in OUT")
    train.add_argument("--data-dir", type=Path, default=None, help="folder of IDX files for the accuracy checks")
    train.add_argument("--threads", type=int, default=None, help="CPU threads for torch (1 is fastest on a busy machine)")
    train.set_defaults(run=cmd_train)


def add_flow_flags(sample: argparse.ArgumentParser) -> None:
    """The flow samplers' flags (their defaults as in hyperrep.sampling.flow.FlowMatchingSampler) and saving or loading one."""
    for flag, kind, text in (
            ("--flow-steps", int, "training steps (default 1500)"), ("--flow-width", int, "MLP width (default 256)"),
            ("--flow-depth", int, "residual blocks (default 3)"), ("--flow-batch-size", int, "anchors per step (default 128)"),
            ("--flow-learning-rate", float, "AdamW learning rate, cosine decay (default 0.002)"),
            ("--flow-ode-steps", int, "solver steps when sampling (default 32)"),
            ("--flow-solver", str, "euler or heun (default heun)"), ("--flow-seed", int, "training seed (default 0)")):
        sample.add_argument(flag, type=kind, default=None, help=f"with --method flow or flow_cfg: {text}")
    for flag, kind, text in (
            ("--flow-guidance", float, "classifier-free guidance weight (default 2.0)"),
            ("--flow-target-quantile", float, "target accuracy: this quantile of the anchors' (default 0.9)"),
            ("--flow-target", float, "target accuracy itself, instead of the quantile (default None)"),
            ("--flow-condition-dropout", float, "share of training steps without the accuracy (default 0.2)")):
        sample.add_argument(flag, type=kind, default=None, help=f"with --method flow_cfg: {text}")
    sample.add_argument("--save-sampler", type=Path, default=None, metavar="PATH",
                        help="with --method flow or flow_cfg: write the trained sampler to the folder PATH")
    sample.add_argument("--sampler", type=Path, default=None, metavar="PATH",
                        help="draw from a sampler saved with --save-sampler (refused for another hyper-representation)")


def add_sample_command(commands) -> None:
    sample = commands.add_parser("sample", help="sample a hyper-representation, decode and export a population")
    sample.add_argument("hyperrep", type=Path, metavar="HYPERREP_DIR")
    sample.add_argument("out", type=Path)
    sample.add_argument("--method", default=None,
                        help="sampler name (see hyperrep.sampling.samplers.SAMPLERS, flow and flow_cfg are trained), "
                             "or guided (hyperrep.sampling.guided); default kde")
    sample.add_argument("--guided-base", default=None, help="with --method guided: the sampler whose latents are refined (default kde)")
    sample.add_argument("--guided-steps", type=int, default=None, help="with --method guided: Adam steps on the latents (default 10)")
    sample.add_argument("--guided-images", type=int, default=None,
                        help="with --method guided: training images every step uses (default 256)")
    sample.add_argument("--guided-step-size", type=float, default=None,
                        help="with --method guided: Adam step size of the latent steps (default 0.1)")
    add_flow_flags(sample)
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
