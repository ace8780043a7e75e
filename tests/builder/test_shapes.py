"""The run-shape seam (issue 19): presets/shapes.yaml composed into a Shape, and what each shape's build writes."""

from __future__ import annotations

import json

import pytest

from lfgen import BuildOptions, build
from lfgen.builder import shapes
from lfgen.builder.option_table import METHODS, STAGES
from lfgen.errors import InputError

LORA_KEYS = {"lora_rank", "lora_alpha", "lora_dropout", "lora_target"}


def built(**options):
    return build("auto", BuildOptions.parse(**options))


def test_the_options_offer_exactly_the_registrys_shapes():
    assert list(STAGES) == shapes.stage_names() and list(METHODS) == shapes.method_names()
    assert "ppo" in shapes.stage_names(buildable=False) and "ppo" not in STAGES  # explained, never built


@pytest.mark.parametrize("stage,method,pref_loss,expected", [
    ("sft", "lora", None, "lora-sft"), ("dpo", "lora", None, "lora-dpo"), ("dpo", "full", "sigmoid", "full-dpo"),
    ("dpo", "lora", "ipo", "lora-dpo"), ("dpo", "oft", "orpo", "oft-orpo"), ("dpo", "lora", "simpo", "lora-simpo"),
    ("kto", "freeze", None, "freeze-kto"), ("rm", "lora", None, "lora-rm"), ("pt", "full", None, "full-pt"),
    ("ppo", "lora", None, "lora-ppo"), ("xyz", "qlora", None, "lora-sft")])  # unknown values: the schema's to report
def test_llamafactory_values_resolve_to_a_shape(stage, method, pref_loss, expected):
    assert shapes.resolve(stage, method, pref_loss).name == expected


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("method", METHODS)
def test_every_shape_builds_with_a_learning_rate_rule_of_its_own(stage, method):
    result = built(stage=stage, method=method)
    shape = result.shape
    decision = result.decisions["learning_rate"]
    assert (shape.stage_name, shape.method_name) == (stage, method) and decision.rule == shape.lr_rule
    if shape.lr_rule != "R-LR-RANK":  # the seeds' LoRA SFT rate is not applied, and the shape says so
        assert {"R-LR", "R-LR-RANK", "R-LR-SIZE"} <= set(shape.skipped)
    assert not {d.rule for d in result.decisions.values()} & set(shape.skipped)
    assert not {w.split(":")[0] for w in result.warnings} & set(shape.skipped)


def test_orpo_and_simpo_write_llamafactorys_stage_dpo_with_their_pref_loss():
    orpo = built(stage="orpo").config
    assert (orpo["stage"], orpo["pref_loss"], orpo["pref_beta"], orpo["learning_rate"]) == ("dpo", "orpo", 0.1, 8e-6)
    simpo = built(stage="simpo")
    assert (simpo.config["stage"], simpo.config["pref_loss"]) == ("dpo", "simpo")
    assert (simpo.config["pref_beta"], simpo.config["simpo_gamma"]) == (2.5, 1.375)  # SimPO's own scale
    assert "--stage simpo: LlamaFactory trains SimPO as stage dpo" in simpo.decisions["stage"].reason
    assert built(stage="dpo").config["pref_loss"] == "sigmoid"


def test_the_issues_full_fine_tune_gets_the_full_rate_and_no_lora_keys():
    """Issue 19: --set finetuning_type=full wrote 2e-4 "the recommended LoRA learning rate" and kept the LoRA keys."""
    result = built(set={"finetuning_type": "full"})
    assert result.config["learning_rate"] == 1e-5 and result.decisions["learning_rate"].rule == "R-METHOD-LR"
    assert not LORA_KEYS & set(result.config)
    assert result.config["output_dir"].startswith("outputs/qwen2-7b-instruct-auto-full-")


def test_the_issues_dpo_gets_the_dpo_rate_and_a_pairwise_dataset():
    """Issue 19: --set stage=dpo wrote lr 2e-4 and kept a dataset LlamaFactory refuses for DPO."""
    result = built(set={"stage": "dpo"})
    assert (result.config["learning_rate"], result.config["dataset"], result.config["pref_beta"]) == \
        (5e-6, "dpo_en_demo", 0.1)
    assert result.decisions["dataset"].rule == "LF-DEFAULT"


@pytest.mark.parametrize("stage,dataset", [("pt", "c4_demo"), ("kto", "kto_en_demo"), ("rm", "dpo_en_demo"),
                                           ("sft", "alpaca_en_demo")])
def test_each_stage_defaults_to_llamafactorys_demo_set_of_its_kind(stage, dataset):
    assert built(stage=stage).config["dataset"] == dataset


def test_oft_writes_its_block_size_and_the_target_llamafactory_reads():
    config = built(method="oft", target="qv").config
    assert (config["finetuning_type"], config["oft_block_size"], config["lora_target"]) == ("oft", 32, "q_proj,v_proj")
    assert not {"lora_rank", "lora_alpha", "lora_dropout"} & set(config) and config["learning_rate"] == 1e-4


def test_freeze_writes_what_trains():
    config = built(method="freeze").config
    assert (config["freeze_trainable_layers"], config["freeze_trainable_modules"]) == (2, "all")
    assert not LORA_KEYS & set(config)


@pytest.mark.parametrize("option,value", [("rank", 8), ("alpha", 16), ("dropout", 0.1), ("target", "qv")])
def test_an_option_the_method_does_not_read_is_refused(option, value):
    with pytest.raises(InputError, match=rf"--{option}: full-parameter fine-tuning does not read lora_"):
        built(method="full", **{option: value})


def test_a_lora_preset_does_not_serve_full_fine_tuning():
    with pytest.raises(InputError, match=r"a800 pins lora_rank, lora_alpha, lora_target, which full-parameter .*"
                                         r"lfgen preset auto --method full"):
        build("a800", BuildOptions.parse(method="full"))
    assert shapes.serves(["lora_rank"]) == ["lora"] and shapes.serves([]) == list(METHODS)
    assert build("a800", BuildOptions.parse(stage="kto")).config["lora_rank"] == 64  # every stage, LoRA


@pytest.mark.parametrize("options,message", [
    ({"stage": "orpo", "set": {"pref_loss": "sigmoid"}}, "--stage orpo: conflicts with pref_loss 'sigmoid'"),
    ({"stage": "dpo", "set": {"stage": "kto"}}, "--stage dpo: conflicts with stage 'kto'"),
    ({"stage": "dpo", "set": {"pref_loss": "orpo"}}, r"pref_loss orpo is --stage orpo"),
])
def test_a_stage_that_contradicts_the_users_keys_is_refused(options, message):
    with pytest.raises(InputError, match=message):
        built(**options)


def test_a_dpo_variant_loss_stays_dpo():
    result = built(stage="dpo", set={"pref_loss": "ipo"})
    assert result.shape.name == "lora-dpo" and result.config["pref_loss"] == "ipo"


def test_pre_training_writes_no_template_and_takes_no_cutoff_from_the_data(tmp_path):
    from lfgen.tiny import make_text_dataset

    data = make_text_dataset(tmp_path / "data")
    result = built(stage="pt", dataset=["tiny_text"], dataset_dir=str(data))
    assert "template" not in result.config and result.config["cutoff_len"] == 2048  # packed blocks, not p99
    assert {"LF-TEMPLATE", "R-DATA-CUTOFF"} <= set(result.shape.skipped)
    assert built(stage="pt", template="qwen").config["template"] == "qwen"  # the user's own stays


def test_a_dataset_of_the_wrong_kind_is_refused_before_anything_is_written(dataset_dir):
    with pytest.raises(InputError, match=r"dataset: 'my_sft' holds SFT rows .* stage dpo trains on pairwise rows .*"
                                         r"LlamaFactory refuses it at start-up.*register a pairwise dataset"):
        built(stage="dpo", dataset=["my_sft"], dataset_dir=str(dataset_dir))
    with pytest.raises(InputError, match="stage kto trains on KTO rows"):
        built(stage="kto", dataset=["my_sft"], dataset_dir=str(dataset_dir), samples=100)


def test_a_preference_run_counts_its_rows_as_pairs_without_seed_rules(tmp_path):
    from lfgen.tiny import make_pairwise_dataset

    data = make_pairwise_dataset(tmp_path / "data", rows=3000)
    result = built(stage="dpo", dataset=["tiny_dpo"], dataset_dir=str(data))
    # 3,000 rows of 30 x 30 sums: 2,142 repeat an earlier pair, and R-DATA-USABLE counts the 858 others as the pairs
    assert result.samples == 858 and "858 usable" in result.samples_note
    assert result.config["num_train_epochs"] == 3.0  # not seed 002's 5 for < 5K rows
    assert result.decisions["num_train_epochs"].rule == "R-STAGE-DATA"
    assert result.config["lora_rank"] == 64 and not any(w.startswith("R-DATA-RANK") for w in result.warnings)


def test_a_learning_rate_far_from_the_shapes_rule_warns():
    warnings = built(stage="dpo", set={"learning_rate": 2e-4}).warnings
    assert "R-STAGE-LR: learning_rate 0.0002 is 40x R-STAGE-LR's 5e-06 for LoRA DPO" in warnings
    assert not any(w.startswith("R-") and "learning_rate" in w for w in built(stage="dpo", lr=1e-5).warnings)


def test_the_lora_rate_follows_alpha_and_the_models_size():
    small = built(model="Qwen/Qwen2.5-1.5B-Instruct")  # <= 4B: R-LR-SIZE's 1e-3 x 32 / 128
    big = built(model="Qwen/Qwen2.5-7B-Instruct")  # 3e-4 x 32 / 128
    assert (small.config["learning_rate"], big.config["learning_rate"]) == (2.5e-4, 7.5e-5)
    assert "1.54B model (lfgen's catalog)" in small.decisions["learning_rate"].reason
    named = built(model="my-org/private-7b")  # neither catalog nor disk: its name says 7B
    assert named.config["learning_rate"] == 7.5e-5 and "from its name" in named.decisions["learning_rate"].reason
    assert built(lr=2e-4).config["learning_rate"] == 2e-4  # the user's --lr wins


def test_a_files_unread_keys_get_one_warning_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "full.yaml"
    path.write_text("model_name_or_path: Qwen/Qwen2.5-7B-Instruct\nstage: sft\ndo_train: true\n"
                    "finetuning_type: full\nlora_rank: 8\npref_beta: 0.2\noutput_dir: out\n")
    warnings = build(str(path)).warnings
    assert any(w.startswith("R-METHOD-KEYS: lora_rank: full-parameter SFT does not read it (read only by lora)")
               for w in warnings)
    assert any(w.startswith("R-METHOD-KEYS: pref_beta: full-parameter SFT does not read it") for w in warnings)


def test_a_new_stage_is_one_registry_entry(monkeypatch, tmp_path):
    """The seam: a stage added as data (here IPO split off DPO) gets its own rate rule, skips and memory terms in
    build, explain and the estimate, with no code naming it."""
    data = shapes.registry().model_dump()
    data["stages"]["dpo"]["losses"] = ["sigmoid", "hinge", "kto_pair"]
    data["stages"]["ipo"] = {**data["stages"]["dpo"], "label": "IPO", "pref_loss": "ipo", "losses": ["ipo"],
                             "lr": "method", "beta": False, "skips": {"R-DATA-EPOCHS": "IPO's own"}}
    registry = shapes._Registry.model_validate(data)
    monkeypatch.setattr(shapes, "registry", lambda: registry)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ipo.yaml").write_text("model_name_or_path: Qwen/Qwen2.5-7B-Instruct\nstage: dpo\npref_loss: ipo\n"
                                       "do_train: true\nlora_rank: 16\noutput_dir: out\n")
    result = build("ipo.yaml", BuildOptions.parse(gpu="A100-80"))
    assert result.shape.label == "LoRA IPO" and result.shape.skipped == {"R-DATA-EPOCHS": "IPO's own"}
    assert any(d.rule == "R-LR-RANK" for d in result.not_applied)  # the method's rate, as the entry says
    assert any("pair (chosen + rejected)" in note for note in result.estimate.notes)


def test_presets_json_lists_the_methods_each_preset_serves(runner, cli):
    rows = {row["name"]: row for row in json.loads(runner.invoke(cli, ["presets", "--json"]).stdout)}
    assert rows["a800"]["serves"] == {"methods": ["lora"], "stages": list(STAGES)}
    assert rows["auto"]["serves"]["methods"] == list(METHODS)
