"""The ``autocnnp`` command line: one small module per subcommand.

Each subcommand module in this package defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their subcommand runs, so
``autocnnp validate`` never pays for TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from autocnnp import __version__
from autocnnp.errors import AutocnnpError

#: subcommand -> (module, one-line help); the order is the order ``--help`` shows.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("autocnnp.cli.validate", "check a training config; print every problem"),
    "plan": ("autocnnp.cli.plan", "show the assembled component tree and the job plan"),
    "run": ("autocnnp.cli.run", "validate, plan, launch and evaluate a training job"),
    "status": ("autocnnp.cli.status", "show the state of a run"),
    "watch": ("autocnnp.cli.watch", "live view of a running job (every rank, loss and Dice, ETA)"),
    "logs": ("autocnnp.cli.logs", "print the logs of a run (all ranks or one)"),
    "stop": ("autocnnp.cli.stop", "stop a running job and clean up what it created"),
    "components": ("autocnnp.cli.components", "list registered components and their origin"),
    "describe": ("autocnnp.cli.describe", "show a component's parameters and documentation"),
    "demo-data": ("autocnnp.cli.demo_data", "build the MNI152 brain-tissue demo dataset"),
    "preprocess": ("autocnnp.cli.preprocess", "ImgMed: NIfTI volumes to 2D training slices"),
    "check-data": ("autocnnp.cli.check_data",
                   "check every sample of a config's data and report every problem"),
    "evaluate": ("autocnnp.cli.evaluate", "SegEval: score predicted masks against ground truth"),
    "tune": ("autocnnp.cli.tune", "GreScale guideline: tune the learning-rate policy for N workers"),
    "compare": ("autocnnp.cli.compare",
                "compare two runs, repeat groups or CV groups (difference, CI, paired test)"),
    "report": ("autocnnp.cli.report", "reproducibility report of a run (Renard et al. checklist)"),
    "predict": ("autocnnp.cli.predict", "apply a trained model to images or NIfTI volumes"),
    "image": ("autocnnp.cli.image", "build the container images for the swarm backend, copy them to its nodes"),
    "schema": ("autocnnp.cli.schema", "print the config schema (XSD) or its reference page"),
}

EPILOG = """\
Start here:
  autocnnp demo-data data/mni152          build the small real demo dataset
  autocnnp run configs/quickstart.xml     train it with 2 Horovod ranks on this machine

Set AUTOCNNP_FULL_ERROR=1 to see the full traceback of an error.
"""


def build_parser(argv: list[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the subcommand ``argv`` names is imported (its options, its help)."""
    requested = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="autocnnp",
        description="Automated data-parallel training of segmentation CNNs from one XML config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"autocnnp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        mod = importlib.import_module(module) if name == requested else None
        p = sub.add_parser(name, help=help_text, description=getattr(mod, "__doc__", None) or help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        if mod is not None:
            mod.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``autocnnp`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except AutocnnpError as exc:
        if os.environ.get("AUTOCNNP_FULL_ERROR") == "1":
            import traceback
            traceback.print_exc()
        print(f"autocnnp {args.command}: error: {exc}" if not hasattr(exc, "problems") else str(exc),
              file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("autocnnp: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `autocnnp components | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
