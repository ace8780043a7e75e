"""R-DATA-STEPS (intervals sized to the run) and R-DATA-CUTOFF (cutoff_len from the real lengths)."""

from __future__ import annotations

import json
import math

import yaml

from lfgen import BuildOptions, build
from lfgen.builder.estimates import settings_for


def optimizer_steps(config: dict, samples: int, num_gpus: int = 1) -> int:
    """The Hugging Face Trainer's count, from the written config."""
    val = config["val_size"]
    held = math.ceil(val * samples) if val < 1 else val  # LlamaFactory's val_size: a share, or a row count
    batches = math.ceil((samples - held) / (config["per_device_train_batch_size"] * num_gpus))
    per_epoch = math.ceil(batches / config["gradient_accumulation_steps"])
    return math.ceil(config["num_train_epochs"] * per_epoch)


def test_preset_auto_500_samples_evaluates_5_times_and_saves_before_the_end(runner, cli, tmp_path):
    out = tmp_path / "auto.yaml"
    result = runner.invoke(cli, ["preset", "auto", "--samples", "500", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(out.read_text())
    total = optimizer_steps(config, 500)
    assert total == 75  # a CPU run here: 475 rows / 2 = 238 batches / 16 = 15 steps x 5 epochs
    assert total // config["eval_steps"] >= 5
    assert config["save_steps"] < total and config["save_steps"] % config["eval_steps"] == 0
    assert total // config["logging_steps"] >= 20


def test_the_seeds_intervals_stay_on_a_long_run():
    result = build("auto", BuildOptions.parse(samples=12_000))
    total = optimizer_steps(result.config, 12_000)
    assert total >= 1000
    assert (result.config["eval_steps"], result.config["save_steps"], result.config["logging_steps"]) == (200, 500, 10)
    assert result.decisions["eval_steps"].rule == "LF-SKELETON"  # the seed's value, with R-DATA-STEPS' arithmetic
    assert "R-DATA-STEPS: " in result.decisions["eval_steps"].reason and "optimizer steps" in \
        result.decisions["eval_steps"].reason


def test_explain_shows_the_arithmetic_and_the_warmup_steps():
    result = build("auto", BuildOptions.parse(samples=500))
    why = result.decisions["eval_steps"].reason
    assert "450 training samples (500 - 50 for val_size 50) / micro-batch 2 = 225 batches" in why
    assert "15 steps per epoch x 5 epochs = 75 optimizer steps" in why and "every 15 steps evaluates 5 times" in why
    assert "0.05 x 75 optimizer steps = 4 warmup step(s)" in result.decisions["warmup_ratio"].reason


def test_user_intervals_win_and_max_steps_counts():
    result = build("auto", BuildOptions.parse(samples=500, set={"eval_steps": 50, "max_steps": 40}))
    assert result.config["eval_steps"] == 50 and "overrides R-DATA-STEPS" in result.decisions["eval_steps"].reason
    assert result.config["save_steps"] == 20  # half of max_steps 40: saves once before the end
    assert any("eval_steps 50 evaluates 0 time(s) in 40 optimizer steps; 8 would evaluate 5 times" in w
               for w in result.warnings)


def test_without_a_data_size_the_seed_values_stand():
    result = build("a800")
    assert (result.config["eval_steps"], result.config["save_steps"]) == (200, 500)
    assert result.decisions["eval_steps"].rule == "LF-SKELETON" and "R-DATA-STEPS" not in result.decisions[
        "eval_steps"].reason


def _data(tmp_path, rows):
    root = tmp_path / "data"
    root.mkdir()
    (root / "sft.json").write_text(json.dumps(rows), encoding="utf-8")
    (root / "dataset_info.json").write_text(json.dumps({"sft": {"file_name": "sft.json"}}), encoding="utf-8")
    return root


# The auto preset's model is a Qwen2 (template qwen): its text around a turn, default system prompt included, is 41
# approximated tokens ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. ..." characters / 4).
QWEN_TURN = 41


def test_cutoff_from_the_p99_with_the_truncation_share(tmp_path):
    # 99 rows of 400 characters (100 approximate tokens) and one of 4,000 (1,000), each + the template's 41:
    # p99 = 141 -> 192
    rows = [{"instruction": f"{i:03d}" + "a" * 196, "input": "", "output": "b" * 200} for i in range(99)]  # distinct
    rows.append({"instruction": "a" * 1999, "input": "", "output": "b" * 2000})
    root = _data(tmp_path, rows)
    result = build("auto", BuildOptions.parse(dataset=["sft"], dataset_dir=str(root)))
    decision = result.decisions["cutoff_len"]
    assert result.config["cutoff_len"] == 192 and decision.rule == "R-DATA-CUTOFF"
    assert f"p99 of 100 samples is {100 + QWEN_TURN} tokens -> 192 (a multiple of 64)" in decision.reason
    assert "truncates 1 of 100 samples (1.0%)" in decision.reason and "approximated" in decision.reason
    assert "through the qwen template" in decision.reason and "system prompt included" in decision.reason
    assert result.seq_len == 1000 + QWEN_TURN and result.lengths.truncated == 1


def test_the_cutoff_counts_the_chat_templates_tokens(tmp_path, tiny_model):
    """Issue 21: content-only lengths wrote cutoff_len 64 on rows whose qwen system prompt alone is 65 tokens, and
    LlamaFactory cut every prompt at "You are a helpful assistant"."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    rows = [{"instruction": f"what is {a} + {b}?", "input": "", "output": f"{a} + {b} = {a + b}"}
            for a in range(10) for b in range(5)]
    content = max(len(tok.encode(f"{r['instruction']}\n{r['output']}", add_special_tokens=False).ids) for r in rows)
    assert content < 64  # what lfgen measured before: cutoff_len 64
    root = _data(tmp_path, rows)
    result = build("auto", BuildOptions.parse(dataset=["sft"], dataset_dir=str(root), model=str(tiny_model),
                                              template="qwen"))
    assert result.config["cutoff_len"] == 128 and result.seq_len > 65 + content - 2
    assert "through the qwen template" in result.decisions["cutoff_len"].reason


def test_a_padded_run_is_estimated_at_its_longest_sample_a_packed_one_at_cutoff_len():
    config = {"cutoff_len": 2048, "per_device_train_batch_size": 2}
    assert settings_for(config, 1, seq_len=600)["cutoff_len"] == 600
    assert settings_for(config, 1, seq_len=5000)["cutoff_len"] == 2048
    assert settings_for({**config, "packing": True}, 1, seq_len=600)["cutoff_len"] == 2048
    assert settings_for({**config, "stage": "pt"}, 1, seq_len=600)["cutoff_len"] == 2048  # pt packs by default


def test_a_user_cutoff_keeps_its_value_and_the_estimate_uses_the_real_lengths(tmp_path):
    rows = [{"instruction": f"{i:03d}" + "a" * 396, "input": "", "output": "b" * 400} for i in range(50)]  # 200 each
    root = _data(tmp_path, rows)
    short = build("auto", BuildOptions.parse(dataset=["sft"], dataset_dir=str(root), cutoff_len=4096,
                                             model="Qwen/Qwen2.5-7B-Instruct", gpu="A100-80"))
    assert short.config["cutoff_len"] == 4096 and short.seq_len == 200 + QWEN_TURN
    assert any(f"longest sample is {200 + QWEN_TURN} tokens" in note for note in short.estimate.notes)
    padded_to_cutoff = build("auto", BuildOptions.parse(samples=50, cutoff_len=4096, model="Qwen/Qwen2.5-7B-Instruct",
                                                        gpu="A100-80", set={"per_device_train_batch_size": 1}))
    assert padded_to_cutoff.estimate.memory_gib["total"] > short.estimate.memory_gib["total"] or \
        short.config["per_device_train_batch_size"] > 1


def test_explain_of_a_written_file_keeps_the_measured_cutoff(tmp_path, monkeypatch):
    from lfgen.builder.explain import explain
    from lfgen.builder.render import write_preset

    rows = [{"instruction": f"{i:03d}" + "a" * 196, "input": "", "output": "b" * 200} for i in range(20)]
    root = _data(tmp_path, rows)
    monkeypatch.chdir(tmp_path)
    path = write_preset(build("auto", BuildOptions.parse(dataset=["sft"], dataset_dir=str(root))), tmp_path / "c.yaml")
    explained = explain(str(path))
    cutoff = next(d for d in explained.decisions if d.key == "cutoff_len")
    assert cutoff.rule == "R-DATA-CUTOFF" and cutoff.value == 192  # 100 + the template's 41 -> 192
    assert not any("edited by hand" in d.reason for d in explained.decisions)


def test_lengths_are_measured_once_per_data_and_again_when_a_file_changes(tmp_path, monkeypatch):
    from lfgen.builder import chat_lengths

    calls = []
    real = chat_lengths.measure
    monkeypatch.setattr(chat_lengths, "measure", lambda samples, model, chat, **kw: calls.append(1) or
                        real(samples, model, chat, **kw))
    rows = [{"instruction": f"{i:03d}" + "a" * 196, "input": "", "output": "b" * 200} for i in range(20)]
    root = _data(tmp_path, rows)
    options = BuildOptions.parse(dataset=["sft"], dataset_dir=str(root))
    build("auto", options)
    build("auto", BuildOptions.parse(dataset=["sft"], dataset_dir=str(root), rank=8))  # a sweep's second run
    assert len(calls) == 1
    more = [{**row, "output": row["output"] + "c"} for row in rows]
    (root / "sft.json").write_text(json.dumps(rows + more + [{"instruction": "x" * 4000, "input": "", "output": "y"}]),
                                   encoding="utf-8")
    assert build("auto", options).lengths.count == 41 and len(calls) == 2
