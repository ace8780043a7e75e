"""The HTML report in a real headless browser (Debian's chromium): it loads from a file with no server,
shows the table and the embedded curves, and makes a screenshot. CI installs chromium (.ci/run)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import pytest

from lfgen.results import write_report

from ..results.lf_files import Curves, decay, evals_at, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                                   reason="chromium is not installed (apt-get install chromium)")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_report_renders_in_headless_chromium(tmp_path):
    root = tmp_path / "outputs" / "rank-sweep"
    for rank, end in ((16, 1.3), (32, 1.1)):
        write_run(root / f"rank-{rank}", Curves(loss=decay(40, end=end), logging_steps=5,
                                                eval=evals_at([50, 100, 150, 200], lambda s: end + 20 / s)),
                  config={"lora_rank": rank, "lora_alpha": 2 * rank})
    report = write_report(tmp_path / "outputs", tmp_path / "report.html")
    url = report.resolve().as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "<table" in dom and "rank-32" in dom and dom.count("data:image/png;base64,") >= 1
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *FLAGS, *profile, "--window-size=1300,1800", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1300, 1800) and len(data) > 50_000  # a page with plots, not a blank one
