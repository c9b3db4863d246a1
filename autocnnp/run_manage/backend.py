"""The one interface every backend implements, and the one place a backend is chosen.

A backend turns a :class:`~autocnnp.engine.spec.TrainingSpec` into ranks running somewhere:

- :meth:`Backend.plan` returns the job's plan as data (what ``autocnnp plan`` prints and
  ``plan.json`` records); :meth:`Backend.preview_plan` is the same for ``autocnnp plan``,
  which may ask the environment what it offers;
- :meth:`Backend.check` is the pre-flight: everything that can be checked before anything is
  started or created;
- :meth:`Backend.launch` runs the plan to its end (launch, watch, clean up), raising
  :class:`~autocnnp.errors.JobFailedError` with the first failure;
- :meth:`Backend.status`, :meth:`Backend.logs` and :meth:`Backend.stop` serve a run directory
  from any process, and :meth:`Backend.cleanup` removes what a job created.

Backends are registered by name in :data:`~autocnnp.engine.vocabulary.BACKENDS` (name ->
``module:Class``, imported only when asked for, so a local run never imports the docker SDK),
the table validation also checks ``<deployment backend>`` against. A new backend is one module,
one line in that table and its tests.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, ClassVar, TextIO

from autocnnp.engine.spec import TrainingSpec
from autocnnp.engine.vocabulary import BACKENDS
from autocnnp.errors import AutocnnpError


class Backend:
    """Where the ranks of a job run; see the module docstring for the life of a job."""

    #: the name a config gives in ``<deployment backend="...">``
    name: ClassVar[str] = ""
    #: whether the ranks run from the config's container image (recorded in the manifest)
    uses_image: ClassVar[bool] = False

    #: what ``autocnnp plan --format NAME`` can print besides text and json: name -> meaning
    plan_formats: ClassVar[dict[str, str]] = {}

    def __init__(self, *, out: TextIO | None = None, **options: Any) -> None:
        self.out = out or sys.stdout

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def plan(self, spec: TrainingSpec, run_dir: Path, *, resume: bool = False) -> Any:
        """The job's plan: frozen data with ``to_dict()``, printed as it will run."""
        raise NotImplementedError

    def preview_plan(self, spec: TrainingSpec, run_dir: Path, *, assume_nodes: str | None = None) -> Any:
        """The plan ``autocnnp plan`` shows (``assume_nodes``: ``NxG`` hypothetical nodes)."""
        return self.plan(spec, run_dir)

    def render_plan(self, plan: Any, fmt: str) -> str:
        """``plan`` in the format ``fmt``, one of :attr:`plan_formats`."""
        raise NotImplementedError(fmt)

    def announce(self, plan: Any) -> str:
        """What ``autocnnp run`` says about ``plan`` just before launching it."""
        return str(plan)

    def check(self, plan: Any, spec: TrainingSpec | None = None) -> Any:
        """Pre-flight: raise EnvironmentProblemError (with the remedy) for what would make the
        launch fail; returns the plan, laid out on what the environment offers."""
        return plan

    def launch(self, spec: TrainingSpec, plan: Any, run_dir: Path, *, resume: bool = False) -> None:
        """Run ``plan`` to its end: check, start, watch, clean up; JobFailedError on failure."""
        raise NotImplementedError

    def status(self, run_dir: Path, state: dict) -> dict:
        """``state`` (``state.json``) completed with what this backend knows of the job now."""
        return state

    def logs(self, run_dir: Path, rank: int | None = None) -> str:
        """The job's logs as this backend collects them; "" for the run directory's own."""
        return ""

    def stop(self, run_dir: Path, state: dict) -> str:
        """Stop the job from another process; returns what was done, in one line."""
        raise NotImplementedError

    def cleanup(self, job_id: str) -> list[str]:
        """Remove what the job created outside the run directory; returns what was removed."""
        return []


def backend_class(name: str) -> type[Backend]:
    """The registered backend class called ``name``."""
    target = BACKENDS.get(str(getattr(name, "value", name)))
    if target is None:
        raise AutocnnpError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_backend(name: str, **options: Any) -> Backend:
    """An instance of the backend called ``name`` (``options`` go to its constructor)."""
    return backend_class(name)(**options)
