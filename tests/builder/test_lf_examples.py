"""Every file of LlamaFactory 0.9.5's examples/ tree, from the layout it is written for (data/ beside examples/):
explain and explain --json name its kind without a traceback; validate's verdict equals LlamaFactory's own
parser wherever the parser can judge (issue 15)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lfgen.builder.kinds import classify
from lfgen.yamlio import load_config

from ..conftest import LF_EXAMPLES, needs_llamafactory

EXAMPLES = sorted(str(p.relative_to(LF_EXAMPLES)) for p in (LF_EXAMPLES / "examples").rglob("*")
                  if p.suffix in (".yaml", ".yml", ".json"))


def test_the_whole_examples_tree_is_here():
    assert len(EXAMPLES) == 89
    assert (LF_EXAMPLES / "data" / "dataset_info.json").is_file() and (LF_EXAMPLES / "LICENSE").is_file()


def _kind(path: str):
    return classify(load_config(str(LF_EXAMPLES / path)))


@pytest.mark.parametrize("path", EXAMPLES)
def test_explain_names_the_kind_without_a_traceback(runner, cli, monkeypatch, path):
    monkeypatch.chdir(LF_EXAMPLES)
    kind = _kind(path)
    text = runner.invoke(cli, ["explain", path])
    assert text.exit_code == 0, text.output
    assert "Traceback" not in text.output and kind.label in text.stdout
    data = runner.invoke(cli, ["explain", path, "--json"])
    assert data.exit_code == 0 and "Traceback" not in data.output
    found = json.loads(data.stdout)
    assert found["kind"]["name"] == kind.name and found["kind"]["label"] == kind.label
    if not kind.is_training:  # no rules, suggestions or training estimate for anything but a training config
        assert found["suggestions"] == [] and found["warnings"] == [] and "memory_gib" not in found


def test_the_kinds_of_the_examples():
    kinds = {path: _kind(path).name for path in EXAMPLES}
    count = {name: sum(k == name for k in kinds.values()) for name in set(kinds.values())}
    assert count == {"train": 47, "predict": 1, "chat": 4, "export": 4, "deepspeed": 7, "accelerate": 10,
                     "v1": 13, "megatron": 2, "tokens": 1}
    assert kinds["examples/inference/qwen3.yaml"] == "chat"
    assert kinds["examples/merge_lora/qwen3_gptq.yaml"] == "export"
    assert kinds["examples/extras/nlg_eval/llama3_lora_predict.yaml"] == "predict"
    assert _kind("examples/train_full/qwen3_full_sft.yaml").label == "full-parameter SFT training config"
    assert _kind("examples/train_qlora/qwen3_lora_sft_otfq.yaml").label.endswith("(quantized on the fly: 4-bit bnb)")


def test_a_launcher_config_is_one_line(runner, cli, monkeypatch):
    monkeypatch.chdir(LF_EXAMPLES)
    result = runner.invoke(cli, ["explain", "examples/deepspeed/ds_z3_config.json"])
    assert result.exit_code == 0 and result.stdout.count("\n") == 1
    assert "a DeepSpeed ZeRO-3 config" in result.stdout and "deepspeed: PATH" in result.stdout


def test_full_fine_tuning_is_estimated_as_full(runner, cli, monkeypatch):
    """Issue 15: 16.5M trainable and 'fits on a 4090' for a 4B full fine-tune was advice that runs out of memory."""
    monkeypatch.chdir(LF_EXAMPLES)
    result = runner.invoke(cli, ["explain", "examples/train_full/qwen3_full_sft.yaml", "--model", "Qwen/Qwen3-4B",
                                 "--gpu", "4090", "--json"])
    data = json.loads(result.stdout)
    assert data["finetuning_type"] == "full" and data["trainable_params"] == data["model"]["params"] > 4e9
    assert data["fits"] is False and data["memory_gib"]["total"] > 24
    assert not any(w.startswith("R-LR") for w in data["warnings"])  # 1e-5 is not "outside the LoRA range"
    micro = next(d for d in data["decisions"] if d["key"] == "per_device_train_batch_size")
    assert micro["value"] == 1


def test_dpo_learning_rate_is_not_judged_by_the_lora_rule(runner, cli, monkeypatch):
    monkeypatch.chdir(LF_EXAMPLES)
    data = json.loads(runner.invoke(cli, ["explain", "examples/train_lora/qwen3_lora_dpo.yaml", "--json"]).stdout)
    assert not any(w.startswith("R-LR") for w in data["warnings"])
    lr = next(d for d in data["decisions"] if d["key"] == "learning_rate")
    assert "R-LR" not in lr["reason"]


def test_effective_batch_is_not_credited_with_arithmetic_it_does_not_have(runner, cli, monkeypatch):
    monkeypatch.chdir(LF_EXAMPLES)
    data = json.loads(runner.invoke(cli, ["explain", "examples/train_lora/qwen3_lora_sft.yaml", "--json"]).stdout)
    accumulation = next(d for d in data["decisions"] if d["key"] == "gradient_accumulation_steps")
    assert accumulation["value"] == 8 and "4 x 8" not in accumulation["reason"]


def test_missing_model_is_reported_as_that(runner, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("stage: sft\ndo_train: true\ndataset: x\nlora_rank: 8\n")
    result = runner.invoke(cli, ["explain", str(path)])
    assert result.exit_code == 0 and "--model ." not in result.output
    assert "model_name_or_path" in result.stderr


# LlamaFactory's own verdict, asked directly: its read_args loads the YAML the way llamafactory-cli does, from the
# examples' root; the parser of each command; a GPU-only setting parsed as on a GPU machine (use_cpu added,
# pure_bf16 read as bf16); DeepSpeed and FSDP inside a one-process torchrun environment.
_ORACLE = r"""
import json, os, socket, sys
from llamafactory.hparams import get_eval_args, get_infer_args, get_train_args
from llamafactory.hparams.parser import read_args
out = {}
jobs = json.loads(sys.argv[1])
jobs.sort(key=lambda j: j[2])
for path, mode, distributed in jobs:
    sys.argv = ["llamafactory-cli", path]
    config = read_args()
    if mode == "train" and (config.get("bf16") is True or config.get("pure_bf16") is True) and "use_cpu" not in config:
        config["use_cpu"] = True
        if config.pop("pure_bf16", None):
            config["bf16"] = True
    if distributed:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    try:
        {"train": get_train_args, "infer": get_infer_args, "eval": get_eval_args}[mode](config)
        out[path] = None
    except BaseException as exc:
        out[path] = f"{type(exc).__name__}: {exc}"
print("ORACLE" + json.dumps(out))
"""

# Where lfgen is stricter than the parser, and right: names the parser never looks up, and a local model
# folder that is not there (the parser never opens it; training fails on it at once). LlamaFactory's
# inference and merge examples point at `saves/...`, the output of an earlier training example.
STRICTER = ("is not registered in", "is not a LlamaFactory 0.9.5 template", "does not exist (relative to")


@pytest.mark.slow
@needs_llamafactory
def test_validate_agrees_with_llamafactorys_parser_on_every_example(monkeypatch, capsys):
    from lfgen.builder.validate import validate
    from lfgen.catalogs.llamafactory import find_python

    monkeypatch.chdir(LF_EXAMPLES)
    report = validate(EXAMPLES)
    assert report.llamafactory["parser_run"] is True
    jobs = []
    for item in report.files:
        if item.kind is not None and item.kind.is_llamafactory:
            config = load_config(item.path)
            jobs.append([item.path, item.kind.parser, bool(config.get("deepspeed") or config.get("fsdp"))])
        else:
            assert item.ok and not item.checked and len(item.notes) == 1, (item.path, item.notes)
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    proc = subprocess.run([find_python() or sys.executable, "-P", "-c", _ORACLE, json.dumps(jobs)], cwd=LF_EXAMPLES,
                          capture_output=True, text=True, timeout=600, env={**env, "HF_HUB_OFFLINE": "1"})
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("ORACLE"))
    oracle = json.loads(line.removeprefix("ORACLE"))
    by_path = {f.path: f for f in report.files}
    agree, stricter = 0, []
    for path, error in oracle.items():
        ours = by_path[path]
        if error is None:
            extra = [p for p in ours.problems if not any(s in p for s in STRICTER)]
            assert not extra, (path, extra)
            stricter += [path] if ours.problems else []
        else:
            assert not ours.ok, (path, error)
        agree += 1
    with capsys.disabled():
        print(f"\nLlamaFactory's parser judged {len(oracle)} of {len(EXAMPLES)} files; validate agreed on {agree} "
              f"({sum(e is None for e in oracle.values())} accepted, {sum(e is not None for e in oracle.values())} "
              f"refused); lfgen stricter on {len(stricter)}: {stricter}")
    assert agree == len(oracle) == 56


# Every training example whose shape is not LoRA SFT (issue 19): its explain names the shape and cites no rule
# whose premise does not hold for it, in a decision, a suggestion or a warning.
def _shape_of(path: str) -> str:
    from lfgen.builder.shapes import of_config

    return of_config(load_config(str(LF_EXAMPLES / path))).name


NON_SFT = [p for p in EXAMPLES if _kind(p).is_training and _shape_of(p) != "lora-sft"]


def test_the_non_sft_examples_are_the_shapes_the_issue_names():
    shapes = {p: _shape_of(p) for p in NON_SFT}
    for path, name in {"examples/train_lora/qwen3_lora_dpo.yaml": "lora-dpo",
                       "examples/train_lora/qwen3_lora_kto.yaml": "lora-kto",
                       "examples/train_lora/qwen3_lora_reward.yaml": "lora-rm",
                       "examples/train_lora/qwen3_lora_pretrain.yaml": "lora-pt",
                       "examples/train_full/qwen3_full_sft.yaml": "full-sft",
                       "examples/extras/oft/llama3_oft_sft.yaml": "oft-sft",
                       "examples/extras/llama_pro/llama3_freeze_sft.yaml": "freeze-sft",
                       # a vision-language model is a shape of its own (issue 23: the vision modality)
                       "examples/train_lora/qwen3vl_lora_sft.yaml": "lora-sft-vision",
                       "examples/train_lora/qwen3vl_lora_dpo.yaml": "lora-dpo-vision",
                       "examples/train_full/qwen3vl_full_sft.yaml": "full-sft-vision",
                       "examples/extras/oft/qwen2_5vl_oft_sft.yaml": "oft-sft-vision"}.items():
        assert shapes[path] == name
    assert len(NON_SFT) == 30  # 29 + qwen3vl_lora_sft, LoRA SFT on a vision-language model


@pytest.mark.parametrize("path", NON_SFT)
def test_explain_of_a_non_sft_example_names_its_shape_and_applies_no_rule_that_does_not_hold(runner, cli, monkeypatch,
                                                                                           path):
    monkeypatch.chdir(LF_EXAMPLES)
    data = json.loads(runner.invoke(cli, ["explain", path, "--json", "--gpu", "A100-80"]).stdout)
    shape = data["shape"]
    assert shape["name"] == _shape_of(path)
    skipped = {r["rule"] for r in shape["rules_not_applied"]}
    lora_sft = (shape["stage"], shape["method"]) == ("sft", "lora")  # on a vision-language model: its LoRA rates hold
    assert {"R-LR", "R-LR-RANK", "R-LR-SIZE"} <= skipped or shape["name"].endswith(("-pt",)) or lora_sft
    cited = {d["rule"] for d in data["decisions"] + data["suggestions"]} | {w.split(":")[0] for w in data["warnings"]}
    assert not cited & skipped, cited & skipped
    assert not any("overrides R-LR," in d["reason"] for d in data["decisions"])  # the seeds' LoRA SFT rate, never
    text = runner.invoke(cli, ["explain", path])
    assert text.stdout.count("rules not applied (their premise does not hold)") == (0 if lora_sft else 1)  # once


def test_the_dpo_example_on_an_a100_counts_pairs_and_the_reference(runner, cli, monkeypatch):
    """Issue 19: explain --gpu A100-80 of LlamaFactory's DPO example turned its 1 x 8 into the SFT tier's 8 x 4."""
    monkeypatch.chdir(LF_EXAMPLES)
    path = "examples/train_lora/qwen3_lora_dpo.yaml"
    tier = json.loads(runner.invoke(cli, ["explain", path, "--json", "--gpu", "A100-80"]).stdout)
    micro = next(d for d in tier["decisions"] if d["key"] == "per_device_train_batch_size")
    assert micro["value"] == 4 and "pairs (the tier's sequences halved" in micro["reason"]  # no estimate: the tier
    data = json.loads(runner.invoke(cli, ["explain", path, "--json", "--gpu", "A100-80", "--model",
                                          "Qwen/Qwen3-4B"]).stdout)
    micro = next(d for d in data["decisions"] if d["key"] == "per_device_train_batch_size")
    assert "(pairs: each row is chosen + rejected" in micro["reason"]
    assert any("reference forward" in note for note in data["notes"]) and data["fits"] is True
    sft = json.loads(runner.invoke(cli, ["explain", "examples/train_lora/qwen3_lora_sft.yaml", "--json", "--gpu",
                                         "A100-80", "--model", "Qwen/Qwen3-4B"]).stdout)
    assert micro["value"] < next(d for d in sft["decisions"] if d["key"] == "per_device_train_batch_size")["value"]


def test_full_dpo_is_estimated_with_its_reference_copy(runner, cli, monkeypatch, tmp_path):
    monkeypatch.chdir(LF_EXAMPLES)
    args = ["--json", "--model", "Qwen/Qwen3-4B", "--gpu", "H200"]
    lora = json.loads(runner.invoke(cli, ["explain", "examples/train_lora/qwen3_lora_dpo.yaml", *args]).stdout)
    full = json.loads(runner.invoke(cli, ["explain", "examples/train_lora/qwen3_lora_dpo.yaml", *args, "--set",
                                          "finetuning_type=full"]).stdout)
    assert full["estimate_note"] == "" and full["memory_gib"]["weights"] > 2 * lora["memory_gib"]["weights"]
    assert any("a frozen copy of the weights" in note for note in full["notes"])
