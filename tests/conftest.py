"""Shared fixtures: a local dataset folder, LlamaFactory's own examples, the CLI runner, the tiny VLMs, a small disk,
a project whose llamafactory-cli is the stand-in (helpers the tests share are in tests/helpers.py)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

# The hardware a build without --gpu is sized for: a CPU, on every machine the tests run on (a GPU box would
# otherwise size every such config for its own GPU). tests/catalogs/test_machine.py tests the look itself.
os.environ["LFGEN_GPU"] = "cpu"

FIXTURES = Path(__file__).parent / "fixtures"
LF_EXAMPLES = FIXTURES / "llamafactory_examples"
GOLDEN = Path(__file__).parent / "golden"


def has_llamafactory() -> bool:
    from lfgen.catalogs.llamafactory import find_python

    return find_python() is not None


needs_llamafactory = pytest.mark.skipif(
    not has_llamafactory() and not os.environ.get("CI"),
    reason="LlamaFactory is not installed (pip install -e '.[train]'); CI always has it",
)


def make_dataset_dir(root: Path, rows: int = 2000, name: str = "my_sft", fmt: str = "json") -> Path:
    """A dataset_dir with one alpaca dataset of *rows* rows, registered in dataset_info.json."""
    root.mkdir(parents=True, exist_ok=True)
    records = [{"instruction": f"what is {i} + 1?", "input": "", "output": f"{i + 1}"} for i in range(rows)]
    if fmt == "jsonl":
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        (root / f"{name}.json").write_text(json.dumps(records), encoding="utf-8")
    (root / "dataset_info.json").write_text(json.dumps({name: {"file_name": f"{name}.{fmt}"}}), encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _no_user_corrections(tmp_path_factory, monkeypatch):
    """No test reads this machine's calibration or prices file (a user's lfgen calibrate would change estimates):
    each test starts with none; a test that wants one sets $LFGEN_CALIBRATION or $LFGEN_PRICES itself."""
    folder = tmp_path_factory.mktemp("user-config")
    monkeypatch.setenv("LFGEN_CALIBRATION", str(folder / "calibration.json"))
    monkeypatch.setenv("LFGEN_PRICES", str(folder / "prices.yaml"))


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return make_dataset_dir(tmp_path / "data")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def cli():
    from lfgen.cli import cli as command

    return command


def make_vlm_folder(root: Path, max_pixels: int = 1003520) -> Path:
    """A tiny Qwen2-VL model folder without weights: config.json and its image processor's settings
    (enough for lfgen's image-token rule and per-tower counts, which build the skeleton on the meta device)."""
    from lfgen.tiny_vlm import qwen2_vl_config

    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(qwen2_vl_config(400)), encoding="utf-8")
    processor = {"image_processor": {"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 14,
                                     "merge_size": 2, "size": {"shortest_edge": 3136, "longest_edge": max_pixels}}}
    (root / "processor_config.json").write_text(json.dumps(processor), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny local Qwen2 model and its tokenizer (lfgen.tiny), built once per session; tests read it, never
    write into it."""
    from lfgen.tiny import make_model

    return make_model(tmp_path_factory.mktemp("tiny") / "tiny-model")


@pytest.fixture
def vlm_project(tmp_path: Path) -> Path:
    """A folder with data/ (generated pictures, the tiny caption sets) and a weightless tiny-qwen2-vl/."""
    from lfgen.tiny_vlm import make_images_dataset

    make_images_dataset(tmp_path / "data")
    make_vlm_folder(tmp_path / "tiny-qwen2-vl")
    return tmp_path


@dataclass(frozen=True)
class TinyVLM:
    root: Path
    data: Path
    qwen2_vl: Path
    llava: Path


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> TinyVLM:
    """Real tiny Qwen2-VL and LLaVA models (random weights, their processors) and the caption sets, built once
    per session (about 15 s; the slow VLM tests train them)."""
    from lfgen.tiny_vlm import make_images_dataset, make_llava, make_qwen2_vl

    root = tmp_path_factory.mktemp("tiny_vlm")
    make_images_dataset(root / "data")
    return TinyVLM(root, root / "data", make_qwen2_vl(root / "tiny-qwen2-vl"), make_llava(root / "tiny-llava"))


@pytest.fixture(autouse=True)
def _no_optional_packages(monkeypatch):
    """flash-attn, liger-kernel and deepspeed count as not installed (as in CI), whatever this Python has: the rules
    that ask (R-HW-FA, R-HW-THROUGHPUT, R-MULTI-DS) give the same config everywhere; a test that wants one installed
    patches ``installed`` itself."""
    from lfgen.catalogs import machine

    monkeypatch.setattr(machine, "installed", lambda package: False)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with the stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py, ONLY for faults
    a CPU run cannot produce) and nvidia-smi first on PATH; every call it takes is recorded in calls.jsonl."""
    from tests.helpers import install_stand_in

    install_stand_in(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LF_RECORD", str(tmp_path / "calls.jsonl"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def small_disk():
    """Mount a tmpfs of *size* at a folder (root only); unmounted after the test."""
    mounted = []

    def mount(folder: Path, size: str = "64k") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)
