"""Shared fixtures: a small real dataset (MNI152 brain slices) and small training configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SMALL_CONFIG = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>{ranks}</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><param name="base_filters">4</param></CNN_archi>
    <data format="pairs">
      <train><path>{data}/train</path></train>
      <valid><path>{data}/valid</path></valid>
      <test><path>{data}/test</path></test>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="loss">dice_crossentropy</property>
      <property name="minibatch_size">4</property>
      <property name="end_epoch">{epochs}</property>
    </hyperparameters>
    <deployment backend="local"><property name="threads_per_rank">1</property></deployment>
    <monitoring><property name="keep_checkpoints">{keep}</property></monitoring>
    <run_root>{runs}</run_root>
  </task>
</system_config>
"""


# How scripts/test.sh spreads the suite over two pytest-xdist workers: the tests of one
# machine-wide service run on one worker, one after the other (the docker and cluster tiers share
# the host's dockerd, its one-node swarm and the image they build; the Slurm tier one
# slurmctld/slurmd; the ssh tier two ssh hosts at fixed addresses); every other test file is one
# unit, so its module fixtures are made once.
SERVICE_FOLDERS = {"docker": "dockerd", "cluster": "dockerd", "slurm": "slurm", "hosts": "ssh-hosts"}
SERVICE_MARKERS = ("docker", "cluster", "slurm", "ssh")


def service_of(nodeid: str) -> str | None:
    """The machine-wide service a test uses, from its folder (``tests/docker/...``)."""
    parts = nodeid.split("::")[0].split("/")
    return SERVICE_FOLDERS.get(parts[1]) if len(parts) > 2 and parts[0] == "tests" else None


def pytest_collection_modifyitems(config, items):
    for item in items:
        marked = [m for m in SERVICE_MARKERS if item.get_closest_marker(m)]
        if marked and service_of(item.nodeid) is None:
            raise pytest.UsageError(f"{item.nodeid} is marked {', '.join(marked)}: put it in "
                                    f"one of the service folders tests/{{{','.join(SERVICE_FOLDERS)}}} "
                                    f"so that it runs on the worker of that service")
    # the longest units first, so that no long one starts last: the services' tiers, then the
    # files with slow tests, then the fast files (which fill the gaps at the end)
    slow_files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (service_of(item.nodeid) is None,
                                 item.nodeid.split("::")[0] not in slow_files))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ServiceScheduling(LoadScopeScheduling):
        """One unit per service (all its tests on one worker) and one per other test file."""

        def _split_scope(self, nodeid: str) -> str:
            return service_of(nodeid) or nodeid.split("::")[0]

    config.option.loadscopereorder = False        # keep the collection order: services first
    return ServiceScheduling(config, log)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """40 real MNI152 axial slices at 32x32 (3 classes), split train/valid/test."""
    from autocnnp.components.demo_data import build_demo_dataset

    out = tmp_path_factory.mktemp("data") / "mni152-small"
    build_demo_dataset(out, size=32, n_slices=40)
    return out


@pytest.fixture(scope="session")
def msd_cases(tmp_path_factory) -> Path:
    """An MSD task folder of 9 real MNI152 cases (32x32x8 NIfTI volumes, ``site`` A/B in
    dataset.json) and 2 unlabelled cases in imagesTs."""
    from autocnnp.components.demo_data import build_msd_demo

    out = tmp_path_factory.mktemp("msd") / "Task90_Brain"
    build_msd_demo(out, cases=9, test_cases=2)
    return out


@pytest.fixture
def small_config(tmp_path, small_dataset):
    """A factory writing a small, fast training config; returns its path."""
    def make(ranks: int = 2, epochs: int = 3, keep: int = 3, name: str = "small.xml") -> Path:
        path = tmp_path / name
        path.write_text(SMALL_CONFIG.format(ranks=ranks, epochs=epochs, keep=keep, data=small_dataset,
                                            runs=tmp_path / "runs"))
        return path
    return make


@pytest.fixture
def cli_env():
    """Environment for running the real `autocnnp` command in a subprocess."""
    env = dict(os.environ)
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '')}"
    return env


@pytest.fixture
def small_disk(tmp_path):
    """A factory mounting a small tmpfs (``small_disk("2m")``) under ``tmp_path``, to fill a
    disk for real; needs root (skips otherwise). Every mount is undone afterwards."""
    import subprocess

    mounts: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk-{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            if os.geteuid() == 0:  # root can mount: a failure here is a real problem (CI is root)
                pytest.fail(f"cannot mount a tmpfs as root: {done.stderr.strip()}")
            pytest.skip(f"cannot mount a tmpfs here (not root): {done.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)
