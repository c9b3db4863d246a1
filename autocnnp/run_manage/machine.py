"""What the launching machine offers (cores, host name, Python), read once per command."""

from __future__ import annotations

import os
import sys

from autocnnp.engine.plan import MachineInfo


def detect_machine() -> MachineInfo:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return MachineInfo(cpus=cpus, hostname="localhost", python=sys.executable)
