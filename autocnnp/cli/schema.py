"""Print the published XSD of the config language, or the reference page made from it."""

from __future__ import annotations

import argparse

from autocnnp.engine.schema import SCHEMA_PATH

HELP = "print the config schema (XSD) or its reference page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", action="store_true",
                        help="print the Markdown reference page (docs/config-reference.md)")


def run(args: argparse.Namespace) -> int:
    if args.reference:
        from autocnnp.engine.schema_doc import reference_markdown
        print(reference_markdown(), end="")
    else:
        print(SCHEMA_PATH.read_text(), end="")
    return 0
