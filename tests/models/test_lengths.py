"""The length distributions the time model pads and counts with (lfgen/models/lengths.py)."""

from __future__ import annotations

import math

import pytest

from lfgen.models.lengths import LengthModel


def test_a_fixed_length_is_every_sample_and_every_batch():
    fixed = LengthModel.fixed(1024)
    assert fixed.mean(4096) == pytest.approx(1024) and fixed.batch_max(8, 4096) == pytest.approx(1024)
    assert fixed.mean(512) == 512  # truncated at the cutoff


def test_mean_and_sd_are_matched_before_any_cutoff():
    lengths = LengthModel.from_mean_sd(300, 200)
    assert lengths.mean(10**6) == pytest.approx(300, rel=0.01)


def test_percentiles_are_matched():
    lengths = LengthModel.from_percentiles(200, 600)
    assert lengths.cdf(200) == pytest.approx(0.5, abs=1e-6) and lengths.cdf(600) == pytest.approx(0.9, abs=1e-6)


@pytest.mark.parametrize("batch", [1, 2, 4, 16])
def test_a_batch_is_padded_to_its_longest_sample(batch):
    lengths = LengthModel.from_percentiles(200, 600, longest=3000)
    padded = lengths.batch_max(batch, 2048)
    assert lengths.mean(2048) <= padded <= 2048
    if batch > 1:
        assert padded > lengths.batch_max(batch // 2, 2048)  # larger batches pad to longer samples


def test_the_longest_sample_caps_the_tail():
    assert LengthModel.from_percentiles(200, 600, longest=700).batch_max(64, 4096) <= 700


def test_dropping_over_long_samples_keeps_the_short_ones():
    kept = LengthModel.from_mean_sd(3234.4, 2547.5, 19548, drop_over=True)
    truncated = LengthModel.from_mean_sd(3234.4, 2547.5, 19548)
    assert kept.kept_share(512) < 0.05 and truncated.kept_share(512) == 1
    assert kept.mean(512) < 512 and truncated.mean(512) == pytest.approx(512, rel=0.01)
    assert math.isclose(kept.mean(10**6), truncated.mean(10**6), rel_tol=0.01)
