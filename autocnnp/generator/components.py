"""The component model of the CNN-Parallelism-Generator (thesis 4.3.5, Figure 4.3).

- A :class:`Component` is either a :class:`Composite` (holds components) or a
  :class:`Module` (a primitive that holds actions).
- An :class:`Action` is one parallelization step. Non-extensible actions have one built-in
  implementation per name and take parameters; :class:`ExtensibleAction` subclasses can be
  replaced or extended by a user plugin, or joined by an installed implementation (both
  subclass :class:`ActionPlugin`).
- A :class:`Binding` connects the action that provides a named value (the model, the
  communicator, the optimizer...) to every action that requires it. Bindings are declared by
  the actions (``requires`` / ``provides``), so a tree can be checked before anything runs.

Action classes are plain Python: importing one never imports TensorFlow or Horovod; they do
that inside :meth:`Action.run`, which executes on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

from autocnnp.engine.values import parse_bool
from autocnnp.generator.context import RankContext

#: What the training loop needs once every action has run (the tree's sink).
TRAINER_REQUIRES = ("model", "dataset", "optimizer", "hyperparameters", "sync_callbacks",
                    "checkpoints")


@dataclass(frozen=True)
class Param:
    """One parameter an action accepts from ``<param name="...">`` in the config."""

    type: type
    default: Any
    doc: str
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        """Convert the config's text to this parameter's type; raises ValueError."""
        if self.type is bool:
            return parse_bool(text)
        value = self.type(text.strip())
        if self.choices and value not in self.choices:
            raise ValueError(f"expected one of {', '.join(self.choices)}, got {text!r}")
        return value


class Action:
    """One parallelization step, executed on every rank in binding order.

    Subclasses set the class attributes below and implement :meth:`run`. ``run`` receives the
    rank's :class:`~autocnnp.generator.context.RankContext`, reads the values named in
    ``requires`` from ``ctx.values`` and stores the ones named in ``provides``.
    """

    #: the action type as written in ``<action type="...">``
    type: ClassVar[str] = ""
    #: the implementation name as written in ``<value>...</value>``
    name: ClassVar[str] = ""
    extensible: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, **params: Any) -> None:
        merged = {key: p.default for key, p in self.params.items()}
        merged.update(params)
        self.options = merged

    def run(self, ctx: RankContext) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def summary(cls) -> str:
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


class ExtensibleAction(Action):
    """An action that a user plugin may replace or extend (thesis: extensible action)."""

    extensible = True


class ActionPlugin(ExtensibleAction):
    """The one base class of user code plugged into an extensible action, both kinds:

    * a plugin file named in the config
      (``<value name="ClassName"><path>file.py</path></value>``) declares ``type`` and
      ``run``; it runs after (``mode="extend"``) or instead of (``mode="replace"``) the
      built-in implementation, and by default requires and provides what that one does::

          from autocnnp.generator import ActionPlugin

          class LRSchedule(ActionPlugin):
              type = "checkpoint"          # the extensible action it plugs into
              def run(self, ctx):          # runs on every rank
                  ...

    * an installed package's implementation (entry point group ``autocnnp.actions``, named
      ``TYPE.IMPLEMENTATION``) declares ``type``, ``name``, ``requires``, ``provides`` (and
      ``params`` if it takes any) and ``run``; a config selects it by name.

    Both are checked by one validator, :func:`autocnnp.generator.plugins.check_plugin_class`.
    """

    requires: ClassVar[tuple[str, ...] | None] = None  # type: ignore[assignment]
    provides: ClassVar[tuple[str, ...] | None] = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Binding:
    """A declared connection: ``source`` provides ``value`` that ``target`` requires."""

    value: str
    source: str
    target: str

    def __str__(self) -> str:
        return f"{self.source} --{self.value}--> {self.target}"


@dataclass
class ActionNode:
    """An action placed in the tree: its type, implementation class, options and origin."""

    type: str
    implementation: str
    cls: type | None
    options: dict[str, Any] = field(default_factory=dict)
    extensible: bool = False
    origin: str = "builtin"
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    plugins: list["PluginNode"] = field(default_factory=list)

    @property
    def all_requires(self) -> tuple[str, ...]:
        extra = [r for p in self.plugins for r in p.requires if r not in self.requires]
        return self.requires + tuple(dict.fromkeys(extra))

    @property
    def all_provides(self) -> tuple[str, ...]:
        extra = [r for p in self.plugins for r in p.provides if r not in self.provides]
        return self.provides + tuple(dict.fromkeys(extra))


@dataclass
class PluginNode:
    """A user plugin attached to an extensible action."""

    name: str
    source: str
    mode: str
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    cls: type | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Component:
    """A building block of the generator: a composite or a module."""

    name: str

    def walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], "Component"]]:
        yield path + (self.name,), self


@dataclass
class Module(Component):
    """A primitive component: a set of actions towards one parallelization milestone."""

    actions: list[ActionNode] = field(default_factory=list)

    def action(self, action_type: str) -> ActionNode | None:
        return next((a for a in self.actions if a.type == action_type), None)


@dataclass
class Composite(Component):
    """A component made of other components (composites or modules)."""

    children: list[Component] = field(default_factory=list)

    def walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Component]]:
        here = path + (self.name,)
        yield here, self
        for child in self.children:
            yield from child.walk(here)


@dataclass
class Generator:
    """The assembled CNN-Parallelism-Generator: the tree, its bindings and execution order."""

    root: Composite
    bindings: list[Binding]
    order: list[str]

    def modules(self) -> list[Module]:
        return [c for _, c in self.root.walk() if isinstance(c, Module)]

    def actions(self) -> dict[str, ActionNode]:
        """Every action by its qualified name ``module.action_type``."""
        return {f"{m.name}.{a.type}": a for m in self.modules() for a in m.actions}

    def ordered_actions(self) -> list[tuple[str, ActionNode]]:
        table = self.actions()
        return [(name, table[name]) for name in self.order]
