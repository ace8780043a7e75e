"""lfgen.launch: the argv and environment of every process lfgen starts, as lists and dicts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lfgen import launch
from lfgen.errors import InputError
from tests.helpers import wait_for


def test_train_and_export_argv():
    assert launch.train_argv("/venv/bin/llamafactory-cli", "outputs/x/r/lfgen_run.yaml") == [
        "/venv/bin/llamafactory-cli", "train", "outputs/x/r/lfgen_run.yaml"]
    assert launch.export_argv("lf", os.path.join("o", "lfgen_export.yaml")) == ["lf", "export", "o/lfgen_export.yaml"]


def test_nvidia_smi_argv():
    assert launch.nvidia_smi_argv("/usr/bin/nvidia-smi", "index,name") == [
        "/usr/bin/nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader"]


@pytest.mark.parametrize("base,gpus,expected", [
    ({"PATH": "/bin"}, None, {"PATH": "/bin", "RECORD_VRAM": "1", "TOKENIZERS_PARALLELISM": "false"}),
    ({"CUDA_VISIBLE_DEVICES": "5"}, None,  # None leaves the user's choice alone
     {"CUDA_VISIBLE_DEVICES": "5", "RECORD_VRAM": "1", "TOKENIZERS_PARALLELISM": "false"}),
    ({"FORCE_TORCHRUN": "1"}, [3], {"CUDA_VISIBLE_DEVICES": "3", "RECORD_VRAM": "1", "TOKENIZERS_PARALLELISM": "false"}),
    ({"TOKENIZERS_PARALLELISM": "true"}, [0, 1],
     {"CUDA_VISIBLE_DEVICES": "0,1", "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "RECORD_VRAM": "1",
      "TOKENIZERS_PARALLELISM": "true"}),
])
def test_train_env(base, gpus, expected):
    before = dict(base)
    assert launch.train_env(base, gpus) == expected
    assert base == before  # a new dict; the caller's is untouched


@pytest.mark.parametrize("spec,expected", [("0", [0]), ("0,2", [0, 2]), ("0-3", [0, 1, 2, 3]), (" 1 , 3 ", [1, 3]),
                                           ("0-1,3", [0, 1, 3])])
def test_parse_gpus(spec, expected):
    assert launch.parse_gpus(spec, [0, 1, 2, 3]) == expected


@pytest.mark.parametrize("spec,available,message", [
    ("zero", [0], "--gpus: 'zero' is not a GPU list; write 0,1,2,3 or 0-7"),
    ("4", [0, 1], "--gpus: GPU 4 does not exist; visible GPUs: 0, 1"),
    ("0", [], "--gpus: GPU 0 does not exist; visible GPUs: none (nvidia-smi found no GPU)"),
    ("0,0", [0], "--gpus: '0,0' names a GPU twice"),
])
def test_parse_gpus_refuses(spec, available, message):
    with pytest.raises(InputError) as raised:
        launch.parse_gpus(spec, available)
    assert str(raised.value) == message


def test_parse_gpu_names():
    csv = "0, NVIDIA A800-SXM4-80GB\n1, NVIDIA H200\n\nNo devices were found\n2,\n"
    assert launch.parse_gpu_names(csv) == {0: "NVIDIA A800-SXM4-80GB", 1: "NVIDIA H200"}


def _fake_smi(tmp_path, monkeypatch, script: str) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + script)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_gpu_queries_through_nvidia_smi(tmp_path, monkeypatch):
    _fake_smi(tmp_path, monkeypatch, 'if [ "$1" = "--query-gpu=index,name" ]; then echo "0, NVIDIA L4"; '
                                     'echo "1, NVIDIA H200"; else echo 0; echo 1; fi\n')
    assert launch.visible_gpus() == [0, 1]
    assert launch.gpu_names() == ["NVIDIA L4", "NVIDIA H200"] and launch.gpu_names([1]) == ["NVIDIA H200"]


def test_no_nvidia_smi_is_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert launch.visible_gpus() == [] and launch.gpu_names() == []


def test_a_failing_nvidia_smi_is_no_gpu(tmp_path, monkeypatch):
    _fake_smi(tmp_path, monkeypatch, "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA "
                                     "driver' >&2\nexit 9\n")
    assert launch.visible_gpus() == [] and launch.gpu_names() == []


def test_spawn_appends_to_the_log_in_a_new_process_group(tmp_path):
    log = tmp_path / "out" / "lfgen_train.log"
    log.parent.mkdir()
    log.write_text("earlier attempt\n")
    child = launch.spawn([sys.executable, "-c", "import os; print(os.getpgid(0) == os.getpid())"], cwd=tmp_path,
                         env=dict(os.environ), log_path=log)
    assert child.proc.wait(timeout=30) == 0
    assert log.read_text() == "earlier attempt\nTrue\n"


def test_spawn_of_a_missing_program_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found; install LlamaFactory"):
        launch.spawn([str(tmp_path / "nope")], cwd=tmp_path, env={}, log_path=None)


def test_stop_group_reaches_the_whole_group(tmp_path):
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    child = launch.spawn([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ), log_path=None)
    wait_for(lambda: len(_members(child.pid)) == 2, what="the child and its own child in the group")
    assert launch.group_alive(child.pid)
    launch.stop_group(child.pid, grace=5)
    child.proc.wait(timeout=10)
    assert not launch.group_alive(child.pid)


def _members(pgid: int) -> list[int]:
    """Live processes of process group *pgid*."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else None
        except OSError:
            continue
        if fields and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_run_captured(tmp_path):
    done = launch.run_captured([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
                               cwd=tmp_path, env=dict(os.environ), timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")
    with pytest.raises(subprocess.TimeoutExpired):
        launch.run_captured([sys.executable, "-c", "import time; time.sleep(5)"], cwd=tmp_path, env={}, timeout=0.5)
