"""What lfgen writes gets the modes the user's umask gives, as with any tool on a shared GPU server:
0644 files and 0755 folders under umask 022, 0600 and 0700 under 077 (atomic writes through a
temporary file or folder must not leave mkstemp's 0600 or mkdtemp's 0700 behind)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lfgen.yamlio import replace_dir, write_atomic, write_new

from .results.lf_files import Curves, decay, write_run

MODES = [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]


@pytest.fixture(params=MODES, ids=["umask-022", "umask-077"])
def modes(request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    umask, file_mode, dir_mode = request.param
    old = os.umask(umask)
    yield file_mode, dir_mode
    os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_atomic_writes(tmp_path, modes):
    file_mode, dir_mode = modes
    assert mode(write_new(tmp_path / "a.yaml", "a: 1\n")) == file_mode
    assert mode(write_atomic(tmp_path / "new/b.bin", b"\0")) == file_mode
    assert mode(tmp_path / "new") == dir_mode
    folder = replace_dir(tmp_path / "exp", {"top.yaml": "x: 1\n", "sub/one.yaml": "y: 2\n"})
    assert (mode(folder), mode(folder / "sub")) == (dir_mode, dir_mode)
    assert (mode(folder / "top.yaml"), mode(folder / "sub/one.yaml")) == (file_mode, file_mode)
    again = replace_dir(tmp_path / "exp", {"top.yaml": "x: 2\n"})
    assert mode(again) == dir_mode and sorted(p.name for p in again.iterdir()) == ["top.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.yaml", "exp", "new"]  # no temporaries left


def test_preset_output(tmp_path, runner, cli, modes):
    file_mode, dir_mode = modes
    result = runner.invoke(cli, ["preset", "lightweight", "-o", "configs/qv.yaml"])
    assert result.exit_code == 0, result.stderr
    assert (mode(tmp_path / "configs/qv.yaml"), mode(tmp_path / "configs")) == (file_mode, dir_mode)


def test_sweep_experiment_folder(tmp_path, runner, cli, modes):
    file_mode, dir_mode = modes
    for _ in range(2):  # a new experiment, then one replaced with --force
        result = runner.invoke(cli, ["sweep", "rank", "8", "16", "--force"])
        assert result.exit_code == 0, result.stderr
        exp = tmp_path / "experiments/rank-sweep"
        assert [mode(p) for p in (tmp_path / "experiments", exp, exp / "runs")] == [dir_mode] * 3
        files = [exp / "experiment.yaml", *sorted((exp / "runs").iterdir())]
        assert len(files) == 3 and [mode(p) for p in files] == [file_mode] * 3


def test_compare_and_report_outputs(tmp_path, runner, cli, modes):
    file_mode, _ = modes
    for name in ("a", "b"):
        write_run(tmp_path / "outputs/exp" / name, Curves(decay(20)))
    result = runner.invoke(cli, ["compare", "outputs", "--format", "csv", "-o", "table.csv"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(cli, ["report", "outputs", "-o", "report.html"])
    assert result.exit_code == 0, result.stderr
    assert (mode(tmp_path / "table.csv"), mode(tmp_path / "report.html")) == (file_mode, file_mode)
