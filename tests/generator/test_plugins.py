"""Plugins: checked without running at validate time, imported and checked again at run time."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocnnp.cli import main
from autocnnp.errors import PluginError
from autocnnp.generator.plugins import check_plugin_file, load_plugin_file

CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <CNN-Parallelism-Generator>
      <module name="train_strategy_def">
        <action class="extensible" type="checkpoint" mode="{mode}">
          <value name="{cls}"><path>plugin.py</path></value>
        </action>
      </module>
    </CNN-Parallelism-Generator>
    <data><train><path>.</path></train></data>
    <hyperparameters/>
  </task>
</system_config>
"""

GOOD = """from autocnnp.generator import ActionPlugin

class Keep(ActionPlugin):
    type = "checkpoint"
    def run(self, ctx):
        ctx.values.setdefault("callbacks", []).append("kept")
"""

BROKEN = {
    "syntax error": ("from autocnnp.generator import ActionPlugin\nclass Keep(ActionPlugin)\n    pass\n",
                     "plugin {p}:2: syntax error: expected ':'"),
    "wrong base class": ("class Keep(object):\n    def run(self, ctx):\n        pass\n",
                         "plugin {p}:1: class Keep must subclass autocnnp.generator.ActionPlugin"),
    "missing run": ("from autocnnp.generator import ActionPlugin\nclass Keep(ActionPlugin):\n    pass\n",
                    "plugin {p}:2: class Keep has no method run(self, ctx)"),
    "wrong signature": ("from autocnnp.generator import ActionPlugin\nclass Keep(ActionPlugin):\n    def run(self):\n        pass\n",
                        "plugin {p}:3: Keep.run must be declared run(self, ctx), found run(self)"),
    "import not installed": ("import tensorflow_nonexistent_pkg\nfrom autocnnp.generator import ActionPlugin\n"
                             "class Keep(ActionPlugin):\n    def run(self, ctx):\n        pass\n",
                             "plugin {p}:1: imports 'tensorflow_nonexistent_pkg', which is not installed (pip install it, or remove the import)"),
    "class missing": ("from autocnnp.generator import ActionPlugin\nclass Kept(ActionPlugin):\n    def run(self, ctx):\n        pass\n",
                      "plugin {p}: no class 'Keep'; did you mean 'Kept'? (classes defined: Kept)"),
    "wrong type": ("from autocnnp.generator import ActionPlugin\nclass Keep(ActionPlugin):\n    type = 'dist_strategy'\n    def run(self, ctx):\n        pass\n",
                   "plugin {p}:3: Keep.type is 'dist_strategy' but the config plugs it into 'checkpoint'"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_plugin_fails_validation_naming_the_file(name, tmp_path, capsys, monkeypatch):
    source, message = BROKEN[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plugin.py").write_text(source)
    (tmp_path / "c.xml").write_text(CONFIG.format(mode="extend", cls="Keep"))
    assert main(["validate", "c.xml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'c.xml:6: <action type="checkpoint">: ' + message.format(p=tmp_path / "plugin.py")


def test_validate_never_executes_the_plugin(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "executed"
    (tmp_path / "plugin.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n" + GOOD)
    (tmp_path / "c.xml").write_text(CONFIG.format(mode="extend", cls="Keep"))
    assert main(["validate", "c.xml"]) == 0
    assert main(["plan", "c.xml"]) == 0
    assert "+ plugin Keep" in capsys.readouterr().out
    assert not marker.exists()


def test_load_plugin_file_returns_the_checked_class(tmp_path):
    (tmp_path / "plugin.py").write_text(GOOD)
    cls = load_plugin_file(tmp_path / "plugin.py", "Keep", "checkpoint")
    from autocnnp.generator import ActionPlugin
    assert issubclass(cls, ActionPlugin) and cls.__name__ == "Keep"


@pytest.mark.parametrize("source,message", [
    ("raise RuntimeError('boom')\n", "failed while importing: RuntimeError: boom"),
    ("class Keep:\n    def run(self, ctx):\n        pass\n", "must be a class that subclasses autocnnp.generator.ActionPlugin"),
    ("from autocnnp.generator import ActionPlugin\nclass Keep(ActionPlugin):\n    def run(self, ctx, extra):\n        pass\n",
     "run must be declared run(self, ctx), found run(self, ctx, extra)"),
    ("from autocnnp.generator import ActionPlugin\nclass Keep(ActionPlugin):\n    pass\n", "does not implement run(self, ctx)"),
])
def test_runtime_load_rejects_what_static_checks_cannot_see(tmp_path, source, message):
    (tmp_path / "plugin.py").write_text(source)
    with pytest.raises(PluginError) as info:
        load_plugin_file(tmp_path / "plugin.py", "Keep", "checkpoint")
    assert str(info.value) == f"plugin {tmp_path / 'plugin.py'}:Keep: {message}"
    assert info.value.plugin == f"{tmp_path / 'plugin.py'}:Keep"


def test_replace_mode_plugin_that_provides_nothing_breaks_bindings(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plugin.py").write_text(GOOD.replace('type = "checkpoint"', 'type = "checkpoint"\n    provides = ()'))
    (tmp_path / "c.xml").write_text(CONFIG.format(mode="replace", cls="Keep"))
    # statically the plugin is assumed to provide what it replaces: valid
    assert main(["validate", "c.xml"]) == 0
    # loaded for real it provides nothing, and the trainer's 'checkpoints' binding is dangling
    from autocnnp.generator.assembly import load_checked_spec
    from autocnnp.errors import BindingError
    from autocnnp.generator.assembly import assemble
    with pytest.raises(BindingError) as info:
        assemble(load_checked_spec(tmp_path / "c.xml"), load_plugins=True)
    assert str(info.value) == ("the component tree does not connect:\n  trainer requires 'checkpoints', which no "
                               "action provides (provided: communicator, dataset, device, hyperparameters, "
                               "lr_schedule, memory, model, optimizer, seed, sync_callbacks, task)")


def test_example_plugins_pass_both_checks():
    root = Path(__file__).resolve().parents[2]
    plugins = sorted((root / "plugins").glob("*.py"))
    assert plugins, "plugins/ must hold at least one example plugin"
    import ast
    for path in plugins:
        tree = ast.parse(path.read_text())
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            action_type = next(s.value.value for s in cls.body if isinstance(s, ast.Assign)
                               and s.targets[0].id == "type")
            assert check_plugin_file(path, cls.name, action_type) == []
            assert load_plugin_file(path, cls.name, action_type).__name__ == cls.name
