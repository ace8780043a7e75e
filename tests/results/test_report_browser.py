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


# Measures, inside the page, what a reader at 1400 px sees: every header of the runs table within the window (no
# column off-screen) and no cell of a generated-answers row over its neighbour. Appended to a copy of the report
# for the test only (the report itself has no script).
_MEASURE = """<script>
const width = window.innerWidth;
const heads = [...document.querySelectorAll('table.runs th')];
const off = heads.filter(th => th.getBoundingClientRect().right > width + 1).map(th => th.textContent);
const named = [...document.querySelectorAll('table.runs th, p.meta span')].map(e => e.title || e.textContent);
const overlaps = [...document.querySelectorAll('table.answers tr')].filter(tr => {
  const cells = [...tr.children].map(c => c.getBoundingClientRect());
  return cells.some((c, i) => i > 0 && cells[i - 1].right > c.left + 1);
}).length;
document.body.setAttribute('data-measured', JSON.stringify({width, named, off, overlaps}));
</script>"""


def test_at_1400_px_every_column_is_on_screen_and_answers_do_not_overlap(tmp_path):
    """Issue 21: the sample table overlapped its columns and the metrics were off-screen at 1400 px."""
    import markupsafe
    import json
    import re

    from lfgen.layout import EVAL_DIR, PREDICTIONS

    root = tmp_path / "outputs" / "rank-sweep"
    env = {"lfgen": "0.1.0", "llamafactory": "0.9.5", "device": "cuda", "gpus": ["NVIDIA H100 80GB HBM3"]}
    for rank, end in ((16, 1.3), (32, 1.1), (64, 1.2)):
        run = write_run(root / f"rank-{rank}-with-a-longer-name", Curves(
            loss=decay(40, end=end), logging_steps=5, eval=evals_at([50, 100, 150, 200], lambda s: end + 20 / s)),
            config={"lora_rank": rank, "lora_alpha": 2 * rank, "lora_target": "q_proj,k_proj,v_proj,o_proj",
                    "lr_scheduler_type": "cosine" if rank < 64 else "linear", "weight_decay": rank / 1000},
            predict={"predict_rouge-1": 41.234, "predict_rouge-2": 20.5, "predict_rouge-l": 35.25,
                     "predict_bleu-4": 30.125})
        (run / "lfgen_env.json").write_text(json.dumps(env))
        (run / EVAL_DIR).mkdir()
        long = "a long generated answer that goes on and on " * 12
        (run / EVAL_DIR / PREDICTIONS).write_text("".join(json.dumps(
            {"prompt": f"<|im_start|>user\n{'a very long question ' * 20}{i}<|im_end|>\n", "predict": long,
             "label": "unbroken" * 40}) + "\n" for i in range(3)))
    from lfgen.results import compare

    df = compare(tmp_path / "outputs")
    # the path is a tooltip, the verdict the experiment's section, the price source a sentence under the table
    columns = set(df.columns) - {"path", "experiment_verdict", "price_source"}
    report = write_report(tmp_path / "outputs", tmp_path / "report.html")
    assert f"cost at {markupsafe.escape(df['price_source'].iloc[0])}." in report.read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
    dom = subprocess.run([CHROMIUM, *FLAGS, "--user-data-dir=" + str(tmp_path / "profile"), "--window-size=1400,900",
                          "--virtual-time-budget=3000", "--dump-dom", probe.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    found = re.search(r"data-measured=\"([^\"]*)\"", dom)
    assert found, "the page did not run the measurement"
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    # every column is on screen: a header inside the window, or a setting said once above the table
    assert measured["width"] == 1400 and len(columns) >= 27 and columns <= set(measured["named"])
    assert measured["off"] == [] and measured["overlaps"] == 0
