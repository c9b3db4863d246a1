"""Check a training config: schema, names, values, paths, plugins and bindings.

Every problem is printed at once as FILE:LINE: <element>: what is wrong. Exit status 0 when
the config is valid, 2 when it is not. Nothing in the config is executed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autocnnp.engine.validate import load_spec
from autocnnp.generator.assembly import assemble, replacement_duties

HELP = "check a training config; print every problem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the XML training config")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")


def summary(spec) -> str:
    arch = spec.architecture.name or spec.architecture.path.name
    return (f"{spec.task}, {spec.parallelism_degree} rank(s) on {spec.deployment.backend.value}, "
            f"{arch}, {spec.hyperparameters.optimizer} lr {spec.hyperparameters.lr:g}, "
            f"epochs {spec.hyperparameters.start_epoch}-{spec.hyperparameters.end_epoch}, "
            f"lr policy {spec.lr_policy.name.value}")


def run(args: argparse.Namespace) -> int:
    warnings: list = []
    spec = load_spec(args.config, warnings)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not args.quiet:
        print(f"{args.config}: valid ({summary(spec)})")
        for duty in replacement_duties(assemble(spec, load_plugins=False)):
            print(f"note: {duty}")
    return 0
