"""GPU prices: the dated default table, --price, the user's prices file, and bad input (lfgen/catalogs/prices.py)."""

from __future__ import annotations

import pytest

from lfgen.catalogs import prices
from lfgen.catalogs.gpus import gpu_names
from lfgen.errors import InputError, StateError
from lfgen.resources import load_data


@pytest.fixture(autouse=True)
def prices_file(tmp_path, monkeypatch):
    path = tmp_path / "prices.yaml"
    monkeypatch.setenv("LFGEN_PRICES", str(path))
    return path


@pytest.mark.parametrize("row", load_data("prices.yaml")["prices"], ids=lambda r: r["gpu"])
def test_every_default_price_names_a_catalog_gpu_a_source_and_a_date(row):
    assert row["gpu"] in gpu_names() and 0 < row["usd_per_gpu_hour"] <= prices.MAX_USD_PER_GPU_HOUR
    assert row["source"] and "date" in row


def test_the_price_comes_from_the_option_then_the_file_then_the_table(prices_file):
    assert prices.price_for("H100").source.startswith("Lambda")
    prices_file.write_text("H100: 2.2\nrtx4090: 0.5\n")
    assert prices.price_for("H100") == prices.Price(2.2, str(prices_file))
    assert prices.price_for("RTX 4090").usd_per_gpu_hour == 0.5
    assert prices.price_for("H100", 1.5) == prices.Price(1.5, "--price")
    assert prices.price_for("V100-16") is None  # no default: the caller asks for --price


@pytest.mark.parametrize("value", [0, -2, 101, float("nan"), float("inf"), True, "2"])
def test_a_negative_zero_absurd_or_non_numeric_price_is_an_error(value):
    with pytest.raises(InputError, match=r"^--price: must be a price in USD per GPU-hour .*\(got "):
        prices.price_for("H100", value)


def test_a_price_file_with_an_unknown_gpu_is_an_error_with_suggestions(prices_file):
    prices_file.write_text("H10O: 2.0\n")
    with pytest.raises(InputError, match=r"prices.yaml: unknown GPU 'H10O'.*did you mean"):
        prices.price_for("H100")


@pytest.mark.parametrize("text,error", [("H100: -1\n", InputError), ("[1, 2]\n", StateError),
                                        ("H100: [\n", StateError)])
def test_a_broken_price_file_is_refused_not_skipped(prices_file, text, error):
    prices_file.write_text(text)
    with pytest.raises(error):
        prices.price_for("A100-80")


def test_a_cpu_machine_has_a_price_only_when_the_user_gives_one(prices_file):
    assert prices.price_for("CPU") is None  # the default table prices GPUs only
    prices_file.write_text("CPU: 0.05\n")
    assert prices.price_for("cpu") == prices.Price(0.05, str(prices_file))
    assert prices.price_for("CPU", 0.2) == prices.Price(0.2, "--price")
