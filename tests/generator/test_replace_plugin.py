"""A plugin with mode="replace" must provide what the built-in it replaces provides.

validate and plan say which values that is; a job whose replacing plugin forgets one stops
before training with one message naming the plugin and the value (no traceback, and no
"--resume" remedy: nothing was saved, resuming would fail the same way).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autocnnp.cli import main

ROOT = Path(__file__).resolve().parents[2]

FORGETFUL = '''from autocnnp.generator import ActionPlugin


class HalfStrategy(ActionPlugin):
    type = "dist_strategy"

    def run(self, ctx):
        import tensorflow as tf

        hvd = ctx.require("communicator").hvd
        sgd = tf.keras.optimizers.legacy.SGD(learning_rate=0.01)
        ctx.values["optimizer"] = hvd.DistributedOptimizer(sgd)  # and no sync_callbacks
'''

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <CNN-Parallelism-Generator>
      <module name="train_strategy_def">
        <action type="dist_strategy" mode="replace">
          <value name="HalfStrategy"><path>half.py</path></value>
        </action>
      </module>
    </CNN-Parallelism-Generator>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">1</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""

DUTY = ("plugin HalfStrategy ({path}) replaces train_strategy_def.dist_strategy: its "
        "run(self, ctx) must store optimizer, sync_callbacks in ctx.values")


@pytest.fixture
def config(tmp_path: Path, small_dataset: Path) -> Path:
    (tmp_path / "half.py").write_text(FORGETFUL)
    path = tmp_path / "half.xml"
    path.write_text(CONFIG.format(data=small_dataset, runs=tmp_path / "runs"))
    return path


def test_validate_and_plan_say_what_a_replacing_plugin_must_provide(config: Path,
                                                                    capsys) -> None:
    assert main(["validate", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "note: " + DUTY.format(path=config.parent / "half.py")
    assert main(["validate", "-q", str(config)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["plan", str(config)]) == 0
    assert (f"dist_strategy: (replaced)  [extensible]  + plugin HalfStrategy "
            f"({config.parent / 'half.py'}, replace) must provide: optimizer, sync_callbacks"
            in capsys.readouterr().out)


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun (openmpi-bin)")
def test_a_replacing_plugin_that_misses_a_value_fails_with_one_message(config: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "autocnnp", "run", str(config)], env=env,
                            capture_output=True, text=True, timeout=600)
    # the rank's PluginError is a config problem: its exit status 2 reaches the user
    assert result.returncode == 2, result.stdout + result.stderr
    plugin = f"{config.parent / 'half.py'}:HalfStrategy"
    message = (f"plugin {plugin}: replaces train_strategy_def.dist_strategy "
               f"(mode=\"replace\") but did not store 'sync_callbacks' in ctx.values; a "
               f"replacing plugin must provide what ring_allreduce provides: optimizer, "
               f"sync_callbacks")
    both = result.stdout + result.stderr
    assert "Traceback" not in both
    assert "--resume" not in both
    # every rank runs the plugin and fails alike; the first to record its error is named
    assert re.search(r"autocnnp run: error: rank [01] on \S+ failed: PluginError", result.stderr)
    assert f"failed: PluginError: {message}\n" in result.stderr
    assert ("remedy: set ctx.values[...] for each of them in HalfStrategy.run (autocnnp "
            "describe dist_strategy says what each carries), or drop mode=\"replace\" to keep "
            "the built-in ring_allreduce") in result.stderr
    assert "bug in the generator" not in both
