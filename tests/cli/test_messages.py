"""The CLI's own words: help examples, next steps, option names in errors, units, table widths."""

from __future__ import annotations

import sys

import pytest

from ..results.lf_files import Curves, decay, write_run


def test_chat_help_example_is_one_shell_line(runner, cli):
    result = runner.invoke(cli, ["chat", "--help"])
    assert result.exit_code == 0
    assert "printf 'hello\\n' | lfgen chat outputs/rank-sweep/rank-64" in result.output


def test_sweep_ends_by_suggesting_lfgen_run(runner, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["sweep", "rank", "16", "32", "--samples", "500"])
    assert result.exit_code == 0, result.stderr
    assert "train them with lfgen run experiments/rank-sweep" in result.stderr
    assert "llamafactory-cli train" not in result.stderr


def test_report_refusal_names_the_option_it_has(runner, cli, tmp_path):
    write_run(tmp_path / "outputs" / "r", Curves(loss=decay(20)))
    out = tmp_path / "report.html"
    out.write_text("mine")
    result = runner.invoke(cli, ["report", str(tmp_path / "outputs"), "-o", str(out)])
    assert result.exit_code == 1
    assert "-o/--output" in result.stderr and "--report" not in result.stderr
    assert out.read_text() == "mine"


def test_fit_sentences_use_one_unit(runner, cli):
    result = runner.invoke(cli, ["preset", "a800", "--model", "meta-llama/Llama-2-70b-hf", "--gpu", "4090",
                                 "--allow-unfit"])
    assert result.exit_code == 0, result.stderr
    line = next(w for w in result.stderr.splitlines() if "does not fit on" in w)
    assert "GiB" in line and " GB" not in line
    refused = runner.invoke(cli, ["preset", "a800", "--model", "meta-llama/Llama-2-70b-hf", "--gpu", "4090"])
    assert refused.exit_code == 1 and "GiB" in refused.stderr and " GB" not in refused.stderr


def test_piped_tables_follow_columns(monkeypatch):
    from lfgen.cli.output import PIPED_WIDTH, width

    class Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.setenv("COLUMNS", "211")
    assert width(Pipe()) == 211
    monkeypatch.setenv("COLUMNS", "wide")
    assert width(Pipe()) == PIPED_WIDTH


def test_explain_keeps_a_long_model_path_on_one_line(runner, cli, tmp_path):
    from lfgen.tiny import make_model

    model = make_model(tmp_path / "a-rather-long-folder-name" / "for-the-tiny-model-qwen2")
    result = runner.invoke(cli, ["explain", "a800", "--model", str(model)], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.stderr
    assert str(model) in result.stdout  # not folded over two lines


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    from lfgen.errors import InputError
    from lfgen.results import read_run, render_png

    run = read_run(write_run(tmp_path / "r", Curves(loss=decay(20))))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(InputError, match=r"lfgen\[plot\]"):
        render_png([("r", run)])
