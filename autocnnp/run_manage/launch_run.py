"""A prepared run directory handed to its backend: manifest, plan, launch.

:func:`launch_run` is the last step of every training ``autocnnp run`` starts (one run, a
member of a group, ``--resume``): the backend the config names
(:func:`~autocnnp.run_manage.backend.get_backend`) plans the job, the run directory records the
manifest (:mod:`~autocnnp.run_manage.records`) and ``plan.json``, and the backend launches,
watches and cleans up. The data and the run directory's files are the orchestrator's to
prepare before; the test metrics are in the run directory after.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TextIO

from autocnnp.engine import rundir
from autocnnp.engine.spec import TrainingSpec
from autocnnp.errors import EnvironmentProblemError
from autocnnp.run_manage.backend import get_backend
from autocnnp.run_manage.records import build_manifest


def launch_run(spec: TrainingSpec, run_dir: Path, *, created: bool, resume: bool,
               out: TextIO, argv: list[str], init_swarm: bool) -> None:
    """Plan and launch the job of ``spec`` in ``run_dir`` and run it to its end.

    ``created``: the run directory is new; when the backend's pre-flight refuses the job, no
    rank ran and no state was recorded, so the directory goes. JobFailedError when it fails.
    """
    backend = get_backend(spec.deployment.backend, out=out, init=init_swarm or None)
    image = spec.deployment.image if backend.uses_image else None
    rundir.write_json(run_dir / rundir.MANIFEST_FILE, build_manifest(spec, argv, image))

    plan = backend.plan(spec, run_dir, resume=resume)
    rundir.write_json(run_dir / rundir.PLAN_FILE, plan.to_dict())
    backend.say(f"run dir: {run_dir}")
    backend.say(backend.announce(plan))
    try:
        backend.launch(spec, plan, run_dir, resume=resume)
    except EnvironmentProblemError:
        # refused by the backend's pre-flight (no launcher, no such partition, ...)
        if created and not (run_dir / rundir.STATE_FILE).exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
