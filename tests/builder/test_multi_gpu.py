"""Several GPUs: R-MULTI-KEYS (LlamaFactory's distributed keys, a sweep's shared tokenized data) and R-MULTI-DS (the ZeRO
stage the estimate fits, on the GPUs given first; its JSON written beside the config, at a path that exists on a pip
install)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lfgen import BuildOptions, build
from lfgen.builder.fit_rules import require_fit
from lfgen.builder.multi_gpu import DS_FILES, packaged
from lfgen.builder.render import render_build, write_preset
from lfgen.errors import InputError
from tests.conftest import LF_EXAMPLES

QWEN32 = "Qwen/Qwen2.5-32B-Instruct"


@pytest.mark.parametrize("name", ["ds_z2_config.json", "ds_z3_config.json", "ds_z2_offload_config.json",
                                  "ds_z3_offload_config.json"])
def test_the_shipped_deepspeed_configs_are_llamafactorys(name):
    """lfgen ships LlamaFactory's examples/deepspeed JSONs (not in its wheel) verbatim."""
    assert packaged(name).read_bytes() == (LF_EXAMPLES / "examples" / "deepspeed" / name).read_bytes()


def test_every_lfgen_deepspeed_file_is_in_the_wheel():
    """The wheel ships the lfgen package (pyproject: packages = ["lfgen"]), lfgen/data/deepspeed included."""
    import lfgen

    assert packaged(DS_FILES[3]).is_relative_to(Path(lfgen.__file__).parent)
    assert all(packaged(name).is_file() for name in DS_FILES.values())


def test_32b_on_8_h100_takes_zero3_on_the_gpus_given():
    """Issue 20: the fix offered was --num-gpus 16 with ZeRO-3, though ZeRO-3 on the 8 GPUs given fits."""
    result = build("a800", BuildOptions.parse(model=QWEN32, gpu="H100", num_gpus=8))
    assert result.config["deepspeed"] == "ds_z3_config.json" and result.fit.fits and result.estimate.fits
    decision = result.decisions["deepspeed"]
    assert decision.rule == "R-MULTI-DS" and "ZeRO-3" in decision.reason and "plain DDP needs" in decision.reason
    assert "ds_z3_config.json" in result.files and not any("--num-gpus 16" in w for w in result.warnings)


def test_a_lora_run_that_fits_each_gpu_whole_is_plain_ddp_and_a_full_one_zero2():
    lora = build("auto", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct", gpu="A100-80", num_gpus=2))
    assert "deepspeed" not in lora.config and not lora.files
    full = build("auto", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct", gpu="H100", num_gpus=8, method="full"))
    assert full.config["deepspeed"] == "ds_z2_config.json"  # the sharded optimizer fits: no need to shard weights
    zero3 = build("auto", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct", gpu="H100", num_gpus=8, method="full",
                                             zero=3))
    assert zero3.config["deepspeed"] == "ds_z3_config.json" and zero3.decisions["deepspeed"].rule == "USER"


def test_the_multi_gpu_keys_of_llamafactorys_examples():
    config = build("a800", BuildOptions.parse(gpu="A100-80", num_gpus=4)).config
    example = yaml.safe_load((LF_EXAMPLES / "examples/train_lora/qwen3_lora_sft_ds3.yaml").read_text())
    for key in ("ddp_timeout", "preprocessing_num_workers", "dataloader_num_workers"):
        assert config[key] == example[key]
    assert "ddp_timeout" not in build("a800", BuildOptions.parse(gpu="A100-80")).config


def test_the_json_is_written_beside_the_config_and_the_path_works_from_the_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = build("a800", BuildOptions.parse(model=QWEN32, gpu="H100", num_gpus=8))
    path = write_preset(result, tmp_path / "configs" / "32b.yaml")
    written = yaml.safe_load(path.read_text())
    assert written["deepspeed"] == "configs/ds_z3_config.json"
    assert (tmp_path / written["deepspeed"]).read_text() == packaged("ds_z3_config.json").read_text()
    assert "# lfgen-root: .." in path.read_text()  # lfgen run starts LlamaFactory there, from any folder
    again = write_preset(result, tmp_path / "configs" / "other.yaml")  # the same JSON beside it is left as it is
    assert yaml.safe_load(again.read_text())["deepspeed"] == "configs/ds_z3_config.json"


def test_a_different_json_beside_the_config_is_never_overwritten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds_z3_config.json").write_text("{}")
    result = build("a800", BuildOptions.parse(model=QWEN32, gpu="H100", num_gpus=8))
    with pytest.raises(InputError, match="ds_z3_config.json already exists with other content"):
        write_preset(result, tmp_path / "c.yaml")
    assert not (tmp_path / "c.yaml").exists() and (tmp_path / "ds_z3_config.json").read_text() == "{}"
    write_preset(result, tmp_path / "c.yaml", force=True)
    assert json.loads((tmp_path / "ds_z3_config.json").read_text())["zero_optimization"]["stage"] == 3


def test_printed_to_stdout_it_points_at_lfgens_own_copy():
    result = build("a800", BuildOptions.parse(model=QWEN32, gpu="H100", num_gpus=8))
    config = yaml.safe_load(render_build(result))
    assert Path(config["deepspeed"]).is_absolute() and Path(config["deepspeed"]).is_file()


def test_explain_of_the_written_file_knows_its_json(tmp_path, monkeypatch):
    from lfgen.builder.explain import explain

    monkeypatch.chdir(tmp_path)
    path = write_preset(build("a800", BuildOptions.parse(model=QWEN32, gpu="H100", num_gpus=8)),
                        tmp_path / "configs" / "c.yaml")
    explained = explain(str(path))
    deepspeed = next(d for d in explained.decisions if d.key == "deepspeed")
    assert deepspeed.rule == "R-MULTI-DS" and deepspeed.value == "configs/ds_z3_config.json"
    assert not any("edited by hand" in d.reason for d in explained.decisions)


def test_a_sweep_writes_one_json_and_its_runs_share_tokenized_data_per_data_setting(tmp_path, monkeypatch):
    from lfgen.experiments.make import make_sweep

    monkeypatch.chdir(tmp_path)
    options = BuildOptions.parse(model=QWEN32, gpu="H100", num_gpus=8, samples=100_000)
    experiment = make_sweep("rank", ["16", "32"], base="a800", options=options)
    runs = [yaml.safe_load((experiment.path / entry.config).read_text()) for entry in experiment.manifest.runs]
    assert {run["deepspeed"] for run in runs} == {"experiments/rank-sweep/ds_z3_config.json"}
    assert (tmp_path / runs[0]["deepspeed"]).is_file()
    assert runs[0]["tokenized_path"] == runs[1]["tokenized_path"]  # the same data keys: tokenized once
    assert runs[0]["tokenized_path"].startswith("outputs/rank-sweep/tokenized-")
    cutoffs = make_sweep("grid", ["cutoff_len=1024,2048"], base="a800", options=options, name="cut")
    paths = {yaml.safe_load((cutoffs.path / e.config).read_text())["tokenized_path"] for e in cutoffs.manifest.runs}
    assert len(paths) == 2  # another cutoff_len is other tokenized data
    small = make_sweep("rank", ["16"], base="a800", options=BuildOptions.parse(samples=1000), name="small")
    assert "tokenized_path" not in yaml.safe_load((small.path / small.manifest.runs[0].config).read_text())


LLAMA70 = "meta-llama/Llama-3.1-70B-Instruct"


def test_a_lora_run_that_does_not_fit_at_zero3_gets_zero3_offload_beside_the_config(tmp_path, monkeypatch):
    """R-MULTI-DS: CPU offload after ZeRO-3 on the GPUs given fails, before more GPUs are advised; explain's reason
    names it, says it is slower and the CPU RAM it needs."""
    monkeypatch.chdir(tmp_path)
    result = build("auto", BuildOptions.parse(model=LLAMA70, gpu="4090", num_gpus=4))
    assert result.fit.fits and result.config["deepspeed"] == "ds_z3_offload_config.json"
    assert result.fit.estimate.settings.offload_param == "cpu" and result.fit.estimate.cpu_gib > 100
    reason = result.decisions["deepspeed"].reason
    assert reason.startswith("ZeRO-3 with CPU offload on 4 GPUs") and "slower" in reason and "GiB of CPU RAM" in reason
    assert "ZeRO-3 needs" in reason and "plain DDP needs" in reason  # what it tried first, on the GPUs given
    assert any("CPU RAM" in w and "--num-gpus" in w for w in result.warnings)
    path = write_preset(result, tmp_path / "configs" / "70b.yaml")
    written = yaml.safe_load(path.read_text())
    assert written["deepspeed"] == "configs/ds_z3_offload_config.json"
    assert (tmp_path / written["deepspeed"]).read_bytes() == packaged("ds_z3_offload_config.json").read_bytes()
    from lfgen.builder.estimates import estimate

    again = estimate(LLAMA70, written, "RTX 4090", 24, 4)  # the written config is estimated with its offload
    assert again.fits and again.memory_gib["optimizer"] == 0.0 and any("CPU offload" in n for n in again.notes)


def test_explain_of_a_written_offload_config_shows_the_cpu_ram(tmp_path, monkeypatch, runner, cli):
    monkeypatch.chdir(tmp_path)
    write_preset(build("auto", BuildOptions.parse(model=LLAMA70, gpu="4090", num_gpus=4)), tmp_path / "c" / "70b.yaml")
    shown = runner.invoke(cli, ["explain", "c/70b.yaml", "--gpu", "4090", "--num-gpus", "4"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())  # rich wraps the notes at the terminal's width
    assert "note: ZeRO-3 CPU offload:" in text and "GiB on the node" in text and ": fits" in text


def test_a_full_fine_tune_tries_zero2_offload_before_zero3_offload():
    """ZeRO-2 offload keeps the 16-bit weights on each GPU (no per-layer gathering over PCIe): on 2 GPUs where neither
    ZeRO stage fits, it is the faster of the two offloads and fits."""
    result = build("auto", BuildOptions.parse(model="Qwen/Qwen2.5-7B-Instruct", gpu="4090", num_gpus=2, method="full"))
    assert result.config["deepspeed"] == "ds_z2_offload_config.json" and result.fit.fits
    reason = result.decisions["deepspeed"].reason
    assert "ZeRO-2 needs" in reason and "ZeRO-3 needs" in reason and "ZeRO-2 with CPU offload on 2 GPUs" in reason


def test_when_even_offload_does_not_fit_the_error_names_it_and_the_fix():
    with pytest.raises(InputError) as error:
        require_fit(build("auto", BuildOptions.parse(model=LLAMA70, gpu="T4", num_gpus=2, method="full",
                                                     cutoff_len=8192)))
    assert "with ZeRO-3 CPU offload (R-MULTI-DS's last stage" in str(error.value)
    assert "cheapest fix: --cutoff-len" in str(error.value) and "does not estimate" not in str(error.value)


def test_a_stage_you_chose_gets_the_offload_estimate_in_the_error():
    with pytest.raises(InputError) as error:
        require_fit(build("a800", BuildOptions.parse(model=LLAMA70, gpu="4090", num_gpus=4, zero=3)))
    message = str(error.value)
    assert "DeepSpeed ZeRO-3 with CPU offload would need ~" in message and "GiB of CPU RAM" in message
    assert "does not estimate" not in message


MULTI = {  # the multi-GPU scenarios of docs/rules.md's scale table, plus each --zero
    "32B LoRA on 8 x H100": ("a800", dict(model=QWEN32, gpu="H100", num_gpus=8), "ds_z3_config.json"),
    "7B full on 8 x H100": ("auto", dict(model="Qwen/Qwen2.5-7B-Instruct", gpu="H100", num_gpus=8, method="full"),
                            "ds_z2_config.json"),
    "70B QLoRA on 2 x A100-80, --zero 3": ("auto", dict(model="meta-llama/Llama-3.1-70B-Instruct", gpu="A100-80",
                                                        num_gpus=2, quant=4, zero=3), "ds_z3_config.json"),
    "7B LoRA on 4 x A100-80, --zero 2": ("a800", dict(model="Qwen/Qwen2.5-7B-Instruct", gpu="A100-80", num_gpus=4,
                                                      zero=2), "ds_z2_config.json"),
    "70B LoRA on 4 x RTX 4090 (ZeRO-3 offload)": ("auto", dict(model=LLAMA70, gpu="4090", num_gpus=4),
                                                 "ds_z3_offload_config.json"),
    "7B full on 2 x RTX 4090 (ZeRO-2 offload)": ("auto", dict(model="Qwen/Qwen2.5-7B-Instruct", gpu="4090",
                                                             num_gpus=2, method="full"), "ds_z2_offload_config.json"),
}


@pytest.mark.parametrize("scenario", list(MULTI))
def test_every_multi_gpu_config_points_at_a_file_that_exists_from_its_root(scenario, tmp_path, monkeypatch):
    """Issue 20's done-when: a multi-GPU config names a DeepSpeed JSON that exists on a pip install, whichever folder
    it is read from: written with -o, the JSON beside it, resolved from the config's own lfgen-root line; printed, lfgen's
    packaged copy (inside the lfgen package, which the wheel ships whole)."""
    import lfgen
    from lfgen.paths import config_root

    preset, options, name = MULTI[scenario]
    monkeypatch.chdir(tmp_path)
    result = build(preset, BuildOptions.parse(samples=20_000, **options))
    path = write_preset(result, tmp_path / "configs" / "deep" / "run.yaml")
    monkeypatch.chdir(tmp_path / "configs")  # read it from elsewhere
    written = yaml.safe_load(path.read_text())
    target = config_root(path) / written["deepspeed"]
    assert target.is_file() and target.name == name and target.read_bytes() == packaged(name).read_bytes()
    assert target.parent == path.parent  # beside the config
    printed = Path(yaml.safe_load(render_build(result))["deepspeed"])
    assert printed.is_absolute() and printed.is_file() and printed.is_relative_to(Path(lfgen.__file__).parent)
