"""Shared fixtures: a local dataset folder, LlamaFactory's own examples, the CLI runner, a project whose
llamafactory-cli is the stand-in (helpers the tests share are in tests/helpers.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

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
