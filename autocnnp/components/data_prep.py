"""The data of a job, made ready before any rank starts: built, preprocessed, checked.

:func:`prepare_data` is what ``autocnnp run`` does with a config's data before it launches:
build the demo dataset when the config asks for one that is missing
(:mod:`~autocnnp.components.demo_data`), run the ``<preprocessing>`` block
(:mod:`~autocnnp.components.imgmed.pipeline`), make sure every split's folder exists and,
with ``check``, :func:`check_data`. Heavy imports stay inside the functions that need them.
"""

from __future__ import annotations

from typing import Callable

from autocnnp.engine.spec import TrainingSpec
from autocnnp.errors import ConfigError, DataError


def prepare_data(spec: TrainingSpec, say: Callable[[str], None], *, check: bool = True) -> None:
    """Build the demo dataset when asked for and missing, run the preprocessing block, and
    (``check``) check every split; ``say`` reports the long steps."""
    if spec.data.demo == "msd" and not spec.data.train.exists():
        from autocnnp.components.demo_data import build_msd_demo

        say(f"building the MSD demo cases in {spec.data.train} ...")
        build_msd_demo(spec.data.train, size=spec.data.image_size or 32)
    elif spec.data.demo and not spec.data.train.exists():
        from autocnnp.components.demo_data import build_demo_dataset

        target = spec.data.train.parent
        say(f"building the {spec.data.demo} demo dataset in {target} ...")
        build_demo_dataset(target, size=spec.data.image_size or 128)
    if spec.preprocessing is not None:
        from autocnnp.components.imgmed.pipeline import run_preprocessing

        say(f"preprocessing {spec.preprocessing.source} -> {spec.preprocessing.output}")
        run_preprocessing(spec.preprocessing)
    for split in ("train", "valid", "test"):
        path = getattr(spec.data, split)
        if path is not None and not path.exists():
            raise DataError(f"{split} data {path} does not exist",
                            remedy="build it (autocnnp demo-data / autocnnp preprocess) or fix "
                                   "the <data> paths of the config")
    if check:
        check_data(spec)


def check_data(spec: TrainingSpec) -> None:
    """Check every split before launching, cheaply: the folders' roles and a sample of masks
    (:func:`~autocnnp.components.data_checks.run_cheap_checks`, what ``validate`` runs), then
    listing, headers and one sample each (:func:`~autocnnp.components.datasets.check_splits`);
    a file that is unreadable past its header fails the rank that reads it, naming the file."""
    from autocnnp.components.data_checks import run_cheap_checks
    from autocnnp.components.datasets import check_splits

    problems = run_cheap_checks(spec).problems
    if problems:
        raise ConfigError(problems)
    check_splits(spec.data)
