"""lfgen validate: every problem of every file at once; LlamaFactory's own parser on lfgen's output."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from lfgen import BuildOptions, build, render_build
from lfgen.catalogs.presets import load_presets
from lfgen.builder.validate import validate

from ..conftest import LF_EXAMPLES, make_dataset_dir, needs_llamafactory


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_all_problems_of_all_files_at_once(tmp_path, runner, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset_dir(tmp_path / "data")
    one = write(tmp_path / "one.yaml", "model_name_or_path: m\ndataset: my_sft\nlora_rank: abc\nlora_dropout: 1.5\n"
                                       "lora_rnk: 8\ntemplate: qwen9\n")
    two = write(tmp_path / "two.yaml", "model_name_or_path: m\ndataset: nope\nbf16: true\nfp16: true\n")
    three = write(tmp_path / "three.yaml", "- a list\n")
    result = runner.invoke(cli, ["validate", one, two, three, str(tmp_path / "missing.yaml"), "--no-parser"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"{one}: lora_rank: must be an integer (got 'abc')" in lines
    assert f"{one}: lora_dropout: must be less than 1 (got 1.5)" in lines
    assert any(line.startswith(f"{one}: lora_rnk: not a LlamaFactory 0.9.5 key (did you mean: lora_rank") for line in lines)
    assert any(line.startswith(f"{one}: template: 'qwen9' is not a LlamaFactory") for line in lines)
    assert any(line.startswith(f"{two}: dataset: 'nope' is not registered in data/dataset_info.json") for line in lines)
    assert f"{two}: bf16, fp16: both are true; keep one mixed precision (bf16 where the GPU has it)" in lines
    assert any(line.startswith(f"{three}: the file holds a list, not a mapping") for line in lines)
    assert f"{tmp_path / 'missing.yaml'}: no such config file; check the path" in lines
    assert "4 of 4 file(s) have problems" in result.stderr


def test_json_report(tmp_path, runner, cli):
    path = write(tmp_path / "bad.yaml", "model_name_or_path: m\nlora_rank: 0\n")
    result = runner.invoke(cli, ["validate", path, "--no-parser", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 1 and data["ok"] is False
    assert data["files"][0] == {"path": path, "ok": False, "problems": ["lora_rank: must be greater than 0 (got 0)"],
                                "notes": [], "checked": True, "runs_here": True, "cannot_run_here": "",
                                "kind": {"name": "train", "label": "LoRA SFT training config",
                                         "advice": "run it with `llamafactory-cli train FILE`"}}
    assert set(data["llamafactory"]) >= {"version", "parser_run"}


def test_dataset_dir_without_dataset_info_is_a_problem(tmp_path):
    path = write(tmp_path / "c.yaml", f"model_name_or_path: m\ndataset: x\ndataset_dir: {tmp_path}\n")
    report = validate([path], run_parser=False)
    assert report.files[0].problems == [f"dataset_dir: {tmp_path} has no dataset_info.json; register your data there "
                                        "(https://github.com/hiyouga/LLaMA-Factory/blob/main/data/README.md) or pass "
                                        "another --dataset-dir"]


def test_yaml_floats_are_read_the_llamafactory_way(tmp_path):
    path = write(tmp_path / "c.yaml", "model_name_or_path: m\nlearning_rate: 1e-4\n")
    assert validate([path], run_parser=False).ok  # OmegaConf reads 1e-4 as a float; plain PyYAML would not


TIERS = ["T4", "RTX 4090", "A100-40", "A800", "H200"]
MODELS = ["Qwen/Qwen2.5-7B-Instruct", "meta-llama/Meta-Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3"]


@pytest.mark.slow
@needs_llamafactory
def test_every_preset_x_gpu_x_model_passes_validate_and_llamafactorys_parser(tmp_path, monkeypatch):
    """9 text presets x 5 GPU tiers x 3 model families = 135 configs, one parser subprocess (the caption preset, for
    vision-language models, is checked on its own in tests/test_e2e_vlm.py)."""
    monkeypatch.chdir(tmp_path)
    make_dataset_dir(tmp_path / "data")
    paths = []
    for name in [name for name, preset in load_presets().items() if not (preset.vision and preset.vision.only)]:
        for gpu in TIERS:
            for model in MODELS:
                result = build(name, BuildOptions.parse(gpu=gpu, model=model, dataset=["my_sft"], dataset_dir="data"))
                path = tmp_path / f"{name}-{gpu.replace(' ', '')}-{model.split('/')[1]}.yaml"
                paths.append(write(path, render_build(result)))
    report = validate(paths)
    assert report.llamafactory["parser_run"] is True, report.llamafactory
    assert report.ok, [(f.path, f.problems) for f in report.files if f.problems]
    assert len(report.files) == 135


@pytest.mark.slow
@needs_llamafactory
def test_every_shape_passes_validate_and_llamafactorys_parser(tmp_path, monkeypatch):
    """7 stages x 4 methods, each built by `lfgen preset auto --stage S --method M` on LlamaFactory's demo data of its
    kind (dataset_info.json of its examples tree), one parser subprocess (issue 19)."""
    from lfgen.builder.option_table import METHODS, STAGES

    monkeypatch.chdir(tmp_path)
    paths = []
    for stage in STAGES:
        for method in METHODS:
            result = build("auto", BuildOptions.parse(stage=stage, method=method, gpu="A100-80",
                                                      model="Qwen/Qwen2.5-7B-Instruct"))
            paths.append(write(tmp_path / f"{stage}-{method}.yaml", render_build(result)))
    report = validate(paths, dataset_dir=str(LF_EXAMPLES / "data"))
    assert report.llamafactory["parser_run"] is True, report.llamafactory
    assert report.ok, [(f.path, f.problems) for f in report.files if f.problems]
    assert len(report.files) == 28


def test_a_dataset_of_the_wrong_kind_for_the_stage_is_a_problem(tmp_path, monkeypatch):
    """R-STAGE-DATA: LlamaFactory's parser loads no data, so only lfgen says it before the model loads."""
    monkeypatch.chdir(LF_EXAMPLES)
    text = (LF_EXAMPLES / "examples/train_lora/qwen3_lora_sft.yaml").read_text().replace("stage: sft", "stage: dpo")
    path = write(tmp_path / "dpo.yaml", text)
    problems = validate([path], run_parser=False).files[0].problems
    assert len(problems) == 2 and all("stage dpo trains on pairwise rows" in p for p in problems)
    assert problems[0].startswith("dataset: 'identity' holds SFT rows")
    predict = write(tmp_path / "p.yaml", text.replace("do_train: true", "do_train: false\ndo_predict: true"))
    assert not any("trains on" in p for p in validate([predict], run_parser=False).files[0].problems)


@pytest.mark.slow
@needs_llamafactory
def test_llamafactorys_own_examples_are_accepted(monkeypatch):
    monkeypatch.chdir(LF_EXAMPLES)
    names = [f"examples/train_lora/{n}" for n in ("qwen3_lora_sft.yaml", "qwen3_lora_pretrain.yaml",
                                                  "qwen3_lora_dpo.yaml", "qwen3_lora_kto.yaml",
                                                  "qwen3_lora_reward.yaml")]
    names += [f"examples/train_qlora/{n}" for n in ("qwen3_lora_sft_otfq.yaml", "llama3_lora_sft_gptq.yaml",
                                                    "llama3_lora_sft_awq.yaml")]
    report = validate(names)
    assert report.llamafactory["parser_run"] is True
    assert report.ok, [(f.path, f.problems) for f in report.files if f.problems]


@pytest.mark.slow
@needs_llamafactory
def test_llamafactorys_parser_errors_are_shown_cleanly(tmp_path, monkeypatch):
    monkeypatch.chdir(LF_EXAMPLES)
    report = validate(["examples/train_lora/qwen3_lora_sft_ds3.yaml"])  # DeepSpeed config; deepspeed is not installed
    problems = report.files[0].problems
    if importlib.util.find_spec("deepspeed") is None:  # LlamaFactory refuses it: one line with the fix, not the exception
        assert len(problems) == 1 and problems[0].startswith("deepspeed: LlamaFactory refuses a DeepSpeed config where "
                                                             "the deepspeed package is not installed"), problems
        assert "(got examples/deepspeed/ds_z3_config.json); pip install deepspeed" in problems[0]
        assert "PackageNotFoundError" not in problems[0] and "Traceback" not in problems[0]
    bad = write(tmp_path / "bad.yaml", "model_name_or_path: m\nfinetuning_type: lora\nquantization_bit: 4\n"
                                       "stage: sft\ndo_train: true\ndo_predict: true\n")
    problems = validate([bad]).files[0].problems
    assert any("predict_with_generate" in p for p in problems), problems


def _model_dir(root: Path, name: str, model_type: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
    return folder


@pytest.mark.parametrize("model", ["./nope", "../nope", "models/qwen/7b", "~/surely-not-here-lfgen"])
def test_a_local_model_path_that_does_not_exist_is_a_problem(tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "c.yaml", f"model_name_or_path: {model}\ntemplate: qwen\n")
    problems = validate([path], run_parser=False).files[0].problems
    assert len(problems) == 1 and problems[0].startswith(f"model_name_or_path: {model} does not exist"), problems
    if not model.startswith("~"):
        assert f"(relative to the current directory, {tmp_path})" in problems[0]


def test_an_absolute_model_path_that_does_not_exist(tmp_path):
    path = write(tmp_path / "c.yaml", f"model_name_or_path: {tmp_path / 'gone'}\n")
    assert validate([path], run_parser=False).files[0].problems == [
        f"model_name_or_path: {tmp_path / 'gone'} does not exist; give the folder of a Hugging Face model or a Hub "
        "id such as Qwen/Qwen2.5-7B-Instruct"]


@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-7B-Instruct", "gpt2", "m"])
def test_hub_ids_are_not_checked_offline(tmp_path, monkeypatch, model):
    monkeypatch.chdir(tmp_path)
    assert validate([write(tmp_path / "c.yaml", f"model_name_or_path: {model}\n")], run_parser=False).ok


def test_a_model_folder_without_config_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    path = write(tmp_path / "c.yaml", "model_name_or_path: ./empty\n")
    assert validate([path], run_parser=False).files[0].problems == [
        "model_name_or_path: ./empty has no config.json, so it is not a Hugging Face model folder"]


@pytest.mark.parametrize("name,model_type,template,problem", [
    ("my-model", "qwen2", "llama3", "template: 'llama3' is not a template for ./my-model: its config.json says "
                                    "model_type 'qwen2' (a qwen model); use template: qwen"),
    ("Meta-Llama-3-8B", "llama", "qwen", "template: 'qwen' is not a template for ./Meta-Llama-3-8B: its config.json "
                                         "says model_type 'llama' (a llama model); use template: llama3"),
    ("base", "llama", "qwen3", "template: 'qwen3' is not a template for ./base: its config.json says model_type "
                               "'llama' (a llama model); use a llama template"),
    ("m", "mixtral", "gemma", "template: 'gemma' is not a template for ./m: its config.json says model_type "
                              "'mixtral' (a mistral model); use template: mistral"),
])
def test_a_template_of_another_family_than_the_local_model(tmp_path, monkeypatch, name, model_type, template, problem):
    monkeypatch.chdir(tmp_path)
    _model_dir(tmp_path, name, model_type)
    path = write(tmp_path / "c.yaml", f"model_name_or_path: ./{name}\ntemplate: {template}\n")
    assert validate([path], run_parser=False).files[0].problems == [problem]


@pytest.mark.parametrize("model_type,template", [
    ("qwen2", "qwen"), ("qwen2", "qwen3"), ("qwen3", "qwen3_nothink"),  # same family
    ("qwen2", "deepseekr1"), ("llama", "yi"), ("llama", "smollm2"),  # families that borrow an architecture
    ("qwen2", "default"), ("qwen2", "alpaca"), ("qwen2", "chatml"),  # templates outside the family table
    ("gpt_neox", "llama3"), ("starcoder2", "qwen"),  # architectures the table does not know
])
def test_templates_not_known_to_be_wrong_pass(tmp_path, monkeypatch, model_type, template):
    monkeypatch.chdir(tmp_path)
    _model_dir(tmp_path, "model", model_type)
    assert validate([write(tmp_path / "c.yaml", f"model_name_or_path: ./model\ntemplate: {template}\n")],
                    run_parser=False).ok


def test_dataset_dir_option_and_close_matches_only(tmp_path, runner, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_dataset_dir(tmp_path / "mine", name="my_sft")
    path = write(tmp_path / "c.yaml", "model_name_or_path: m\ndataset: my_sft\n")
    assert validate([path], run_parser=False).files[0].problems  # data/ does not exist here
    result = runner.invoke(cli, ["validate", path, "--no-parser", "--dataset-dir", str(tmp_path / "mine")])
    assert result.exit_code == 0, result.output
    many = {f"set_{i}": {"file_name": "x.json"} for i in range(50)}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps(many))
    bad = write(tmp_path / "b.yaml", "model_name_or_path: m\ndataset: set_7x\n")
    problem = validate([bad], run_parser=False).files[0].problems[0]
    assert "did you mean: set_7" in problem and "set_42" not in problem


def test_a_launcher_config_is_one_note_not_unknown_keys(runner, cli, monkeypatch):
    monkeypatch.chdir(LF_EXAMPLES)
    result = runner.invoke(cli, ["validate", "--no-parser", "examples/accelerate/fsdp_config.yaml"])
    assert result.exit_code == 0 and result.stdout == ""
    assert "an accelerate launcher config (FSDP)" in result.stderr and "not a LlamaFactory key" not in result.stderr


@pytest.mark.slow
@needs_llamafactory
def test_the_parser_runs_from_the_users_directory_and_writes_nothing(tmp_path, monkeypatch):
    """Relative paths resolve from the cwd, as llamafactory-cli resolves them: a used output_dir is found."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_text("x")
    path = write(tmp_path / "c.yaml", "model_name_or_path: m\nstage: sft\ndo_train: true\ndataset: my_sft\n"
                                      "template: qwen\noutput_dir: out\n")
    make_dataset_dir(tmp_path / "data")
    before = sorted(p for p in tmp_path.rglob("*"))
    problems = validate([path]).files[0].problems
    assert any("Output directory already exists" in p for p in problems), problems
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.slow
@needs_llamafactory
def test_a_gpu_only_file_is_valid_but_said_not_to_run_here(tmp_path, monkeypatch, runner, cli):
    """Issue 21 item 8: validate parses a bf16 file as on a GPU (use_cpu added for the parser only) and says loudly
    that this GPU-less machine cannot train it, never that it is valid for a CPU run."""
    monkeypatch.chdir(tmp_path)
    make_dataset_dir(tmp_path / "data")
    path = write(tmp_path / "c.yaml", "model_name_or_path: m\nstage: sft\ndo_train: true\ndataset: my_sft\n"
                                      "template: qwen\nfinetuning_type: full\npure_bf16: true\noutput_dir: o\n")
    report = validate([path])
    if report.llamafactory["cuda"] is False:
        assert report.ok, report.files[0].problems
        assert "pure_bf16" in report.files[0].cannot_run_here and "no GPU here" in report.files[0].cannot_run_here
        result = runner.invoke(cli, ["validate", path])
        assert result.exit_code == 0
        assert f"warning: {path}: no GPU here, so this machine cannot train it: pure_bf16" in result.stderr
        assert "1 valid only on a GPU: this machine has none, so lfgen run here would fail" in result.stderr
        cpu = write(tmp_path / "cpu.yaml", "model_name_or_path: m\nstage: sft\ndo_train: true\ndataset: my_sft\n"
                                           "template: qwen\nbf16: false\nuse_cpu: true\noutput_dir: o2\n")
        assert validate([cpu]).files[0].cannot_run_here == ""


@pytest.mark.slow
@needs_llamafactory
def test_a_cpu_config_passes_llamafactorys_parser_and_runs_here(tmp_path, monkeypatch, runner, cli):
    """Issue 21 item 8: `lfgen preset --gpu cpu` writes a file LlamaFactory's parser accepts as it is (no use_cpu
    added by lfgen's probe), which this GPU-less machine can train; its template is the tiny model's (qwen)."""
    from lfgen.tiny import make_dataset, make_model

    monkeypatch.chdir(tmp_path)
    make_model(tmp_path / "tiny-model")
    make_dataset(tmp_path / "data")
    out = tmp_path / "cpu.yaml"
    made = runner.invoke(cli, ["preset", "lightweight", "--model", "./tiny-model", "--gpu", "cpu", "--dataset",
                               "tiny_alpaca", "--dataset-dir", "data", "-o", str(out)])
    assert made.exit_code == 0, made.stderr
    config = yaml.safe_load(out.read_text())
    assert (config["template"], config["bf16"], config["use_cpu"]) == ("qwen", False, True)
    report = validate([str(out)])
    assert report.ok, report.files[0].problems
    assert report.files[0].cannot_run_here == ""


@needs_llamafactory
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_a_multi_gpu_file_where_deepspeed_is_missing_gets_one_readable_line(tmp_path, monkeypatch):
    """LlamaFactory's parser refuses a deepspeed config without the package (transformers raises PackageNotFoundError
    from TrainingArguments); validate says so in one line with the fix, not the exception's text."""
    from lfgen.builder.render import write_preset

    monkeypatch.chdir(tmp_path)
    make_dataset_dir(tmp_path / "data")
    result = build("a800", BuildOptions.parse(model="Qwen/Qwen2.5-32B-Instruct", gpu="H100", num_gpus=8,
                                              dataset=["my_sft"], dataset_dir="data"))
    path = write_preset(result, tmp_path / "configs" / "32b.yaml")
    problems = validate([str(path)]).files[0].problems
    assert problems == ["deepspeed: LlamaFactory refuses a DeepSpeed config where the deepspeed package is not "
                        "installed, so its parser could not check the rest (got configs/ds_z3_config.json); pip install "
                        "deepspeed in LlamaFactory's Python, as the machine that trains it needs"]
