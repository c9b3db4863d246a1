"""One training of a packed group, in its own process:
``python -m autocnnp.orchestrator.member RUN_DIR [--resume]``.

The group's scheduler (:mod:`autocnnp.orchestrator.experiment`) prepared ``RUN_DIR`` (config
copy, ``spec.json``); this process owns it, launches its ranks and evaluates, exactly as
``autocnnp run`` does for one training. Exit status as ``autocnnp run``'s.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from autocnnp.engine import rundir
from autocnnp.engine.spec import spec_from_dict
from autocnnp.errors import AutocnnpError


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocnnp.orchestrator.member")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    from autocnnp.orchestrator.single_run import execute

    try:
        spec = spec_from_dict(rundir.read_json(args.run_dir / rundir.SPEC_FILE))
        execute(spec, args.run_dir, created=False, resume=args.resume, out=sys.stdout,
                 argv=sys.argv, init_swarm=False)
    except AutocnnpError as exc:
        if os.environ.get("AUTOCNNP_FULL_ERROR") == "1":
            import traceback
            traceback.print_exc()
        print(f"autocnnp run: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("autocnnp: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
