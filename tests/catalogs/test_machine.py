"""This machine as a build sees it: the GPUs the NVIDIA driver shows (mapped onto the catalog), CUDA_VISIBLE_DEVICES,
$LFGEN_GPU, and the optional packages."""

from __future__ import annotations

import pytest

from lfgen.catalogs import machine


@pytest.mark.parametrize("model,name", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100"), ("Tesla T4", "T4"),
    ("NVIDIA A100-SXM4-80GB", "A100-80"), ("NVIDIA A100-PCIE-40GB", "A100-40"), ("Tesla V100-SXM2-16GB", "V100-16"),
    ("Tesla V100-SXM2-32GB", "V100-32"), ("NVIDIA GeForce RTX 4090", "RTX 4090"), ("NVIDIA GeForce RTX 3090", "RTX 3090"),
    ("NVIDIA GeForce RTX 2080 Ti", "RTX 2080 Ti"), ("NVIDIA RTX A6000", "A6000"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA L4", "L4"), ("NVIDIA A10G", "A10G"), ("NVIDIA H200", "H200"), ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"),
])
def test_driver_names_map_onto_the_catalog(model, name):
    assert machine.catalog_name(model) == name


def test_an_unknown_gpu_has_no_catalog_name():
    assert machine.catalog_name("NVIDIA Mystery GPU") is None


def _driver(tmp_path, monkeypatch, *models: str) -> None:
    """A fake /proc/driver/nvidia/gpus with one folder per GPU, as the driver lays it out."""
    root = tmp_path / "gpus"
    for index, model in enumerate(models):
        folder = root / f"0000:0{index}:00.0"
        folder.mkdir(parents=True)
        (folder / "information").write_text(f"Model: \t\t {model}\nIRQ:   \t\t 42\nGPU UUID: \t GPU-{index}\n")
    monkeypatch.setattr(machine, "_DRIVER", root)
    monkeypatch.delenv(machine.GPU_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_the_gpu_the_driver_shows_is_the_target(tmp_path, monkeypatch):
    _driver(tmp_path, monkeypatch, "NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB")
    found = machine.target()
    assert (found.name, found.is_cpu) == ("A100-80", False)
    assert "NVIDIA A100-SXM4-80GB, 2 visible" in found.how


@pytest.mark.parametrize("visible,count", [("", 0), ("-1", 0), ("1", 1), ("0,1", 2), ("0,-1,1", 1)])
def test_cuda_visible_devices_hides_gpus(tmp_path, monkeypatch, visible, count):
    _driver(tmp_path, monkeypatch, "Tesla T4", "Tesla T4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert len(machine.driver_gpus()) == count
    assert machine.target().is_cpu is (count == 0)


def test_no_driver_is_the_cpu_target(tmp_path, monkeypatch):
    monkeypatch.setattr(machine, "_DRIVER", tmp_path / "absent")
    monkeypatch.setattr(machine, "_DEV", tmp_path)
    monkeypatch.delenv(machine.GPU_ENV, raising=False)
    found = machine.target()
    assert found.is_cpu and found.how == "no GPU is visible here"
    (tmp_path / "nvidia0").touch()  # a device node without /proc (some containers): a GPU lfgen cannot name
    found = machine.target()
    assert not found.is_cpu and found.name is None and found.seen == "unknown NVIDIA GPU"


def test_lfgen_gpu_replaces_the_look(tmp_path, monkeypatch):
    _driver(tmp_path, monkeypatch, "NVIDIA H100 80GB HBM3")
    monkeypatch.setenv(machine.GPU_ENV, "cpu")
    assert machine.target().is_cpu and machine.target().how == "$LFGEN_GPU=cpu"
    monkeypatch.setenv(machine.GPU_ENV, "4090")
    assert machine.target().name == "4090"


def test_installed_finds_without_importing(monkeypatch, capsys):
    import sys

    monkeypatch.undo()  # the suite's fixture says no optional package is installed; ask the real question here
    assert machine.installed("no_such_package_lfgen") is False
    monkeypatch.delitem(sys.modules, "this", raising=False)
    assert machine.installed("this") is True  # importing `this` would print the Zen of Python
    assert "this" not in sys.modules and capsys.readouterr().out == ""
