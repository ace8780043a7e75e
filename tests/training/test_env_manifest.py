"""lfgen_env.json, the environment manifest every attempt of a run writes in its output dir.

These use the stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py) and a fake nvidia-smi:
the manifest is lfgen's own file, and which GPUs a run got cannot be shown on a CPU machine.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from importlib import metadata

from lfgen.layout import ENV_MANIFEST
from lfgen.training.environment import environment

from tests.helpers import experiment, modes, rows, run


def _smi_with_names(project, names):
    smi = project / "bin" / "nvidia-smi"
    lines = "".join(f'    echo "{i}, {name}"\n' for i, name in enumerate(names))
    indices = "".join(f"    echo {i}\n" for i in range(len(names)))
    smi.write_text(f'#!/bin/sh\nif [ "$1" = "--query-gpu=index,name" ]; then\n{lines}else\n{indices}fi\n')
    smi.chmod(0o755)


def test_each_attempt_writes_the_environment_manifest(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="oom-above:4")  # two attempts: micro-batch 8, then 4
    summary, _ = run(command=["lfgen", "run", "exp"])
    assert summary.done == ["rank-8"]
    env = json.loads((project / "outputs/exp/rank-8" / ENV_MANIFEST).read_text())
    assert env["attempt"] == 2 and env["run"] == "rank-8"  # the last attempt's, replaced atomically
    assert env["lfgen"] == "0.1.0" and env["command"] == ["lfgen", "run", "exp"]
    assert env["llamafactory_python"] == sys.executable  # the stand-in runs on this interpreter
    assert env["transformers"] == metadata.version("transformers") and env["python"] == sys.version.split()[0]
    assert (env["gpus"], env["device"]) == ([], "cpu")
    assert datetime.fromisoformat(env["started"]).tzinfo is not None
    assert not list((project / "outputs/exp/rank-8").glob(f".{ENV_MANIFEST}.*"))  # no temporary file left


def test_the_manifest_names_the_gpus_a_run_got(project, monkeypatch):
    from lfgen import launch

    _smi_with_names(project, ["NVIDIA A800-SXM4-80GB", "NVIDIA H200"])
    experiment(runs=("8",))
    run(gpus=launch.parse_gpus("1", launch.visible_gpus()))
    env = json.loads((project / "outputs/exp/rank-8" / ENV_MANIFEST).read_text())
    assert (env["gpus"], env["device"]) == (["NVIDIA H200"], "cuda")


def test_a_run_that_crashes_still_has_its_manifest(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="crash")
    run()
    assert rows()["rank-8"].state == "failed"
    assert (project / "outputs/exp/rank-8" / ENV_MANIFEST).is_file()


def test_versions_are_null_for_another_interpreter(tmp_path):
    env = environment(python=str(tmp_path / "other" / "python"), gpus=[], command=["lfgen"])
    assert [env[k] for k in ("llamafactory", "transformers", "peft", "torch", "python")] == [None] * 5
    assert env["llamafactory_python"] == str(tmp_path / "other" / "python")
    assert environment(python=None, gpus=["A"], command=[])["device"] == "cuda"


def test_the_manifest_never_imports_torch_or_transformers():
    import subprocess

    code = ("import sys; from lfgen.training.environment import environment; environment(python=sys.executable, "
            "gpus=[], command=[]); print(any(m in sys.modules for m in ('torch', 'transformers', 'llamafactory')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
