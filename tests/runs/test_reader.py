"""Reading one run directory: real LlamaFactory files, and every way they can be incomplete."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest

from lfgen.runs.parsing import elapsed_seconds, grad_norms
from lfgen.runs.reader import MAX_POINTS, read_run
from tests.results.lf_files import Curves, decay, trainer_state, write_run

# cpu-e2e.md §4: the first lines of a real trainer_log.jsonl, all_results.json, log_history entries
# and adapter_config.json of a 10-step tiny-model run (LlamaFactory 0.9.5, transformers 5.6).
REAL_LOG = """\
{"current_steps": 1, "total_steps": 10, "loss": 6.333160400390625, "lr": 0.0, "epoch": 0.1111111111111111, "percentage": 10.0, "elapsed_time": "0:00:00", "remaining_time": "0:00:00"}
{"current_steps": 5, "total_steps": 10, "loss": 6.257397174835205, "lr": 0.00075, "epoch": 0.5555555555555556, "percentage": 50.0, "elapsed_time": "0:00:00", "remaining_time": "0:00:00"}
{"current_steps": 5, "total_steps": 10, "eval_loss": 6.268227577209473, "epoch": 0.5555555555555556, "percentage": 50.0, "elapsed_time": "0:00:00", "remaining_time": "0:00:00"}
{"current_steps": 10, "total_steps": 10, "eval_loss": 6.2300519943237305, "epoch": 1.1111111111111112, "percentage": 100.0, "elapsed_time": "0:00:00", "remaining_time": "0:00:00"}
{"current_steps": 10, "total_steps": 10, "epoch": 1.1111111111111112, "percentage": 100.0, "elapsed_time": "0:00:00", "remaining_time": "0:00:00"}
"""  # noqa: E501
REAL_ALL_RESULTS = {"epoch": 1.1111111111111112, "eval_loss": 6.2300519943237305, "eval_runtime": 0.0108,
                    "eval_samples_per_second": 371.967, "eval_steps_per_second": 185.984, "total_flos": 2019803136.0,
                    "train_loss": 6.243535661697388, "train_runtime": 0.3067, "train_samples_per_second": 130.44,
                    "train_steps_per_second": 32.61}
REAL_HISTORY = [
    {"epoch": 0.111, "grad_norm": 0.6549, "learning_rate": 0.0, "loss": 6.3332, "step": 1},
    {"epoch": 0.556, "eval_loss": 6.2682, "eval_runtime": 0.009, "eval_samples_per_second": 443.8,
     "eval_steps_per_second": 221.9, "step": 5},
    {"epoch": 1.111, "step": 10, "total_flos": 2019803136.0, "train_loss": 6.2435, "train_runtime": 0.3067,
     "train_samples_per_second": 130.44, "train_steps_per_second": 32.61},
]
REAL_ADAPTER = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "peft_type": "LORA", "task_type": "CAUSAL_LM",
                "target_modules": ["v_proj", "q_proj", "o_proj", "k_proj", "up_proj", "down_proj", "gate_proj"],
                "base_model_name_or_path": "work/e2e_v2/tiny-model"}


def write_real_run(run: Path) -> Path:
    run.mkdir(parents=True)
    (run / "trainer_log.jsonl").write_text(REAL_LOG)
    (run / "all_results.json").write_text(json.dumps(REAL_ALL_RESULTS, indent=4, sort_keys=True) + "\n")
    state = {"global_step": 10, "max_steps": 10, "epoch": 1.111, "num_train_epochs": 2, "logging_steps": 1,
             "eval_steps": 5, "save_steps": 5, "train_batch_size": 2, "best_metric": None, "log_history": REAL_HISTORY}
    (run / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    (run / "adapter_config.json").write_text(json.dumps(REAL_ADAPTER, indent=2, sort_keys=True))
    return run


def test_reads_the_files_of_a_real_run(tmp_path: Path) -> None:
    run = read_run(write_real_run(tmp_path / "sft_lora"))
    assert run.train_loss.steps == [1.0, 5.0]
    assert run.train_loss.values == [6.333160400390625, 6.257397174835205]
    assert run.learning_rate.values == [0.0, 0.00075]
    assert run.eval_loss.steps == [5.0, 10.0]
    assert run.best_eval == (6.2300519943237305, 10.0)
    assert run.final_eval_loss == 6.2300519943237305
    assert run.grad_norm.values == [0.6549] and run.sources["grad_norm"] == "trainer_state.json"
    assert run.results["train_samples_per_second"] == 130.44 and run.runtime_s == 0.3067
    assert (run.current_step, run.total_steps, run.state) == (10, 10, "done")
    # No YAML next to the run: the LoRA keys come from peft's adapter_config.json.
    assert run.config == {"lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                          "lora_target": "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj"}
    assert run.notes == []


def test_truncated_last_line_is_skipped_with_a_note(tmp_path: Path) -> None:
    run_dir = write_real_run(tmp_path / "r")
    with (run_dir / "trainer_log.jsonl").open("a") as log:
        log.write('{"current_steps": 11, "total_steps": 20, "loss": 6.1, "lr": 0.0')  # crash mid-write
    run = read_run(run_dir)
    assert run.train_loss.steps == [1.0, 5.0]
    assert run.current_step == 10
    assert any("last line is incomplete" in note for note in run.notes)


def test_malformed_line_in_the_middle_is_skipped(tmp_path: Path) -> None:
    run_dir = write_real_run(tmp_path / "r")
    lines = REAL_LOG.splitlines()
    lines.insert(1, '{"current_steps": 3, "total_steps": 10, "loss": 6.3, "lr": ')
    (run_dir / "trainer_log.jsonl").write_text("\n".join(lines) + "\n")
    run = read_run(run_dir)
    assert run.train_loss.steps == [1.0, 5.0]
    assert any("1 malformed line" in note for note in run.notes)


def test_nan_and_infinity_are_read_even_between_samples(tmp_path: Path) -> None:
    n = 5 * MAX_POINTS
    loss = decay(n)
    loss[n // 2 + 1] = math.nan  # Python's json writes NaN, as LlamaFactory's json.dumps does
    loss[n // 2 + 3] = math.inf
    run = read_run(write_run(tmp_path / "r", Curves(loss, grad_norm=[1.0] * n)))
    assert "NaN" in (tmp_path / "r" / "trainer_log.jsonl").read_text()
    assert sum(math.isnan(v) for v in run.train_loss.values) == 1
    assert sum(math.isinf(v) for v in run.train_loss.values) == 1
    assert len(run.train_loss) <= MAX_POINTS + 2


def test_empty_directory_and_empty_files(tmp_path: Path) -> None:
    empty = read_run(tmp_path)
    assert (empty.state, empty.notes, empty.config) == ("empty", [], {})
    (tmp_path / "trainer_log.jsonl").write_text("")
    (tmp_path / "all_results.json").write_text("")
    run = read_run(tmp_path)
    assert run.state == "empty"
    assert "trainer_log.jsonl: the file has no complete line yet" in run.notes
    assert "all_results.json: empty file" in run.notes


def test_missing_directory_is_a_note_not_a_crash(tmp_path: Path) -> None:
    run = read_run(tmp_path / "gone")
    assert run.state == "empty" and "cannot be listed" in run.notes[0]


def test_only_results_file(tmp_path: Path) -> None:
    (tmp_path / "all_results.json").write_text(json.dumps(REAL_ALL_RESULTS, indent=4))
    run = read_run(tmp_path)
    assert run.state == "done" and not run.train_loss
    assert run.final_eval_loss == REAL_ALL_RESULTS["eval_loss"]
    assert run.samples_per_s == 130.44


def test_only_trainer_state_gives_the_curves(tmp_path: Path) -> None:
    curves = Curves(decay(50), {20: 1.5, 40: 1.2}, grad_norm=[0.5] * 50)
    (tmp_path / "trainer_state.json").write_text(trainer_state(curves, 50, finished=True))
    run = read_run(tmp_path)
    assert run.sources == {"curves": "trainer_state.json", "grad_norm": "trainer_state.json"}
    assert len(run.train_loss) == 50 and run.eval_loss.steps == [20.0, 40.0]
    assert run.current_step == 50 and run.state == "done"


def test_running_run_reads_grad_norm_from_its_newest_checkpoint(tmp_path: Path) -> None:
    curves = Curves(decay(100), {50: 1.4}, grad_norm=[0.5 + i / 100 for i in range(100)])
    run_dir = write_run(tmp_path / "r", curves, finished=False, total_steps=300, checkpoint_every=40)
    run = read_run(run_dir)
    assert run.state == "running"
    assert (run.current_step, run.total_steps) == (100, 300)
    assert run.sources["grad_norm"] == "checkpoint-80/trainer_state.json"
    assert run.grad_norm.steps[-1] == 80.0
    assert run.samples_per_s == pytest.approx(100 * 32 / 50)  # steps x (4 x 8) / elapsed 0:00:50


def test_unfinished_run_with_old_files_is_stopped(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "r", Curves(decay(20)), finished=False, total_steps=100)
    old = time.time() - 3 * 3600
    os.utime(run_dir / "trainer_log.jsonl", (old, old))
    run = read_run(run_dir)
    assert run.state == "stopped"
    assert any("probably stopped" in note for note in run.notes)


def test_resumed_run_keeps_the_last_line_per_step(tmp_path: Path) -> None:
    first = Curves([3.0 - i / 1000 for i in range(900)])
    run_dir = write_run(tmp_path / "r", first, finished=False, total_steps=1000)
    # Resumed from checkpoint-500: LlamaFactory appends steps 501.. again with new values.
    again = Curves([1.0] * 1000)
    lines = [line for line in (run_dir / "trainer_log.jsonl").read_text().splitlines()]
    from tests.results.lf_files import trainer_log_lines

    lines += trainer_log_lines(again, 1000, finished=True)[500:]
    (run_dir / "trainer_log.jsonl").write_text("\n".join(lines) + "\n")
    run = read_run(run_dir, max_points=None)
    assert run.train_loss.steps == sorted(set(run.train_loss.steps)) and len(run.train_loss) == 1000
    assert run.train_loss.values[499] == pytest.approx(3.0 - 499 / 1000)
    assert run.train_loss.values[500:] == [1.0] * 500
    sampled = read_run(run_dir)  # the sampled read sees the steps go back and rereads every line
    assert sampled.train_loss.steps == sorted(set(sampled.train_loss.steps))
    assert sampled.final_train_loss == 1.0


def test_long_log_is_sampled_but_keeps_ends_and_spikes(tmp_path: Path) -> None:
    n = 4000
    grad = [0.5] * n
    grad[1234] = 75.0
    run = read_run(write_run(tmp_path / "r", Curves(decay(n), grad_norm=grad)))
    assert len(run.train_loss) <= MAX_POINTS + 1
    assert run.train_loss.steps[0] == 1.0 and run.train_loss.steps[-1] == float(n)
    assert 75.0 in run.grad_norm.values
    assert run.grad_norm.steps[run.grad_norm.values.index(75.0)] == 1235.0


def test_grad_norm_fast_path_matches_json(tmp_path: Path) -> None:
    n = 700
    curves = Curves(decay(n), {s: 1.0 for s in range(100, n + 1, 100)},
                    grad_norm=[0.3 + (i % 17) / 10 for i in range(n)], logging_steps=10)
    text = trainer_state(curves, n * 10, finished=True)
    fast = grad_norms(text, max_points=10_000)
    history = json.loads(text)["log_history"]
    assert fast is not None
    assert fast.steps == [float(e["step"]) for e in history if "grad_norm" in e]
    assert fast.values == [e["grad_norm"] for e in history if "grad_norm" in e]


def test_config_from_the_run_yaml_with_omegaconf_floats(tmp_path: Path) -> None:
    run_dir = write_real_run(tmp_path / "r")
    (run_dir / "training_args.yaml").write_text(
        "lora_rank: 32\nlearning_rate: 1e-4\nper_device_train_batch_size: 2\ngradient_accumulation_steps: 16\n")
    run = read_run(run_dir)
    assert run.config_file == run_dir / "training_args.yaml"
    assert run.config["learning_rate"] == 1e-4  # PyYAML alone would read the string "1e-4"
    assert run.config["lora_alpha"] == 64  # LlamaFactory's default: 2 x rank
    assert run.config["lora_target"] == "all" and run.config["lora_dropout"] == 0.0
    assert run.effective_batch == 32


def test_lfgen_run_yaml_wins_and_bad_yaml_is_a_note(tmp_path: Path) -> None:
    run_dir = write_real_run(tmp_path / "r")
    (run_dir / "lfgen_run.yaml").write_text("lora_rank: [16\n")
    (run_dir / "training_args.yaml").write_text("lora_rank: 16\n")
    run = read_run(run_dir)
    assert run.config["lora_rank"] == 16 and run.config_file.name == "training_args.yaml"
    assert any(note.startswith("lfgen_run.yaml: not valid YAML") for note in run.notes)


def test_vram_peak_from_record_vram_lines(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "r", Curves(decay(30)), vram=True))
    assert run.vram_peak_gib == 18.0  # vram_reserved at the last step
    assert read_run(write_run(tmp_path / "s", Curves(decay(30)))).vram_peak_gib is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("0:00:00", 0.0), ("1:02:03", 3723.0), ("1 day, 2:03:04", 93784.0), ("3 days, 0:00:01", 259201.0),
    ("", None), (None, None), ("soon", None),
])
def test_elapsed_time_formats(text: str | None, seconds: float | None) -> None:
    assert elapsed_seconds(text) == seconds


@pytest.mark.parametrize("error", [
    "ValueError: Some keys are not used by the HfArgumentParser: ['lora_rnk']",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "KeyboardInterrupt",
])
def test_run_whose_console_log_ends_in_an_exception_failed(error: str, tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "r", Curves(decay(20)), finished=False, total_steps=100)
    (run_dir / "lfgen_train.log").write_text(
        "[INFO|trainer.py] ***** Running training *****\nTraceback (most recent call last):\n"
        '  File "llamafactory/launcher.py", line 23, in <module>\n' + error + "\n")
    run = read_run(run_dir)
    assert run.state == "failed"
    assert run.notes[-1] == f"lfgen_train.log ends with: {error}"


def test_console_log_of_a_healthy_run_is_not_a_failure(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "r", Curves(decay(20)), finished=False, total_steps=100)
    (run_dir / "lfgen_train.log").write_text("{'loss': 1.2345, 'grad_norm': 0.5, 'learning_rate': 0.0002}\n")
    assert read_run(run_dir).state == "running"


def test_a_run_on_the_cpu_has_no_vram_peak(tmp_path: Path) -> None:
    # RECORD_VRAM=1 without a GPU: LlamaFactory logs -0.0 for both values
    out = write_run(tmp_path / "cpu", Curves(decay(5)))
    lines = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    (out / "trainer_log.jsonl").write_text("".join(
        json.dumps({**line, "vram_allocated": -0.0, "vram_reserved": -0.0}) + "\n" for line in lines))
    assert '"vram_reserved": -0.0' in (out / "trainer_log.jsonl").read_text()
    assert read_run(out).vram_peak_gib is None


@pytest.mark.parametrize("values, peak", [
    ([], None), ([-0.0, -0.0], None), ([0.0, None, "x", float("nan")], None), ([-0.0, 3.5, 2.0], 3.5),
    (["1.5", 2], 2.0), ([True, 1.0], 1.0), ([float("inf"), 4.0], 4.0),
])
def test_peak_vram_gib(values, peak):
    from lfgen.runs.parsing import peak_vram_gib

    assert peak_vram_gib(values) == peak


def test_environment_manifest_is_read_and_a_bad_one_is_a_note(tmp_path: Path) -> None:
    import json

    from lfgen.runs.reader import read_run

    env = {"lfgen": "0.1.0", "llamafactory": "0.9.5", "torch": "2.8.0", "python": "3.11.7", "gpus": [],
           "device": "cpu", "command": ["lfgen", "run", "exp"], "started": "2026-12-01T10:00:00", "later": 1}
    good = write_run(tmp_path / "good", Curves(decay(20)))
    (good / "lfgen_env.json").write_text(json.dumps(env))
    run = read_run(good)
    assert run.environment == {k: v for k, v in env.items() if k != "later"} and run.notes == []
    cut = write_run(tmp_path / "cut", Curves(decay(20)))
    (cut / "lfgen_env.json").write_text('{"lfgen": "0.1')
    run = read_run(cut)
    assert run.environment == {} and run.state == "done"
    assert run.notes == ["lfgen_env.json: not valid JSON (cut off while being written?); environment not read"]
    typed = write_run(tmp_path / "typed", Curves(decay(20)))
    (typed / "lfgen_env.json").write_text(json.dumps({**env, "gpus": "H100", "torch": 2.8}))
    run = read_run(typed)
    assert "gpus" not in run.environment and "torch" not in run.environment and run.environment["device"] == "cpu"
    assert len(run.notes) == 2 and all(note.startswith("lfgen_env.json: ") for note in run.notes)
    (typed / "lfgen_env.json").write_text("[1, 2]")
    assert read_run(typed).notes == ["lfgen_env.json: holds no JSON object; environment not read"]


@pytest.mark.parametrize(("recipe", "max_samples", "samples"), [
    ('{"samples": 12000}', None, 12000),
    ('{"samples": 12000}', 500, 500),
    ('{"samples": null}', 500, 500),
    (None, None, None),
])
def test_samples_come_from_the_recipe_capped_by_max_samples(recipe, max_samples, samples, tmp_path: Path) -> None:
    from lfgen.runs.reader import read_run

    run_dir = write_run(tmp_path / "r", Curves(decay(20)), config={"max_samples": max_samples} if max_samples else {})
    config = run_dir / "lfgen_run.yaml"
    if recipe:
        config.write_text(f"# Generated by lfgen 0.1.0\n# lfgen-recipe: {recipe}\n{config.read_text()}")
    assert read_run(run_dir).samples == samples


def test_steps_logged_is_the_last_training_step_however_the_log_was_written(tmp_path):
    """lfgen tune's steps per trial come from the one trainer_log.jsonl reader (it had a fourth of its own)."""
    from lfgen.runs.reader import steps_logged

    run = tmp_path / "r"
    assert steps_logged(run) == 0
    run.mkdir()
    assert steps_logged(run) == 0
    lines = [{"current_steps": s, "total_steps": 40, "loss": 2.0 / s} for s in range(1, 31)]
    lines += [{"current_steps": s, "total_steps": 40, "loss": 1.0} for s in range(21, 26)]  # resumed from step 20
    lines.append({"current_steps": 26, "total_steps": 40, "eval_loss": 1.5})  # an eval line is not a train step
    (run / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"current_st')
    assert steps_logged(run) == 30
