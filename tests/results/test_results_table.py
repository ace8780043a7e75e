"""The comparison DataFrame: columns, differing config keys, sort, filter, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from lfgen.errors import InputError
from lfgen.results import table
from lfgen.results.table import collect, compare, frame, read_runs
from tests.results.lf_files import Curves, decay, write_run

N = 60
EVALS = {s: 1.5 - s / 1000 for s in (100, 200, 300, 400, 500, 600)}
BASE_COLUMNS = ["run", "experiment", "path", "lora_rank", "lora_alpha", "learning_rate", "lora_target",
                "lora_dropout", "num_train_epochs", "effective_batch"]
METRICS = ["final_train_loss", "best_eval_loss", "best_eval_step", "final_eval_loss", "runtime_s", "gpu_hours",
           "samples_per_s", "peak_vram_gib", "state", "diagnosis", "verdict", "experiment_verdict"]


def rank_sweep(root: Path, **extra: dict) -> Path:
    for r in (16, 32, 64):
        curves = Curves(decay(N, end=1.2 - r / 200, seed=r), {s: v - r / 200 for s, v in EVALS.items()},
                        grad_norm=[0.5] * N, logging_steps=10)
        write_run(root / "rank-sweep" / "runs" / f"r{r}", curves,
                  config={"lora_rank": r, "lora_alpha": 2 * r, **extra.get(f"r{r}", {})})
    return root


def test_columns_and_values(tmp_path: Path) -> None:
    df = compare(rank_sweep(tmp_path))
    assert list(df.columns) == BASE_COLUMNS + METRICS
    assert list(df["run"]) == ["rank-sweep/runs/r16", "rank-sweep/runs/r32", "rank-sweep/runs/r64"]
    assert set(df["experiment"]) == {"rank-sweep"}
    assert list(df["lora_rank"]) == [16, 32, 64] and str(df["lora_rank"].dtype) == "Int64"
    assert list(df["lora_alpha"]) == [32, 64, 128]
    assert list(df["effective_batch"]) == [32, 32, 32]
    assert list(df["learning_rate"]) == [2e-4] * 3
    row = df.iloc[2]
    assert row["best_eval_loss"] == pytest.approx(0.9 - 0.32)
    assert row["best_eval_step"] == 600 and row["final_eval_loss"] == pytest.approx(0.9 - 0.32)
    assert row["final_train_loss"] == pytest.approx(decay(N, end=1.2 - 0.32, seed=64)[-1])
    assert row["runtime_s"] == 300.0 and row["samples_per_s"] == 64.0  # 600 steps x 0.5 s; 32 / 0.5 s
    # no lfgen_env.json, not lfgen run's: the trainer's runtime and final evaluation (1.25 s) on one device
    assert row["gpu_hours"] == pytest.approx(301.25 / 3600)
    assert math.isnan(row["peak_vram_gib"])
    assert list(df["state"]) == ["done"] * 3 and list(df["diagnosis"]) == ["healthy"] * 3
    best = df.attrs["experiments"]["rank-sweep"]
    assert best["best_run"] == "rank-sweep/runs/r64"
    assert best["next_step"].startswith("rank 64 best → sweep alpha at rank 64")
    # issue 21: the verdict is in the table itself (CSV, JSON), not only on stderr
    assert list(df["verdict"]) == ["behind by 0.24 (beyond noise)", "behind by 0.16 (beyond noise)", "best"]
    assert set(df["experiment_verdict"]) == {best["headline"]} and best["headline"].startswith(
        "rank-sweep/runs/r64 is best: final_eval_loss 0.58 ± ")


def test_config_keys_that_differ_become_columns(tmp_path: Path) -> None:
    root = rank_sweep(tmp_path, r32={"lr_scheduler_type": "linear"}, r64={"weight_decay": 0.01})
    df = compare(root)
    assert list(df.columns) == BASE_COLUMNS + ["lr_scheduler_type", "weight_decay"] + METRICS
    assert list(df["lr_scheduler_type"]) == ["cosine", "linear", "cosine"]
    assert df["weight_decay"].isna().tolist() == [True, True, False]
    assert "output_dir" not in df.columns  # differs in every run by construction


def test_predict_and_vram_columns_when_present(tmp_path: Path) -> None:
    predict = {"predict_bleu-4": 12.5, "predict_rouge-1": 30.1, "predict_rouge-2": 10.2, "predict_rouge-l": 25.0}
    write_run(tmp_path / "a", Curves(decay(N), logging_steps=10), predict=predict, vram=True)
    write_run(tmp_path / "b", Curves(decay(N), logging_steps=10))
    df = compare(tmp_path)
    for column in ("predict_rouge-1", "predict_rouge-2", "predict_rouge-l", "predict_bleu-4"):
        assert column in df.columns
    assert df.loc[df["run"] == "a", "predict_bleu-4"].item() == 12.5
    assert math.isnan(df.loc[df["run"] == "b", "predict_rouge-l"].item())
    assert df.loc[df["run"] == "a", "peak_vram_gib"].item() == 18.0


def test_states_of_a_mixed_folder(tmp_path: Path) -> None:
    write_run(tmp_path / "done", Curves(decay(N), logging_steps=10))
    write_run(tmp_path / "running", Curves(decay(N // 2), logging_steps=10), finished=False, total_steps=N * 10)
    (tmp_path / "queued").mkdir()
    (tmp_path / "queued" / "lfgen_run.yaml").write_text("lora_rank: 8\n")
    df = compare(tmp_path).set_index("run")
    assert df["state"].to_dict() == {"done": "done", "queued": "empty", "running": "running"}
    assert df.loc["queued", "diagnosis"] == "no data"


def test_sort(tmp_path: Path) -> None:
    root = rank_sweep(tmp_path)
    assert list(compare(root, sort="-lora_rank")["lora_rank"]) == [64, 32, 16]
    assert list(compare(root, sort="best_eval_loss")["lora_rank"]) == [64, 32, 16]
    assert list(compare(root, sort="experiment, -best_eval_loss")["lora_rank"]) == [16, 32, 64]


@pytest.mark.parametrize(("condition", "ranks"), [
    ("lora_rank>=32", [32, 64]),
    ("lora_rank = 16", [16]),
    ("lora_rank!=16", [32, 64]),
    ("run~*r6*", [64]),
    ("state=done", [16, 32, 64]),
    ("lr_scheduler_type=cosine", [16, 32, 64]),  # a config key that is no column
    ("best_eval_loss<0.7", [64]),
])
def test_filter(condition: str, ranks: list[int], tmp_path: Path) -> None:
    assert list(compare(rank_sweep(tmp_path), filter=condition)["lora_rank"]) == ranks


def test_filters_combine_and_limit_the_differing_keys(tmp_path: Path) -> None:
    root = rank_sweep(tmp_path, r64={"weight_decay": 0.01})
    df = compare(root, filter=["lora_rank>=16", "lora_rank<64"])
    assert list(df["lora_rank"]) == [16, 32]
    assert "weight_decay" not in df.columns  # it differs only in a run filtered out


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sort": "best_eval"}, "sort 'best_eval': no column 'best_eval' (did you mean: best_eval_step, best_eval_loss?)"),
    ({"filter": "lora_rnk>8"}, "no column or config key 'lora_rnk' (did you mean: lora_rank"),
    ({"filter": "lora_rank"}, "write COLUMN OP VALUE"),
])
def test_bad_sort_or_filter_is_one_input_error(kwargs: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        compare(rank_sweep(tmp_path), **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_no_runs_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no run directories found"):
        compare(tmp_path)


def test_worker_processes_read_the_same_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = rank_sweep(tmp_path)
    dirs = sorted(p for p in (root / "rank-sweep" / "runs").iterdir())
    monkeypatch.setattr(table, "PARALLEL_MIN_RUNS", 2)
    parallel = read_runs(dirs, workers=2)
    serial = read_runs(dirs, workers=1)
    assert parallel == serial
    pd.testing.assert_frame_equal(frame(collect(root, workers=2)), frame(collect(root, workers=1)))


@pytest.mark.parametrize(("condition", "message"), [
    ("lora_rank > abc", "filter 'lora_rank > abc': > compares numbers and 'abc' is not one; give a number"),
    ("lora_rank<=", "<= compares numbers and '(nothing)' is not one"),
    ("lora_target>5", "> compares numbers and column 'lora_target' holds text (e.g. 'all'); use = or ~"),
    ("lora_rank", "write COLUMN OP VALUE"),
    ("lora_rnk=8", "no column or config key 'lora_rnk'"),
])
def test_malformed_filters_are_filter_errors(condition: str, message: str, tmp_path: Path) -> None:
    from lfgen.errors import FilterError

    with pytest.raises(FilterError) as error:
        compare(rank_sweep(tmp_path), filter=condition)
    assert message in str(error.value) and "\n" not in str(error.value)


ENV = {"lfgen": "0.1.0", "llamafactory": "0.9.5", "transformers": "4.57.1", "peft": "0.17.1", "torch": "2.8.0",
       "python": "3.11.7", "gpus": ["NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"], "device": "cuda",
       "command": ["lfgen", "run", "rank-sweep"], "started": "2026-12-01T10:00:00"}


def test_environment_columns_come_from_lfgen_env_json(tmp_path: Path) -> None:
    import json

    root = rank_sweep(tmp_path)
    runs = root / "rank-sweep" / "runs"
    (runs / "r16" / "lfgen_env.json").write_text(json.dumps(ENV))
    (runs / "r32" / "lfgen_env.json").write_text(json.dumps({**ENV, "device": "cpu", "gpus": []}))
    df = compare(root)
    # r16 trained on two H100s (a price in the default table): cost and where its price came from
    assert list(df.columns) == BASE_COLUMNS + METRICS + ["cost", "price_source", "device", "llamafactory_version"]
    assert df["device"].tolist() == ["cuda", "cpu", None]
    assert df["gpu_hours"].tolist() == pytest.approx([2 * 301.25 / 3600, 301.25 / 3600, 301.25 / 3600])
    from lfgen.catalogs.prices import default_prices

    h100 = default_prices()["H100"]
    assert df["cost"].iloc[0] == pytest.approx(2 * 301.25 / 3600 * h100.usd_per_gpu_hour, abs=1e-4)
    assert df["price_source"].iloc[0] == f"{h100.usd_per_gpu_hour:g} USD/GPU-h: {h100.source}"
    assert math.isnan(df["cost"].iloc[1]) and df["price_source"].iloc[1] is None  # the CPU: no default price
    priced = frame(collect(root, price=0.5))
    assert priced["cost"].tolist() == pytest.approx([0.5 * h for h in df["gpu_hours"]], abs=1e-4)
    assert set(priced["price_source"]) == {"0.5 USD/GPU-h: --price"}
    assert df["llamafactory_version"].tolist() == ["0.9.5", "0.9.5", None]
    assert "device" not in compare(root, filter="lora_rank=64").columns  # no run kept has the file


def test_preference_columns_when_llamafactory_logged_them(tmp_path: Path) -> None:
    """R-STAGE-METRIC: DPO's final evaluation logs eval_rewards/accuracies and margins (train/dpo/trainer.py)."""
    import json

    rewards = {"eval_rewards/accuracies": 0.75, "eval_rewards/margins": 0.42, "eval_rewards/chosen": 0.1,
               "eval_rewards/rejected": -0.32}
    dpo = write_run(tmp_path / "dpo", Curves(decay(N), EVALS, logging_steps=10), config={"stage": "dpo"})
    for name in ("eval_results.json", "all_results.json"):
        path = dpo / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **rewards}))
    write_run(tmp_path / "sft", Curves(decay(N), EVALS, logging_steps=10))
    df = compare(tmp_path)
    assert [c for c in df.columns if c in table.PREFERENCE_COLUMNS] == list(rewards)
    assert df.loc[df["run"] == "dpo", "eval_rewards/accuracies"].item() == 0.75
    assert math.isnan(df.loc[df["run"] == "sft", "eval_rewards/margins"].item())
    assert "eval_rewards/margins" not in compare(tmp_path / "sft").columns  # only where a run logged them
