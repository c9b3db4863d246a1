"""Check a training config: schema, names, values, paths, plugins and bindings.

Every problem is printed at once as FILE:LINE: <element>: what is wrong. Exit status 0 when
the config is valid, 2 when it is not. Nothing in the config is executed.

When the config is valid, the cheap data checks run too and say what they sampled: no two
splits in the same folder, every split readable and labelled (Decathlon's imagesTs is not),
and the labels of a sample of masks within the declared classes. `run` reads every file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autocnnp.components.data_checks import run_cheap_checks
from autocnnp.errors import ConfigError
from autocnnp.generator.assembly import assemble, load_checked_spec, replacement_duties

HELP = "check a training config; print every problem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the XML training config")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing when valid (no warnings either); problems still print")


def summary(spec) -> str:
    arch = spec.architecture.name or spec.architecture.path.name
    return (f"{spec.task}, {spec.parallelism_degree} rank(s) on {spec.deployment.backend}, "
            f"{arch}, {spec.hyperparameters.optimizer} lr {spec.hyperparameters.lr:g}, "
            f"epochs {spec.hyperparameters.start_epoch}-{spec.hyperparameters.end_epoch}, "
            f"lr policy {spec.lr_policy.name.value}")


def run(args: argparse.Namespace) -> int:
    warnings: list = []
    spec = load_checked_spec(args.config, warnings)
    if not args.quiet:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    data = run_cheap_checks(spec)
    if data.problems:
        raise ConfigError(data.problems)
    if not args.quiet:
        print(f"{args.config}: valid ({summary(spec)})")
        if data.sampled:
            print(data.summary())
        for duty in replacement_duties(assemble(spec, load_plugins=False)):
            print(f"note: {duty}")
    return 0
