"""The backend registry: one name per <deployment backend>, each a Backend, chosen in one place."""

from __future__ import annotations

import pytest

from autocnnp.engine.spec import Backend as BackendName
from autocnnp.errors import AutocnnpError
from autocnnp.run_manage.backend import BACKENDS, Backend, backend_class, get_backend


def test_every_config_backend_name_has_one_registered_backend_class():
    assert sorted(BACKENDS) == sorted(b.value for b in BackendName)
    for name in BackendName:
        cls = backend_class(name)
        assert issubclass(cls, Backend)
        assert cls.name == name.value


def test_get_backend_passes_options_and_refuses_an_unknown_name():
    import io

    out = io.StringIO()
    backend = get_backend("swarm", out=out, init=True)
    assert backend.init is True and backend.out is out
    assert get_backend("local", init=None).name == "local"
    with pytest.raises(AutocnnpError, match=r"unknown backend 'pbs'; known: local, hosts, swarm, slurm"):
        get_backend("pbs")


def test_choosing_the_local_backend_does_not_import_the_docker_sdk():
    import subprocess
    import sys

    code = ("import sys; from autocnnp.run_manage.backend import get_backend; "
            "get_backend('local'); get_backend('hosts'); print('docker' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
