"""The per-rank context the generator's actions share while they run."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocnnp.engine.spec import TrainingSpec


@dataclass
class RankContext:
    """State of one rank: the spec, the run directory and the values bound between actions.

    ``values`` holds what actions provide (``"communicator"``, ``"model"``, ``"optimizer"``...),
    keyed by the binding names declared on the action classes.
    """

    spec: TrainingSpec
    run_dir: Path
    resume: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("autocnnp.worker"))

    def require(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise RuntimeError(
                f"binding {name!r} has no value: the action that provides it did not run "
                f"(this is a bug in the generator's ordering or in a plugin)") from None

    @property
    def rank(self) -> int:
        return self.values["communicator"].rank if "communicator" in self.values else 0

    @property
    def is_chief(self) -> bool:
        return self.rank == 0
