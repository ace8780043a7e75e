"""Startup stays light: the config commands never import torch, transformers, llamafactory or pandas.

Timing lives in benchmarks/bench_startup.py; this checks the structure that keeps it fast.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "llamafactory", "pandas", "peft", "matplotlib", "tensorboard", "ray", "optuna")
PROBE = """
import json, sys
from lfgen.cli import cli
try:
    cli(args=sys.argv[1:], prog_name="lfgen")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["presets"], ["preset", "a800", "--rank", "64"],
                                  ["explain", "a800", "--gpu", "4090"], ["validate", "--no-parser", "pyproject.toml"],
                                  ["run", "--help"], ["tune", "--help"], ["status", "--help"]])
def test_commands_do_not_import_heavy_packages(args):
    proc = subprocess.run([sys.executable, "-c", PROBE % (HEAVY,), *args], capture_output=True, text=True, check=False)
    imported = json.loads(proc.stderr.strip().splitlines()[-1])
    assert imported == [], f"lfgen {' '.join(args)} imported {imported}"
