"""Validate a config (schema, then meaning) and turn it into a :class:`TrainingSpec`.

Phases: :func:`~autocnnp.engine.xml_loader.load_xml` (safe parse, source lines) ->
:func:`~autocnnp.engine.schema.check_schema` (structure and types from the XSD) -> the
semantic pass here (names with did-you-mean, ranges, paths that must exist, aliases that warn).
Every problem is collected; :func:`load_spec` raises one ConfigError holding all of them.
The generator's static check of the tree (implementations, parameters, plugins, bindings)
comes on top of this: :func:`autocnnp.generator.assembly.load_checked_spec` does both.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from lxml import etree

from autocnnp.engine import default_tree
from autocnnp.engine import spec as S
from autocnnp.engine.values import parse_bool
from autocnnp.engine.vocabulary import (ARCHITECTURES, BACKENDS, LOSSES, METRICS, MONAI_PREFIX,
                                        OPTIMIZERS, PRECISIONS, TORCH_CPU_IMAGE, monai_networks)
from autocnnp.engine.schema import check_schema, did_you_mean, unknown
from autocnnp.engine.user_files import check_function_file
from autocnnp.engine.xml_loader import load_xml
from autocnnp.errors import ConfigError, ConfigProblem

TASKS = {"imaging_segmentation": "imaging_segmentation", "segmentation": "imaging_segmentation"}


@dataclass
class Checker:
    """Collects problems and warnings while the semantic pass walks the tree."""

    source: Path
    problems: list[ConfigProblem] = field(default_factory=list)
    warnings: list[ConfigProblem] = field(default_factory=list)

    def problem(self, element: etree._Element | None, label: str, message: str) -> None:
        line = element.sourceline if element is not None else None
        self.problems.append(ConfigProblem(self.source, line, label, message))

    def warn(self, element: etree._Element, label: str, message: str) -> None:
        self.warnings.append(ConfigProblem(self.source, element.sourceline, label, message))

    def first_of(self, element: etree._Element, label: str, kind: str, raw: str, name: str,
                 seen: dict[str, int]) -> bool:
        """Warn when ``raw`` is an alias of ``name``; report a duplicate ``name``.

        Returns False for a duplicate (the caller skips it) and records the first line in ``seen``.
        """
        if name != raw and raw.lower() != name:
            self.warn(element, label, f"{raw!r} is accepted as an alias; write {name!r}")
        if name in seen:
            self.problem(element, label, f"duplicate {kind} {name!r} (first at line {seen[name]})")
            return False
        seen[name] = element.sourceline
        return True

    def path(self, element: etree._Element | None, label: str, must_exist: bool = True) -> Path | None:
        if element is None or not (element.text or "").strip():
            return None
        path = Path(element.text.strip()).expanduser()
        if not path.is_absolute():
            path = _absolute(self.source.parent / path)
        if must_exist and not path.exists():
            self.problem(element, label, f"path {element.text.strip()!r} does not exist "
                                         f"(resolved to {path})")
        return path


def _absolute(path: Path) -> Path:
    """An absolute, normalised path that keeps symlinks as the user named them."""
    return Path(os.path.normpath(os.path.abspath(path)))


# --- value parsers: text -> value, or ValueError with the reason ---------------------------

def _positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise ValueError(f"must be greater than 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise ValueError(f"must be between 0 and 1, got {text}")
    return value


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise ValueError(f"must be at least {low}, got {text}")
        return value
    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}{did_you_mean(value, options).rstrip('.')}")
        return value
    return parse


_bool = parse_bool


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")


def _slurm_time(text: str) -> str:
    """A Slurm time limit as sbatch --time takes it (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]])."""
    if not _SLURM_TIME.match(text):
        raise ValueError(f"{text!r} is not a Slurm time limit (MINUTES, HH:MM:SS or "
                         f"DAYS-HH[:MM[:SS]], e.g. 2:00:00 or 1-12)")
    return text


NODE_DOCKER_SCHEMES = ("ssh://", "tcp://", "unix://")


def _node_docker(text: str) -> str:
    """A Docker daemon URL template for every swarm node: ssh://, tcp:// or unix://, naming
    the node by {addr} or {hostname} (a URL without either would reach the same daemon)."""
    if not text.startswith(NODE_DOCKER_SCHEMES):
        raise ValueError(f"{text!r} is not a Docker daemon URL (ssh://USER@{{addr}}, "
                         f"tcp://{{addr}}:PORT or unix:///PATH/{{hostname}}.sock)")
    if "{addr}" not in text and "{hostname}" not in text:
        raise ValueError(f"{text!r} names no node: put {{addr}} (the node's swarm address) or "
                         f"{{hostname}} where each node's address goes, e.g. ssh://root@{{addr}}")
    try:
        text.format(addr="10.0.0.1", hostname="node")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"{text!r}: only {{addr}} and {{hostname}} may be filled in ({exc})") from None
    return text


def _list(text: str) -> tuple[str, ...]:
    return tuple(p for p in text.replace(",", " ").split() if p)


@dataclass(frozen=True)
class Prop:
    """A property a section accepts: the spec field it sets and how its text is parsed."""

    field: str
    parse: Callable[[str], Any]
    aliases: tuple[str, ...] = ()


#: what early stopping and reduce-on-plateau may watch ("auto": val_loss with a valid split)
MONITORED = ("auto", "loss", "val_loss", "dice", "val_dice")


def _loss(text: str) -> str:
    """A built-in loss name, or a loss file (``.py``, resolved later against the config)."""
    if text.strip().endswith(".py"):
        return text.strip()
    return _choice(*LOSSES)(text)


def _weights(text: str) -> tuple[float, ...]:
    values = tuple(_number(t) for t in _list(text))
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"expected positive numbers, one per class, got {text!r}")
    return values


def _beta(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise ValueError(f"must be at least 0 and below 1, got {text}")
    return value


def _factor(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise ValueError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


HYPERPARAMETERS = {
    "lr": Prop("lr", _positive_float, ("learning_rate",)),
    "optimizer": Prop("optimizer", _choice(*OPTIMIZERS), ("optimiser",)),
    "loss": Prop("loss", _loss),
    "minibatch_size": Prop("minibatch_size", _int_at_least(1), ("minibarch_size", "batch_size")),
    "start_epoch": Prop("start_epoch", _int_at_least(0)),
    "end_epoch": Prop("end_epoch", _int_at_least(1)),
    "momentum": Prop("momentum", _fraction),
    "beta_1": Prop("beta_1", _beta),
    "beta_2": Prop("beta_2", _beta),
    "weight_decay": Prop("weight_decay", lambda t: _fraction_or_float(t)),
    "class_weights": Prop("class_weights", _weights),
    "precision": Prop("precision", _choice(*PRECISIONS)),
}
LR_POLICY = {
    "warmup_epochs": Prop("warmup_epochs", lambda t: float(_int_at_least(0)(t)) if t.strip().isdigit() else _fraction_or_float(t)),
    "stabilization_fraction": Prop("stabilization_fraction", _fraction),
    "decay_fraction": Prop("decay_fraction", _fraction),
    "stabilization_factor": Prop("stabilization_factor", _positive_float),
    "decay_coefficient": Prop("decay_coefficient", _fraction),
    "plateau_patience": Prop("plateau_patience", _int_at_least(0)),
    "plateau_factor": Prop("plateau_factor", _factor),
    "plateau_min_lr": Prop("plateau_min_lr", lambda t: _fraction_or_float(t)),
    "plateau_monitor": Prop("plateau_monitor", _choice(*MONITORED)),
}
DEPLOYMENT = {
    "launcher": Prop("launcher", lambda t: S.Launcher(_choice("mpirun", "horovodrun", "srun")(t))),
    "hosts": Prop("hosts", _list),
    "threads_per_rank": Prop("threads_per_rank", _int_at_least(1)),
    "gpus_per_rank": Prop("gpus_per_rank", _int_at_least(0)),
    "image": Prop("image", str.strip),
    "constraints": Prop("node_constraints", lambda t: tuple(p.strip() for p in t.split(",") if p.strip())),
    "network": Prop("network", str.strip),
    "shared_volume": Prop("shared_volume", str.strip),
    "node_docker": Prop("node_docker", lambda t: _node_docker(t.strip())),
    "rendezvous_timeout": Prop("rendezvous_timeout_s", _int_at_least(1)),
    "partition": Prop("partition", str.strip),
    "nodes": Prop("nodes", _int_at_least(1)),
    "tasks_per_node": Prop("tasks_per_node", _int_at_least(1)),
    "time_limit": Prop("time_limit", lambda t: _slurm_time(t.strip())),
    "account": Prop("account", str.strip),
    "qos": Prop("qos", str.strip),
    "sbatch": Prop("sbatch_lines", lambda t: tuple(l.strip() for l in t.splitlines() if l.strip())),
    "modules": Prop("modules", _list),
    "container": Prop("container", str.strip),
    "signal_before": Prop("signal_before_s", _int_at_least(10)),
    "group_mode": Prop("group_mode", lambda t: S.GroupMode(_choice(*(m.value for m in S.GroupMode))(t))),
    "slots": Prop("slots", _int_at_least(1)),
}
SLURM_ONLY = ("partition", "nodes", "tasks_per_node", "time_limit", "account", "qos", "sbatch",
              "modules", "container", "signal_before")
REPRODUCIBILITY = {
    "seed": Prop("seed", _int_at_least(0)),
    "repeats": Prop("repeats", _int_at_least(1)),
    "deterministic": Prop("deterministic", _bool),
}
MONITORING = {
    "tensorboard": Prop("tensorboard", _bool),
    "weight_check": Prop("weight_check", _bool),
    "checkpoint_every": Prop("checkpoint_every", _int_at_least(1)),
    "keep_checkpoints": Prop("keep_checkpoints", _int_at_least(1)),
    "early_stopping_patience": Prop("early_stopping_patience", _int_at_least(0)),
    "early_stopping_monitor": Prop("early_stopping_monitor", _choice(*MONITORED)),
    "early_stopping_min_delta": Prop("early_stopping_min_delta", lambda t: _fraction_or_float(t)),
    "hang_timeout": Prop("hang_timeout_s", lambda t: _seconds_or(t, "auto", None)),
    "hang_floor": Prop("hang_floor_s", lambda t: _positive_float(t)),
    "metrics_interval": Prop("metrics_interval_s", lambda t: _fraction_or_float(t)),
    "prometheus_port": Prop("prometheus_port", lambda t: _port(t)),
    "divergence_factor": Prop("divergence_factor", lambda t: _divergence_factor(t)),
    "collapse_fraction": Prop("collapse_fraction", _beta),
    "collapse_monitor": Prop("collapse_monitor", _choice("auto", "dice", "val_dice")),
}
EVALUATION = {"metrics": Prop("metrics", lambda t: _metrics(t))}
PREPROCESSING = {
    "source": Prop("source", str.strip), "output": Prop("output", str.strip),
    "masks": Prop("masks", str.strip), "axis": Prop("axis", _int_at_least(0)),
    "slices": Prop("slices", _int_at_least(1)), "range": Prop("slice_range", lambda t: _range(t)),
    "size": Prop("size", _int_at_least(1)),
    "normalize": Prop("normalize", _choice("minmax", "zscore", "none")),
    "format": Prop("format", _choice("npy", "png")), "channel": Prop("channel", _int_at_least(0)),
}


def _seconds_or(text: str, word: str, meaning: Any) -> Any:
    """Seconds (at least 0; 0 is off), or ``word`` standing for ``meaning``."""
    if text.strip().lower() == word:
        return meaning
    value = _number(text)
    if value < 0:
        raise ValueError(f"expected seconds (0: off) or {word}, got {text!r}")
    return value


def _port(text: str) -> int | None:
    """A TCP port, ``auto`` (0: any free port) or ``off``."""
    word = text.strip().lower()
    if word in ("off", "none", "false"):
        return None
    if word == "auto":
        return 0
    value = _int_at_least(1)(text)
    if value > 65535:
        raise ValueError(f"expected a TCP port (1-65535), auto or off, got {text!r}")
    return value


def _divergence_factor(text: str) -> float:
    value = _number(text)
    if value != 0 and value <= 1:
        raise ValueError(f"must be above 1 (the loss may grow to this multiple of its best) "
                         f"or 0 (off), got {text}")
    return value


def _fraction_or_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise ValueError(f"must be at least 0, got {text}")
    return value


def _metrics(text: str) -> tuple[str, ...]:
    names = _list(text)
    for name in names:
        if name not in METRICS:
            raise ValueError(unknown("metric", name, METRICS))
    if not names:
        raise ValueError("name at least one metric")
    return names


def _range(text: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    if not sep:
        raise ValueError(f"expected START:STOP, got {text!r}")
    a, b = int(start), int(stop)
    if not 0 <= a < b:
        raise ValueError(f"expected 0 <= START < STOP, got {text!r}")
    return a, b


def read_properties(check: Checker, section: etree._Element | None, table: dict[str, Prop],
                    label: str) -> dict[str, Any]:
    """Parse ``<property name=...>`` children of ``section`` into {field: value}."""
    values: dict[str, Any] = {}
    if section is None:
        return values
    aliases = {alias: name for name, p in table.items() for alias in p.aliases}
    seen: dict[str, int] = {}
    for prop in section.findall("property"):
        raw = (prop.get("name") or "").strip()
        name = raw if raw in table else aliases.get(raw) or aliases.get(raw.lower()) or (
            raw.lower() if raw.lower() in table else None)
        where = f'property name="{raw}"'
        if name is None:
            check.problem(prop, where, unknown(f"{label} property", raw, list(table), aliases))
            continue
        if not check.first_of(prop, where, "property", raw, name, seen):
            continue
        text = (prop.text or "").strip()
        if not text:
            check.problem(prop, where, "has no value")
            continue
        try:
            values[table[name].field] = table[name].parse(text)
        except ValueError as exc:
            check.problem(prop, where, str(exc))
    return values


def _architecture(check: Checker, element: etree._Element | None) -> S.ArchitectureSpec:
    if element is None:
        return S.ArchitectureSpec()
    params: dict[str, Any] = {}
    for param in element.findall("param"):
        params[param.get("name", "")] = _auto_type((param.text or "").strip())
    name_el, path_el = element.find("name"), element.find("path")
    init = _init_model(check, element.find("init"))
    if path_el is not None:
        path = check.path(path_el, "path")
        if path is not None and path.exists() and path.suffix != ".py":
            check.problem(path_el, "path", f"architecture file must be a Python file (.py), got {path.name}")
        return S.ArchitectureSpec(name=None, path=path, params=params, init=init)
    name = (name_el.text or "").strip() if name_el is not None else "unet"
    if name.lower().startswith(MONAI_PREFIX):
        name = MONAI_PREFIX + name[len(MONAI_PREFIX):]
        _monai_network(check, name_el, name)
    else:
        name = name.lower()
        if name not in ARCHITECTURES:
            check.problem(name_el, "name", unknown("architecture", name, ARCHITECTURES))
    return S.ArchitectureSpec(name=name, path=None, params=params, init=init)


def _monai_network(check: Checker, element: etree._Element, name: str) -> None:
    """``monai.<Class>``: MONAI must be installed here and offer that network."""
    networks = monai_networks()
    if networks is None:
        check.problem(element, "name", f"{name} is a network of MONAI, which is not installed; "
                      "install the extra: pip install -c constraints.txt -e '.[monai]'")
    elif name[len(MONAI_PREFIX):] not in networks:
        check.problem(element, "name", f"unknown MONAI network {name!r}" + did_you_mean(
            name, [MONAI_PREFIX + n for n in networks],
            otherwise=" (not a class of monai.networks.nets)"))


def _init_model(check: Checker, element: etree._Element | None) -> Path | None:
    """``<init>``: a run directory (its ``model/``), a SavedModel folder or a .keras/.h5 file."""
    path = check.path(element, "init")
    if path is None or not path.exists():
        return path
    if path.is_dir():
        if (path / "model" / "saved_model.pb").is_file():
            return path / "model"
        if (path / "saved_model.pb").is_file():
            return path
        check.problem(element, "init", f"{path} is neither a run directory with a trained "
                                       f"model (model/saved_model.pb) nor a SavedModel folder")
    elif path.suffix not in (".keras", ".h5"):
        check.problem(element, "init", f"{path.name}: expected a run directory, a SavedModel "
                                       f"folder or a .keras/.h5 model file")
    return path


def _auto_type(text: str) -> Any:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _data(check: Checker, element: etree._Element | None,
          produced: Path | None = None) -> S.DataSpec:
    """The <data> block; paths under ``produced`` (the preprocessing output) may not exist yet."""
    if element is None:
        return S.DataSpec(train=check.source.parent)
    demo = element.get("demo")
    splits = {}
    for split in ("train", "valid", "test", "cases"):
        holder = element.find(split)
        path_el = holder.find("path") if holder is not None else None
        path = check.path(path_el, f"{split}/path", must_exist=False)
        pending = demo is not None or (produced is not None and path is not None
                                       and path.is_relative_to(produced))
        if path is not None and not pending and not path.exists():
            check.path(path_el, f"{split}/path")  # reports the missing path
        splits[split] = path
    split_spec = _split(check, element, splits)
    classes_el = element.find("classes")
    classes = _list(classes_el.text or "") if classes_el is not None else ("background", "foreground")
    if len(classes) < 2:
        check.problem(classes_el, "classes", "name at least two classes (background first)")
    elif len(set(classes)) != len(classes):
        check.problem(classes_el, "classes", "class names must be unique")
    size_el = element.find("image_size")
    channels_el = element.find("channels")
    channels = _list(channels_el.text or "") if channels_el is not None else None
    if channels_el is not None and not channels:
        check.problem(channels_el, "channels", "name at least one channel (an index or a "
                                               "modality name of dataset.json)")
    augmentation = _augmentation(check, element.find("augmentation"))
    return S.DataSpec(train=splits["cases"] or splits["train"] or check.source.parent,
                      valid=splits["valid"], test=splits["test"],
                      format=element.get("format", "auto"),
                      classes=classes, image_size=int(size_el.text) if size_el is not None
                      and (size_el.text or "").strip().isdigit() else None,
                      channels=channels or None, augmentation=augmentation, demo=demo,
                      cache=_data_cache(element.get("cache")), split=split_spec)


def _split(check: Checker, data: etree._Element,
           paths: dict[str, Path | None]) -> S.SplitSpec | None:
    """``<split>`` over ``<cases>``; every problem of the pair at its line."""
    element = data.find("split")
    cases_el = data.find("cases")
    if element is None:
        if cases_el is not None:
            check.problem(cases_el, "cases", "<cases> needs a <split> saying how to cut them "
                                             '(<split test="0.2"/> or <split folds="5"/>)')
        elif paths["train"] is None:
            check.problem(data, "data", "missing <train> (or <cases> with a <split>)")
        return None
    if cases_el is None:
        check.problem(element, "split", "<split> needs <cases><path>: the folder holding every "
                                        "case (MSD imagesTr/labelsTr, NIfTI volumes or 2D pairs)")
    for name in ("train", "valid", "test"):
        if data.find(name) is not None:
            check.problem(data.find(name), name,
                          f"<{name}> and <split> exclude each other: <split> cuts the <cases> "
                          f"folder into train, valid and test itself")
    values: dict[str, Any] = {"line": element.sourceline}
    parsers: dict[str, Callable[[str], Any]] = {
        "folds": _int_at_least(2), "valid": _fraction, "test": _fraction,
        "seed": _int_at_least(0), "stratify": str.strip, "case_id": str.strip,
        "file": str.strip}
    for name, parse in parsers.items():
        raw = element.get(name)
        if raw is None:
            continue
        try:
            values[name] = parse(raw)
        except ValueError as exc:
            check.problem(element, f'split {name}="{raw}"', str(exc))
    if "folds" in element.attrib and "test" in element.attrib:
        check.problem(element, "split", "folds and test exclude each other: with folds, each "
                                        "held-out fold is the test split of its training")
    if "folds" in values:
        values.setdefault("test", 0.0)
    if values.get("valid", 0.0) + values.get("test", 0.2) >= 1:
        check.problem(element, "split", f"valid ({values.get('valid', 0.0):g}) + test "
                                        f"({values.get('test', 0.2):g}) must be below 1: "
                                        f"the rest of the cases is the train split")
    if "case_id" in values:
        try:
            re.compile(values["case_id"])
        except re.error as exc:
            check.problem(element, f'split case_id="{values["case_id"]}"',
                          f"not a regular expression: {exc}")
    if "file" in values:
        path = Path(values["file"]).expanduser()
        values["file"] = path if path.is_absolute() else _absolute(check.source.parent / path)
        if not values["file"].is_file():
            check.problem(element, f'split file="{element.get("file")}"',
                          f"no such splits file (resolved to {values['file']})")
    return S.SplitSpec(**values)


def _augmentation(check: Checker,
                  element: etree._Element | None) -> S.AugmentationSpec | None:
    """``<augmentation>``: the thesis's ranges, each attribute overriding one; None if absent."""
    if element is None:
        return None
    values: dict[str, Any] = {}
    for name in ("rotation", "translation"):
        raw = element.get(name)
        if raw is not None:
            try:
                values[name] = float(raw)
            except ValueError:
                check.problem(element, f'augmentation {name}="{raw}"', "expected a number")
    raw = element.get("zoom")
    if raw is not None:
        parts = _list(raw)
        try:
            numbers = tuple(float(p) for p in parts)
        except ValueError:
            numbers = ()
        if len(numbers) != 2:
            check.problem(element, f'augmentation zoom="{raw}"',
                          "expected 'MIN MAX' scale factors, e.g. '0.8 1.2'")
        else:
            values["zoom"] = numbers
    raw = element.get("flip")
    if raw is not None:
        values["flip"] = tuple(f for f in _list(raw) if f != "none")
    try:
        return S.AugmentationSpec(**values)
    except ValueError as exc:
        check.problem(element, "augmentation", str(exc))
        return None


def _data_cache(text: str | None) -> S.DataCache:
    """``<data cache>``; a value the schema refused (reported there) falls back to auto."""
    try:
        return S.DataCache(text or "auto")
    except ValueError:
        return S.DataCache.AUTO


def _generator(check: Checker, element: etree._Element | None) -> tuple[S.ModuleChoice, ...]:
    if element is None:
        return ()
    modules: dict[str, S.ModuleChoice] = {}
    first_line: dict[str, int] = {}
    known_modules = default_tree.module_names()
    for module in element.findall("module"):
        raw = (module.get("name") or "").strip()
        name = default_tree.MODULE_ALIASES.get(raw, raw)
        where = f'module name="{raw}"'
        if name not in known_modules:
            check.problem(module, where, unknown("module", raw, known_modules))
            continue
        if not check.first_of(module, where, "module", raw, name, first_line):
            continue
        modules[name] = S.ModuleChoice(name, tuple(_actions(check, module, name)), module.sourceline)
    return tuple(modules.values())


def _actions(check: Checker, module: etree._Element, module_name: str) -> list[S.ActionChoice]:
    choices: list[S.ActionChoice] = []
    seen: dict[str, int] = {}
    own = [t for t, _ in default_tree.DEFAULT_TREE_BY_MODULE[module_name]]
    for action in module.findall("action"):
        raw = (action.get("type") or "").strip()
        canonical = raw.lower()
        canonical = default_tree.ACTION_ALIASES.get(canonical, canonical)
        where = f'action type="{raw}"'
        if canonical not in default_tree.action_types():
            check.problem(action, where, unknown("action type", raw, own, default_tree.action_types()))
            continue
        if canonical not in own:
            check.problem(action, where, f"action {canonical!r} belongs to module "
                                         f"{default_tree.module_of(canonical)!r}, not {module_name!r}")
            continue
        if canonical != raw:
            check.warn(action, where, f"{raw!r} is accepted as an alias; write {canonical!r}")
        if not check.first_of(action, where, "action", canonical, canonical, seen):
            continue
        declared = action.get("class")
        extensible = default_tree.is_extensible(canonical)
        # a class that is neither is the schema's error already: one message per mistake
        if declared in ("extensible", "non_extensible") and (declared == "extensible") != extensible:
            actual = "extensible" if extensible else "non_extensible"
            check.problem(action, where, f"class=\"{declared}\" but {canonical} is {actual}")
        value = action.find("value")
        impl = plugin_path = plugin_class = None
        if value is not None:
            path_el = value.find("path")
            if path_el is not None:
                plugin_path = check.path(path_el, "value/path", must_exist=False)
                plugin_class = value.get("name") or (plugin_path.stem if plugin_path else None)
            else:
                impl = (value.text or "").strip() or None
        params = {p.get("name", ""): (p.text or "").strip() for p in action.findall("param")}
        choices.append(S.ActionChoice(type=canonical, implementation=impl, plugin_path=plugin_path,
                                      plugin_class=plugin_class, mode=action.get("mode", "extend"),
                                      params=params, line=action.sourceline))
    return choices


def _section(check: Checker, task: etree._Element, tag: str, table: dict[str, Prop],
             cls: type, **extra: Any) -> Any:
    element = task.find(tag)
    values = read_properties(check, element, table, tag)
    values.update(extra)
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def _parallelism_degree(check: Checker, element: etree._Element | None) -> int:
    """``<parallelism-degree>`` as written (``+3`` is 3, as the schema reads it); 1 when absent.

    Text that is not a number is a problem (the schema's own, not reported twice), never a
    silent 1.
    """
    if element is None:
        return 1
    text = (element.text or "").strip()
    try:
        degree = int(text)
    except ValueError:
        degree = 0
    if degree >= 1:
        return degree
    if not any(p.line == element.sourceline and p.element == "parallelism-degree"
               for p in check.problems):
        check.problem(element, "parallelism-degree",
                      f"{text!r} is not valid; expected a positive integer (1, 2, ...)")
    return 1


def build_spec(tree: etree._ElementTree, source: Path, check: Checker) -> S.TrainingSpec | None:
    """The semantic pass over a schema-checked tree."""
    root = tree.getroot()
    task = root.find("task")
    if task is None:
        return None
    task_name = (task.get("name") or "").strip()
    if task_name not in TASKS:
        check.problem(task, f'task name="{task_name}"', unknown("task", task_name, list(TASKS)))
    degree = _parallelism_degree(check, task.find("parallelism-degree"))

    hyper = _section(check, task, "hyperparameters", HYPERPARAMETERS, S.Hyperparameters)
    if hyper.end_epoch <= hyper.start_epoch:
        check.problem(task.find("hyperparameters"), "hyperparameters",
                      f"end_epoch ({hyper.end_epoch}) must be greater than start_epoch ({hyper.start_epoch})")

    hyper = _check_hyperparameters(check, task, hyper)

    policy_el = task.find("lr_policy")
    policy = _section(check, task, "lr_policy", LR_POLICY, S.LRPolicySpec,
                      **({"name": S.LRPolicyName(policy_el.get("name"))} if policy_el is not None
                         and policy_el.get("name") in S.LRPolicyName._value2member_map_ else {}))
    if policy.stabilization_fraction + policy.decay_fraction > 1 + 1e-9:
        check.problem(policy_el, "lr_policy", "stabilization_fraction + decay_fraction must not exceed 1")

    deploy_el = task.find("deployment")
    backend = deploy_el.get("backend", "local") if deploy_el is not None else "local"
    if backend not in BACKENDS:
        check.problem(deploy_el, "deployment", f"backend={backend!r} is not allowed"
                      f"{did_you_mean(backend, tuple(BACKENDS))} Known: {', '.join(BACKENDS)}")
        backend = S.Backend.LOCAL.value
    deployment = _section(check, task, "deployment", DEPLOYMENT, S.DeploymentSpec,
                          backend=backend)
    if deployment.backend == S.Backend.HOSTS:
        _check_hosts(check, deploy_el, deployment, degree)
    deployment = _check_launcher(check, deploy_el, deployment, degree)

    preprocessing = None
    pre_el = task.find("preprocessing")
    if pre_el is not None:
        values = read_properties(check, pre_el, PREPROCESSING, "preprocessing")
        missing = [k for k in ("source", "output") if k not in values]
        if missing:
            check.problem(pre_el, "preprocessing", f"missing required property {', '.join(missing)}")
        else:
            for key in ("source", "output", "masks"):
                if key in values:
                    p = Path(values[key]).expanduser()
                    values[key] = p if p.is_absolute() else _absolute(source.parent / p)
            if not values["source"].exists():
                check.problem(pre_el, "preprocessing", f"source {values['source']} does not exist")
            preprocessing = S.PreprocessingSpec(**values)

    run_root_el = task.find("run_root")
    data = _data(check, task.find("data"), preprocessing.output if preprocessing else None)
    reproducibility = _section(check, task, "reproducibility", REPRODUCIBILITY,
                               S.ReproducibilitySpec)
    if data.split is not None and data.split.folds and reproducibility.repeats > 1:
        check.problem(_property(task, "reproducibility", "repeats"), 'property name="repeats"',
                      "repeats and <split folds> exclude each other: a k-fold group is already "
                      "k trainings (repeat the cross-validation with another split seed)")
    monitoring = _section(check, task, "monitoring", MONITORING, S.MonitoringSpec)
    _check_keras_settings(check, task, hyper, data, policy, monitoring)
    architecture = _architecture(check, task.find("CNN_archi"))
    generator = _generator(check, task.find("CNN-Parallelism-Generator"))
    deployment = _check_engine(check, task, generator, architecture, deployment, hyper)
    return S.TrainingSpec(
        source=source, task=TASKS.get(task_name, task_name), parallelism_degree=degree,
        architecture=architecture,
        data=data,
        hyperparameters=hyper,
        generator=generator,
        lr_policy=policy, deployment=deployment,
        reproducibility=reproducibility,
        monitoring=monitoring,
        evaluation=_section(check, task, "evaluation", EVALUATION, S.EvaluationSpec),
        preprocessing=preprocessing,
        run_root=check.path(run_root_el, "run_root", must_exist=False),
    )


#: modules (and their submodules) that tell which framework an architecture file builds its
#: model with: the frameworks themselves and autocnnp's own builders
FRAMEWORK_MODULES = {
    "horovod": ("tensorflow", "keras", "tf_keras", "autocnnp.components.models.unet",
                "autocnnp.components.models.fcn"),
    "torch": ("torch", "monai", "autocnnp.components.models.torch_models"),
}
#: what each engine's architecture files return, for the messages
ENGINE_MODELS = {"horovod": "a Keras model (tf.keras.Model)", "torch": "a torch.nn.Module"}
#: the dist_strategy value that runs each engine
ENGINE_STRATEGIES = {"horovod": "ring_allreduce", "torch": "torch_ddp"}


def architecture_framework(path: Path) -> tuple[str, str] | None:
    """The engine an architecture file is written for and the import that says so, from its
    imports (read with :mod:`ast`, never run): ``("horovod", "tensorflow")``,
    ``("torch", "torch")``..., or None when it imports neither framework or both."""
    import ast

    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError):
        return None
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module)
    found = {engine: name for engine, modules in FRAMEWORK_MODULES.items()
             for name in sorted(imported) for m in modules
             if name == m or name.startswith(m + ".")}
    return next(iter(found.items())) if len(found) == 1 else None


def _check_engine(check: Checker, task: etree._Element, generator: tuple[S.ModuleChoice, ...],
                  architecture: S.ArchitectureSpec, deployment: S.DeploymentSpec,
                  hyper: S.Hyperparameters) -> S.DeploymentSpec:
    """What the engine chosen by dist_strategy cannot run: an architecture file written for
    the other engine, a Keras <init> model, launchers and backends it has no plan for.
    Returns ``deployment`` with the engine's image when the config names none."""
    choice = next((a for m in generator for a in m.actions if a.type == "dist_strategy"), None)
    engine = default_tree.engine_of(choice.implementation if choice else None)
    strategy = ENGINE_STRATEGIES[engine]
    archi = task.find("CNN_archi")
    path_el = archi.find("path") if archi is not None else None
    if architecture.path is not None and architecture.path.is_file():
        found = architecture_framework(architecture.path)
        if found is not None and found[0] != engine:
            written_for, module = found
            check.problem(path_el, "CNN_archi/path",
                          f"{architecture.path.name} builds {ENGINE_MODELS[written_for]} (it "
                          f"imports {module}), but dist_strategy {strategy} runs the {engine} "
                          f"engine, which needs {ENGINE_MODELS[engine]} from build_model; use "
                          f"dist_strategy {ENGINE_STRATEGIES[written_for]} for this file, or "
                          f"write its build_model for the {engine} engine (docs/torch.md)")
    if engine != "torch":
        if (architecture.name or "").startswith(MONAI_PREFIX):
            check.problem(archi.find("name") if archi is not None else None, "CNN_archi/name",
                          f"{architecture.name} is a MONAI (PyTorch) network, but dist_strategy "
                          f"{strategy} runs the {engine} engine; use dist_strategy torch_ddp")
        if hyper.precision != "fp32":
            check.problem(_property(task, "hyperparameters", "precision"),
                          'property name="precision"',
                          f"precision {hyper.precision} is implemented on the torch engine "
                          f"(dist_strategy torch_ddp) at this version; the Horovod engine "
                          f"trains in fp32")
        return deployment
    if architecture.init is not None:
        check.problem(archi.find("init") if archi is not None else None, "CNN_archi/init",
                      "<init> loads a Keras model, which the torch engine (dist_strategy "
                      "torch_ddp) cannot use; drop <init> or use dist_strategy ring_allreduce")
    deploy_el = task.find("deployment")
    if deployment.launcher is S.Launcher.HOROVODRUN:
        check.problem(deploy_el, "deployment", "launcher horovodrun starts Horovod ranks; "
                      "dist_strategy torch_ddp runs the torch engine: use launcher mpirun "
                      "(the default)")
    image_el = _property(task, "deployment", "image")
    if image_el is None or image_el.get("name") != "image":
        deployment = dataclasses.replace(deployment, image=TORCH_CPU_IMAGE)
        if deployment.backend == S.Backend.SWARM and (architecture.name or "").startswith(
                MONAI_PREFIX):
            check.problem(archi.find("name") if archi is not None else None, "CNN_archi/name",
                          f"{architecture.name} needs MONAI in the ranks' image, and "
                          f"{TORCH_CPU_IMAGE} (the swarm default for torch_ddp) has none; "
                          f'build one FROM {TORCH_CPU_IMAGE} that adds monai (constraints.txt) '
                          f'and name it with <property name="image"> in <deployment>')
    return deployment


def _property(task: etree._Element, section: str, name: str) -> etree._Element | None:
    """The ``<property name=NAME>`` element of ``section`` (for a problem's line)."""
    holder = task.find(section)
    if holder is None:
        return None
    return next((p for p in holder.findall("property") if (p.get("name") or "").strip() == name),
                holder)


def _check_hyperparameters(check: Checker, task: etree._Element,
                           hyper: S.Hyperparameters) -> S.Hyperparameters:
    """Settings that only mean something together, and the loss file (resolved, checked)."""
    where = "hyperparameters"
    if hyper.weight_decay is not None and hyper.optimizer != "adamw":
        check.problem(_property(task, where, "weight_decay"), 'property name="weight_decay"',
                      f"weight_decay needs optimizer adamw (decoupled weight decay); "
                      f"optimizer is {hyper.optimizer}")
    for beta in ("beta_1", "beta_2"):
        element = task.find(where)
        given = element is not None and any((p.get("name") or "").strip() == beta
                                            for p in element.findall("property"))
        if given and hyper.optimizer not in ("adam", "adamw"):
            check.problem(_property(task, where, beta), f'property name="{beta}"',
                          f"{beta} is a setting of adam and adamw; optimizer is {hyper.optimizer}")
    if hyper.loss.endswith(".py"):
        element = _property(task, where, "loss")
        path = Path(hyper.loss).expanduser()
        path = path if path.is_absolute() else _absolute(check.source.parent / path)
        for message in check_function_file(path, "loss", ("y_true", "y_pred"), "loss file"):
            check.problem(element, 'property name="loss"', message)
        hyper = dataclasses.replace(hyper, loss=str(path))
    return hyper


def _check_keras_settings(check: Checker, task: etree._Element, hyper: S.Hyperparameters,
                          data: S.DataSpec, policy: S.LRPolicySpec,
                          monitoring: S.MonitoringSpec) -> None:
    if hyper.class_weights and len(hyper.class_weights) != data.num_classes:
        check.problem(_property(task, "hyperparameters", "class_weights"),
                      'property name="class_weights"',
                      f"{len(hyper.class_weights)} weights for {data.num_classes} classes "
                      f"({' '.join(data.classes)}); give one weight per class, background first")
    for section, name, value in (("monitoring", "early_stopping_monitor",
                                  monitoring.early_stopping_monitor),
                                 ("lr_policy", "plateau_monitor", policy.plateau_monitor),
                                 ("monitoring", "collapse_monitor", monitoring.collapse_monitor)):
        if value.startswith("val_") and data.valid is None:
            check.problem(_property(task, section, name), f'property name="{name}"',
                          f"{value} needs a validation split (<data><valid>); watch "
                          f"{value.removeprefix('val_')} or add one")


def _check_hosts(check: Checker, element: etree._Element | None, deployment: S.DeploymentSpec,
                 degree: int) -> None:
    if not deployment.hosts:
        check.problem(element, "deployment", "backend hosts needs a hosts property (HOST:SLOTS, ...)")
        return
    slots = 0
    for host in deployment.hosts:
        name, _, count = host.partition(":")
        if not name or (count and not count.isdigit()):
            check.problem(element, "deployment", f"host {host!r} is not HOST or HOST:SLOTS")
            return
        slots += int(count or 1)
    if slots < degree:
        check.problem(element, "deployment", f"hosts offer {slots} slots but parallelism-degree is {degree}")


def _check_launcher(check: Checker, element: etree._Element | None,
                    deployment: S.DeploymentSpec, degree: int) -> S.DeploymentSpec:
    """srun only on Slurm (and its default there); slurm settings only on Slurm."""
    written = {p.get("name") for p in element.iter("property")} if element is not None else set()
    slurm = deployment.backend == S.Backend.SLURM
    if slurm and deployment.launcher is S.Launcher.HOROVODRUN:
        check.problem(element, "deployment", "launcher horovodrun cannot run inside a Slurm "
                      "allocation; use srun (default) or mpirun")
    if not slurm and deployment.launcher is S.Launcher.SRUN:
        check.problem(element, "deployment",
                      f'launcher srun needs backend="slurm" (backend is {deployment.backend})')
    stray = [name for name in SLURM_ONLY if name in written]
    if stray and not slurm:
        check.problem(element, "deployment", f"{', '.join(stray)} only apply to backend=\"slurm\" "
                      f"(backend is {deployment.backend})")
    if slurm and deployment.nodes and deployment.tasks_per_node \
            and deployment.nodes * deployment.tasks_per_node < degree:
        check.problem(element, "deployment",
                      f"nodes x tasks_per_node = {deployment.nodes * deployment.tasks_per_node} "
                      f"tasks, fewer than parallelism-degree {degree}")
    if slurm and "launcher" not in written:
        return dataclasses.replace(deployment, launcher=S.Launcher.SRUN)
    return deployment


#: a further check of a spec: (spec, source, spec_ok) -> problems. ``spec_ok`` is False when
#: the config already has problems (the spec then holds placeholders where it was wrong)
SpecCheck = Callable[[S.TrainingSpec, Path, bool], list[ConfigProblem]]


def load_spec(path: Path | str, warnings: list[ConfigProblem] | None = None,
              *, more_checks: SpecCheck | None = None) -> S.TrainingSpec:
    """Load, validate and return the spec of the config at ``path``.

    Raises ConfigError with every problem found. Alias spellings and other soft issues are
    appended to ``warnings`` when given.
    """
    display = Path(path)
    tree = load_xml(display)
    source = _absolute(display)
    check = Checker(source)
    check.problems.extend(check_schema(tree, source))
    if check.problems and tree.getroot().tag != "system_config":
        raise ConfigError([dataclasses.replace(p, file=display) for p in check.problems])
    try:
        spec = build_spec(tree, source, check)
    except Exception:
        if check.problems:  # a broken structure the schema already reported
            raise ConfigError([dataclasses.replace(p, file=display) for p in check.problems]) from None
        raise
    if warnings is not None:
        warnings.extend(sorted((dataclasses.replace(w, file=display) for w in check.warnings),
                               key=lambda w: w.line or 0))
    if spec is not None and more_checks is not None:
        # also while the spec has problems: every problem at once, not in rounds
        check.problems.extend(more_checks(spec, source, not check.problems))
    if check.problems:
        raise_problems(check.problems, source, display)
    assert spec is not None
    return spec


def raise_problems(problems: list[ConfigProblem], source: Path, display: Path) -> None:
    """One ConfigError with every problem, in line order, named by the path the user gave."""
    shown = {dataclasses.replace(p, file=display) if p.file == source else p for p in problems}
    raise ConfigError(sorted(shown, key=lambda p: (p.line or 0, p.message)))
