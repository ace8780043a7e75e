"""lfgen sweep: the seed-002 experiments, grids, random search, staged tuning, W&B export, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lfgen.experiments.make import make_sweep
from lfgen.errors import InputError
from lfgen.runs.manifest import load
from lfgen.catalogs.llamafactory import probe

from ..conftest import make_dataset_dir, needs_llamafactory


@pytest.fixture(autouse=True)
def _project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def configs(experiment):
    return {run.name: yaml.safe_load((experiment.path / run.config).read_text()) for run in experiment.manifest.runs}


def test_sweep_rank_is_seed_002_experiment_1():
    runs = configs(make_sweep("rank", []))
    assert {name: (c["lora_rank"], c["lora_alpha"]) for name, c in runs.items()} == {
        "rank-16": (16, 32), "rank-32": (32, 64), "rank-64": (64, 128), "rank-128": (128, 256)}
    assert {c["output_dir"] for c in runs.values()} == {f"outputs/rank-sweep/rank-{r}" for r in (16, 32, 64, 128)}
    # R-LR-RANK: 3e-4 (R-LR-SIZE, a 7.6B model) x 32 / alpha, so lr x alpha stays where it was measured best
    assert {name: c["learning_rate"] for name, c in runs.items()} == {
        "rank-16": 3e-4, "rank-32": 1.5e-4, "rank-64": 7.5e-5, "rank-128": 3.7e-5}
    held = configs(make_sweep("rank", [], options=_options(lr=2e-4), name="held"))
    assert {c["learning_rate"] for c in held.values()} == {2e-4}  # the seed's experiment 1, rate held by --lr


def test_sweep_lr_is_seed_002_experiment_2():
    # The seed's 1e-4 / 2e-4 / 5e-4 are 0.5x, 1x and 2.5x its 2e-4: the sweep takes them around the base's R-LR-RANK rate
    runs = configs(make_sweep("lr", []))
    assert {name: c["learning_rate"] for name, c in runs.items()} == {"lr-3.7e-5": 3.7e-5, "lr-7.5e-5": 7.5e-5,
                                                                      "lr-1.9e-4": 1.9e-4}
    seeds = configs(make_sweep("lr", ["1e-4", "2e-4", "5e-4"], name="seed-lr"))
    assert {c["learning_rate"] for c in seeds.values()} == {1e-4, 2e-4, 5e-4}
    assert {c["lora_rank"] for c in runs.values()} == {64}


def test_sweep_target_is_seed_002_experiment_3():
    runs = configs(make_sweep("target", []))
    assert {name: c["lora_target"] for name, c in runs.items()} == {
        "target-qv": "q_proj,v_proj", "target-attn": "q_proj,k_proj,v_proj,o_proj", "target-all": "all"}


def test_manifest_records_everything():
    experiment = make_sweep("rank", ["16", "32"], base="lightweight", options=_options(gpu="4090"), name="r")
    manifest = load(experiment.path).manifest
    assert (manifest.name, manifest.base, manifest.sweep) == ("r", "lightweight", {"axis": "rank", "values": [16, 32]})
    assert manifest.options == {"gpu": "4090"}
    run = manifest.runs[0]
    assert (run.name, run.overrides) == ("rank-16", {"rank": 16})
    assert run.varies == {"lora_rank": 16, "lora_alpha": 32, "learning_rate": 3e-4}  # lr follows alpha (R-LR-RANK)
    assert (run.config, run.output_dir) == ("runs/rank-16.yaml", "outputs/r/rank-16")
    config = yaml.safe_load((experiment.path / run.config).read_text())
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] == 32
    assert run.estimate["fits"] is True and run.estimate["trainable_params"] == 5_046_272  # 28 x 16 x ((3584+3584) + (3584+512)): r16 on q,v of Qwen2-7B


def _options(**values):
    from lfgen.builder.options import BuildOptions

    return BuildOptions.parse(**values)


def test_alpha_axis_at_the_base_rank():
    runs = configs(make_sweep("alpha", [], base="balanced"))
    assert {n: c["lora_alpha"] for n, c in runs.items()} == {"alpha-32": 32, "alpha-64": 64, "alpha-128": 128}
    runs = configs(make_sweep("alpha", ["2r", "48"], base="balanced", name="a2"))
    assert {n: c["lora_alpha"] for n, c in runs.items()} == {"alpha-64": 64, "alpha-48": 48}


def test_grid_over_any_keys_with_names_that_say_what_varies():
    experiment = make_sweep("grid", ["lora_rank=16,32", "learning_rate=1e-4,2e-4", "warmup_ratio=0.05"])
    runs = configs(experiment)
    assert sorted(runs) == ["lora_rank-16_learning_rate-1e-4_warmup_ratio-0.05",
                            "lora_rank-16_learning_rate-2e-4_warmup_ratio-0.05",
                            "lora_rank-32_learning_rate-1e-4_warmup_ratio-0.05",
                            "lora_rank-32_learning_rate-2e-4_warmup_ratio-0.05"]
    run = runs["lora_rank-32_learning_rate-1e-4_warmup_ratio-0.05"]
    assert (run["lora_rank"], run["lora_alpha"], run["learning_rate"], run["warmup_ratio"]) == (32, 64, 1e-4, 0.05)
    assert experiment.path.name == "grid-lora_rank-learning_rate-warmup_ratio"


def test_grid_target_sets_and_module_lists():
    runs = configs(make_sweep("grid", ["lora_target=qv,q_proj+k_proj"]))
    assert {c["lora_target"] for c in runs.values()} == {"q_proj,v_proj", "q_proj,k_proj"}


SPACE = "learning_rate: {low: 1.0e-4, high: 5.0e-4, log: true}\nlora_rank: {choices: [16, 32, 64]}\n" \
        "lora_dropout: {low: 0.0, high: 0.2}\n"


def test_random_is_reproducible_with_the_seed(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    first = configs(make_sweep("random", ["6"], space="space.yaml", seed=3, name="a"))
    again = configs(make_sweep("random", ["6"], space="space.yaml", seed=3, name="b"))
    other = configs(make_sweep("random", ["6"], space="space.yaml", seed=4, name="c"))
    strip = lambda runs: [{k: v for k, v in c.items() if k != "output_dir"} for c in runs.values()]  # noqa: E731
    assert strip(first) == strip(again) != strip(other)
    for config in first.values():
        assert 1e-4 <= config["learning_rate"] <= 5e-4 and config["lora_rank"] in (16, 32, 64)
        assert 0.0 <= config["lora_dropout"] <= 0.2 and config["lora_alpha"] == 2 * config["lora_rank"]
    assert load("experiments/a").manifest.sweep["seed"] == 3


def _finish(outputs: Path, run: str, eval_loss: float) -> None:
    out = outputs / run
    out.mkdir(parents=True)
    (out / "all_results.json").write_text(json.dumps({"eval_loss": eval_loss, "train_loss": eval_loss + 0.1}))


def test_staged_tuning_starts_from_the_best_run(tmp_path):
    make_sweep("rank", [])
    for run, loss in {"rank-16": 1.3, "rank-32": 1.1, "rank-64": 1.2}.items():  # rank-128 did not finish
        _finish(tmp_path / "outputs" / "rank-sweep", run, loss)
    experiment = make_sweep("alpha", [], from_="experiments/rank-sweep")
    manifest = experiment.manifest
    assert manifest.base_from["run"] == "rank-32" and manifest.base_from["value"] == 1.1
    assert manifest.base.endswith("runs/rank-32.yaml")
    assert {c["lora_alpha"] for c in configs(experiment).values()} == {32, 64, 128}  # r, 2r, 4r at rank 32
    assert {c["lora_rank"] for c in configs(experiment).values()} == {32}


def test_staged_tuning_by_a_score_picks_the_highest(tmp_path):
    make_sweep("lr", ["1e-4", "2e-4", "5e-4"])
    for run, score in {"lr-1e-4": 20.0, "lr-2e-4": 31.5, "lr-5e-4": 25.0}.items():
        out = tmp_path / "outputs" / "lr-sweep" / run
        out.mkdir(parents=True)
        (out / "all_results.json").write_text(json.dumps({"predict_rouge-l": score}))
    experiment = make_sweep("rank", [], from_="experiments/lr-sweep", metric="predict_rouge-l")
    assert experiment.manifest.base_from["run"] == "lr-2e-4"


def test_wandb_export_drives_llamafactory_with_key_value_overrides():
    with pytest.raises(InputError, match="learning_rate moves with the rank .* hold the rate with --lr VALUE"):
        make_sweep("rank", [], export="wandb", name="tied")
    experiment = make_sweep("rank", [], export="wandb", options=_options(lr=2e-4))
    spec = yaml.safe_load((experiment.path / "wandb-sweep.yaml").read_text())
    assert spec["command"] == ["llamafactory-cli", "train", "experiments/rank-sweep/wandb-base.yaml",
                               "${args_no_hyphens}"]
    assert spec["parameters"] == {"lora_rank": {"values": [16, 32, 64, 128]}}  # alpha: LlamaFactory's 2 x rank
    base = yaml.safe_load((experiment.path / "wandb-base.yaml").read_text())
    assert base["report_to"] == "wandb" and "lora_alpha" not in base


@pytest.mark.slow
@needs_llamafactory
def test_llamafactory_parses_every_run_and_the_wandb_command_line(tmp_path):
    make_dataset_dir(tmp_path / "data")
    data = {"dataset": ["my_sft"], "dataset_dir": str(tmp_path / "data")}
    experiments = [make_sweep(axis, [], options=_options(**data, **({"lr": 2e-4} if axis == "rank" else {})),
                              export="wandb" if axis == "rank" else None)
                   for axis in ("rank", "lr", "target", "alpha", "dropout", "epochs")]
    from lfgen.tiny import make_pairwise_dataset

    make_pairwise_dataset(tmp_path / "data")
    experiments.append(make_sweep("beta", [], base="auto", options=_options(stage="dpo", dataset=["tiny_dpo"],
                                                                            dataset_dir=str(tmp_path / "data"))))
    experiments.append(make_sweep("grid", ["lora_rank=8,16", "learning_rate=1e-4,3e-4"], options=_options(**data)))
    requests = {}
    for experiment in experiments:
        for run in experiment.manifest.runs:
            requests[f"{experiment.path.name}/{run.name}"] = yaml.safe_load((experiment.path / run.config).read_text())
    base = str(tmp_path / "experiments/rank-sweep/wandb-base.yaml")
    result = probe({"wandb": {"__argv__": [base, "lora_rank=16"]}})  # what ${args_no_hyphens} produces
    assert result.errors == {"wandb": None}
    from lfgen.builder.validate import validate

    paths = [str(e.path / run.config) for e in experiments for run in e.manifest.runs]
    report = validate(paths)  # lfgen's checks, then LlamaFactory's own parser on every run
    assert report.llamafactory["parser_run"] is True
    assert report.ok, [(f.path, f.problems) for f in report.files if f.problems]
    assert len(paths) == len(requests) == 4 + 3 + 3 + 3 + 3 + 3 + 4 + 4


@pytest.mark.parametrize("args,kwargs,message", [
    (("speed", []), {}, "axis: unknown axis 'speed'; choose one of rank, alpha, lr, beta, target, dropout, epochs, vision, grid"),
    (("rank", ["abc"]), {}, "rank: 'abc' is not an integer"),
    (("lr", ["fast"]), {}, "lr: 'fast' is not a number"),
    (("grid", []), {}, "grid: no values"),
    (("grid", ["lora_rank="]), {}, "grid: lora_rank= has an empty value"),
    (("grid", ["lora_rnk=8,16"]), {}, "grid: 'lora_rnk' is not a LlamaFactory 0.9.5 key (did you mean: lora_rank"),
    (("random", ["0"]), {"space": "space.yaml"}, "random: the number of runs must be at least 1 (got 0)"),
    (("random", ["3"]), {}, "random: needs --space FILE"),
    (("rank", ["16", "16"]), {}, "values: rank-16 appears twice"),
    (("rank", []), {"name": "my runs"}, "--name: 'my runs' must be letters, digits"),
])
def test_bad_input(args, kwargs, message, tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    with pytest.raises(InputError) as error:
        make_sweep(*args, **kwargs)
    assert message in str(error.value)
    assert not (tmp_path / "experiments").exists() or not any((tmp_path / "experiments").iterdir())


def test_space_with_low_above_high(tmp_path):
    (tmp_path / "bad.yaml").write_text("learning_rate: {low: 5.0e-4, high: 1.0e-4}\n")
    with pytest.raises(InputError, match="bad.yaml: learning_rate: low 0.0005 is above high 0.0001; swap them"):
        make_sweep("random", ["3"], space="bad.yaml")


def test_from_a_folder_with_no_finished_run(tmp_path):
    make_sweep("rank", [])
    with pytest.raises(InputError, match="--from: no finished run with eval_loss in experiments/rank-sweep"):
        make_sweep("alpha", [], from_="experiments/rank-sweep")


def test_existing_experiment_is_kept_without_force(tmp_path):
    make_sweep("rank", [])
    manifest = (tmp_path / "experiments/rank-sweep/experiment.yaml").read_text()
    with pytest.raises(InputError, match="already exists; pass --force"):
        make_sweep("rank", ["8"])
    assert (tmp_path / "experiments/rank-sweep/experiment.yaml").read_text() == manifest
    make_sweep("rank", ["8"], force=True)
    assert [r.name for r in load("experiments/rank-sweep").manifest.runs] == ["rank-8"]
    assert not list((tmp_path / "experiments/rank-sweep/runs").glob("rank-16*"))


def test_cli_summary_and_plan(runner, cli):
    result = runner.invoke(cli, ["sweep", "rank", "16", "32"])
    assert result.exit_code == 0, result.stderr
    assert "rank-16" in result.stdout and "lora_rank=16, lora_alpha=32" in result.stdout
    assert "wrote experiments/rank-sweep/experiment.yaml and 2 run configs" in result.stderr
    plan = runner.invoke(cli, ["sweep", "plan", "--base", "lightweight"])
    assert plan.exit_code == 0
    assert "lfgen sweep alpha --from experiments/rank-sweep" in plan.stdout
    assert plan.stdout.index("rank") < plan.stdout.index("alpha") < plan.stdout.index("dropout") < \
        plan.stdout.index("target")


def test_cli_bad_axis_is_one_error_line(runner, cli):
    result = runner.invoke(cli, ["sweep", "rnk"])
    assert result.exit_code == 1 and result.stderr.startswith("Error: axis: unknown axis 'rnk' (did you mean: rank?)")


def test_runs_that_cannot_fit_are_resized_or_dropped_with_the_reason():
    options = _options(model="Qwen/Qwen2.5-7B-Instruct", gpu="RTX 4090", cutoff_len=512)
    experiment = make_sweep("rank", ["8", "256", "1024"], base="balanced", options=options, name="fit")
    kept = {run.name: run for run in experiment.manifest.runs}
    assert set(kept) == {"rank-8", "rank-256"} and all(run.estimate["fits"] for run in kept.values())
    sizes = {name: (c["per_device_train_batch_size"], c["gradient_accumulation_steps"])
             for name, c in configs(experiment).items()}
    assert sizes["rank-8"][0] > sizes["rank-256"][0]  # the larger rank got a smaller micro-batch ...
    assert {m * a for m, a in sizes.values()} == {32}  # ... and the same effective batch
    (dropped,) = experiment.manifest.dropped
    assert dropped["name"] == "rank-1024" and "does not fit on RTX 4090" in dropped["reason"]
    assert not (experiment.path / "runs" / "rank-1024.yaml").exists()
    everything = make_sweep("rank", ["8", "1024"], base="balanced", options=options, name="all", prune=False)
    assert [run.name for run in everything.manifest.runs] == ["rank-8", "rank-1024"]
    assert everything.manifest.runs[1].estimate["fits"] is False


def test_a_peak_above_the_card_that_fits_says_what_must_fit(runner, cli):
    # varying lengths leave the longest batch's loss buffers cached: nvidia-smi shows them, the allocator frees them
    # before an out-of-memory, so the fit is decided without them; the table must not read "90 GiB ... fits" on 80
    result = runner.invoke(cli, ["sweep", "rank", "64", "--gpu", "A100-80", "--samples", "20000", "--name", "peak"])
    assert result.exit_code == 0, result.stderr
    (run,) = load(Path("experiments/peak")).manifest.runs
    card = 80
    assert run.estimate["fits"] and run.estimate["fit_gib"] <= card * 0.85 < card < run.estimate["memory_gib"]
    assert f"{run.estimate['memory_gib']:.1f} GiB ({run.estimate['fit_gib']:.1f} must fit)" in result.stdout


@pytest.mark.parametrize("stage,betas", [("dpo", [0.01, 0.03, 0.1, 0.3]), ("orpo", [0.05, 0.1, 0.25]),
                                         ("simpo", [2.0, 2.5, 5.0, 10.0])])
def test_sweep_beta_is_log_spaced_over_the_stages_band(stage, betas):
    runs = configs(make_sweep("beta", [], base="auto", options=_options(stage=stage)))
    assert sorted(c["pref_beta"] for c in runs.values()) == betas  # R-STAGE-BETA
    assert {c["stage"] for c in runs.values()} == {"dpo"} and f"beta-{betas[0]:g}" in runs


def test_sweep_beta_takes_values_and_a_base_file(tmp_path):
    from lfgen import BuildOptions, build, render_build

    (tmp_path / "dpo.yaml").write_text(render_build(build("auto", BuildOptions.parse(stage="kto"))))
    runs = configs(make_sweep("beta", ["0.05", "0.2"], base=str(tmp_path / "dpo.yaml")))
    assert {name: c["pref_beta"] for name, c in runs.items()} == {"beta-0.05": 0.05, "beta-0.2": 0.2}


def test_sweep_beta_on_an_sft_base_is_refused():
    with pytest.raises(InputError, match="beta: the base trains LoRA SFT, which has no pref_beta"):
        make_sweep("beta", [])


@pytest.mark.parametrize("options,values", [
    ({"method": "full"}, [1e-5, 2.2e-5, 5e-5]),  # R-METHOD-LR's band, not the seeds' LoRA 1e-4 / 2e-4 / 5e-4
    ({"stage": "dpo"}, [5e-6, 1.6e-5, 5e-5]),  # R-STAGE-LR's LoRA DPO band
    ({"stage": "dpo", "method": "full"}, [5e-7, 1.6e-6, 5e-6])])
def test_sweep_lr_spans_the_shapes_band(options, values):
    runs = configs(make_sweep("lr", [], base="auto", options=_options(**options)))
    assert sorted(c["learning_rate"] for c in runs.values()) == values


@pytest.mark.parametrize("axis", ["rank", "alpha", "dropout", "target"])
def test_an_axis_a_full_fine_tune_does_not_read_is_refused(axis):
    with pytest.raises(InputError, match=f"{axis}: the base trains full-parameter SFT, which does not read lora_"):
        make_sweep(axis, [], base="auto", options=_options(method="full"))


def test_the_alpha_sweep_holds_the_bases_learning_rate():
    # R-LR-RANK would move the rate as 1 / alpha and cancel the update the sweep means to change.
    runs = configs(make_sweep("alpha", []))
    assert {c["lora_alpha"] for c in runs.values()} == {64, 128, 256}
    assert {c["learning_rate"] for c in runs.values()} == {7.5e-5}


def test_sweep_plan_of_a_full_fine_tune_has_no_lora_axes():
    from lfgen.experiments.make import sweep_plan

    lines = sweep_plan("auto", _options(method="full", stage="dpo"))
    assert "has no LoRA rank" in lines[0] and "lfgen sweep lr" in lines[1] and "lfgen sweep beta" in lines[2]


def test_the_run_names_of_one_axis_share_one_notation():
    """Issue 21: an lr sweep named its runs lr-2e-4 and lr-0.002."""
    from lfgen.experiments.sweeps import axis_runs, grid_runs

    assert [r.name for r in axis_runs("lr", ["2e-4", "2e-3", "0.01"], 16)] == ["lr-2e-4", "lr-2e-3", "lr-1e-2"]
    assert [r.name for r in axis_runs("dropout", ["0.0", "0.1"], 16)] == ["dropout-0", "dropout-0.1"]
    assert [r.name for r in grid_runs(["learning_rate=1e-4,2e-3"])] == ["learning_rate-1e-4", "learning_rate-2e-3"]
