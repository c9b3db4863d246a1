"""Implementations from installed packages (entry-point group autocnnp.actions)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from autocnnp.cli import main
from autocnnp.generator import registry

GOOD = '''from autocnnp.generator import ActionPlugin

class ParameterServer(ActionPlugin):
    """Parameter-server data parallelism (an example port of dist_strategy)."""
    type = "dist_strategy"
    name = "parameter_server"
    requires = ("communicator", "model", "hyperparameters", "lr_schedule")
    provides = ("optimizer", "sync_callbacks")

    def run(self, ctx):
        pass
'''

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <CNN-Parallelism-Generator>
      <module name="train_strategy_def">
        <action class="extensible" type="{type}"><value>{impl}</value></action>
      </module>
    </CNN-Parallelism-Generator>
    <data><train><path>.</path></train></data>
    <hyperparameters/>
  </task>
</system_config>
"""


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Install a package with an autocnnp.actions entry point (a real dist-info on sys.path)."""
    def make(source: str, entry: str) -> Path:
        site = tmp_path / "site"
        (site / "fakeps").mkdir(parents=True)
        (site / "fakeps" / "__init__.py").write_text(source)
        info = site / "fakeps-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeps\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[autocnnp.actions]\n{entry}\n")
        monkeypatch.syspath_prepend(str(site))
        monkeypatch.delitem(sys.modules, "fakeps", raising=False)
        importlib.invalidate_caches()
        registry._entry_point_registrations.cache_clear()
        return site
    yield make
    sys.modules.pop("fakeps", None)
    registry._entry_point_registrations.cache_clear()


def test_installed_implementation_is_listed_and_usable(install, tmp_path, capsys, monkeypatch):
    install(GOOD, "dist_strategy.parameter_server = fakeps:ParameterServer")
    assert main(["components"]) == 0
    assert "        - parameter_server   entry point of fakeps 1.0 fakeps:ParameterServer" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.xml").write_text(CONFIG.format(type="dist_strategy", impl="parameter_server"))
    assert main(["plan", "c.xml"]) == 0
    assert "├── dist_strategy: parameter_server  [extensible]" in capsys.readouterr().out


@pytest.mark.parametrize("source,entry,message", [
    ("class ParameterServer:\n    def run(self, ctx):\n        pass\n",
     "dist_strategy.parameter_server = fakeps:ParameterServer",
     "must be a class that subclasses autocnnp.generator.ActionPlugin"),
    (GOOD.replace("    def run(self, ctx):\n        pass\n", ""),
     "dist_strategy.parameter_server = fakeps:ParameterServer", "does not implement run(self, ctx)"),
    (GOOD.replace('    provides = ("optimizer", "sync_callbacks")\n', ""),
     "dist_strategy.parameter_server = fakeps:ParameterServer",
     "must declare requires and provides (the binding names it reads and stores)"),
    (GOOD, "checkpoint.parameter_server = fakeps:ParameterServer",
     "declares type 'dist_strategy' but is plugged into 'checkpoint'"),
    ("raise ImportError('no module named horovod_ps')\n", "dist_strategy.parameter_server = fakeps:ParameterServer",
     "cannot be loaded: ImportError: no module named horovod_ps"),
])
def test_broken_installed_implementation_is_a_located_error(install, tmp_path, capsys, monkeypatch,
                                                            source, entry, message):
    install(source, entry)
    action_type = entry.split(".")[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.xml").write_text(CONFIG.format(type=action_type, impl="parameter_server"))
    assert main(["validate", "c.xml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f'c.xml:6: <action type="{action_type}">: plugin {action_type}.parameter_server '
                   f"(entry point of fakeps 1.0: fakeps:ParameterServer): {message}\n"
                   f"  remedy: reinstall the package that provides it" if "cannot be loaded" in message else
                   f'c.xml:6: <action type="{action_type}">: plugin {action_type}.parameter_server '
                   f"(entry point of fakeps 1.0: fakeps:ParameterServer): {message}")
