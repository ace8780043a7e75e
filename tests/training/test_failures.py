"""lfgen.training.failures: the cause of a failed run, read from LlamaFactory's and transformers' own messages.

The log texts are copied from real runs (LlamaFactory 0.9.5, transformers 5.6 and 4.x, huggingface_hub,
torch); the ones marked "real" were produced here by `llamafactory-cli train` on the CPU.
"""

from __future__ import annotations

import pytest

from lfgen.training.failures import classify_failure, explain

# real: model_name_or_path: ./nope, HF_HUB_OFFLINE=1, transformers 5.6
MISSING_LOCAL = """\
[INFO|hub.py:364] 2026-12-01 09:27:21,282 >> Offline mode: forcing local_files_only=True
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/transformers/utils/hub.py", line 419, in cached_files
    hf_hub_download(
huggingface_hub.errors.HFValidationError: Repo id must use alphanumeric chars, '-', '_' or '.'. The name cannot start or end with '-' or '.' and the maximum length is 96: './nope'.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
OSError: Repo id must use alphanumeric chars, '-', '_' or '.'. The name cannot start or end with '-' or '.' and the maximum length is 96: './nope'.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/llamafactory/model/loader.py", line 93, in load_tokenizer
    raise OSError("Failed to load tokenizer.") from e
OSError: Failed to load tokenizer."""

# transformers 4.x, online: a Hub id that does not exist
NOT_AN_IDENTIFIER = """\
Traceback (most recent call last):
  File "/venv/lib/python3.10/site-packages/transformers/utils/hub.py", line 470, in cached_files
    raise EnvironmentError(
OSError: someorg/nope is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'
If this is a private repository, make sure to pass a token having permission to this repo either by logging in with `huggingface-cli login` or by passing `token=<your_token>`"""

REPO_NOT_FOUND = """\
huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. (Request ID: Root=1-674d2f0a-5c1e0b2d6f0e4a1b3c2d1e0f;e5b1c2d3)

Repository Not Found for url: https://huggingface.co/api/models/someorg/nope/revision/main.
Please make sure you specified the correct `repo_id` and `repo_type`.
If you are trying to access a private or gated repo, make sure you are authenticated."""

NO_CONFIG_JSON = ("OSError: ./emptydir does not appear to have a file named config.json. Checkout "
                  "'https://huggingface.co/./emptydir/tree/None' for available files.")

# real: model_name_or_path: someorg/nonexistent-model-xyz, HF_HUB_OFFLINE=1
OFFLINE = """\
huggingface_hub.errors.LocalEntryNotFoundError: Cannot find the requested files in the disk cache and outgoing traffic has been disabled. To enable hf.co look-ups and downloads online, set 'local_files_only' to False.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.
Check your internet connection or see how to run the library in offline mode at 'https://huggingface.co/docs/transformers/installation#offline-mode'.

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
OSError: Failed to load tokenizer."""

NO_NETWORK = """\
requests.exceptions.ConnectionError: (MaxRetryError("HTTPSConnectionPool(host='huggingface.co', port=443): Max retries exceeded with url: /Qwen/Qwen2.5-7B-Instruct/resolve/main/config.json (Caused by NameResolutionError("<urllib3.connection.HTTPSConnection object at 0x7f3a2c1b5f10>: Failed to resolve 'huggingface.co' ([Errno -3] Temporary failure in name resolution)"))"), '(Request ID: 1c2f9a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b)')"""

HTTPX_DOWN = "httpx.ConnectError: [Errno 101] Network is unreachable"

CUDA_OOM = """\
  File "/venv/lib/python3.11/site-packages/torch/nn/modules/linear.py", line 125, in forward
    return F.linear(input, self.weight, self.bias)
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total capacity of 79.15 GiB of which 1.23 GiB is free. Including non-PyTorch memory, this process has 77.91 GiB memory in use. Of the allocated memory 74.02 GiB is allocated by PyTorch, and 2.39 GiB is reserved by PyTorch but unallocated."""

ENOSPC = """\
  File "/venv/lib/python3.11/site-packages/transformers/trainer.py", line 3398, in _save_optimizer_and_scheduler
    torch.save(self.optimizer.state_dict(), os.path.join(output_dir, OPTIMIZER_NAME))
RuntimeError: [enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file data/12: file write failed"""

SAFETENSORS_FULL = ('safetensors_rust.SafetensorError: Error while serializing: IoError(Os { code: 28, kind: '
                    'StorageFull, message: "No space left on device" })')

ERRNO_28 = "OSError: [Errno 28] No space left on device: 'outputs/x/rank-16/checkpoint-500/optimizer.pt'"

UNKNOWN_KEY = """\
  File "/venv/lib/python3.11/site-packages/llamafactory/hparams/parser.py", line 77, in _parse_args
    raise ValueError(f"Some keys are not used by the HfArgumentParser: {sorted(unknown_keys)}")
ValueError: Some keys are not used by the HfArgumentParser: ['lora_rnk']"""

NCCL_OFFLINE_RUN = """\
[INFO|hub.py:364] 2026-12-01 09:27:21,282 >> Offline mode: forcing local_files_only=True
{'loss': 1.234, 'grad_norm': 0.51, 'learning_rate': 0.0002, 'epoch': 0.1}
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/torch/distributed/c10d_logger.py", line 81, in wrapper
torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:317, unhandled system error"""


@pytest.mark.parametrize("text,reason,shown", [
    (MISSING_LOCAL, "model", "'./nope'"),
    (NOT_AN_IDENTIFIER, "model", "is not a local folder and is not a valid model identifier"),
    (REPO_NOT_FOUND, "model", "RepositoryNotFoundError: 404"),
    (NO_CONFIG_JSON, "model", "does not appear to have a file named config.json"),
    (OFFLINE, "hub", "We couldn't connect to 'https://huggingface.co'"),
    (NO_NETWORK, "hub", "Max retries exceeded"),
    (HTTPX_DOWN, "hub", "Network is unreachable"),
    (CUDA_OOM, "oom", "CUDA out of memory. Tried to allocate 1.96 GiB"),
    (ENOSPC, "disk", "PytorchStreamWriter failed writing file"),
    (SAFETENSORS_FULL, "disk", "No space left on device"),
    (ERRNO_28, "disk", "[Errno 28]"),
    (UNKNOWN_KEY, "config", "Some keys are not used by the HfArgumentParser: ['lora_rnk']"),
    (NCCL_OFFLINE_RUN, "crashed", "NCCL error"),  # huggingface_hub's offline INFO line is not a hub failure
], ids=["missing-local", "not-an-identifier", "repo-not-found", "no-config-json", "offline", "no-network",
        "httpx-down", "cuda-oom", "enospc-torch-save", "enospc-safetensors", "errno-28", "unknown-key", "nccl"])
def test_classify_failure_on_real_error_texts(text, reason, shown):
    found, evidence = classify_failure(text.splitlines())
    assert (found, shown in evidence) == (reason, True), evidence


def test_chained_tracebacks_show_each_message_once():
    _, evidence = classify_failure(MISSING_LOCAL.splitlines())
    assert evidence.splitlines() == [
        "OSError: Repo id must use alphanumeric chars, '-', '_' or '.'. The name cannot start or end with '-' or '.' "
        "and the maximum length is 96: './nope'.", "OSError: Failed to load tokenizer."]


def _explain(text, config, root, **kwargs):
    reason, evidence = classify_failure(text.splitlines())
    return explain(reason, evidence, config=config, config_file="experiments/x/runs/rank-16.yaml",
                   log="outputs/x/rank-16/lfgen_train.log", root=root, exit_code=1, **kwargs)


def test_a_missing_local_model_is_named_with_the_file_to_fix_and_the_log(tmp_path):
    reason, message = _explain(MISSING_LOCAL, {"model_name_or_path": "./nope"}, tmp_path)
    first, *rest = message.splitlines()
    assert reason == "model"
    assert first == ("the model path does not exist (model_name_or_path: ./nope); fix it in "
                     "experiments/x/runs/rank-16.yaml; log: outputs/x/rank-16/lfgen_train.log")
    assert rest[0].startswith("exit 1: OSError: Repo id must")


def test_a_missing_local_model_wins_over_what_the_log_blames(tmp_path):
    """Offline, an older transformers blames the Hub for ./nope: the missing folder is the cause."""
    reason, message = _explain(OFFLINE, {"model_name_or_path": "./nope"}, tmp_path)
    assert reason == "model" and message.startswith("the model path does not exist (model_name_or_path: ./nope)")


def test_a_folder_without_config_json(tmp_path):
    (tmp_path / "emptydir").mkdir()
    reason, message = _explain(NO_CONFIG_JSON, {"model_name_or_path": "./emptydir"}, tmp_path)
    assert reason == "model" and message.startswith("the model folder has no config.json")


def test_a_hub_id_that_does_not_exist(tmp_path):
    _, message = _explain(REPO_NOT_FOUND, {"model_name_or_path": "someorg/nope"}, tmp_path)
    assert message.startswith("the model is neither a local folder nor a model on the Hugging Face Hub "
                              "(model_name_or_path: someorg/nope); fix it in experiments/x/runs/rank-16.yaml")


def test_an_unreachable_hub_says_offline_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reason, message = _explain(OFFLINE, {"model_name_or_path": "Qwen/Qwen2.5-7B"}, tmp_path)
    assert reason == "hub"
    assert message.startswith("the Hugging Face Hub could not be reached (HF_HUB_OFFLINE is set) to fetch "
                              "Qwen/Qwen2.5-7B; connect, or download it")
    assert "log: outputs/x/rank-16/lfgen_train.log" in message.splitlines()[0]


@pytest.mark.parametrize("text,start", [
    (ENOSPC, "the disk is full (No space left on device) under outputs/x/rank-16; free space"),
    (UNKNOWN_KEY, "LlamaFactory refused the config; fix it in experiments/x/runs/rank-16.yaml; log: "),
    (NCCL_OFFLINE_RUN, "it crashed (exit 1) with no cause lfgen recognises; see the log: "
                       "outputs/x/rank-16/lfgen_train.log\n"),
])
def test_other_causes(tmp_path, text, start):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    _, message = _explain(text, {"model_name_or_path": "./m", "output_dir": "outputs/x/rank-16"}, tmp_path)
    assert message.startswith(start), message
