"""The offline catalog and local config.json folders."""

from __future__ import annotations

import json

import pytest

from lfgen.errors import InputError
from lfgen.models import catalog_ids, inventory, load_model
from lfgen.models.catalog import catalog_entry

# One id per catalog entry (entries list several ids that share numbers).
ENTRY_IDS = list(dict.fromkeys(catalog_entry(i)["ids"][0] for i in catalog_ids()))


TEXT_IDS = [i for i in ENTRY_IDS if not load_model(i).composite]
VLM_IDS = [i for i in ENTRY_IDS if load_model(i).composite]


@pytest.mark.parametrize("model_id", TEXT_IDS)
def test_catalog_numbers_reproduce_published_size(model_id):
    # A mistyped width or layer count moves the total far more than 2%.
    published = catalog_entry(model_id)["params_b"] * 1e9
    total = inventory(load_model(model_id), source="table").total_params
    assert abs(total / published - 1) < 0.02, f"{model_id}: {total / 1e9:.3f}B vs published {published / 1e9}B"


@pytest.mark.parametrize("model_id", VLM_IDS)
def test_vision_language_entries_reproduce_published_size(model_id):
    # The whole checkpoint (every tower, built on the meta device) against the model card; and the text tables
    # lfgen's memory model reads equal the composite's language tower.
    pytest.importorskip("transformers")
    from lfgen.models.towers import tower_params

    spec = load_model(model_id)
    towers = tower_params(spec)
    published = catalog_entry(model_id)["params_b"] * 1e9
    assert abs(sum(towers.values()) / published - 1) < 0.02, f"{model_id}: {sum(towers.values()) / 1e9:.3f}B"
    assert towers["vision"] > 0 and towers["projector"] > 0
    assert inventory(spec, source="table").total_params == pytest.approx(towers["language"], rel=1e-4)


def test_catalog_ids_are_unique():
    from lfgen.resources import load_data

    ids = [i.lower() for entry in load_data("models.yaml")["models"] for i in entry["ids"]]
    assert len(ids) == len(set(ids))


def test_required_families_are_covered():
    ids = {i.lower() for i in catalog_ids()}
    for needed in ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf",
                   "meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.2-1B",
                   "meta-llama/Llama-3.2-3B", "Qwen/Qwen2-0.5B", "Qwen/Qwen2-1.5B", "Qwen/Qwen2-7B",
                   *[f"Qwen/Qwen2.5-{s}" for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")],
                   *[f"Qwen/Qwen3-{s}" for s in ("0.6B", "1.7B", "4B", "8B", "14B", "32B", "30B-A3B")],
                   "Qwen/Qwen1.5-MoE-A2.7B", "mistralai/Mistral-7B-v0.1", "mistralai/Mixtral-8x7B-v0.1",
                   "google/gemma-2-2b", "google/gemma-2-9b", "google/gemma-2-27b", "google/gemma-3-1b-pt",
                   "google/gemma-3-4b-it", "google/gemma-3-12b-it", "google/gemma-3-27b-it",
                   "microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3-medium-4k-instruct",
                   "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "THUDM/glm-4-9b-chat-hf", "01-ai/Yi-1.5-9B"]:
        assert needed.lower() in ids, needed


def test_ids_match_case_insensitively():
    a = load_model("qwen/QWEN2.5-7b-instruct")
    b = load_model("Qwen/Qwen2.5-7B-Instruct")
    assert a == b and a.name == "Qwen/Qwen2.5-7B-Instruct"


def test_spec_numbers():
    spec = load_model("Qwen/Qwen3-0.6B")
    assert (spec.model_type, spec.hidden_size, spec.head_dim, spec.q_dim, spec.kv_dim) == ("qwen3", 1024, 128, 2048, 1024)
    assert spec.tie_word_embeddings
    moe = load_model("Qwen/Qwen3-30B-A3B")
    assert moe.is_moe and moe.num_experts == 128 and moe.num_experts_per_tok == 8 and moe.dense_layers == ()
    assert load_model("mistralai/Mixtral-8x7B-v0.1").num_experts == 8  # from num_local_experts


def _write(folder, config):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_local_folder_config(tmp_path):
    config = {"model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
              "shared_expert_intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_experts": 4, "num_experts_per_tok": 2, "vocab_size": 100,
              "mlp_only_layers": [0], "decoder_sparse_step": 1, "auto_map": {"AutoModel": "remote.Code"}}
    folder = _write(tmp_path / "tiny-moe", config)
    spec = load_model(str(folder))
    assert spec.source == str(folder) and spec.dense_layers == (0,)
    assert "auto_map" not in spec.config  # never hand remote code to transformers
    assert load_model(folder / "config.json") == spec
    pytest.importorskip("transformers")
    inv = {source: inventory(spec, source) for source in ("meta", "table")}
    assert inv["meta"].total_params == inv["table"].total_params


def test_local_composite_config_uses_text_model(tmp_path):
    text = {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100}
    folder = _write(tmp_path / "gemma3", {"model_type": "gemma3", "text_config": text, "vision_config": {}})
    spec = load_model(str(folder))
    assert spec.model_type == "gemma3_text" and spec.multimodal and spec.composite == "gemma3"


def test_a_flat_qwen2_vl_config_json_is_read(tmp_path):
    # Qwen2-VL and Qwen2.5-VL config.json files keep the text numbers at the top level (no text_config).
    pytest.importorskip("transformers")
    config = {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"], "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 100, "tie_word_embeddings": True,
              "vision_config": {"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2}}
    spec = load_model(str(_write(tmp_path / "qwen2vl", config)))
    assert (spec.model_type, spec.composite, spec.hidden_size, spec.vocab_size) == ("qwen2", "qwen2_vl", 64, 100)
    assert spec.tie_word_embeddings


def test_a_vision_language_type_lfgen_does_not_count_is_named(tmp_path):
    folder = _write(tmp_path / "glm4v", {"model_type": "glm4v", "text_config": {"hidden_size": 64}})
    with pytest.raises(InputError, match="vision-language model_type='glm4v' is not one lfgen counts yet.*qwen2_vl"):
        load_model(str(folder))


def test_local_config_defaults_come_from_transformers(tmp_path):
    # gemma2's config.json may leave head_dim at the class default (256), not hidden/heads.
    config = {"model_type": "gemma2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}
    spec = load_model(str(_write(tmp_path / "g2", config)))
    assert spec.head_dim == 256 and spec.tie_word_embeddings


@pytest.mark.parametrize("name, fragment", [
    ("nobody/not-a-model-7B", "config.json"),
    ("Qwen/Qwen2.5-7B-Instruc", "did you mean: Qwen/Qwen2.5-7B-Instruct"),
])
def test_unknown_id_says_how_to_point_at_a_folder(name, fragment):
    with pytest.raises(InputError, match="--model") as err:
        load_model(name)
    assert fragment in str(err.value) and "local folder" in str(err.value)
    assert "\n" not in str(err.value)


def test_folder_without_config(tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("text, fragment", [("{not json", "not valid JSON"), ("[1, 2]", "JSON object")])
def test_bad_config_json(tmp_path, text, fragment):
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=fragment):
        load_model(str(tmp_path))


def test_unknown_architecture(tmp_path):
    folder = _write(tmp_path / "m", {"model_type": "mamba", "hidden_size": 64})
    with pytest.raises(InputError, match="unsupported architecture model_type='mamba'.*llama"):
        load_model(str(folder))


def test_missing_number_names_the_key(tmp_path):
    folder = _write(tmp_path / "m", {"model_type": "llama", "num_attention_heads": 4, "num_hidden_layers": 2,
                                     "intermediate_size": 128, "vocab_size": 100, "hidden_size": "big"})
    with pytest.raises(InputError, match="'hidden_size' must be a positive integer"):
        load_model(str(folder))
