"""The range explain states beside the peak-memory estimate (lfgen/models/memory_range.py): derived from published
peaks the model was not fitted to, checked on the set nothing used (benchmarks/memory_reference.py --range)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lfgen.builder.estimates import estimate
from lfgen.models.memory_range import peak_range, regime
from lfgen.resources import load_data

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
MODEL = "Qwen/Qwen2.5-7B-Instruct"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    import memory_reference

    return memory_reference, memory_reference.load_reference()


def test_the_shipped_range_is_what_the_reference_set_gives(bench):
    module, reference = bench
    assert load_data("memory_range.yaml")["regimes"] == module.peak_ranges(reference)


def test_the_range_holds_on_the_rows_nothing_used(bench):
    """docs/estimates.md states these figures: no fresh peak lies above the range's high end."""
    module, reference = bench
    lines = module.range_check(reference, module.peak_ranges(reference))
    assert lines[0].startswith("fixed: 0.96x to 1.09x of the estimate from 24 rows; fresh: 5 of 5 inside")
    assert lines[1].startswith("variable: 0.85x to 1.34x of the estimate from 55 rows; fresh: 20 of 22 inside, 2 below")
    assert all(line.endswith("0 above []") for line in lines)


def test_real_padded_data_gets_the_wider_range():
    fixed, variable = peak_range(10.0, 8.0, False), peak_range(10.0, 8.0, True)
    assert (fixed.regime, variable.regime) == (regime(False), regime(True)) == ("fixed", "variable")
    assert variable.low < fixed.low <= 1.0 <= fixed.high < variable.high
    span = variable.to_json()
    assert span["low"] == pytest.approx(10.0 * variable.low, abs=0.01)
    assert span["fit_high"] == pytest.approx(8.0 * variable.high, abs=0.01)
    assert f"{variable.rows} published peaks" in span["basis"]


def test_a_packed_config_is_in_the_fixed_regime():
    unpacked = estimate(MODEL, {"stage": "sft", "finetuning_type": "lora", "cutoff_len": 1024}, "A100-80", 80.0, 1)
    packed = estimate(MODEL, {"stage": "sft", "finetuning_type": "lora", "cutoff_len": 1024, "packing": True},
                      "A100-80", 80.0, 1)
    assert unpacked.to_json()["memory_range_gib"]["regime"] == "variable"
    assert packed.to_json()["memory_range_gib"]["regime"] == "fixed"
    span = unpacked.to_json()["memory_range_gib"]
    assert span["low"] < unpacked.peak_gib < span["high"]
    assert span["fit_low"] < unpacked.fit_gib < span["fit_high"]


def test_explain_states_the_range_and_warns_when_its_high_end_does_not_fit(runner, cli):
    def _explain(*args: str):
        return runner.invoke(cli, ["explain", "balanced", "--model", MODEL, "--samples", "20000", *args])

    roomy = _explain("--gpu", "A100-80")
    assert roomy.exit_code == 0, roomy.output
    assert "range: 0.85x to 1.34x of the estimate" in roomy.output
    assert "fits at the estimate, not at the range's high end" not in roomy.output
    tight = _explain("--gpu", "4090")  # 20.0 GiB must fit at the estimate, 26.9 GiB at the high end, on 24 GiB
    assert tight.exit_code == 0, tight.output
    assert "fits at the estimate, not at the range's high end (26.9 GiB)" in " ".join(tight.output.split())
    data = json.loads(_explain("--gpu", "4090", "--json").output)
    assert data["fits"] is True and data["memory_range_gib"]["fit_high"] > 24
