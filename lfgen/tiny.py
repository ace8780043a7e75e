"""A tiny model, tokenizer and dataset built locally (no network): for the end-to-end tests and `lfgen demo`.

A 2-layer Qwen2 (hidden 64, 100K parameters) with a byte-level BPE tokenizer trained on a small
synthetic corpus whose vocabulary holds the ChatML and Llama-3 special tokens, so LlamaFactory's
`qwen`, `chatml` and `llama3` templates work without resizing. Everything is seeded: the same
files, and the same losses, every time (../shared/research/cpu-e2e.md §1-2).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>", "<s>", "</s>", "<pad>"]
_WORDS = ("the a an is are was to of and in on for with what how why who give list explain write short answer "
          "question number color red green blue cat dog sun moon water fire one two three four five hello world "
          "please thanks yes no python code model data train test").split()
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_model(out: str | Path, hidden: int = 64, layers: int = 2) -> Path:
    """Write a tiny random Qwen2 model and its tokenizer to *out*; returns *out*."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars are noise in lfgen demo

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    torch.manual_seed(0)  # without it the weights, and so the losses, change from run to run
    corpus = [" ".join(rng.choices(_WORDS, k=rng.randint(5, 30))) + rng.choice([".", "?", "!"]) for _ in range(3000)]
    corpus += [f"{a} + {b} = {a + b}" for a in range(30) for b in range(30)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=1024, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<|endoftext|>",
                                     pad_token="<pad>", unk_token=None, additional_special_tokens=SPECIALS[1:7],
                                     model_max_length=512, chat_template=CHAT_TEMPLATE)
    hf_tok.save_pretrained(out)
    config = Qwen2Config(vocab_size=len(hf_tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, bos_token_id=hf_tok.bos_token_id,
                         eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    return out


def make_dataset(out: str | Path, rows: int = 40, name: str = "tiny_alpaca") -> Path:
    """An alpaca dataset of *rows* rows (arithmetic and colours) registered in out/dataset_info.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    records = []
    for i in range(rows):
        if i % 2 == 0:
            a, b = rng.randint(0, 29), rng.randint(0, 29)
            records.append({"instruction": f"what is {a} + {b}?", "input": "", "output": f"{a} + {b} = {a + b}"})
        else:
            animal, color = rng.choice(["cat", "dog"]), rng.choice(["red", "green", "blue"])
            records.append({"instruction": "give a short answer", "input": f"what color is the {animal}?",
                            "output": f"the color is {color}."})
    return _register(out, name, records, {})


# A mapping the tiny model memorises on the CPU in a few dozen steps (lfgen demo, the verdict's end-to-end tests): each
# key word (in the tokenizer's vocabulary) has one answer word, asked in a few phrasings. The answer is a sentence
# ("the word is red."): its fixed words are learned first, so a run that learned anything answers, where a bare word
# loses at first to the end-of-turn token every answer shares (greedy decoding then answers nothing).
MAPPING = {"cat": "red", "dog": "green", "sun": "blue", "moon": "one", "water": "two", "fire": "three",
           "python": "four", "code": "five", "model": "yes", "data": "no"}
_ASKED = [f"{opener}{question}" for opener in ("", "please ", "hello, ", "short answer: ", "a question: ")
          for question in ("what is the word for {}?", "give the word for {}", "{}: what is its word?",
                           "the word for {} is?")]  # 20 phrasings: 200 distinct rows


def make_mapping_dataset(out: str | Path, rows: int = 200, name: str = "tiny_mapping") -> Path:
    """An alpaca dataset of *rows* distinct rows (up to 200) of MAPPING, every key in every phrasing in turn: one
    right answer per prompt, so a run that learns it is told from one that does not by its eval loss and answers."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(MAPPING)
    records = [{"instruction": _ASKED[(i // len(keys)) % len(_ASKED)].format(keys[i % len(keys)]), "input": "",
                "output": f"the word is {MAPPING[keys[i % len(keys)]]}."} for i in range(min(rows, len(keys) * len(_ASKED)))]
    return _register(out, name, records, {})


def _register(out: Path, name: str, records: list[dict], entry: dict) -> Path:
    """Write *records* to out/<name>.json and register them in out/dataset_info.json with *entry*."""
    (out / f"{name}.json").write_text(json.dumps(records, indent=1), encoding="utf-8")
    info_path = out / "dataset_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[name] = {"file_name": f"{name}.json", **entry}
    info_path.write_text(json.dumps(info, indent=1), encoding="utf-8")
    return out


def _sums(rows: int) -> list[tuple[int, int]]:
    rng = random.Random(0)
    return [(rng.randint(0, 29), rng.randint(0, 29)) for _ in range(rows)]


def make_pairwise_dataset(out: str | Path, rows: int = 40, name: str = "tiny_dpo") -> Path:
    """A pairwise (ranking) dataset for dpo, orpo, simpo and rm: the right sum chosen, a wrong one rejected."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = [{"instruction": f"what is {a} + {b}?", "input": "", "chosen": f"{a} + {b} = {a + b}",
                "rejected": f"{a} + {b} = {a + b + 1 + (a % 3)}"} for a, b in _sums(rows)]
    return _register(out, name, records, {"ranking": True, "columns": {
        "prompt": "instruction", "query": "input", "chosen": "chosen", "rejected": "rejected"}})


def make_kto_dataset(out: str | Path, rows: int = 40, name: str = "tiny_kto") -> Path:
    """A KTO dataset: every other answer right (kto_tag true) or wrong (false)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = [{"instruction": f"what is {a} + {b}?", "input": "", "output": f"{a} + {b} = {a + b + i % 2}",
                "label": i % 2 == 0} for i, (a, b) in enumerate(_sums(rows))]
    return _register(out, name, records, {"columns": {
        "prompt": "instruction", "query": "input", "response": "output", "kto_tag": "label"}})


def make_text_dataset(out: str | Path, rows: int = 200, name: str = "tiny_text") -> Path:
    """A plain-text dataset for pre-training (columns: {prompt: text}, as LlamaFactory's c4_demo)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    records = [{"text": " ".join(rng.choices(_WORDS, k=rng.randint(8, 30))) + "."} for _ in range(rows)]
    return _register(out, name, records, {"columns": {"prompt": "text"}})


# What a quick CPU run of the tiny model sets on top of a preset: short, logged every step, a small batch and split.
# The CPU itself (no bf16, no FlashAttention, use_cpu) is R-HW-CPU's: `--gpu cpu`, or no GPU here and none named.
CPU_SETTINGS = {
    "max_steps": 10, "logging_steps": 1, "save_steps": 5, "eval_steps": 5, "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 2, "learning_rate": 1.0e-3, "val_size": 0.1, "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0, "overwrite_cache": True, "cutoff_len": 128,
}
