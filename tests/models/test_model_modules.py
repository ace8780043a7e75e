"""Module lists: meta skeleton vs tables, LlamaFactory's `all`, and target resolution."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lfgen.errors import InputError
from lfgen.models import catalog_ids, inventory, load_model, resolve_targets
from lfgen.models.catalog import catalog_entry
from lfgen.models.modules import build_skeleton

ENTRY_IDS = list(dict.fromkeys(catalog_entry(i)["ids"][0] for i in catalog_ids()))


def _rows(inv):
    return sorted((g.name, g.kind, g.in_features, g.out_features, g.params_each, g.count, g.path) for g in inv.groups)


@pytest.mark.parametrize("model_id", ENTRY_IDS)
def test_table_and_meta_agree(model_id):
    # Two layers keep the skeleton cheap; the layout repeats per layer.
    pytest.importorskip("transformers")
    spec = load_model(model_id).with_layers(2)
    meta, table = inventory(spec, "meta"), inventory(spec, "table")
    assert meta.source == "meta" and table.source == "table"
    assert _rows(meta) == _rows(table)
    assert meta.tied_params == table.tied_params
    assert meta.total_params == table.total_params


@pytest.mark.parametrize("model_id", ["Qwen/Qwen2.5-72B", "Qwen/Qwen3-30B-A3B", "google/gemma-2-27b"])
def test_full_size_totals_agree(model_id):
    pytest.importorskip("transformers")
    spec = load_model(model_id)
    assert inventory(spec, "meta").total_params == inventory(spec, "table").total_params


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.2-1B", "Qwen/Qwen2-57B-A14B", "mistralai/Mixtral-8x7B-v0.1",
                                      "EleutherAI/pythia-160m", "microsoft/Phi-3-mini-4k-instruct",
                                      "THUDM/glm-4-9b-chat-hf", "google/gemma-3-1b-pt"])
def test_all_matches_llamafactory_find_all_linear_modules(model_id):
    pytest.importorskip("llamafactory")
    from llamafactory.model.model_utils.misc import find_all_linear_modules

    spec = load_model(model_id).with_layers(2)
    expected = sorted(find_all_linear_modules(build_skeleton(spec), freeze_vision_tower=True))
    assert resolve_targets(spec, "all").names == tuple(expected)
    assert inventory(spec, "table").all_linear() == expected


ATTN = ("k_proj", "o_proj", "q_proj", "v_proj")
LLAMA_MLP = ("down_proj", "gate_proj", "up_proj")
CASES = [
    ("meta-llama/Llama-2-7b-hf", "all", ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")),
    ("meta-llama/Llama-2-7b-hf", "qv", ("q_proj", "v_proj")),
    ("Qwen/Qwen2.5-7B", "attn", ATTN),
    ("Qwen/Qwen3-8B", "mlp", LLAMA_MLP),
    ("google/gemma-2-9b", "qv", ("q_proj", "v_proj")),
    ("microsoft/Phi-3-mini-4k-instruct", "all", ("down_proj", "gate_up_proj", "o_proj", "qkv_proj")),
    ("microsoft/Phi-3-mini-4k-instruct", "qv", ("qkv_proj",)),
    ("microsoft/Phi-3-mini-4k-instruct", "mlp", ("down_proj", "gate_up_proj")),
    ("THUDM/glm-4-9b-chat-hf", "mlp", ("down_proj", "gate_up_proj")),
    ("mistralai/Mixtral-8x7B-v0.1", "all", ATTN),
    ("Qwen/Qwen3-30B-A3B", "all", ATTN),
    ("Qwen/Qwen1.5-MoE-A2.7B", "all", ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                       "shared_expert_gate", "up_proj", "v_proj")),
    ("Qwen/Qwen1.5-MoE-A2.7B", "mlp", ("down_proj", "gate_proj", "shared_expert_gate", "up_proj")),
    ("EleutherAI/pythia-1b", "all", ("dense", "dense_4h_to_h", "dense_h_to_4h", "embed_out", "query_key_value")),
    ("EleutherAI/pythia-1b", "attn", ("dense", "query_key_value")),
    ("EleutherAI/pythia-1b", "qv", ("query_key_value",)),
    ("openai/clip-vit-base-patch32", "attn", ("k_proj", "out_proj", "q_proj", "v_proj")),
    ("openai/clip-vit-base-patch32", "mlp", ("fc1", "fc2")),
    ("openai/clip-vit-base-patch32", "all", ("fc1", "fc2", "k_proj", "out_proj", "q_proj", "text_projection",
                                             "v_proj", "visual_projection")),
    ("Qwen/Qwen2.5-7B", "q_proj, v_proj", ("q_proj", "v_proj")),
    ("Qwen/Qwen2.5-7B", ["o_proj", "embed_tokens"], ("o_proj", "embed_tokens")),
]


@pytest.mark.parametrize("model_id, target, expected", CASES)
def test_targets_resolve_to_real_names(model_id, target, expected):
    assert resolve_targets(load_model(model_id), target).names == expected


@pytest.mark.parametrize("source", ["meta", "table"])
def test_resolution_is_the_same_on_both_paths(source):
    if source == "meta":
        pytest.importorskip("transformers")
    inv = inventory(load_model("Qwen/Qwen1.5-MoE-A2.7B").with_layers(2), source)
    assert resolve_targets(inv, "all").names == ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj",
                                                 "shared_expert_gate", "up_proj", "v_proj")


def test_fused_qkv_note():
    targets = resolve_targets(load_model("microsoft/Phi-3-mini-4k-instruct"), "qv")
    assert any("qkv_proj" in note and "k included" in note for note in targets.notes)


@pytest.mark.parametrize("model_id, target, pattern", [
    ("Qwen/Qwen2.5-7B", "q_porj", r"'q_porj' is not a module .*did you mean: q_proj.*Linear layers are down_proj"),
    ("mistralai/Mixtral-8x7B-v0.1", "gate", r"'gate' .* is a router module, not a Linear layer"),
    ("mistralai/Mixtral-8x7B-v0.1", "mlp", r"'mlp' matches nothing .*fused parameter tensors"),
    ("Qwen/Qwen2.5-7B", "norm", r"'norm' .* is a norm module"),
    ("Qwen/Qwen2.5-7B", "all,q_proj", r"'all' must stand alone"),
    ("Qwen/Qwen2.5-7B", " , ", r"lora_target: empty"),
])
def test_bad_targets(model_id, target, pattern):
    with pytest.raises(InputError, match=pattern):
        resolve_targets(load_model(model_id), target)


def test_bad_source():
    with pytest.raises(InputError, match="source"):
        inventory("Qwen/Qwen2.5-7B", source="gguf")


def test_tables_serve_when_transformers_is_missing():
    # A fresh interpreter where `import transformers` fails, as on a machine without it.
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from lfgen.models import count_lora_params, inventory\n"
            "inv = inventory('Qwen/Qwen2.5-7B')\n"
            "assert inv.source == 'table', inv.source\n"
            "assert count_lora_params('meta-llama/Llama-2-7b-hf', 8, 'qv').trainable == 4194304\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
