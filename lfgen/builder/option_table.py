"""The build options, as plain data: the one table that ``BuildOptions`` (pydantic) and the CLI's
``--model``/``--rank``/... options (click) are both generated from.

Plain Python on purpose: ``lfgen --help`` builds its options from this table without importing pydantic
(or dataclasses, whose import of inspect costs ~8 ms of every start).
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Option(NamedTuple):
    """One build option: its name (``gpu_mem`` is ``--gpu-mem``), value type, help, the LlamaFactory key it
    sets (if any), whether a sweep grid over that key goes through it, and its pydantic constraints."""

    name: str
    type: type
    help: str
    key: str | None = None
    grid: bool = False
    default: Any = None
    many: bool = False  # a comma-separated list (--dataset a,b)
    choices: tuple[Any, ...] = ()  # closed choices, of the option's type
    constraints: dict[str, Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


# The shapes lfgen builds (presets/shapes.yaml; tests/builder/test_shapes.py keeps the two lists equal).
STAGES = ("sft", "pt", "dpo", "kto", "orpo", "simpo", "rm")
METHODS = ("lora", "oft", "freeze", "full")
_NONEMPTY = {"min_length": 1}
_POSITIVE = {"gt": 0}
_FINITE = {"gt": 0, "allow_inf_nan": False}

OPTIONS: tuple[Option, ...] = (
    Option("model", str, "Hugging Face id or local folder (default: the seed's Qwen/Qwen2-7B-Instruct).",
           "model_name_or_path", constraints=_NONEMPTY),
    Option("template", str, "LlamaFactory chat template (default: from the model's family).", "template",
           constraints=_NONEMPTY),
    Option("rank", int, "LoRA rank; alpha follows (2 x rank) unless --alpha is given.", "lora_rank", True,
           constraints=_POSITIVE),
    Option("alpha", int, "LoRA alpha.", "lora_alpha", True, constraints=_POSITIVE),
    Option("dropout", float, "LoRA dropout, in [0, 1).", "lora_dropout", True, constraints={"ge": 0, "lt": 1}),
    Option("target", str, "qv, attn, mlp, all, or module names (q_proj,v_proj).", "lora_target", True,
           constraints=_NONEMPTY),
    Option("stage", str, "What the run trains: sft, pt (pre-training), dpo, kto, orpo, simpo (LlamaFactory's stage "
           "dpo with that pref_loss) or rm (reward model); default sft.", choices=STAGES),
    Option("method", str, "How it trains: lora, oft, freeze or full (finetuning_type); default lora.",
           "finetuning_type", choices=METHODS),
    Option("lr", float, "Learning rate (default: the shape's rule; LoRA SFT: R-LR-RANK).", "learning_rate", True,
           constraints=_FINITE),
    Option("epochs", float, "num_train_epochs.", "num_train_epochs", True, constraints=_FINITE),
    Option("cutoff_len", int, "Maximum tokens per sample.", "cutoff_len", True, constraints=_POSITIVE),
    Option("dataset", str, "Dataset name(s) from dataset_info.json, comma-separated.", "dataset", many=True,
           constraints=_NONEMPTY),
    Option("dataset_dir", str, "Folder with dataset_info.json (its rows size the data rules).", "dataset_dir",
           constraints=_NONEMPTY),
    Option("samples", int, "Number of training samples (instead of counting them).", constraints=_POSITIVE),
    Option("output_dir", str, "LlamaFactory output_dir (default: outputs/<model>-<preset>-r<rank>).",
           "output_dir", constraints=_NONEMPTY),
    Option("gpu", str, "GPU name from the catalog: 4090, A100-80, H200, ... (see docs/cli.md), or cpu (default: the "
           "GPU visible here, else a CPU run; $LFGEN_GPU replaces the look).", constraints=_NONEMPTY),
    Option("gpu_mem", float, "GPU memory in GB, when the GPU is not in the catalog.", constraints=_FINITE),
    Option("num_gpus", int, "GPUs the run uses.", default=1, constraints=_POSITIVE),
    Option("zero", int, "DeepSpeed ZeRO stage across --num-gpus: 0 (plain DDP), 2 or 3 (default: the lowest the memory "
           "estimate fits); lfgen writes the JSON beside the config.", choices=(0, 2, 3)),
    Option("precision", str, "Force a precision (default: bf16 where the GPU has it, else fp16 mixed precision; fp32 "
           "turns both off: LlamaFactory then trains in the checkpoint's own dtype).", choices=("bf16", "fp16", "fp32")),
    Option("quant", int, "Quantize the frozen model with bitsandbytes (QLoRA): 4 or 8 bits; the compute dtype "
           "follows the precision.", "quantization_bit", choices=(4, 8)),
    Option("headroom", float, "Percent of GPU memory to keep free (default: R-HW-HEADROOM's 15).",
           constraints={"ge": 0, "lt": 100, "allow_inf_nan": False}),
)
SET_HELP = "Any other LlamaFactory key; repeatable (--set seed=7 --set max_samples=1000)."

# Option name -> the LlamaFactory key it sets; and the keys a sweep grid sets through their option
# (so alpha follows rank and `lora_target=qv` resolves, exactly as with `lfgen preset --rank`).
OPTION_KEYS: dict[str, str] = {o.name: o.key for o in OPTIONS if o.key}
GRID_OPTIONS: dict[str, str] = {o.key: o.name for o in OPTIONS if o.grid and o.key}
