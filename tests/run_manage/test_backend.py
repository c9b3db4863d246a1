"""The backend registry: one name per <deployment backend>, each a Backend, chosen in one place."""

from __future__ import annotations

import pytest

from autocnnp.engine.spec import Backend as BuiltinBackend
from autocnnp.engine.vocabulary import BACKENDS
from autocnnp.errors import AutocnnpError
from autocnnp.run_manage.backend import Backend, backend_class, get_backend


def test_every_registered_backend_name_is_a_backend_class_of_that_name():
    assert set(b.value for b in BuiltinBackend) <= set(BACKENDS)
    for name in BACKENDS:
        cls = backend_class(name)
        assert issubclass(cls, Backend)
        assert cls.name == name


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


BACKEND_MODULE = '''
from autocnnp.run_manage.local import LocalBackend


class EchoBackend(LocalBackend):
    """A new backend: the local launch under another name, saying when it launches."""

    name = "echo"

    def launch(self, spec, plan, run_dir, *, resume=False):
        self.say(f"echo backend launching {plan.size} rank(s)")
        super().launch(spec, plan, run_dir, resume=resume)
'''


@pytest.mark.slow
@pytest.mark.mpi
def test_a_new_backend_is_its_module_and_one_registration_line(tmp_path, small_config,
                                                               monkeypatch):
    """What docs/architecture.md promises: a backend module and one line in
    engine/vocabulary.py:BACKENDS, and validate, plan, run and status use it, unchanged."""
    import io
    import json
    import sys

    from autocnnp.generator.assembly import load_checked_spec
    from autocnnp.orchestrator.run import run_job
    from autocnnp.run_manage import jobs

    (tmp_path / "echo_backend.py").write_text(BACKEND_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = small_config(ranks=1, epochs=1)
    config.write_text(config.read_text().replace('<deployment backend="local">',
                                                 '<deployment backend="echo">'))
    assert '<deployment backend="echo">' in config.read_text()
    with pytest.raises(AutocnnpError, match=r"backend='echo' is not allowed. Known: local, hosts"):
        load_checked_spec(config, [])

    monkeypatch.setitem(BACKENDS, "echo", "echo_backend:EchoBackend")  # the registration line
    assert load_checked_spec(config, []).deployment.backend == "echo"
    out = io.StringIO()
    result = run_job(config, out=out, argv=[sys.executable, "-m", "autocnnp", "run", str(config)])
    assert "echo backend launching 1 rank(s)" in out.getvalue()
    assert result.test_metrics is not None and "means" in result.test_metrics
    assert json.loads((result.run_dir / "plan.json").read_text())["backend"] == "echo"
    status = jobs.status(result.run_dir)
    assert status["backend"] == "echo" and status["state"] == "finished"
