"""GPU prices: user input first (``--price``, a prices file), the dated default table (presets/prices.yaml) last.

A price is USD per GPU-hour. lfgen never treats the default as the truth: explain says where each price
came from and when it was read. A prices file (``$LFGEN_PRICES``, else ``~/.config/lfgen/prices.yaml``)
is a YAML mapping ``GPU name: USD per GPU-hour``; every name must be a GPU of the catalog, or ``CPU`` (the hourly
price of a CPU machine, for runs that trained on the CPU; the default table has none).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lfgen.catalogs.gpus import device, find_gpu
from lfgen.errors import InputError, StateError
from lfgen.resources import load_data

MAX_USD_PER_GPU_HOUR = 100.0  # above any GPU's on-demand price: a larger figure is a typo (cents, a node's price)


@dataclass(frozen=True)
class Price:
    """One GPU's price and where it came from."""

    usd_per_gpu_hour: float
    source: str


def check_price(value: Any, where: str) -> float:
    """A price a user gave: a number in (0, MAX_USD_PER_GPU_HOUR]."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0 < value <= MAX_USD_PER_GPU_HOUR:
        raise InputError(f"{where}: must be a price in USD per GPU-hour above 0 and at most "
                         f"{MAX_USD_PER_GPU_HOUR:g} (got {value!r}); give one GPU's hourly price, e.g. 2.5")
    return float(value)


@functools.cache
def default_prices() -> dict[str, Price]:
    """The shipped table, by catalog GPU name."""
    table = {}
    for row in load_data("prices.yaml")["prices"]:
        date = f", read {row['date']}" if row.get("date") else ""
        table[find_gpu(row["gpu"]).name] = Price(float(row["usd_per_gpu_hour"]), f"{row['source']}{date}")
    return table


def prices_path() -> Path:
    env = os.environ.get("LFGEN_PRICES")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "lfgen" / "prices.yaml"


def user_prices() -> dict[str, Price]:
    """The user's prices file, checked whole (a bad entry is an error, never skipped); {} when there is none."""
    import yaml

    path = prices_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: the prices file cannot be read ({exc}); fix it or point $LFGEN_PRICES "
                         "at another file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StateError(f"{path}: the prices file is not valid YAML ({str(exc).splitlines()[0]}); write it as "
                         "'GPU name: USD per GPU-hour' lines") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StateError(f"{path}: the prices file holds a {type(data).__name__}, not a mapping of "
                         "'GPU name: USD per GPU-hour'; fix it or point $LFGEN_PRICES at another file")
    found = {}
    for name, value in data.items():
        try:
            gpu = device(str(name))  # a GPU of the catalog, or CPU (a CPU machine's hourly price)
        except InputError as exc:
            raise InputError(f"{path}: {exc}".replace("--gpu: ", "", 1)) from None
        found[gpu.name] = Price(check_price(value, f"{path}: {name}"), str(path))
    return found


def price_for(gpu_name: str, override: float | None = None) -> Price | None:
    """The price of one GPU-hour: --price, else the user's file, else the default table; None when none is known."""
    if override is not None:
        return Price(check_price(override, "--price"), "--price")
    name = device(gpu_name).name
    return user_prices().get(name) or default_prices().get(name)
