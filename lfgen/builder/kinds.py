"""What a config file is: a LlamaFactory training config, a chat / export / predict config, or a file
that is not a LlamaFactory config at all (a launcher config, the v1 trainer's schema, a token list).

``explain`` and ``validate`` both start here: a training config gets the rules, the suggestions and the
memory estimate; an inference config is checked with the parser LlamaFactory uses for its command
(``get_infer_args`` for chat and export, ``get_train_args`` for predict, ``get_eval_args`` for eval) and
explained as what it does; any other file gets one line saying what it looks like and what to do with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# The llamafactory-cli command and the parser of each LlamaFactory kind.
PARSERS = {"train": "train", "predict": "train", "chat": "infer", "export": "infer", "eval": "eval"}
COMMANDS = {"train": "train", "predict": "train", "chat": "chat", "export": "export", "eval": "eval"}

METHODS = {"lora": "LoRA", "oft": "OFT", "freeze": "freeze (partial-parameter)", "full": "full-parameter"}

# Keys only a training run reads: one of them without do_train still makes a training config.
_TRAINING_KEYS = frozenset({
    "dataset", "stage", "finetuning_type", "lora_rank", "lora_alpha", "lora_dropout", "lora_target",
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "output_dir", "freeze_trainable_layers", "oft_rank", "deepspeed",
})
_DEEPSPEED_KEYS = frozenset({"zero_optimization", "train_micro_batch_size_per_gpu", "train_batch_size",
                             "zero_allow_untested_optimizer", "gradient_clipping"})
_ACCELERATE_KEYS = frozenset({"compute_environment", "distributed_type", "num_processes", "machine_rank",
                              "fsdp_config", "main_training_function"})
_V1_KEYS = frozenset({"peft_config", "dist_config", "kernel_config", "train_dataset", "micro_batch_size",
                      "model_class", "quant_config", "sample_backend"})
_MEGATRON_KEYS = frozenset({"tensor_model_parallel_size", "pipeline_model_parallel_size",
                            "expert_model_parallel_size", "use_distributed_optimizer", "recompute_granularity",
                            "moe_token_dispatcher_type", "virtual_pipeline_model_parallel_size"})
_TOKEN = re.compile(r"^<\|?.+\|?>$")
_PREQUANTIZED = re.compile(r"(gptq|awq|aqlm|bnb-4bit|int4|int8|fp8)", re.IGNORECASE)


@dataclass(frozen=True)
class Kind:
    """One file's kind: ``name`` is stable (JSON), ``label`` says it in words, ``advice`` what to do."""

    name: str  # train | predict | chat | export | eval | deepspeed | accelerate | v1 | megatron | tokens | other
    label: str
    advice: str = ""

    @property
    def is_llamafactory(self) -> bool:
        """A config `llamafactory-cli train/chat/export/eval` reads with lfgen's rules and parser."""
        return self.name in PARSERS

    @property
    def is_training(self) -> bool:
        return self.name == "train"

    @property
    def parser(self) -> str | None:
        return PARSERS.get(self.name)

    @property
    def line(self) -> str:
        """The one line explain and validate print for a file that is not a LlamaFactory config."""
        return f"{self.label}, not a LlamaFactory train/chat/export config; {self.advice}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "advice": self.advice}


def _quantization(config: dict[str, Any]) -> str:
    bits = config.get("quantization_bit")
    if isinstance(bits, int) and not isinstance(bits, bool):
        return f" (quantized on the fly: {bits}-bit {config.get('quantization_method', 'bnb')})"
    found = _PREQUANTIZED.search(str(config.get("model_name_or_path") or ""))
    return f" (pre-quantized base model: {found.group(1).upper()})" if found else ""


def _stage_label(config: dict[str, Any], stage: str) -> str:
    """The stage as its shape names it (stage dpo with pref_loss orpo is ORPO); an unknown stage as written."""
    from lfgen.builder.shapes import resolve

    found = resolve(stage, config.get("finetuning_type"), config.get("pref_loss"))
    return found.stage.label if found.stage.stage == stage else stage


def _training(config: dict[str, Any]) -> Kind:
    stage = str(config.get("stage", "sft"))
    method = str(config.get("finetuning_type", "lora"))
    name = METHODS.get(method, method)
    if method == "lora" and config.get("use_dora"):
        name = "DoRA"
    label = f"{name} {_stage_label(config, stage)} training config{_quantization(config)}"
    return Kind("train", label, "run it with `llamafactory-cli train FILE`")


def _inference(config: dict[str, Any]) -> Kind | None:
    adapter = " with the adapter " + str(config["adapter_name_or_path"]) if config.get("adapter_name_or_path") else ""
    model = str(config.get("model_name_or_path") or "?")
    if config.get("export_dir") is not None:
        bits = config.get("export_quantization_bit")
        what = f"{bits}-bit GPTQ-quantized" if bits else "merged" if adapter else "as is"
        return Kind("export", f"export config: writes {model}{adapter} ({what}) to {config['export_dir']}",
                    "run it with `llamafactory-cli export FILE`")
    if config.get("do_predict") is True:
        data = config.get("eval_dataset") or config.get("dataset") or "?"
        return Kind("predict", f"predict config: {model}{adapter} generates answers for {data} into "
                               f"{config.get('output_dir', '?')}", "run it with `llamafactory-cli train FILE`")
    if config.get("task") is not None and config.get("do_train") is not True:
        return Kind("eval", f"benchmark eval config: {model}{adapter} on {config['task']}",
                    "run it with `llamafactory-cli eval FILE`")
    if config.get("do_train") is not True and not _TRAINING_KEYS & set(config):
        backend = config.get("infer_backend", "huggingface")
        return Kind("chat", f"chat config: {model}{adapter} with the {config.get('template', 'default')} template "
                            f"on {backend}", "run it with `llamafactory-cli chat FILE` (or webchat, api)")
    return None


def _not_a_config(config: dict[str, Any]) -> Kind | None:
    keys = set(config)
    if keys & _DEEPSPEED_KEYS and "model_name_or_path" not in keys:
        stage = (config.get("zero_optimization") or {}).get("stage") if isinstance(
            config.get("zero_optimization"), dict) else None
        what = f"a DeepSpeed ZeRO-{stage} config" if stage is not None else "a DeepSpeed config"
        return Kind("deepspeed", what, "name it in a training config (deepspeed: PATH) and run "
                                       "`llamafactory-cli train` on that config, which launches torchrun")
    if keys & _ACCELERATE_KEYS and "model_name_or_path" not in keys:
        what = f"an accelerate launcher config ({config.get('distributed_type', 'distributed')})"
        return Kind("accelerate", what, "pass it to `accelerate launch --config_file FILE src/train.py TRAIN.yaml` "
                                        "with a training config")
    if "model_name_or_path" not in keys and ("model" in keys or keys & _V1_KEYS):
        return Kind("v1", "a config of LlamaFactory's v1 trainer (model, peft_config, dist_config, ...)",
                    "run it with `USE_V1=1 llamafactory-cli sft FILE`; lfgen checks v0 configs only")
    if keys & _MEGATRON_KEYS:
        return Kind("megatron", "a Megatron-Core (mcore_adapter) training config",
                    "run it with `USE_MCA=1 llamafactory-cli train FILE` (needs mcore_adapter); lfgen and "
                    "LlamaFactory's plain parser do not know the Megatron keys")
    if keys and all(isinstance(k, str) and _TOKEN.match(k) for k in keys):
        return Kind("tokens", f"a list of {len(keys)} special tokens with descriptions",
                    "name it in a config's new_special_tokens_config: PATH (with resize_vocab: true)")
    return None


def classify(config: dict[str, Any]) -> Kind:
    """The kind of one config mapping (see the module docstring)."""
    found = _not_a_config(config)
    if found is not None:
        return found
    if "model_name_or_path" not in config and not _TRAINING_KEYS & set(config):
        return Kind("other", "a YAML mapping with none of LlamaFactory's model or training keys",
                    "a LlamaFactory config names at least model_name_or_path")
    return _inference(config) or _training(config)
