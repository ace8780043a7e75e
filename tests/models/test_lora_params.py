"""Exact LoRA trainable counts, checked against PEFT's own count on meta-device skeletons."""

from __future__ import annotations

import warnings

import pytest

from lfgen.errors import InputError
from lfgen.models import count_lora_params, load_model
from lfgen.models.modules import build_skeleton

# (model, rank, lora_target, additional_target, use_dora): 14 architectures, shrunk to 2 layers.
PEFT_CASES = [
    ("meta-llama/Llama-2-7b-hf", 8, "all", None, False),
    ("meta-llama/Llama-2-7b-hf", 16, "attn", "embed_tokens,lm_head", False),
    ("meta-llama/Llama-3.2-1B", 32, "all", None, False),
    ("mistralai/Mistral-7B-v0.3", 16, "qv", None, False),
    ("Qwen/Qwen2.5-7B", 8, "all", None, False),
    ("Qwen/Qwen2.5-0.5B", 8, "q_proj,v_proj,embed_tokens", None, True),
    ("Qwen/Qwen3-8B", 64, "all", None, False),
    ("google/gemma-7b", 8, "mlp", None, False),
    ("google/gemma-2-2b", 16, "all", None, False),
    ("google/gemma-3-1b-pt", 4, "all", None, False),
    ("microsoft/Phi-3-mini-4k-instruct", 8, "all", None, False),
    ("microsoft/phi-4", 8, "qv", None, False),
    ("THUDM/glm-4-9b-chat-hf", 8, "all", None, False),
    ("mistralai/Mixtral-8x7B-v0.1", 8, "all", None, False),
    ("Qwen/Qwen1.5-MoE-A2.7B", 8, "all", None, False),
    ("Qwen/Qwen3-30B-A3B", 16, "all", None, False),
    ("EleutherAI/pythia-410m", 8, "all", None, False),
    ("openai/clip-vit-base-patch32", 16, "q_proj,k_proj,v_proj,out_proj,fc1,fc2", None, False),
]


def _peft_trainable(spec, targets, rank, additional, use_dora):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    modules_to_save = additional.split(",") if additional else None
    config = LoraConfig(r=rank, target_modules=list(targets), modules_to_save=modules_to_save, use_dora=use_dora)
    with warnings.catch_warnings():  # PEFT warns when a tied embedding is adapted: expected in one case
        warnings.simplefilter("ignore", UserWarning)
        model = get_peft_model(build_skeleton(spec), config)
    trainable, everything = model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, everything


@pytest.fixture(scope="module")
def peft_table():
    rows = []
    for model_id, rank, target, additional, dora in PEFT_CASES:
        spec = load_model(model_id).with_layers(2)
        ours = count_lora_params(spec, rank, target, additional, use_dora=dora)
        theirs, everything = _peft_trainable(spec, ours.targets, rank, additional, dora)
        rows.append((model_id, spec.model_type, rank, target, additional, dora, ours, theirs, everything))
    print("\n\nLoRA trainable parameters, 2-layer skeletons: lfgen vs PEFT get_peft_model (meta device)")
    print(f"{'model':34} {'type':11} {'r':>3} {'target':40} {'lfgen':>12} {'peft':>12}  ok")
    for model_id, mtype, rank, target, additional, dora, ours, theirs, _ in rows:
        label = target + (f" +save {additional}" if additional else "") + (" +dora" if dora else "")
        print(f"{model_id:34} {mtype:11} {rank:>3} {label:40} {ours.trainable:>12,} {theirs:>12,}  "
              f"{'yes' if ours.trainable == theirs else 'NO'}")
    return rows


@pytest.mark.parametrize("index", range(len(PEFT_CASES)), ids=[f"{c[0]}-{c[2]}" for c in PEFT_CASES])
def test_count_equals_peft(peft_table, index):
    model_id, _, _, _, _, _, ours, theirs, everything = peft_table[index]
    assert ours.trainable == theirs, model_id
    assert ours.percent == pytest.approx(100 * theirs / everything)


@pytest.mark.parametrize("model_id, rank, target, expected", [
    ("meta-llama/Llama-2-7b-hf", 8, "q_proj,v_proj", 4_194_304),  # RULES.md: 32 x 2 x 8 x (4096+4096)
    ("meta-llama/Llama-2-7b-hf", 64, "all", 159_907_840),  # RULES.md: the a800 preset as PEFT prints it
    ("meta-llama/Meta-Llama-3-8B", 16, "all", 41_943_040),  # peers.md section 4: 2,621,440 x r
    ("meta-llama/Meta-Llama-3-8B", 16, "qv", 6_815_744),  # 425,984 x r
    ("meta-llama/Meta-Llama-3-8B", 32, "attn", 27_262_976),  # 851,968 x r
    ("Qwen/Qwen2-7B", 8, "all", 20_185_088),  # LlamaFactory #7409 reports 0.2643% of 7.6B
])
def test_full_size_counts(model_id, rank, target, expected):
    assert count_lora_params(model_id, rank, target).trainable == expected


def test_qwen2_7b_share_matches_issue_7409():
    # The issue's log: "lora训练参数占比0.2643%" at rank 8 on every linear layer.
    assert round(count_lora_params("Qwen/Qwen2-7B", 8).percent, 4) == 0.2643


def test_moe_surprises():
    notes = " ".join(count_lora_params("mistralai/Mixtral-8x7B-v0.1", 8).notes)
    assert "fused parameter tensors" in notes and "get no adapter" in notes and "TopKRouter" in notes


def test_neox_head_surprise():
    count = count_lora_params("EleutherAI/pythia-1b", 8)
    head = next(a for a in count.adapted if a.name == "embed_out")
    assert head.params == 8 * (2048 + 50304)
    assert any("embed_out" in n and "only skips modules named lm_head" in n for n in count.notes)


def test_multimodal_note():
    assert any("vision" in n for n in count_lora_params("google/gemma-3-4b-it", 8).notes)


def test_table_path_gives_the_same_count():
    pytest.importorskip("transformers")
    spec = load_model("Qwen/Qwen1.5-MoE-A2.7B")
    assert count_lora_params(spec, 8, source="table").trainable == count_lora_params(spec, 8, source="meta").trainable


@pytest.mark.parametrize("kwargs, pattern", [
    ({"rank": 0}, "lora_rank: must be a positive integer"),
    ({"rank": 8, "additional_target": "classifier"}, "additional_target: 'classifier' matches no module"),
    ({"rank": 8, "target": "v_porj"}, "did you mean: v_proj"),
])
def test_bad_inputs(kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        count_lora_params("Qwen/Qwen2.5-0.5B", **kwargs)
