"""The typed training spec: what a validated config means, as frozen data.

A ``TrainingSpec`` is produced by :func:`autocnnp.engine.validate.load_spec` and travels to
every rank as JSON (``spec.json`` in the run directory), so every field here is plain data
(numbers, strings, paths, tuples) and round-trips through :func:`spec_to_dict` and
:func:`spec_from_dict`.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocnnp.engine.vocabulary import CPU_IMAGE, METRICS, MONAI_PREFIX


class Backend(str, enum.Enum):
    """The built-in backends, whose plans the engine makes (:mod:`~autocnnp.engine.plan`,
    ``plan_swarm``, ``plan_slurm``). ``DeploymentSpec.backend`` holds the name a config gives,
    which may be any backend of :data:`~autocnnp.engine.vocabulary.BACKENDS`."""

    LOCAL = "local"
    HOSTS = "hosts"
    SWARM = "swarm"
    SLURM = "slurm"


class Launcher(str, enum.Enum):
    """How ranks are started on the local and hosts backends."""

    MPIRUN = "mpirun"
    HOROVODRUN = "horovodrun"
    SRUN = "srun"


class DataCache(str, enum.Enum):
    """How the ranks hold the training and validation data (``<data cache="...">``)."""

    AUTO = "auto"      # memory when the arrays are small (see datasets.choose_cache), else none
    MEMORY = "memory"  # every rank reads the whole split into memory once
    NONE = "none"      # every rank streams its own shard from the files


class LRPolicyName(str, enum.Enum):
    """Learning-rate policies (thesis 6.2-6.3)."""

    CONSTANT = "constant"
    LINEAR_SCALING = "linear_scaling"
    WARMUP = "warmup"
    GRESCALE = "grescale"


@dataclass(frozen=True)
class ArchitectureSpec:
    """The CNN to train: a built-in (``unet``, ``fcn``) or a user architecture file."""

    name: str | None = "unet"
    path: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)
    #: initial weights: a previous run directory (its model/) or a saved model
    init: Path | None = None

    @property
    def label(self) -> str:
        if self.path:
            return str(self.path)
        name = self.name or "unet"
        return name if name.startswith(MONAI_PREFIX) else f"builtin:{name}"


class GroupMode(str, enum.Enum):
    """How the trainings of a group (folds, repeats) use the slots of the machine."""

    DATA_PARALLEL = "data_parallel"  # one training at a time, each with its ranks
    PACKED = "packed"                # as many trainings at once as the slots hold


@dataclass(frozen=True)
class SplitSpec:
    """``<split>``: cut one folder of cases into train/valid/test, or into k folds.

    ``folds`` 0 means fractions (``valid``, ``test``; train is the rest); ``folds`` k >= 2
    runs one training per fold, the held-out fold as test and ``valid`` of the others as
    validation. ``stratify`` names a field of the cases' entries in dataset.json; ``case_id``
    is a regular expression whose first group (or whole match) on a file name's stem is the
    case of a 2D file (default: every file is its own case; a volume is always one case);
    ``file`` reuses the ``splits.json`` of an earlier run instead of drawing a split.
    """

    folds: int = 0
    valid: float = 0.0
    test: float = 0.2
    seed: int = 0
    stratify: str | None = None
    case_id: str | None = None
    file: Path | None = None
    line: int | None = None


@dataclass(frozen=True)
class AugmentationSpec:
    """On-the-fly augmentation of the training batches (``<data><augmentation>``); the
    defaults are the thesis's Table 2.1 ranges. Every sample gets its own transform, the
    same on image and mask; validation and test data are never augmented.

    Attributes:
        rotation: degrees, drawn uniformly in ``[-rotation, rotation]`` (0: none).
        zoom: ``(min, max)`` scale factor (``(1, 1)``: none).
        translation: pixels, drawn uniformly in ``[-translation, translation]`` along x and
            along y (0: none).
        flip: ``horizontal`` (left-right) and/or ``vertical`` (up-down), each with
            probability 1/2.
    """

    rotation: float = 45.0
    zoom: tuple[float, float] = (0.8, 1.2)
    translation: float = 25.6
    flip: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"rotation must be within 0..180 degrees, got {self.rotation:g}")
        lo, hi = self.zoom
        if not 0 < lo <= hi:
            raise ValueError(f"zoom must be 'MIN MAX' with 0 < MIN <= MAX, got {lo:g} {hi:g}")
        if self.translation < 0:
            raise ValueError(f"translation must be >= 0 pixels, got {self.translation:g}")
        unknown = [f for f in self.flip if f not in FLIPS]
        if unknown:
            raise ValueError(f"unknown flip {unknown[0]!r}; known: {', '.join(FLIPS)}")


#: the flips ``<augmentation flip="...">`` accepts
FLIPS = ("horizontal", "vertical")


@dataclass(frozen=True)
class DataSpec:
    """Training, validation and test data and how to read them."""

    train: Path
    valid: Path | None = None
    test: Path | None = None
    format: str = "auto"
    classes: tuple[str, ...] = ("background", "foreground")
    image_size: int | None = None
    #: ``<channels>``: the input channels as written (indices or dataset.json modality
    #: names); None: every channel of the data
    channels: tuple[str, ...] | None = None
    #: ``<augmentation>`` of the training batches; None: off (the default)
    augmentation: AugmentationSpec | None = None
    demo: str | None = None
    cache: DataCache = DataCache.AUTO
    #: ``<split>`` over the folder ``train`` names (``<cases>``); None: explicit folders
    split: SplitSpec | None = None
    #: the split drawn for this run, case ids by split name (set when the run starts; the
    #: same lists are in ``splits.json``); None: every sample of each folder
    cases: dict[str, tuple[str, ...]] | None = None
    #: the fold this run trains (1-based) in a k-fold group
    fold: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class Hyperparameters:
    """Training hyperparameters; ``lr`` is the single-worker (base) learning rate."""

    lr: float = 1e-5
    optimizer: str = "sgd"
    loss: str = "dice"
    minibatch_size: int = 10
    start_epoch: int = 0
    end_epoch: int = 120
    momentum: float = 0.9
    beta_1: float = 0.9
    beta_2: float = 0.999
    #: decoupled weight decay of adamw (None: Keras's default, 0.004)
    weight_decay: float | None = None
    #: loss weight of each class, background first (empty: all 1)
    class_weights: tuple[float, ...] = ()
    #: arithmetic of forward and backward: fp32, or bf16/fp16 autocast (torch engine, GPU)
    precision: str = "fp32"

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch


@dataclass(frozen=True)
class LRPolicySpec:
    """Learning-rate policy and its parameters (defaults are the thesis's GreScale defaults)."""

    name: LRPolicyName = LRPolicyName.LINEAR_SCALING
    warmup_epochs: float = 5.0
    stabilization_fraction: float = 4 / 7
    decay_fraction: float = 3 / 7
    stabilization_factor: float = 1.0
    decay_coefficient: float = 0.1
    #: reduce on plateau: epochs without improvement of ``plateau_monitor`` (0: off)
    plateau_patience: int = 0
    plateau_factor: float = 0.5
    plateau_min_lr: float = 0.0
    plateau_monitor: str = "auto"


@dataclass(frozen=True)
class DeploymentSpec:
    """Where and how ranks are launched."""

    #: a name of :data:`~autocnnp.engine.vocabulary.BACKENDS` (compare it with :class:`Backend`)
    backend: str = Backend.LOCAL.value
    launcher: Launcher = Launcher.MPIRUN
    hosts: tuple[str, ...] = ()
    threads_per_rank: int | None = None
    gpus_per_rank: int = 0
    #: the swarm tasks' image; a torch_ddp config without one runs TORCH_CPU_IMAGE
    image: str = CPU_IMAGE
    node_constraints: tuple[str, ...] = ()
    network: str | None = None
    shared_volume: str | None = None
    #: how the launcher reaches each swarm node's own Docker daemon to deliver the image
    #: (``{addr}``: the node's swarm address, ``{hostname}``: its name), e.g. ``ssh://root@{addr}``
    node_docker: str | None = None
    rendezvous_timeout_s: int = 120
    #: trainings of a group (folds, repeats): one after another, or packed into ``slots``
    group_mode: GroupMode = GroupMode.DATA_PARALLEL
    #: slots (CPU cores or GPUs) a packed group fills; each training takes parallelism-degree
    slots: int | None = None
    # slurm backend (plan_slurm.py)
    partition: str | None = None
    nodes: int | None = None
    tasks_per_node: int | None = None
    time_limit: str | None = None
    account: str | None = None
    qos: str | None = None
    sbatch_lines: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    container: str | None = None
    signal_before_s: int = 120

    def __post_init__(self) -> None:
        # the plain name, also when code gives a Backend member
        object.__setattr__(self, "backend", str(getattr(self.backend, "value", self.backend)))


@dataclass(frozen=True)
class ReproducibilitySpec:
    """Seeds, repeated runs and the determinism switch (thesis chapter 5)."""

    seed: int = 42
    repeats: int = 1
    deterministic: bool = False


@dataclass(frozen=True)
class MonitoringSpec:
    """What is watched and written while training."""

    tensorboard: bool = True
    weight_check: bool = True
    checkpoint_every: int = 1
    keep_checkpoints: int = 3
    #: early stopping: epochs without improvement of ``early_stopping_monitor`` (0: off)
    early_stopping_patience: int = 0
    early_stopping_monitor: str = "auto"
    early_stopping_min_delta: float = 0.0
    #: hang detection: a training rank that makes no progress (step, validation step, epoch
    #: end) for longer than this many seconds stops the job; None: automatic (20 x the
    #: longest wait between two steps seen so far, at least ``hang_floor_s``); 0: off
    hang_timeout_s: float | None = None
    #: the smallest automatic hang threshold (covers graph tracing and slow checkpoints)
    hang_floor_s: float = 300.0
    #: seconds between two system-metric samples of each rank (0: no sampling)
    metrics_interval_s: float = 5.0
    #: the port on which the launcher serves the Prometheus text format: None off, 0 any
    #: free port (reported), else that port
    prometheus_port: int | None = None
    #: divergence stop: the epoch's loss above this multiple of the best epoch loss so far
    #: stops every rank (0: off)
    divergence_factor: float = 0.0
    #: collapse stop: ``collapse_monitor`` below this fraction of its best value so far
    #: stops every rank (0: off)
    collapse_fraction: float = 0.0
    collapse_monitor: str = "auto"

    def __post_init__(self) -> None:
        if self.hang_timeout_s is not None and self.hang_timeout_s < 0:
            raise ValueError("hang_timeout_s must be at least 0")
        if self.hang_floor_s <= 0 or self.metrics_interval_s < 0:
            raise ValueError("hang_floor_s must be positive, metrics_interval_s at least 0")
        if self.divergence_factor and self.divergence_factor <= 1:
            raise ValueError("divergence_factor must be above 1 (or 0: off)")
        if not 0 <= self.collapse_fraction < 1:
            raise ValueError("collapse_fraction must be at least 0 and below 1")


@dataclass(frozen=True)
class EvaluationSpec:
    """SegEval metrics computed on the test split after training."""

    metrics: tuple[str, ...] = METRICS


@dataclass(frozen=True)
class PreprocessingSpec:
    """An ImgMed pipeline run before training (see ``autocnnp preprocess --help``)."""

    source: Path
    output: Path
    masks: Path | None = None
    axis: int = 2
    slices: int | None = None
    slice_range: tuple[int, int] | None = None
    size: int | None = None
    normalize: str = "minmax"
    format: str = "npy"
    channel: int | None = None


@dataclass(frozen=True)
class ActionChoice:
    """What a config says about one action: an implementation, a plugin, parameters."""

    type: str
    implementation: str | None = None
    plugin_path: Path | None = None
    plugin_class: str | None = None
    mode: str = "extend"
    params: dict[str, str] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class ModuleChoice:
    """What a config says about one module of the CNN-Parallelism-Generator."""

    name: str
    actions: tuple[ActionChoice, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class TrainingSpec:
    """A validated training config: everything a job needs, and nothing executable."""

    source: Path
    task: str
    parallelism_degree: int
    architecture: ArchitectureSpec
    data: DataSpec
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    generator: tuple[ModuleChoice, ...] = ()
    lr_policy: LRPolicySpec = field(default_factory=LRPolicySpec)
    deployment: DeploymentSpec = field(default_factory=DeploymentSpec)
    reproducibility: ReproducibilitySpec = field(default_factory=ReproducibilitySpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    preprocessing: PreprocessingSpec | None = None
    run_root: Path | None = None

    def replace(self, **changes: Any) -> "TrainingSpec":
        return dataclasses.replace(self, **changes)

    @property
    def strategy_choice(self) -> "ActionChoice | None":
        """What the config says about ``dist_strategy`` (None: the default)."""
        return next((a for m in self.generator for a in m.actions if a.type == "dist_strategy"),
                    None)

    @property
    def engine(self) -> str:
        """The engine the job runs on: ``horovod`` (default) or ``torch`` (``torch_ddp``)."""
        from autocnnp.engine.default_tree import engine_of

        choice = self.strategy_choice
        return engine_of(choice.implementation if choice else None)


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def spec_to_dict(spec: Any) -> dict[str, Any]:
    """A JSON-ready dict of a spec (or any of its parts)."""
    return _encode(spec)


def _decode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        real = [a for a in args if a is not type(None)]
        return _decode(real[0], value) if real else value
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v) for v in value)
        return tuple(_decode(a, v) for a, v in zip(args, value))
    if origin is dict:
        return dict(value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _decode(hints[f.name], value[f.name])
                  for f in dataclasses.fields(tp) if f.name in value}
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is Path:
        return Path(value)
    return value


def spec_from_dict(data: dict[str, Any], cls: type = TrainingSpec) -> Any:
    """Rebuild a spec (or a part, given ``cls``) from :func:`spec_to_dict` output."""
    return _decode(cls, data)
