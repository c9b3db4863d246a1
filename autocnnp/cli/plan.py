"""Show what `autocnnp run` would do, without doing it.

Prints the assembled CNN-Parallelism-Generator (composites, modules, actions, plugins), the
execution order with the bindings each action receives, and the job plan: backend, ranks and
hosts, threads, environment and the exact command. `--format json` prints the same as JSON;
for a swarm config, `--format stack` prints an equivalent Docker stack file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autocnnp.engine.rundir import new_run_dir
from autocnnp.engine.spec import spec_to_dict
from autocnnp.errors import AutocnnpError
from autocnnp.generator import registry
from autocnnp.generator.assembly import assemble, load_checked_spec
from autocnnp.generator.render import generator_to_dict, render_order, render_tree
from autocnnp.run_manage.backend import get_backend

HELP = "show the assembled component tree and the job plan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the XML training config")
    parser.add_argument("--format", choices=("text", "json", "stack"), default="text",
                        help="text (default), json for tools, stack: Docker stack YAML (swarm)")
    parser.add_argument("--assume-nodes", metavar="NxG",
                        help="swarm: plan for N ready nodes with G GPUs each (e.g. 3x2) carrying the "
                             "labels the config's constraints ask for, instead of asking this "
                             "machine's swarm")


def run(args: argparse.Namespace) -> int:
    warnings: list = []
    spec = load_checked_spec(args.config, warnings)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    generator = assemble(spec, load_plugins=False)
    backend = get_backend(spec.deployment.backend)
    plan = backend.preview_plan(spec, new_run_dir(spec), assume_nodes=args.assume_nodes)
    if args.format not in ("text", "json"):
        if args.format not in backend.plan_formats:
            offered = ", ".join(["text", "json", *backend.plan_formats])
            raise AutocnnpError(f"--format {args.format} is not offered by the {backend.name} "
                                f"backend (it offers: {offered}); stack is for swarm configs "
                                f"(<deployment backend=\"swarm\">)")
        print(backend.render_plan(plan, args.format))
        return 0
    if args.format == "json":
        print(json.dumps({"spec": spec_to_dict(spec), "generator": generator_to_dict(generator),
                          "plan": plan.to_dict(), "experiment": _experiment_lines(spec)},
                         indent=2))
        return 0
    print(f"config:    {spec.source}")
    print(f"task:      {spec.task}, {spec.data.num_classes} classes ({', '.join(spec.data.classes)})")
    print(f"model:     {spec.architecture.label}")
    print(f"strategy:  {generator.actions()['train_strategy_def.dist_strategy'].implementation}, "
          f"{spec.parallelism_degree} ranks, lr {spec.hyperparameters.lr:g} x {spec.parallelism_degree} "
          f"({spec.lr_policy.name.value})")
    print(f"engine:    {registry.engine_summary(spec.engine)}")
    print("\nCNN-Parallelism-Generator")
    print(render_tree(generator))
    print("\nExecution order (bindings)")
    print(render_order(generator))
    print("\nJob plan" + (" (of each training)" if _experiment_lines(spec) else ""))
    print(plan)
    lines = _experiment_lines(spec)
    if lines:
        print("\nExperiment")
        print("\n".join(lines))
    return 0


def _experiment_lines(spec) -> list[str]:
    """The split and the schedule of a group's trainings (folds, repeats); [] for one run."""
    from autocnnp.orchestrator.experiment import schedule

    split = spec.data.split
    lines = []
    if split is not None:
        how = (f"{split.folds} folds" if split.folds else
               f"test {split.test:g}, valid {split.valid:g}, train the rest")
        lines.append(f"split:     {how} of the cases in {spec.data.train} (seed {split.seed}"
                     + (f", stratified by {split.stratify}" if split.stratify else "")
                     + (f", from {split.file}" if split.file else "") + ")")
    if split is not None and split.folds:
        names = [f"fold-{k}" for k in range(1, split.folds + 1)]
    elif spec.reproducibility.repeats > 1:
        names = [f"repeat-{k}" for k in range(1, spec.reproducibility.repeats + 1)]
    else:
        return lines
    return lines + schedule(spec, names).describe()
