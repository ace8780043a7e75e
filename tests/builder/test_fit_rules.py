"""R-HW-FIT: a config estimated not to fit is an error (exit 1) naming the cheapest fix with its estimate, unless
--allow-unfit; auto steps down through R-HW-FIT's step registry until it fits, and explain lists the steps."""

from __future__ import annotations

import pytest
import yaml

from lfgen import BuildOptions, build
from lfgen.builder import fit_rules
from lfgen.builder.fit_rules import require_fit
from lfgen.errors import InputError

QWEN7 = "Qwen/Qwen2.5-7B-Instruct"


def test_a_config_that_does_not_fit_is_an_error_naming_the_cheapest_fix(runner, cli, tmp_path):
    out = tmp_path / "big.yaml"
    result = runner.invoke(cli, ["preset", "large-rank", "--model", QWEN7, "--gpu", "4090", "-o", str(out)])
    assert result.exit_code == 1 and not out.exists()
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: --gpu: {QWEN7} does not fit on RTX 4090: ")
    assert "cheapest fix: --quant 4 (~15.7 GiB" in line and "--allow-unfit to write it anyway" in line
    written = runner.invoke(cli, ["preset", "large-rank", "--model", QWEN7, "--gpu", "4090", "-o", str(out),
                                  "--allow-unfit"])
    assert written.exit_code == 0 and out.exists()
    assert "does NOT fit" in written.stderr


def test_the_fixes_keep_what_the_run_learns_before_changing_it(monkeypatch):
    """Liger (the same loss) comes before 4-bit, and 4-bit before a shorter cutoff_len (which truncates samples); a fix
    that needs a package this Python lacks says so. With liger-kernel installed R-HW-THROUGHPUT writes it and it fits."""
    from lfgen.catalogs import machine

    options = BuildOptions.parse(model=QWEN7, gpu="4090", set={"lora_dropout": 0.0})
    with pytest.raises(InputError, match=r"cheapest fix: --set enable_liger_kernel=true \(after pip install "
                                         r"liger-kernel\) \(~20\.\d GiB.*; also --quant 4 .*--cutoff-len"):
        require_fit(build("large-rank", options))
    monkeypatch.setattr(machine, "installed", lambda package: package == "liger_kernel")
    fitted = build("large-rank", options)
    assert fitted.config["enable_liger_kernel"] is True and fitted.fit.fits
    require_fit(fitted)


def test_zero3_on_the_gpus_given_is_offered_before_more_gpus():
    options = {"model": QWEN7, "gpu": "A100-40", "num_gpus": 5, "method": "full"}
    result = build("auto", BuildOptions.parse(**options, set={"deepspeed": "my_ds_z2.json"}))
    with pytest.raises(InputError, match=r"cheapest fix: --zero 3 .*on the 5 GPUs.*; also --num-gpus 8 --zero 3"):
        require_fit(result)
    with pytest.raises(InputError, match="--zero 3: conflicts with --set deepspeed=my_ds_z2.json"):
        build("auto", BuildOptions.parse(**options, zero=3, set={"deepspeed": "my_ds_z2.json"}))
    fixed = build("auto", BuildOptions.parse(**options, zero=3))
    assert fixed.config["deepspeed"] == "ds_z3_config.json" and fixed.fit.fits


def test_auto_steps_down_until_it_fits_and_explain_lists_the_steps(runner, cli):
    """Issue 20: `lfgen preset auto` on an RTX 4090 for a 7B model wrote a config its own estimate said did not fit."""
    result = build("auto", BuildOptions.parse(model=QWEN7, gpu="4090", samples=1_000_000))
    assert result.fit.fits and result.estimate.fits
    assert [(t.key, t.before, t.value) for t in result.fit_steps] == [("lora_rank", 128, 64),
                                                                      ("quantization_bit", "unset", 4)]
    assert result.decisions["lora_rank"].rule == "R-HW-FIT" and result.config["lora_rank"] == 64
    assert result.config["lora_alpha"] == 128 and result.config["learning_rate"] == 7.5e-5  # alpha and lr follow
    assert result.config["quantization_bit"] == 4 and result.decisions["quantization_bit"].rule == "R-HW-FIT"
    assert "R-HW-FIT step 2: quantization_bit unset -> 4" in result.decisions["quantization_bit"].reason
    explained = runner.invoke(cli, ["explain", "auto", "--model", QWEN7, "--gpu", "4090", "--samples", "1000000",
                                    "--json"])
    steps = yaml.safe_load(explained.stdout)["fit_steps"]
    assert [s["key"] for s in steps] == ["lora_rank", "quantization_bit"] and steps[0]["needed_gib"] > 20.4
    text = runner.invoke(cli, ["explain", "auto", "--model", QWEN7, "--gpu", "4090", "--samples", "1000000"])
    assert "fit: R-HW-FIT step 1: lora_rank 128 -> 64" in text.stdout
    assert runner.invoke(cli, ["preset", "auto", "--model", QWEN7, "--gpu", "4090"]).exit_code == 0


def test_a_step_never_changes_a_value_you_set():
    result = build("auto", BuildOptions.parse(model=QWEN7, gpu="4090", rank=128, samples=1_000_000))
    assert result.config["lora_rank"] == 128 and "lora_rank" not in [t.key for t in result.fit_steps]


def test_when_no_step_reaches_a_fit_auto_keeps_the_config_and_names_the_fixes():
    result = build("auto", BuildOptions.parse(model=QWEN7, gpu="4090", method="full"))
    assert not result.fit.fits and result.fit_steps == [] and result.config["cutoff_len"] == 2048
    with pytest.raises(InputError, match=r"cheapest fix: --num-gpus 16 --zero 3 .*CPU offload would need ~[\d.]+ GiB "
                                         r"per GPU and ~\d+ GiB of CPU RAM") as error:
        require_fit(result)
    assert "does not estimate" not in str(error.value)  # R-MULTI-DS: lfgen estimates DeepSpeed's offload


def test_a_new_step_is_one_registry_entry(monkeypatch):
    """The VLM engineer adds image_max_pixels as one entry; here a hypothetical max_grad_norm step proves the registry
    drives the loop (a key, how it moves, a condition)."""
    steps = (fit_rules.Step(key="max_grad_norm", set=0.5, when="quantizable", changes="nothing", why="a test step"),
             *fit_rules.steps())
    monkeypatch.setattr(fit_rules, "steps", lambda: steps)
    result = build("auto", BuildOptions.parse(model=QWEN7, gpu="4090", samples=1_000_000))
    assert result.fit_steps[0].key == "max_grad_norm" and result.config["max_grad_norm"] == 0.5
    assert set(fit_rules.CONDITIONS) >= {"quantizable", "multimodal"}


def test_the_fit_check_applies_only_with_a_gpu(runner, cli):
    """The tiny models of the tests and the demo train on a CPU: no estimate there, so nothing to refuse."""
    assert runner.invoke(cli, ["preset", "large-rank", "--model", QWEN7, "--gpu", "cpu"]).exit_code == 0
