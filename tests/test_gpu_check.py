"""benchmarks/gpu_check.py's smoke mode: one real tiny LlamaFactory run on the CPU, through the whole kit (model,
data, lfgen's config, llamafactory-cli, the logs, the estimates, CSV and reference rows). The GPU figures need a
GPU; this checks the kit, not them."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import needs_llamafactory

pytestmark = [pytest.mark.slow, needs_llamafactory]
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_kit_measures_a_tiny_cpu_run(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    sys.path.insert(0, str(BENCH))
    import gpu_check

    assert gpu_check.main(["--smoke", "--out", str(tmp_path / "out"), "--steps", "3"]) == 0
    (case,) = list(csv.DictReader((tmp_path / "out" / "gpu_check.csv").open()))
    assert case["exit_code"] == "0" and float(case["tokens_per_s"]) > 0 and float(case["est_total_gib"]) > 0
    assert case["smi_gib"] == "" and case["reserved_gib"] == ""  # a CPU: nvidia-smi and CUDA measure nothing
    (time_row,) = yaml.safe_load((tmp_path / "out" / "time_rows.yaml").read_text())
    assert {"id", "source", "measured", "split", "tokens_per_s", "micro_batch", "seq_len"} <= set(time_row)
    assert time_row["precision"] == "fp32" and time_row["rank"] == 16
    assert yaml.safe_load((tmp_path / "out" / "memory_rows.yaml").read_text()) == []  # nothing measured on a CPU
    with pytest.raises(SystemExit):  # the results are never overwritten silently
        gpu_check.main(["--smoke", "--out", str(tmp_path / "out")])
