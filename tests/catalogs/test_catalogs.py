"""Every shipped data file is valid: GPU catalog, template table, rule tables (one loader, one test each)."""

from __future__ import annotations

import re

import pytest

from lfgen.catalogs.gpus import _catalog, _norm, find_gpu, gpu_names
from lfgen.catalogs.llamafactory import snapshot
from lfgen.resources import load_data
from lfgen.catalogs.rules import registry

ISSUE_GPUS = ["T4", "V100-16", "V100-32", "RTX 3090", "RTX 4090", "A10", "A10G", "L4", "A6000", "L40S", "A100-40",
              "A100-80", "A800", "H100", "H800", "H200"]


@pytest.mark.parametrize("entry", load_data("gpus.yaml")["gpus"], ids=lambda e: e["name"])
def test_gpu_entry(entry):
    assert set(entry) <= {"name", "memory_gb", "bf16", "fa2", "arch", "aliases", "peak"}
    peak = entry["peak"]  # every catalog GPU has the figures the time estimate needs, each with its source
    assert set(peak) == {"tflops_16", "tflops_32", "bandwidth_gbs", "source"} and peak["source"]
    assert 20 <= peak["tflops_16"] <= 5000 and 5 <= peak["tflops_32"] <= peak["tflops_16"]
    assert 200 <= peak["bandwidth_gbs"] <= 10000
    assert isinstance(entry["memory_gb"], (int, float)) and 8 <= entry["memory_gb"] <= 300
    assert isinstance(entry["bf16"], bool) and isinstance(entry["fa2"], bool)
    assert entry["arch"] in {"Volta", "Turing", "Ampere", "Ada", "Hopper", "Blackwell"}
    # bf16 and FlashAttention-2 both start with Ampere.
    assert entry["bf16"] == entry["fa2"] == (entry["arch"] not in {"Volta", "Turing"})
    assert find_gpu(entry["name"]).name == entry["name"]
    for alias in entry["aliases"]:
        assert find_gpu(alias).name == entry["name"]


def test_catalog_covers_the_issue_list_and_names_are_unique():
    names = gpu_names()
    assert set(ISSUE_GPUS) <= set(names)
    keys = [_norm(k) for e in load_data("gpus.yaml")["gpus"] for k in [e["name"], *e["aliases"]]]
    assert len(keys) == len(set(keys))
    by_key, ambiguous = _catalog()
    assert not set(ambiguous) & set(by_key)


@pytest.mark.parametrize("family", load_data("templates.yaml")["families"], ids=lambda f: f["template"])
def test_template_table_names_real_llamafactory_templates(family):
    assert family["template"] in snapshot().templates
    re.compile(family["pattern"])


@pytest.mark.parametrize("rule", list(registry().values()), ids=lambda r: r.id)
def test_rule_entry(rule):
    assert rule.title and rule.says and rule.lfgen
    assert all(re.fullmatch(r"00[0-4]", s) for s in rule.seeds)
    if "bands" in rule.tables:
        bounds = [b["upto"] for b in rule.tables["bands"]]
        assert bounds[-1] is None and bounds[:-1] == sorted(bounds[:-1])
    if "tiers" in rule.tables:
        assert [t["min_gb"] for t in rule.tables["tiers"]] == sorted((t["min_gb"] for t in rule.tables["tiers"]),
                                                                      reverse=True)
        assert rule.tables["tiers"][-1]["min_gb"] == 0


@pytest.mark.parametrize("model_type,family", [("qwen2", "qwen"), ("qwen3_moe", "qwen"), ("llama", "llama"),
                                               ("mixtral", "mistral"), ("gemma3_text", "gemma"), ("phi3", "phi"),
                                               ("gpt_neox", None), ("starcoder2", None)])
def test_architecture_family_of_a_model_type(model_type, family):
    from lfgen.catalogs.templates import architecture_family

    assert architecture_family(model_type) == family


def test_borrowed_architectures_name_families_of_the_table():
    from lfgen.catalogs.templates import family_of

    families = {family_of(f["template"]) for f in load_data("templates.yaml")["families"]}
    assert all(any(f.startswith(b) for f in families) for b in load_data("templates.yaml")["borrowed_architectures"])


@pytest.mark.parametrize("smi, name", [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100"), ("NVIDIA A100-SXM4-80GB", "A100-80"),
    ("NVIDIA A100-PCIE-40GB", "A100-40"), ("NVIDIA A100 80GB PCIe", "A100-80"), ("Tesla T4", "T4"),
    ("Tesla V100-SXM2-16GB", "V100-16"), ("Tesla V100-SXM2-32GB", "V100-32"), ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("NVIDIA L40S", "L40S"), ("NVIDIA A800-SXM4-80GB", "A800"), ("NVIDIA RTX A6000", "A6000"),
    ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"), ("NVIDIA A10G", "A10G"), ("NVIDIA Tesla X99", None),
])
def test_gpus_by_their_nvidia_smi_names(smi, name):
    """lfgen_env.json records nvidia-smi's names: calibrate, compare's cost and status time a run on its catalog
    card (an unknown card is None: no guess)."""
    from lfgen.catalogs.gpus import gpu_from_smi

    found = gpu_from_smi(smi)
    assert (found.name if found else None) == name


def test_the_cpu_is_a_device_of_the_time_estimate_only():
    from lfgen.catalogs.gpus import cpu_device, device

    cpu = cpu_device(cores=4)
    entry = load_data("gpus.yaml")["cpu"]
    assert (cpu.name, cpu.arch, cpu.bf16, cpu.fa2) == ("CPU", "CPU", False, False)
    assert cpu.peak.tflops_32 == pytest.approx(4 * entry["per_core"]["tflops_32"]) == cpu.peak.tflops_16
    assert "an assumption" in cpu.peak.source and device("cpu").name == "CPU" and device("a800").name == "A800"
    with pytest.raises(Exception, match="unknown GPU 'cpu'"):
        find_gpu("cpu")  # not a --gpu choice: no memory to size a config for
