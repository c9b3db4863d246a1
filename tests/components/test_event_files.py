"""TensorBoard event files without TensorFlow: the heartbeat's system scalars (both engines)
written in a process that never imports TensorFlow, read back by TensorBoard's own reader.
(The torch engine's epoch scalars: tests/run_manage/test_torch_tools.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

WRITER = """
import json, sys
from pathlib import Path
from autocnnp.run_manage.heartbeat import Heartbeat

beat = Heartbeat(Path(sys.argv[1]), 3, metrics_interval_s=0, tensorboard=True)
samples = [beat.sample_system() for _ in range(2)]
beat.close()
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "samples": samples}))
"""


def test_heartbeat_writes_system_scalars_without_tensorflow(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    proc = subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["tensorflow"] is False
    events = EventAccumulator(str(tmp_path / "tensorboard" / "system" / "rank-3"))
    events.Reload()
    tags = events.Tags()["tensors"]
    assert "system/cpu_percent" in tags and "system/rss_bytes" in tags
    assert not any(tag in tags for tag in ("system/time", "system/rank", "system/host"))
    for sample_no, sample in enumerate(out["samples"]):
        scalar = events.Tensors("system/rss_bytes")[sample_no]
        assert scalar.step == sample_no
        assert float(tensor_util.make_ndarray(scalar.tensor_proto)) == pytest.approx(
            sample["rss_bytes"], rel=1e-6)
