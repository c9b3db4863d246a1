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

from autocnnp.engine.plan import build_plan
from autocnnp.engine.rundir import new_run_dir
from autocnnp.engine.spec import Backend, spec_to_dict
from autocnnp.generator.assembly import load_checked_spec
from autocnnp.errors import AutocnnpError
from autocnnp.generator.assembly import assemble
from autocnnp.generator.render import generator_to_dict, render_order, render_tree
from autocnnp.run_manage.machine import detect_machine

HELP = "show the assembled component tree and the job plan"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="the XML training config")
    parser.add_argument("--format", choices=("text", "json", "stack"), default="text",
                        help="text (default), json for tools, stack: Docker stack YAML (swarm)")
    parser.add_argument("--assume-nodes", metavar="NxG",
                        help="swarm: plan for N ready nodes with G GPUs each (e.g. 3x2) carrying the "
                             "labels the config's constraints ask for, instead of asking this "
                             "machine's swarm")


def assumed_nodes(text: str, constraints: tuple[str, ...]):
    """``NxG`` -> N hypothetical ready nodes with G GPUs and the labels ``constraints`` need."""
    from autocnnp.engine.plan_swarm import NodeInfo

    count, sep, gpus = text.lower().partition("x")
    if not (sep and count.isdigit() and gpus.isdigit() and int(count) > 0):
        raise AutocnnpError(f"--assume-nodes {text!r}: expected NxG, e.g. 3x2 (3 nodes, 2 GPUs each)")
    labels = {}
    for constraint in constraints:
        key, eq, value = constraint.partition("==")
        if eq and key.strip().startswith("node.labels."):
            labels[key.strip().removeprefix("node.labels.")] = value.strip()
    return [NodeInfo(name=f"node{i + 1}", labels=labels, gpus=int(gpus), id=f"node{i + 1}",
                     role="manager" if i == 0 else "worker", is_self=i == 0)
            for i in range(int(count))]


def job_plan(spec, run_dir: Path, resume: bool = False, assume: str | None = None):
    """The plan of ``spec`` for its backend (local/hosts JobPlan or SwarmPlan)."""
    if spec.deployment.backend is Backend.SWARM:
        from autocnnp.engine.plan_swarm import build_swarm_plan
        if assume:
            nodes = assumed_nodes(assume, spec.deployment.node_constraints)
        else:
            from autocnnp.run_manage.swarm import discover_nodes
            nodes = discover_nodes()
        return build_swarm_plan(spec, run_dir, job_id=run_dir.name, nodes=nodes)
    return build_plan(spec, run_dir, detect_machine(), resume=resume)


def run(args: argparse.Namespace) -> int:
    warnings: list = []
    spec = load_checked_spec(args.config, warnings)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    generator = assemble(spec, load_plugins=False)
    plan = job_plan(spec, new_run_dir(spec), assume=args.assume_nodes)
    if args.format == "stack":
        if spec.deployment.backend is not Backend.SWARM:
            raise AutocnnpError("--format stack is for swarm configs (<deployment backend=\"swarm\">)")
        from autocnnp.engine.plan_swarm import to_stack_yaml
        print(to_stack_yaml(plan))
        return 0
    if args.format == "json":
        print(json.dumps({"spec": spec_to_dict(spec), "generator": generator_to_dict(generator),
                          "plan": plan.to_dict()}, indent=2))
        return 0
    print(f"config:    {spec.source}")
    print(f"task:      {spec.task}, {spec.data.num_classes} classes ({', '.join(spec.data.classes)})")
    print(f"model:     {spec.architecture.label}")
    print(f"strategy:  {generator.actions()['train_strategy_def.dist_strategy'].implementation}, "
          f"{spec.parallelism_degree} ranks, lr {spec.hyperparameters.lr:g} x {spec.parallelism_degree} "
          f"({spec.lr_policy.name.value})")
    print("\nCNN-Parallelism-Generator")
    print(render_tree(generator))
    print("\nExecution order (bindings)")
    print(render_order(generator))
    print("\nJob plan")
    print(plan)
    return 0
