"""`diffnas train`: train (or resume training) a genotype's discrete network."""

from __future__ import annotations

import argparse

from rich.console import Console

from diffnas.commands._common import (
    RUN_FLAGS,
    add_output_args,
    add_run_args,
    flag_overrides,
    progress_args,
)

HELP = """\
Train the discrete network of a genotype with the DARTS evaluation recipe: auxiliary head
(loss weight 0.4), drop-path 0.2 rising linearly over the epochs, cutout 16, cosine
learning rate, SGD lr 0.025 momentum 0.9 weight decay 3e-4, gradient clipping 5, batch 96,
600 epochs, 20 cells with C=36 (CIFAR). The preset follows --dataset (configs/train/
cifar10, cifar100, digits; other datasets get the CIFAR-10 recipe); every key can be
changed with --set. The test split is evaluated once, after the last epoch; for a
per-epoch validation accuracy hold out part of the training split (--set train.holdout=0.1).
Writes a run directory: config.yaml, metrics.jsonl (per epoch: train loss/accuracy, lr,
drop-path, validation with train.holdout; test loss/accuracy at the end), genotype.json,
checkpoint.pt; a killed run continues with --resume RUN_DIR. Then: diffnas eval / export /
profile RUN_DIR.
"""

EPILOG = """\
examples:
  diffnas train DARTS_V2                                # digits preset, a few minutes
  diffnas train DARTS_V2 --dataset cifar10 --data-root DATA
  diffnas train runs/darts-darts-cifar10-20260101-120000 --dataset cifar10 --data-root DATA
  diffnas train genotype.json --dataset cifar10 --data-root DATA --layers 8 --channels 16 \\
      --epochs 2 --set data.subset=0.1 --threads 1
  diffnas train --resume runs/train-DARTS_V2-cifar10-20260101-120000
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a genotype's network (DARTS evaluation recipe)",
        description=HELP,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "genotype",
        nargs="?",
        metavar="GENOTYPE|ZOO_NAME|RUN_DIR",
        help="genotype JSON file, zoo name (diffnas zoo), search run directory or NB201 string",
    )
    g = p.add_argument_group("configuration (later options override earlier ones)")
    g.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        metavar="FILE|PRESET",
        help="YAML config file or preset (train/cifar10, train/cifar100, train/digits); "
        "default: the preset of --dataset",
    )
    add_run_args(g, "train.epochs", "--set train.lr=0.05 --set data.subset=0.1")
    g.add_argument("--channels", type=int, help="initial channels C (model.channels)")
    g.add_argument("--layers", type=int, help="darts: cells; nb201: cells per stage (model.layers)")
    g.add_argument("--batch-size", type=int, help="data.batch_size")
    g.add_argument(
        "--network",
        choices=["cifar", "imagenet"],
        help="model.network: imagenet = DARTS' mobile network (stride-8 stem, for 224x224 "
        "images, e.g. --dataset imagefolder --set data.resolution=224)",
    )
    p.add_argument("--out", "-o", help="run directory (default runs/train-<name>-<dataset>-<time>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a training run from its checkpoint under its own config.yaml; "
        "--threads, --epochs, --device, --data-root and --set of train.lr, train.lr_min, "
        "train.grad_clip, train.eval_every, checkpoint and log keys may change it (other "
        "changes are refused with the list of differences)",
    )
    add_output_args(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


TRAIN_FLAGS = (
    *RUN_FLAGS,
    ("epochs", "train.epochs"),
    ("channels", "model.channels"),
    ("layers", "model.layers"),
    ("batch_size", "data.batch_size"),
    ("network", "model.network"),
)


def run(args: argparse.Namespace) -> int:
    from diffnas.config import dump_config
    from diffnas.errors import ConfigError
    from diffnas.retrain.config import load_train_config, train_preset
    from diffnas.retrain.train import resume_training, resume_training_config, train

    out = Console(soft_wrap=True)
    progress, callbacks = progress_args(args)
    if args.resume:
        given = [f for f, v in (("--config", args.config), ("--out", args.out)) if v]
        given += ["the GENOTYPE argument"] if args.genotype else []
        if given:
            raise ConfigError(
                "--resume continues a run with its own genotype and config.yaml in its own "
                f"directory; drop {', '.join(given)} (change a key with --set KEY=VALUE)"
            )
        overrides = flag_overrides(args, TRAIN_FLAGS) + args.overrides
        if args.print_config:
            config = resume_training_config(args.resume, overrides)
            out.print(dump_config(config), end="", highlight=False)
            return 0
        if args.logger:
            from diffnas.callbacks.loggers import extra_loggers
            from diffnas.retrain.config import TrainConfig
            from diffnas.run import RunDir

            run_config = RunDir.open(args.resume).load_config(TrainConfig)
            callbacks = [*(callbacks or []), *extra_loggers(run_config, args.logger)]
        result = resume_training(
            args.resume, overrides=overrides, progress=progress, callbacks=callbacks
        )
    else:
        sources = args.config or [train_preset(args.dataset)]
        config = load_train_config(sources, flag_overrides(args, TRAIN_FLAGS) + args.overrides)
        if args.logger:
            from diffnas.callbacks.loggers import with_loggers

            config = with_loggers(config, args.logger)
        if args.print_config:
            out.print(dump_config(config), end="", highlight=False)
            return 0
        if args.genotype is None and config.genotype is None:
            raise ConfigError(
                "no genotype to train: give a genotype file, zoo name (e.g. DARTS_V2; see "
                "`diffnas zoo`) or search run directory"
            )
        result = train(args.genotype, config, out=args.out, progress=progress, callbacks=callbacks)
    out.print(str(result), highlight=False)
    return 0
