"""The default tree, the config's choices applied, bindings and execution order."""

from __future__ import annotations

from pathlib import Path

from autocnnp.engine.spec import ActionChoice, ArchitectureSpec, DataSpec, ModuleChoice, TrainingSpec
import pytest

from autocnnp.errors import PluginError
from autocnnp.generator.assembly import assemble, dependents, run_actions
from autocnnp.generator.render import render_tree


def spec(*modules: ModuleChoice) -> TrainingSpec:
    return TrainingSpec(source=Path("x.xml"), task="imaging_segmentation", parallelism_degree=2,
                        architecture=ArchitectureSpec(), data=DataSpec(train=Path(".")),
                        generator=modules)


def test_default_tree_is_figure_4_3():
    tree = render_tree(assemble(spec()))
    assert tree == """cnn_parallelism_generator
├── parallelism_definition (composite)
│   ├── train_env_def (module)
│   │   ├── communication_init: horovod
│   │   ├── seeding: global_seed
│   │   ├── device_placement: local_rank
│   │   └── memory_allocation: growth
│   └── train_strategy_def (module)
│       ├── dist_strategy: ring_allreduce  [extensible]
│       ├── checkpoint: periodic  [extensible]
│       └── hyperparameters: inject
└── model_definition (composite)
    └── injection (module)
        ├── task_definition: segmentation
        ├── architecture: inject
        └── dataset: shard"""


def test_execution_order_respects_every_binding():
    generator = assemble(spec())
    position = {name: i for i, name in enumerate(generator.order)}
    for binding in generator.bindings:
        if binding.target != "trainer":
            assert position[binding.source] < position[binding.target], binding
    # device pinning and memory setup happen before the model is built (DESIGN.md section 5)
    assert position["train_env_def.device_placement"] < position["injection.architecture"]
    assert position["injection.architecture"] < position["train_strategy_def.dist_strategy"]


def test_config_choices_replace_defaults():
    choice = ModuleChoice("train_env_def", (ActionChoice("device_placement", "cpu", params={"intra_op_threads": "2"}),
                                            ActionChoice("memory_allocation", "soft_placement")))
    actions = assemble(spec(choice)).actions()
    assert actions["train_env_def.device_placement"].implementation == "cpu"
    assert actions["train_env_def.device_placement"].options == {"intra_op_threads": 2}
    assert actions["train_env_def.memory_allocation"].implementation == "soft_placement"


def test_dependents_of_dist_strategy_name_what_a_port_must_touch():
    generator = assemble(spec())
    assert dependents(generator, "train_strategy_def.dist_strategy") == [
        "injection.architecture", "train_env_def.communication_init", "train_strategy_def.checkpoint",
        "train_strategy_def.hyperparameters", "trainer"]


def test_run_actions_executes_in_order_with_plugins(tmp_path):
    plugin = tmp_path / "p.py"
    plugin.write_text("from autocnnp.generator import ActionPlugin\n"
                      "class P(ActionPlugin):\n    type = 'checkpoint'\n"
                      "    def run(self, ctx):\n        ctx.trace.append('plugin')\n"
                      "        ctx.values['checkpoints'] = 'mine'\n")
    choice = ModuleChoice("train_strategy_def", (ActionChoice("checkpoint", plugin_path=plugin, plugin_class="P",
                                                              mode="replace"),))
    generator = assemble(spec(choice), load_plugins=True)
    # replace the built-in classes by recorders: this tests ordering only, not the actions
    for name, node in generator.actions().items():
        if node.cls is not None:
            node.cls = type("Rec", (), {"__init__": lambda self, **kw: None,
                                        "run": (lambda n: lambda self, ctx: ctx.trace.append(n))(name)})

    class Ctx:
        trace: list = []
        values: dict = {}
        import logging
        log = logging.getLogger("t")
    ctx = Ctx()
    run_actions(generator, ctx)
    assert ctx.trace == [n if n != "train_strategy_def.checkpoint" else "plugin" for n in generator.order]
    # a replacing plugin that stores nothing is stopped right after it ran
    ctx.trace.clear()
    ctx.values.clear()
    plugin.write_text(plugin.read_text().replace("ctx.values['checkpoints'] = 'mine'", "pass"))
    generator = assemble(spec(choice), load_plugins=True)
    for node in generator.actions().values():
        if node.cls is not None:
            node.cls = type("Nop", (), {"__init__": lambda self, **kw: None,
                                        "run": lambda self, ctx: None})
    with pytest.raises(PluginError) as info:
        run_actions(generator, ctx)
    assert info.value.message == (
        f"plugin {plugin}:P: replaces train_strategy_def.checkpoint (mode=\"replace\") but did "
        f"not store 'checkpoints' in ctx.values; a replacing plugin must provide what periodic "
        f"provides: checkpoints")


def test_default_tree_marks_extensible_exactly_the_types_whose_builtins_are_extensible():
    from autocnnp.engine import default_tree
    from autocnnp.generator import registry

    for action_type in default_tree.action_types():
        module = default_tree.module_of(action_type)
        default = dict(default_tree.DEFAULT_TREE_BY_MODULE[module])[action_type]
        cls = registry.lookup(action_type, default).load()
        assert cls.extensible is default_tree.is_extensible(action_type), action_type
