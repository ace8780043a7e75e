"""Compare's verdict states its evidence and abstains when it is not there (issue 21 items 2-4): runs that did not
learn are diagnosed before any ranking, a difference within the noise names no best, an unfinished experiment is
provisional, a score's lead counts only beyond its bootstrap interval, and the next step follows the family."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import yaml

from lfgen.layout import EVAL_DIR, PREDICTIONS
from lfgen.results.family import axes_of
from lfgen.results.table import collect, compare
from lfgen.runs.reader import read_run
from lfgen.runs.uncertainty import eval_loss_spread, eval_rows, sample_spread
from tests.results.lf_files import Curves, decay, write_run

N = 60


def flat(level: float, seed: int) -> list[float]:
    rnd = random.Random(seed)
    return [level * (1 + rnd.uniform(-0.004, 0.004)) for _ in range(N)]


def only(root: Path):
    (summary,) = collect(root).summaries.values()
    return summary


def test_no_run_learned_abstains_before_ranking(tmp_path):
    """The tryout's case: every run flat at 6.16, eval losses 6.164 / 6.167 / 6.170, ROUGE-L 0: "best rank-16 ->
    sweep alpha" contradicted each run's own "raise learning_rate"."""
    for r, final in ((4, 6.167), (8, 6.170), (16, 6.164)):
        write_run(tmp_path / "exp" / f"rank-{r}", Curves(flat(6.16, r), {100: final + 0.01, 300: final + 0.005,
                                                                         600: final}, logging_steps=10),
                  config={"lora_rank": r, "lora_alpha": 2 * r, "learning_rate": 1e-5},
                  predict={"predict_rouge-l": 0.0})
    s = only(tmp_path / "exp")
    assert (s.verdict, s.best_run, s.leader) == ("not-learning", None, None)
    assert s.headline.startswith("no run learned: raise learning_rate, now 1.0e-5 (LoRA: 1e-4..5e-4)")
    assert "sweep" not in s.next_step and s.next_step.startswith("raise learning_rate")
    assert set(s.standing.values()) == {"not ranked: not-learning"}
    assert len(s.evidence) == 3 and all("training loss" in line for line in s.evidence)


def test_a_difference_within_the_noise_names_no_best(tmp_path):
    for r, end in ((8, 0.802), (16, 0.8)):
        write_run(tmp_path / "exp" / f"rank-{r}", Curves(decay(N, end=end, noise=0.05, seed=r),
                                                         {s: end + 40 / s for s in range(100, 601, 100)},
                                                         logging_steps=10),
                  config={"lora_rank": r, "lora_alpha": 2 * r})
    s = only(tmp_path / "exp")
    assert (s.verdict, s.best_run, s.leader) == ("within-noise", None, "rank-16")
    assert "differ by 0.002, within the noise of final_eval_loss" in s.headline
    assert s.next_step.startswith("more evidence first")
    assert any(line.startswith("± is 2 standard errors, from 50 held-out rows") for line in s.evidence)


def test_an_unfinished_experiment_is_provisional_and_names_no_best(tmp_path):
    """Mid-sweep, compare named a run at step 6 of 12 best with one run pending, and gave the next sweep."""
    root = tmp_path / "exp"
    write_run(root / "rank-8", Curves(decay(12, end=1.2), {6: 1.5, 12: 1.3}, logging_steps=1),
              config={"lora_rank": 8})
    write_run(root / "rank-16", Curves(decay(6, end=0.5), {6: 0.9}, logging_steps=1), config={"lora_rank": 16},
              finished=False, total_steps=12)
    (root / "rank-32").mkdir()
    (root / "rank-32" / "lfgen_run.yaml").write_text("lora_rank: 32\n")
    s = only(root)
    assert (s.verdict, s.best_run, s.leader) == ("provisional", None, "rank-16")
    assert s.headline.startswith("provisional: 1 of 3 runs finished (1 running, 1 pending); leading so far: rank-16")
    assert "provisional: running at step 6/12" in s.headline and "no best until every run has finished" in s.headline
    assert "sweep" not in s.next_step
    assert s.standing == {"rank-16": "provisional: running at step 6/12", "rank-32": "pending"}


def test_the_eval_losss_error_comes_from_the_eval_set_and_the_curve(tmp_path):
    run = read_run(write_run(tmp_path / "r", Curves(decay(N, noise=0.05), {s: 0.9 for s in range(100, 601, 100)},
                                                    logging_steps=10), config={"lora_rank": 8}))
    assert eval_rows(run) == 50  # eval_runtime 1.25 s x 40 samples/s
    sigma = sample_spread(run)  # +-5 % of ~0.8 per point: sd ~0.023 per point of 320 samples -> ~0.4 per sample
    assert 0.2 < sigma < 0.8
    spread = eval_loss_spread(run)
    assert spread.error == pytest.approx(sigma / math.sqrt(50))  # a flat eval curve adds no jitter
    assert spread.how == "50 held-out rows and the last 3 evaluations' jitter"


def _predictions(run_dir: Path, right: list[bool]) -> None:
    (run_dir / EVAL_DIR).mkdir()
    lines = [{"prompt": f"q{i}", "predict": f"answer {i}" if ok else "something else", "label": f"answer {i}"}
             for i, ok in enumerate(right)]
    (run_dir / EVAL_DIR / PREDICTIONS).write_text("".join(json.dumps(line) + "\n" for line in lines))
    scores = {"accuracy": sum(right) / len(right)}
    (run_dir / EVAL_DIR / "lfgen_scores.json").write_text(json.dumps(scores))


@pytest.mark.parametrize("theirs,said", [([True] * 12 + [False] * 8, False), ([True] * 40, True)])
def test_a_scores_lead_is_said_only_beyond_its_bootstrap_interval(tmp_path, theirs, said):
    pytest.importorskip("scipy")
    root = tmp_path / "exp"
    a = write_run(root / "rank-8", Curves(decay(N, end=0.6), {s: 0.6 + 30 / s for s in range(100, 601, 100)},
                                          logging_steps=10), config={"lora_rank": 8})
    b = write_run(root / "rank-16", Curves(decay(N, end=0.9), {s: 0.9 + 30 / s for s in range(100, 601, 100)},
                                           logging_steps=10), config={"lora_rank": 16})
    _predictions(a, [True] * 10 + [False] * (len(theirs) - 10))  # the best by loss answers fewer right
    _predictions(b, theirs)
    s = only(root)
    assert s.best_run == "rank-8"
    if said:
        assert s.disagreement.startswith("best by final_eval_loss is rank-8") and "95 % bootstrap" in s.disagreement
    else:
        assert s.disagreement is None  # 12 of 20 against 10 of 20: within the interval


def test_the_next_step_skips_what_the_family_searched(tmp_path, monkeypatch):
    """An lr sweep made --from a rank sweep recommended sweeping rank again."""
    from lfgen.builder.options import BuildOptions
    from lfgen.experiments.make import make_sweep

    monkeypatch.chdir(tmp_path)
    options = BuildOptions.parse(model="fake/model", gpu="A800")

    def train(experiment, quality):
        for entry in experiment.manifest.runs:
            config = yaml.safe_load((experiment.path / entry.config).read_text())
            q = quality[entry.name]
            write_run(tmp_path / entry.output_dir, Curves(decay(N, end=1.2 - q), {s: 1.2 - q + 30 / s
                                                                                   for s in range(100, 601, 100)},
                                                          logging_steps=10), config=config)
        return experiment

    rank = train(make_sweep("rank", ["8", "16"], options=options, name="rank-sweep"), {"rank-8": 0.0, "rank-16": 0.3})
    lr = make_sweep("lr", ["1e-4", "3e-4"], from_="experiments/rank-sweep", name="lr-sweep")
    lr = train(lr, {run.name: 0.3 * i for i, run in enumerate(lr.manifest.runs)})
    assert rank.manifest.runs and lr.manifest.base_from["run"] == "rank-16"
    df = compare("experiments/lr-sweep")
    s = df.attrs["experiments"]["lr-sweep"]
    assert list(s["searched"]) == ["rank-sweep: rank", "lr-sweep: lr"]
    assert s["next_step"].startswith("lr 3.0e-4 best (rank searched before) → sweep alpha at rank 16")


def test_a_tune_over_every_axis_of_the_order_leads_to_combining():
    space = {"lora_rank": {}, "alpha_ratio": {}, "learning_rate": {}, "lora_dropout": {}, "lora_target": {}}
    assert axes_of({"axis": "tune", "space": space}) == ("rank", "alpha", "lr", "dropout", "target")
    assert axes_of({"axis": "grid", "grid": ["lora_rank=8,16", "learning_rate=1e-4,2e-4"]}) == ("rank", "lr")
    assert axes_of({"axis": "alpha", "values": [1, 2]}) == ("alpha",)


def test_a_tune_that_searched_alpha_does_not_recommend_alpha(tmp_path):
    from lfgen.results.next_step import next_step

    run = read_run(write_run(tmp_path / "r", Curves(decay(N), logging_steps=10), config={"lora_rank": 16,
                                                                                        "lora_alpha": 64}))
    said = next_step(run, ("lora_alpha",), tmp_path, "final_eval_loss", [("alpha",)])
    assert "→ sweep dropout" in said
    everything = next_step(run, ("lora_alpha",), tmp_path, "final_eval_loss", [("rank", "alpha", "dropout", "target")])
    assert "→ combine the best value of each stage" in everything
