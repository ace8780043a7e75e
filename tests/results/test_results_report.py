"""The HTML report is one self-contained file; the PNG of the curves is a real image."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pytest

from lfgen.errors import InputError
from lfgen.results.plots import plot_curves, render_png
from lfgen.runs.reader import read_run
from lfgen.results.report import write_report
from lfgen.results.table import collect
from tests.results.lf_files import Curves, decay, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N = 60


def sweep(root: Path) -> Path:
    for r in (16, 32):
        curves = Curves(decay(N, seed=r), {s: 1.6 - r / 100 - s / 2000 for s in range(100, 601, 100)},
                        grad_norm=[0.5] * N, logging_steps=10)
        write_run(root / "rank-sweep" / f"r{r}", curves, config={"lora_rank": r, "lora_alpha": 2 * r})
    loss = decay(N)
    loss[40:] = [float("nan")] * (N - 40)
    write_run(root / "rank-sweep" / "r<b>64", Curves(loss, logging_steps=10), config={"lora_rank": 64})
    return root


def test_report_is_self_contained_and_holds_table_curves_and_advice(tmp_path: Path) -> None:
    out = write_report(sweep(tmp_path / "exp"), tmp_path / "report.html")
    text = out.read_text(encoding="utf-8")
    links = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]+)""", text, re.I)
    assert links and all(link.startswith("data:") for link in links)
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower() and "@import" not in text
    # the table: a header per column and a row per run
    assert "<th>best_eval_loss</th>" in text and "<th>diagnosis</th>" in text
    assert text.count("<tr") == 1 + 3
    assert "rank-sweep/r16" in text and "rank-sweep/r32" in text
    # the user's folder name is escaped, never markup
    assert "r&lt;b&gt;64" in text and "r<b>64" not in text
    # curves: one embedded PNG for the experiment
    (image,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    png = base64.b64decode(image)
    assert png.startswith(PNG_MAGIC) and b"http" not in png  # not even in the PNG metadata
    # diagnosis, best run and next step with the rule ids
    assert "R-DIAG-NAN" in text and "Best run: <strong>rank-sweep/r32</strong> (final_eval_loss" in text
    next_step = html.unescape(re.search(r'<p class="next">(.*?)</p>', text, re.S).group(1))
    assert "rank 32 best → sweep alpha at rank 32" in next_step
    assert "<code>lfgen sweep alpha --from " in next_step


def test_report_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    root = sweep(tmp_path / "exp")
    comparison = collect(root)
    out = write_report(comparison, tmp_path / "report.html")
    with pytest.raises(InputError, match="already exists; pass --force"):
        write_report(comparison, out)
    assert write_report(comparison, out, force=True) == out


def test_report_respects_the_filter(tmp_path: Path) -> None:
    out = write_report(sweep(tmp_path / "exp"), tmp_path / "r.html", filter="lora_rank=16")
    text = out.read_text(encoding="utf-8")
    assert text.count("<tr") == 1 + 1 and "rank-sweep/r32" not in text


def test_png_has_loss_panel_and_lr_grad_panels_when_logged(tmp_path: Path) -> None:
    from matplotlib.image import imread

    with_grad = read_run(write_run(tmp_path / "a", Curves(decay(N), {200: 1.5, 400: 1.2}, grad_norm=[0.5] * N)))
    path = plot_curves([("a", with_grad)], tmp_path / "plots" / "curves.png", title="exp")
    assert path.read_bytes().startswith(PNG_MAGIC)
    tall = imread(path)
    assert tall.shape[0] == 700 and tall.shape[1] == 1000  # 10 x 7 inches at 100 dpi: loss + lr | grad

    only_loss = read_run(write_run(tmp_path / "b", Curves(decay(N))))
    only_loss.learning_rate.steps.clear()
    only_loss.learning_rate.values.clear()
    (tmp_path / "b.png").write_bytes(render_png([("b", only_loss)]))
    assert imread(tmp_path / "b.png").shape[0] == 420  # the loss panel alone


def test_png_with_many_runs_hides_the_legend_but_draws(tmp_path: Path) -> None:
    runs = [(f"r{i}", read_run(write_run(tmp_path / f"r{i}", Curves(decay(20, seed=i))))) for i in range(15)]
    png = render_png(runs)
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


ENV = {"lfgen": "0.1.0", "llamafactory": "0.9.5", "transformers": "4.57.1", "peft": "0.17.1", "torch": "2.8.0",
       "python": "3.11.7", "gpus": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"], "device": "cuda",
       "command": ["lfgen", "run", "rank-sweep"], "started": "2026-12-01T10:00:00"}


def test_report_has_no_path_column_and_says_what_the_runs_trained_with(tmp_path: Path) -> None:
    import json

    root = sweep(tmp_path / "exp")
    run_dir = root / "rank-sweep" / "r16"
    (run_dir / "lfgen_env.json").write_text(json.dumps(ENV))
    config = run_dir / "lfgen_run.yaml"
    config.write_text(f'# lfgen-recipe: {{"samples": 12000}}\n{config.read_text()}max_samples: 5000\n')
    text = write_report(root, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<th>path</th>" not in text and "<th>run</th>" in text
    assert f'title="{run_dir}">rank-sweep/r16</td>' in text  # the path is the run name's tooltip
    setup = dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", text))
    assert setup["model"] == "Qwen/Qwen2-7B-Instruct" and setup["dataset"] == "alpaca_en_demo"
    assert setup["samples"] == "5,000"  # 12,000 counted, capped by max_samples
    assert setup["device"] == "cuda: 2 x NVIDIA H100 80GB HBM3"
    assert (setup["llamafactory"], setup["transformers"], setup["torch"]) == ("0.9.5", "4.57.1", "2.8.0")


def test_report_without_environment_files_shows_model_and_dataset_only(tmp_path: Path) -> None:
    text = write_report(sweep(tmp_path / "exp"), tmp_path / "report.html").read_text(encoding="utf-8")
    assert set(dict(re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", text))) == {"model", "dataset"}


def test_report_shows_a_few_generated_answers_beside_the_reference(tmp_path: Path) -> None:
    """Seed 003's qualitative check: lfgen eval's generated_predictions.jsonl, first answers per run, escaped."""
    import json

    from lfgen.layout import EVAL_DIR, PREDICTIONS
    from lfgen.results.report import ANSWERS_SHOWN

    run_dir = write_run(tmp_path / "exp" / "r16", Curves(decay(N), logging_steps=10), config={"lora_rank": 16})
    (run_dir / EVAL_DIR).mkdir()
    lines = [{"prompt": f"<|im_start|>user\nq{i} <b>?<|im_end|>\n", "predict": "" if i == 1 else f"a{i}",
              "label": f"ref{i}"} for i in range(ANSWERS_SHOWN + 2)]
    (run_dir / EVAL_DIR / PREDICTIONS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    text = (write_report(tmp_path / "exp", tmp_path / "report.html")).read_text()
    assert "<td>q0 &lt;b&gt;?</td><td>a0</td><td>ref0</td>" in text  # the user's turn, escaped
    assert "<td>(empty)</td><td>ref1</td>" in text
    assert f"ref{ANSWERS_SHOWN - 1}" in text and f"ref{ANSWERS_SHOWN}" not in text
