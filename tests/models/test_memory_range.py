"""The range explain states beside the peak-memory estimate (lfgen/models/memory_range.py): the 10th-90th percentile
of measured / estimated over every published peak no constant was fitted to (benchmarks/memory_reference.py --range)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lfgen.builder.estimates import estimate
from lfgen.models.memory_range import peak_range
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
    assert module.RANGE_FROM == ("holdout", "holdout22", "fresh", "independent")  # never the fit rows
    rows = module.ratios(reference)
    band = module.peak_range(rows)
    assert load_data("memory_range.yaml") == band
    # docs/estimates.md states these figures
    assert band == {"low": 0.94, "high": 1.27, "rows": 148}
    lines = module.range_lines(rows, band)
    assert "  independent: 35 of 42 inside, 1 below, 6 above" in lines
    assert "  fit: 44 of 49 inside, 5 below, 0 above" in lines


def test_the_range_scales_the_peak_and_what_must_fit():
    span = peak_range(10.0, 8.0)
    assert span.low < 1.0 < span.high
    data = span.to_json()
    assert data["low"] == pytest.approx(10.0 * span.low, abs=0.01)
    assert data["high"] == pytest.approx(10.0 * span.high, abs=0.01)
    assert data["fit_high"] == pytest.approx(8.0 * span.high, abs=0.01)
    assert f"{span.rows} published peaks" in data["basis"]


def test_explain_json_carries_the_range():
    found = estimate(MODEL, {"stage": "sft", "finetuning_type": "lora", "cutoff_len": 1024}, "A100-80", 80.0, 1)
    span = found.to_json()["memory_range_gib"]
    assert span["low"] < found.peak_gib < span["high"]
    assert span["fit_low"] < found.fit_gib < span["fit_high"]


def test_explain_states_the_range_and_warns_when_its_high_end_does_not_fit(runner, cli):
    def _explain(*args: str):
        return runner.invoke(cli, ["explain", "balanced", "--model", MODEL, "--samples", "20000", *args])

    roomy = _explain("--gpu", "A100-80")
    assert roomy.exit_code == 0, roomy.output
    assert "range: 0.94x to 1.27x of the estimate" in roomy.output
    assert "fits at the estimate, not at the range's high end" not in roomy.output
    tight = _explain("--gpu", "4090")  # 20.0 GiB must fit at the estimate, 25.4 GiB at the high end, on 24 GiB
    assert tight.exit_code == 0, tight.output
    assert "fits at the estimate, not at the range's high end (25.4 GiB)" in " ".join(tight.output.split())
    data = json.loads(_explain("--gpu", "4090", "--json").output)
    assert data["fits"] is True and data["memory_range_gib"]["fit_high"] > 24


def test_a_calibrated_estimate_carries_no_published_range(runner, cli, tmp_path, monkeypatch):
    """The range describes the uncalibrated model's error: once the user's own run has corrected the estimate
    (lfgen calibrate), the range and its warning would add back a bias the factor removed."""
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"RTX 4090|qwen2": {"factor": 1.0, "runs": 1, "updated": "2026-12-07"}}))
    monkeypatch.setenv("LFGEN_CALIBRATION", str(path))
    args = ["balanced", "--model", MODEL, "--samples", "20000", "--gpu", "4090"]
    shown = runner.invoke(cli, ["explain", *args])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "range: the estimate is calibrated from your own runs" in text
    assert "not at the range's high end" not in text
    data = json.loads(runner.invoke(cli, ["explain", *args, "--json"]).output)
    assert data["calibration"] == 1.0 and data["memory_range_gib"] is None
    written = runner.invoke(cli, ["preset", *args])
    assert written.exit_code == 0 and "not at its range's high end" not in written.output
    uncalibrated = runner.invoke(cli, ["preset", *args], env={"LFGEN_CALIBRATION": str(tmp_path / "none.json")})
    assert "fits at the estimate, not at its range's high end (25.4 GiB)" in uncalibrated.output
