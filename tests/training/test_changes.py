"""A run is keyed by its config's content (issue 21 item 5): a config edited since the run last ran is trained again
(failed, interrupted) or refused with an Error naming --force (done), never silently skipped.

The runs here go through the stand-in llamafactory-cli (tests/training/fake_llamafactory_cli.py) as in
test_results_kept.py: the runner's decisions are under test, not LlamaFactory; test_changes_e2e.py does the same
with real training of the tiny model.
"""

from __future__ import annotations

import json
import re
import sqlite3

import yaml

from tests.helpers import calls, experiment, modes, rows, run


def edit(project, run_name: str, key: str, value) -> None:
    """Change *key*'s value in the run's config by hand, its comment kept."""
    path = project / "experiments/exp/runs" / f"{run_name}.yaml"
    text, count = re.subn(rf"^{key}: [^#\n]*?(\s*#|$)", rf"{key}: {value}\1", path.read_text(), count=1,
                          flags=re.M)
    assert count == 1
    path.write_text(text)


def trained(project, run_name: str) -> int:
    return sum(1 for c in calls(project) if f"/{run_name}/" in c["argv"][2] and "finished" not in c)


def test_a_failed_run_whose_config_was_fixed_trains_again(project, monkeypatch):
    experiment(runs=("8",))
    modes(monkeypatch, rank_8="config")
    summary, _ = run()
    assert summary.failed == ["rank-8"] and trained(project, "rank-8") == 1
    modes(monkeypatch)  # the stand-in would now succeed, but the config is the same: nothing to do
    summary, _ = run()
    assert summary.failed == ["rank-8"] and trained(project, "rank-8") == 1
    edit(project, "rank-8", "learning_rate", 3.0e-4)  # the fix the failure asked for
    summary, recorder = run()
    assert summary.done == ["rank-8"] and trained(project, "rank-8") == 2
    said = [e[1] for e in recorder.events if e[0] == "message"]
    assert said == ["rank-8: experiments/exp/runs/rank-8.yaml changed since it failed (learning_rate); trained "
                    "again from scratch"]


def test_a_done_runs_edited_config_is_refused_with_force_named(project, runner, cli):
    experiment(runs=("8", "16"))
    run()
    before = trained(project, "rank-8")
    edit(project, "rank-8", "lora_rank", 12)
    result = runner.invoke(cli, ["run", "exp", "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: the config of 1 done run(s) changed since it trained: rank-8 (lora_rank)")
    assert "--force" in line and trained(project, "rank-8") == before
    assert rows()["rank-8"].state == "done"  # nothing written
    again = runner.invoke(cli, ["run", "exp", "--quiet", "--force"])
    assert again.exit_code == 0, again.output
    assert trained(project, "rank-8") == before + 1 and trained(project, "rank-16") == 1
    assert yaml.safe_load((project / "outputs/exp/rank-8/lfgen_run.yaml").read_text())["lora_rank"] == 12
    assert "rank-8: experiments/exp/runs/rank-8.yaml changed since it trained (lora_rank); trained again (--force)" \
        in again.stderr
    assert runner.invoke(cli, ["run", "exp", "--quiet"]).exit_code == 0  # the new results are its own now


def test_an_interrupted_run_whose_config_changed_starts_afresh(project, monkeypatch):
    experiment(runs=("8",))
    run()
    state = project / "experiments/exp/state.sqlite"
    with sqlite3.connect(state) as db:  # as Ctrl-C leaves it: interrupted, before LlamaFactory wrote its results
        db.execute("UPDATE runs SET state='interrupted', reason='interrupted' WHERE name='rank-8'")
    (project / "outputs/exp/rank-8/all_results.json").unlink()
    edit(project, "rank-8", "learning_rate", 3.0e-4)
    summary, recorder = run()
    assert summary.done == ["rank-8"] and trained(project, "rank-8") == 2
    assert ("message", "rank-8: experiments/exp/runs/rank-8.yaml changed since it was interrupted (learning_rate); "
            "trained again from scratch") in recorder.events
    last = [c for c in calls(project) if "finished" not in c][-1]
    assert "resume_from_checkpoint" not in yaml.safe_load(open(last["argv"][2]).read())


def test_a_state_file_from_before_the_content_key_reads_and_gains_it(project):
    experiment(runs=("8",))
    run()
    state = project / "experiments/exp/state.sqlite"
    with sqlite3.connect(state) as db:  # as lfgen wrote it before the column existed
        db.execute("ALTER TABLE runs DROP COLUMN digest")
    summary, _ = run()
    assert summary.done == ["rank-8"] and rows()["rank-8"].digest is None
    with sqlite3.connect(state) as db:
        assert "digest" in {row[1] for row in db.execute("PRAGMA table_info(runs)")}


def test_a_single_config_fixed_after_it_failed_trains_again(project, monkeypatch, runner, cli):
    """The tryout: `lfgen run FILE` after fixing the config said "0 done, 1 failed" and did nothing."""
    assert runner.invoke(cli, ["preset", "lightweight", "--model", "fake/model", "--gpu", "A800", "--output-dir",
                               "outputs/mine", "-o", "mine.yaml"]).exit_code == 0
    modes(monkeypatch, mine="config")
    first = runner.invoke(cli, ["run", "mine.yaml", "--quiet"])
    assert first.exit_code == 1 and "0 done, 1 failed" in first.stderr
    modes(monkeypatch)
    path = project / "mine.yaml"
    path.write_text(path.read_text().replace("lora_dropout: ", "lora_dropout: 0.05  # was ", 1))
    second = runner.invoke(cli, ["run", "mine.yaml", "--quiet"])
    assert second.exit_code == 0 and "mine: 1 done, 0 failed" in second.stderr
    assert "mine.yaml changed since it failed (lora_dropout); trained again from scratch" in second.stderr
    assert json.loads(runner.invoke(cli, ["status", "mine.yaml", "--json"]).stdout)[0]["state"] == "done"
