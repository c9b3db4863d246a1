"""The CNN-Parallelism-Generator: component model, registry, plugins and assembly."""

from autocnnp.generator.components import (Action, ActionPlugin, Binding, Component, Composite,
                                           ExtensibleAction, Generator, Module, Param)

__all__ = ["Action", "ActionPlugin", "Binding", "Component", "Composite", "ExtensibleAction",
           "Generator", "Module", "Param"]
