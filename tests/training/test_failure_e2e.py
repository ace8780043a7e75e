"""A real CPU failure through the real `llamafactory-cli` (no stand-in): a model folder that does not exist.

LlamaFactory fails while loading the tokenizer (about 10 s, nothing downloaded: HF_HUB_OFFLINE=1), and
`lfgen run` / `lfgen status` must name the cause, the file to fix and the log, not only the traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lfgen.layout import ENV_MANIFEST

from ..conftest import needs_llamafactory

pytestmark = [pytest.mark.slow, needs_llamafactory]


def lfgen(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the test venv's llamafactory-cli
    return subprocess.run([sys.executable, "-m", "lfgen", *args], cwd=project, capture_output=True, text=True,
                          env=env, timeout=300)


def test_a_missing_model_folder_is_named_with_the_fix_and_the_log(tmp_path):
    from lfgen.tiny import make_dataset

    make_dataset(tmp_path / "data")
    (tmp_path / "nope.yaml").write_text(
        "model_name_or_path: ./nope\nstage: sft\ndo_train: true\nfinetuning_type: lora\ndataset: tiny_alpaca\n"
        "dataset_dir: data\ntemplate: qwen\noutput_dir: outputs/nope\nmax_steps: 1\nuse_cpu: true\nreport_to: none\n")
    result = lfgen(tmp_path, "run", "nope.yaml", "--quiet")
    expected = ("the model path does not exist (model_name_or_path: ./nope); fix it in nope.yaml; "
                "log: outputs/nope/lfgen_train.log")
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"run nope failed: {expected}" in result.stderr, result.stderr[-3000:]
    rows = json.loads(lfgen(tmp_path, "status", "nope.yaml", "--json").stdout)
    assert (rows[0]["state"], rows[0]["reason"]) == ("failed", "model")
    assert rows[0]["detail"].splitlines()[0] == expected
    assert "Traceback" in (tmp_path / "outputs/nope/lfgen_train.log").read_text()
    env = json.loads((tmp_path / "outputs/nope" / ENV_MANIFEST).read_text())
    assert env["llamafactory"] and env["transformers"] and env["command"][-3:] == ["run", "nope.yaml", "--quiet"]
