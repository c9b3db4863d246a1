"""Broken configs: each gives exit status 2 and a located, exact message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autocnnp.cli import main

ROOT = Path(__file__).resolve().parents[2]

BASE = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>{degree}</parallelism-degree>
    <CNN_archi><name>{arch}</name></CNN_archi>
    {generator}
    <data>
      <train><path>{train}</path></train>
    </data>
    <hyperparameters>
      {props}
    </hyperparameters>
    {extra}
  </task>
</system_config>
"""


def write_config(folder: Path, name: str = "c.xml", **fields: object) -> Path:
    values = dict(degree=2, arch="unet", generator="", train="data",
                  props='<property name="lr">1e-3</property>', extra="")
    values.update(fields)
    (folder / "data").mkdir(exist_ok=True)
    path = folder / name
    path.write_text(BASE.format(**values))
    return path


def gen(module: str, action: str) -> str:
    return f'<CNN-Parallelism-Generator><module name="{module}">{action}</module></CNN-Parallelism-Generator>'


CASES = {
    "unknown module": (dict(generator='<CNN-Parallelism-Generator><module name="train_env_deff"/></CNN-Parallelism-Generator>'),
                       "c.xml:5: <module name=\"train_env_deff\">: unknown module 'train_env_deff'; did you mean "
                       "'train_env_def'? Known: train_env_def, train_strategy_def, injection"),
    "unknown action": (dict(generator=gen("train_strategy_def", '<action type="dist_stratgy"><value>ring_allreduce</value></action>')),
                       "c.xml:5: <action type=\"dist_stratgy\">: unknown action type 'dist_stratgy'; did you mean "
                       "'dist_strategy'? Known: dist_strategy, checkpoint, hyperparameters"),
    "unknown implementation": (dict(generator=gen("train_strategy_def", '<action type="dist_strategy"><value>ring_allreduc</value></action>')),
                               "c.xml:5: <action type=\"dist_strategy\">: unknown dist_strategy implementation "
                               "'ring_allreduc'; did you mean 'ring_allreduce'? Known: ring_allreduce, torch_ddp"),
    "action in the wrong module": (dict(generator=gen("train_env_def", '<action type="dist_strategy"/>')),
                                   "c.xml:5: <action type=\"dist_strategy\">: action 'dist_strategy' belongs to module "
                                   "'train_strategy_def', not 'train_env_def'"),
    "duplicate module": (dict(generator='<CNN-Parallelism-Generator><module name="train_env_def"/>\n<module name="train_env_def"/></CNN-Parallelism-Generator>'),
                         "c.xml:6: <module name=\"train_env_def\">: duplicate module 'train_env_def' (first at line 5)"),
    "duplicate action": (dict(generator=gen("train_env_def", '<action type="seeding"/>\n<action type="seeding"/>')),
                         "c.xml:6: <action type=\"seeding\">: duplicate action 'seeding' (first at line 5)"),
    "wrong class attribute": (dict(generator=gen("train_env_def", '<action class="extensible" type="device_placement"/>')),
                              "c.xml:5: <action type=\"device_placement\">: class=\"extensible\" but device_placement is non_extensible"),
    "plugin on a non-extensible action": (dict(generator=gen("train_env_def", '<action type="device_placement"><value name="X"><path>x.py</path></value></action>')),
                                          "c.xml:5: <action type=\"device_placement\">: device_placement is not extensible: it "
                                          "cannot take a plugin (extensible actions: checkpoint, dist_strategy)"),
    "unknown action parameter": (dict(generator=gen("train_env_def", '<action type="device_placement"><param name="threads">2</param></action>')),
                                 "c.xml:5: <action type=\"device_placement\">: unknown parameter 'threads' for local_rank "
                                 "(parameters: inter_op_threads, intra_op_threads)"),
    "zero ranks": (dict(degree=0), "c.xml:3: <parallelism-degree>: '0' is not valid; expected a positive integer (1, 2, ...)"),
    "negative ranks": (dict(degree=-3), "c.xml:3: <parallelism-degree>: '-3' is not valid; expected a positive integer (1, 2, ...)"),
    "ranks not a number": (dict(degree="three"), "c.xml:3: <parallelism-degree>: 'three' is not valid; expected a positive integer (1, 2, ...)"),
    "negative lr": (dict(props='<property name="lr">-1</property>'), "c.xml:10: <property name=\"lr\">: must be greater than 0, got -1"),
    "lr not a number": (dict(props='<property name="lr">fast</property>'), "c.xml:10: <property name=\"lr\">: expected a number, got 'fast'"),
    "zero batch": (dict(props='<property name="minibatch_size">0</property>'), "c.xml:10: <property name=\"minibatch_size\">: must be at least 1, got 0"),
    "batch not an integer": (dict(props='<property name="minibatch_size">8.5</property>'), "c.xml:10: <property name=\"minibatch_size\">: expected an integer, got '8.5'"),
    "unknown optimizer": (dict(props='<property name="optimizer">adamx</property>'),
                          "c.xml:10: <property name=\"optimizer\">: 'adamx' is not one of sgd, adam, rmsprop, adamw; did you mean 'adam'?"),
    "misspelled property": (dict(props='<property name="minibatch_sise">4</property>'),
                            "c.xml:10: <property name=\"minibatch_sise\">: unknown hyperparameters property 'minibatch_sise'; "
                            "did you mean 'minibatch_size'? Known: lr, optimizer, loss, minibatch_size, start_epoch, end_epoch, momentum, "
                            "beta_1, beta_2, weight_decay, class_weights, precision"),
    "duplicate property": (dict(props='<property name="lr">1</property>\n<property name="lr">2</property>'),
                           "c.xml:11: <property name=\"lr\">: duplicate property 'lr' (first at line 10)"),
    "empty epochs": (dict(props='<property name="start_epoch">5</property><property name="end_epoch">5</property>'),
                     "c.xml:9: <hyperparameters>: end_epoch (5) must be greater than start_epoch (5)"),
    "unknown architecture": (dict(arch="unett"), "c.xml:4: <name>: unknown architecture 'unett'; did you mean 'unet'? Known: unet, fcn"),
    "missing train folder": (dict(train="nope/train"), "c.xml:7: <train/path>: path 'nope/train' does not exist (resolved to {dir}/nope/train)"),
    "misspelled element": (dict(extra="<hyperparameter/>"),
                           "c.xml:12: <hyperparameter>: unknown element <hyperparameter> inside <task>; did you mean "
                           "'hyperparameters'? Allowed: parallelism-degree, CNN_archi, CNN-Parallelism-Generator, data, "
                           "hyperparameters, lr_policy, deployment, reproducibility, monitoring, evaluation, preprocessing, run_root"),
    "duplicate element": (dict(extra="<data><train><path>data</path></train></data>"),
                          "c.xml:12: <data>: duplicate <data> (first at line 6); remove one"),
    "unknown lr policy": (dict(extra='<lr_policy name="grescal"/>'),
                          "c.xml:12: <lr_policy>: name='grescal' is not allowed; did you mean 'grescale'? Known: constant, linear_scaling, warmup, grescale"),
    "unknown backend": (dict(extra='<deployment backend="kubernetes"/>'),
                        "c.xml:12: <deployment>: backend='kubernetes' is not allowed. Known: local, hosts, swarm, slurm"),
    "hosts without enough slots": (dict(extra='<deployment backend="hosts"><property name="hosts">a:1</property></deployment>'),
                                   "c.xml:12: <deployment>: hosts offer 1 slots but parallelism-degree is 2"),
    "namespaced element": (dict(extra='<x:foo xmlns:x="urn:a"/>'),
                           "c.xml:12: <x:foo>: element in the XML namespace 'urn:a'; a config uses no "
                           "namespaces: remove the prefix and its xmlns declaration"),
    "default namespace": (dict(extra='<deployment xmlns="urn:b"/>'),
                          "c.xml:12: <deployment>: element in the XML namespace 'urn:b'; a config uses "
                          "no namespaces: remove the xmlns declaration"),
    "xinclude": (dict(extra='<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd" parse="text"/>'),
                 "c.xml:12: <xi:include>: XInclude is not supported in a config (nothing is read from "
                 "other files); copy the included content into the config"),
    "missing plugin file": (dict(generator=gen("train_strategy_def", '<action class="extensible" type="checkpoint"><value name="X"><path>nofile.py</path></value></action>')),
                            "c.xml:5: <action type=\"checkpoint\">: plugin file {dir}/nofile.py not found"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_broken_config_is_reported_with_file_and_line(name, tmp_path, capsys, monkeypatch):
    fields, expected = CASES[name]
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, **fields)
    assert main(["validate", "c.xml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == expected.format(dir=tmp_path)
    assert "Traceback" not in err


RAW_CASES = {
    "empty file": (b"", "bad.xml:1: config file is empty; a config starts with <system_config>"),
    "binary file": (b"\x89PNG\r\n\x1a\n\x00\x00binary", "bad.xml:3: not a text XML file (binary content at byte 8)"),
    "not utf-8": (b"<system_config>\n\xff\xfe</system_config>", "bad.xml:2: not UTF-8 text (invalid byte at offset 16); save the config as UTF-8"),
    "malformed": (b"<system_config>\n  <task name='x'>\n</system_config>\n",
                  "bad.xml:3: malformed XML: Opening and ending tag mismatch: task line 2 and system_config"),
    "wrong root": (b"<config><task/></config>\n",
                   "bad.xml:1: <config>: wrong root element <config>; did you mean 'system_config'? A config starts with <system_config>"),
    "billion laughs": (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n <!ENTITY lol2 "&lol;&lol;&lol;&lol;">\n]>\n<system_config>&lol2;</system_config>\n',
                       "bad.xml:2: <!DOCTYPE> declarations are not allowed in a config (entities could expand without bound or read other files); remove it"),
    "external entity": (b'<?xml version="1.0"?>\n\n<!ENTITY xxe SYSTEM "file:///etc/passwd">\n<system_config>&xxe;</system_config>\n',
                        "bad.xml:3: <!ENTITY> declarations are not allowed in a config (entities could expand without bound or read other files); remove it"),
    "missing required elements": (b'<system_config>\n  <task name="imaging_segmentation">\n    <hyperparameters/>\n  </task>\n</system_config>\n',
                                  "bad.xml:2: <task>: missing required element <CNN_archi>, <data>"),
    "missing task": (b"<system_config/>\n", "bad.xml:1: <system_config>: missing required element <task>"),
    "deep nesting": (b"<system_config>" + b"<a>" * 40 + b"</a>" * 40 + b"</system_config>",
                     "bad.xml:1: elements nested more than 32 deep; refusing it"),
}


@pytest.mark.parametrize("name", list(RAW_CASES))
def test_unparseable_or_hostile_files(name, tmp_path, capsys, monkeypatch):
    content, expected = RAW_CASES[name]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.xml").write_bytes(content)
    assert main(["validate", "bad.xml"]) == 2
    assert capsys.readouterr().err.strip() == expected


def test_oversized_file_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.xml").write_bytes(b"<system_config>" + b" " * (1 << 20) + b"</system_config>")
    assert main(["validate", "big.xml"]) == 2
    assert capsys.readouterr().err.strip() == (
        "big.xml: config is 1048607 bytes; refusing files over 1048576 bytes (a training config is a few kilobytes)")


def test_missing_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "nothere.xml"]) == 2
    assert capsys.readouterr().err.strip() == "nothere.xml: config file not found"


def test_every_problem_is_reported_at_once(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, props='<property name="lr">-1</property>\n<property name="optimiser">nadam</property>',
                 generator=gen("train_env_deff", ""), arch="unett")
    assert main(["validate", "c.xml"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [l.split(":")[1] for l in lines] == ["4", "5", "10", "11"]


def test_alias_spellings_warn_with_the_canonical_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, props='<property name="optimiser">SGD</property><property name="minibarch_size">10</property>')
    assert main(["validate", "c.xml"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "warning: c.xml:10: <property name=\"optimiser\">: 'optimiser' is accepted as an alias; write 'optimizer'",
        "warning: c.xml:10: <property name=\"minibarch_size\">: 'minibarch_size' is accepted as an alias; write 'minibatch_size'",
    ]
    assert captured.out.startswith("c.xml: valid (imaging_segmentation, 2 rank(s) on local, unet, sgd lr 1e-05")


def test_no_traceback_from_the_real_command_and_full_error_on_request(tmp_path):
    (tmp_path / "bad.xml").write_text("<system_config><task></system_config>")
    cmd = [sys.executable, "-m", "autocnnp", "validate", "bad.xml"]
    quiet = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert quiet.returncode == 2
    assert "Traceback" not in quiet.stderr
    assert quiet.stderr.startswith("bad.xml:1: malformed XML:")
    loud = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "AUTOCNNP_FULL_ERROR": "1"})
    assert loud.returncode == 2
    assert "Traceback (most recent call last)" in loud.stderr


@pytest.mark.parametrize("text, degree", [("+3", 3), (" 4 ", 4), ("1", 1)])
def test_parallelism_degree_is_read_as_the_schema_reads_it_never_as_a_silent_one(text, degree, tmp_path):
    from autocnnp.engine.validate import load_spec

    assert load_spec(write_config(tmp_path, degree=text)).parallelism_degree == degree


def test_a_parallelism_degree_that_is_not_a_number_is_reported_once(tmp_path):
    from autocnnp.engine.validate import load_spec
    from autocnnp.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_spec(write_config(tmp_path, degree="2.5"))
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'c.xml'}:3: <parallelism-degree>: '2.5' is not valid; expected a positive "
        f"integer (1, 2, ...)"]


def test_data_cache_is_checked_and_read(tmp_path, capsys, monkeypatch):
    from autocnnp.engine.spec import DataCache
    from autocnnp.engine.validate import load_spec

    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("<data>", '<data cache="ram">'))
    assert main(["validate", str(path.name)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "c.xml:6: <data>: cache='ram' is not allowed. Known: auto, memory, none")
    path.write_text(text.replace("<data>", '<data cache="none">'))
    assert load_spec(path, []).data.cache is DataCache.NONE
    path.write_text(text)
    assert load_spec(path, []).data.cache is DataCache.AUTO


EVERY_LEVEL = """<system_config>
  <task name="imaging_segmentation">
    <CNN_archi><name>unet</name></CNN_archi>
    <CNN-Parallelism-Generator>
      <module name="train_env_def">
        <action type="device_placement"><value>local_rnk</value></action>
      </module>
      <module name="train_strategy_def">
        <action type="dist_strategy"><value>parameter_server</value></action>
      </module>
    </CNN-Parallelism-Generator>
    <data>
      <train><path>nowhere/train</path></train>
    </data>
    <hyperparameters><property name="lr">-1</property></hyperparameters>
  </task>
</system_config>
"""


def test_generator_errors_are_reported_with_spec_errors(tmp_path, capsys, monkeypatch):
    """A missing path and a bad number (spec level) do not hide an unknown implementation and
    a misspelt action value (generator level): one run of validate lists all four."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.xml").write_text(EVERY_LEVEL)
    assert main(["validate", "c.xml"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "c.xml:6: <action type=\"device_placement\">: unknown device_placement implementation "
        "'local_rnk'; did you mean 'local_rank'? Known: cpu, local_rank",
        "c.xml:9: <action type=\"dist_strategy\">: unknown dist_strategy implementation "
        "'parameter_server'. Known: ring_allreduce, torch_ddp",
        f"c.xml:13: <train/path>: path 'nowhere/train' does not exist (resolved to "
        f"{tmp_path / 'nowhere' / 'train'})",
        "c.xml:15: <property name=\"lr\">: must be greater than 0, got -1"]


def test_a_near_miss_of_an_alias_suggests_the_canonical_name(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, props='<property name="lerning_rate">1e-3</property>')
    assert main(["validate", "c.xml"]) == 2
    assert capsys.readouterr().err.strip() == (
        "c.xml:10: <property name=\"lerning_rate\">: unknown hyperparameters property "
        "'lerning_rate'; did you mean 'lr'? Known: lr, optimizer, loss, minibatch_size, "
        "start_epoch, end_epoch, momentum, beta_1, beta_2, weight_decay, class_weights, precision")


def test_a_misspelt_action_class_is_one_message(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path, generator=gen("train_strategy_def",
                                         '<action class="extensibel" type="dist_strategy"/>'))
    assert main(["validate", "c.xml"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "c.xml:5: <action>: class='extensibel' is not allowed; did you mean 'extensible'? "
        "Known: extensible, non_extensible"]


def test_thesis_listing_warnings_in_line_order_and_quiet_means_quiet(capsys):
    config = ROOT / "configs" / "thesis-listing-4.1" / "config.xml"
    assert main(["validate", str(config)]) == 0
    warnings = capsys.readouterr().err.splitlines()
    lines = [int(w.split(":")[2]) for w in warnings]
    assert len(warnings) == 4 and lines == sorted(lines), warnings
    assert main(["validate", "-q", str(config)]) == 0
    assert capsys.readouterr() == ("", "")


def test_thesis_data_readmes_recommend_a_size_the_listing_unet_accepts():
    import re

    folder = ROOT / "configs" / "thesis-listing-4.1"
    depth = int(re.search(r'setdefault\("depth", (\d+)\)',
                          (folder / "archi" / "U-Net.py").read_text())[1])
    readmes = sorted((folder / "data").glob("*/README.md"))
    assert len(readmes) == 3
    for readme in readmes:
        size = int(re.search(r"--size (\d+)", readme.read_text())[1])
        assert size % 2 ** (depth - 1) == 0, (readme, size)


KERAS_SETTINGS = """<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">2</param><init>{init}</init></CNN_archi>
    <data>
      <train><path>data</path></train>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="optimizer">sgd</property>
      <property name="weight_decay">0.01</property>
      <property name="beta_1">0.8</property>
      <property name="class_weights">1 2</property>
      <property name="loss">{loss}</property>
    </hyperparameters>
    <lr_policy name="constant"><property name="plateau_patience">2</property><property name="plateau_monitor">val_dice</property></lr_policy>
    <monitoring><property name="early_stopping_patience">3</property><property name="early_stopping_monitor">val_loss</property></monitoring>
  </task>
</system_config>
"""


def test_keras_settings_are_checked_together(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "old_run").mkdir()
    (tmp_path / "my_loss.py").write_text("def los(y_true, y_pred):\n    return y_pred\n")
    (tmp_path / "c.xml").write_text(KERAS_SETTINGS.format(init="old_run", loss="my_loss.py"))
    assert main(["validate", "c.xml"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"c.xml:4: <init>: {tmp_path / 'old_run'} is neither a run directory with a trained "
        f"model (model/saved_model.pb) nor a SavedModel folder",
        "c.xml:11: <property name=\"weight_decay\">: weight_decay needs optimizer adamw "
        "(decoupled weight decay); optimizer is sgd",
        "c.xml:12: <property name=\"beta_1\">: beta_1 is a setting of adam and adamw; optimizer "
        "is sgd",
        "c.xml:13: <property name=\"class_weights\">: 2 weights for 3 classes (background "
        "grey_matter white_matter); give one weight per class, background first",
        f"c.xml:14: <property name=\"loss\">: loss file {tmp_path / 'my_loss.py'} defines no "
        f"function loss(y_true, y_pred); did you mean 'los'? (functions defined: los)",
        "c.xml:16: <property name=\"plateau_monitor\">: val_dice needs a validation split "
        "(<data><valid>); watch dice or add one",
        "c.xml:17: <property name=\"early_stopping_monitor\">: val_loss needs a validation split "
        "(<data><valid>); watch loss or add one"]
