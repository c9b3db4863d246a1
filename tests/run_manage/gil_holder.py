"""A rank whose Python threads cannot run: the main thread sits in one C call that holds the
GIL (a regular expression backtracking for hours), so the heartbeat thread can never answer a
stack request. Used by test_watchdog_unit.py. Not a test module."""

import re
import sys
from pathlib import Path

from autocnnp.run_manage.heartbeat import Heartbeat

beat = Heartbeat(Path(sys.argv[1]), 0, metrics_interval_s=0)
beat.start()
print("ready", flush=True)
re.match(r"(a+)+$", "a" * 64 + "b")  # the frame the stack dump must show
