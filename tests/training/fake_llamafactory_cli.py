"""A stand-in for `llamafactory-cli train`, ONLY for faults a CPU run cannot produce (OOM, NaN) and for
timing-controlled crashes and kills. The real end-to-end test (tests/test_e2e.py) trains for real.

It writes what LlamaFactory writes (trainer_log.jsonl lines, the transformers console dict, adapter
and results files) and behaves per FAKE_LF_MODES, a JSON map from a run-name substring to a mode:
  ok | slow:SECONDS | oom-above:MICRO | oom | nan-at:STEP | zero-gradnan-at:STEP | crash | config
  | torchrun:N (N workers in sessions of their own, as torch.distributed.elastic starts them: no GPU here)
  | fill-disk (writes into output_dir until ENOSPC, then fails as LlamaFactory does on a full disk)
  | evals:SECONDS[:LEVEL] (max_steps steps, default 8, of SECONDS each, an eval_loss line after every step: LEVEL +
    1/step, or without LEVEL |log10(learning_rate) + 3| + 1/step; for lfgen tune's pruner; a SIGTERM (a pruned
    trial) records its end, so a benchmark sees when each slot was given back)
A predict config (do_predict: lfgen eval) writes generated_predictions.jsonl and predict_results.json
instead (slow:SECONDS: it takes 200 x SECONDS first, for Ctrl-C tests; predict-crash: it fails, training does not).
Every call is appended to FAKE_LF_RECORD (argv, env, config, start/end) as one JSON line.
"""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


def main() -> int:
    command, config_path = sys.argv[1], sys.argv[2]
    config = yaml.safe_load(Path(config_path).read_text())
    out = Path(config["output_dir"])
    modes = json.loads(os.environ.get("FAKE_LF_MODES", "{}"))
    mode = next((m for key, m in modes.items() if key in str(out)), "ok")
    record = {"argv": sys.argv, "mode": mode, "start": time.time(), "pid": os.getpid(),
              "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "FORCE_TORCHRUN", "RECORD_VRAM")},
              "micro": config.get("per_device_train_batch_size"), "accum": config.get("gradient_accumulation_steps"),
              "predict": bool(config.get("do_predict"))}
    name, _, arg = mode.partition(":")
    if name == "torchrun":  # torchrun: workers in new sessions (torch's subprocess_handler), then it waits
        workers = [subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"],
                                    start_new_session=True) for _ in range(int(arg))]
        record["workers"] = [w.pid for w in workers]
    log = Path(os.environ["FAKE_LF_RECORD"]).open("a")
    log.write(json.dumps(record) + "\n")
    log.flush()
    print(f"[fake llamafactory-cli] {command} {config_path} mode={mode}", flush=True)
    if name == "torchrun":
        while True:
            time.sleep(0.1)
    if config.get("do_predict"):
        return predict(out, name, arg, record, log)
    if name == "evals":
        return evals(out, config, arg, record, log)
    if name == "fill-disk":
        for path, block in ((out / "checkpoint-1.bin", 4096), (out / "lfgen_train.log", 1)):  # the log's last page too
            try:
                with path.open("ab", buffering=0) as filler:
                    while True:
                        filler.write(b"\0" * block if block > 1 else b".")
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        print('Traceback (most recent call last):\n  File "/x/torch/serialization.py", line 1, in save\n'
              "RuntimeError: [enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
              "data/0: file write failed\nOSError: [Errno 28] No space left on device", file=sys.stderr, flush=True)
        return 1
    if name == "config":
        print('Traceback (most recent call last):\n  File "/x/llamafactory/hparams/parser.py", line 99, in '
              "_parse_args\nValueError: Some keys are not used by the HfArgumentParser: ['lora_rnk']", flush=True)
        return 1
    if name == "oom" or (name == "oom-above" and config["per_device_train_batch_size"] > int(arg)):
        time.sleep(0.2)
        print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total "
              "capacity)", file=sys.stderr, flush=True)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    total = 200 if name in ("nan-at", "zero-gradnan-at", "slow") else 5
    delay = float(arg) if name == "slow" else 0.3 if name in ("nan-at", "zero-gradnan-at") else 0.01
    with (out / "trainer_log.jsonl").open("a") as jsonl:
        for step in range(1, total + 1):
            loss = 2.0 / step
            if name == "nan-at" and step >= int(arg):
                loss = math.nan
            grad = 0.5
            if name == "zero-gradnan-at" and step >= int(arg):
                loss, grad = 0.0, math.nan
            print(f"{{'loss': {loss}, 'grad_norm': {grad}, 'learning_rate': 0.0002, 'epoch': {step / total}}}",
                  flush=True)
            jsonl.write(json.dumps({"current_steps": step, "total_steps": total, "loss": loss, "lr": 2e-4,
                                    "epoch": step / total, "percentage": 100 * step / total,
                                    "elapsed_time": "0:00:01", "remaining_time": "0:00:01"}) + "\n")
            jsonl.flush()
            if name == "crash" and step == 3:
                print("Traceback (most recent call last):\n  File \"/x/transformers/trainer.py\", line 1\n"
                      "RuntimeError: NCCL error: unhandled system error", file=sys.stderr, flush=True)
                return 1
            time.sleep(delay)
    (out / "adapter_model.safetensors").write_bytes(b"fake")
    (out / "all_results.json").write_text(json.dumps({"eval_loss": 1.0, "train_loss": 1.1}))
    record["end"] = time.time()
    log.write(json.dumps({**record, "finished": True}) + "\n")
    return 0


def evals(out: Path, config: dict, arg: str, record: dict, log) -> int:
    """Training that evaluates at every step: what lfgen tune's pruner reads (the eval loss per step)."""
    def stopped(_signum, _frame):
        log.write(json.dumps({**record, "end": time.time(), "finished": True, "stopped": True}) + "\n")
        log.flush()
        os._exit(143)

    signal.signal(signal.SIGTERM, stopped)
    delay, _, level = arg.partition(":")
    total = int(config.get("max_steps") or 8)
    base = float(level) if level else abs(math.log10(float(config.get("learning_rate", 1e-3))) + 3)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "trainer_log.jsonl").open("a") as jsonl:
        for step in range(1, total + 1):
            time.sleep(float(delay))
            common = {"current_steps": step, "total_steps": total, "percentage": 100 * step / total,
                      "elapsed_time": "0:00:01", "remaining_time": "0:00:01"}
            jsonl.write(json.dumps({**common, "loss": base + 1.5 / step, "lr": 2e-4}) + "\n")
            jsonl.write(json.dumps({**common, "eval_loss": base + 1.0 / step}) + "\n")
            jsonl.flush()
    (out / "adapter_model.safetensors").write_bytes(b"fake")
    (out / "all_results.json").write_text(json.dumps({"eval_loss": base + 1.0 / total, "train_loss": base}))
    log.write(json.dumps({**record, "end": time.time(), "finished": True}) + "\n")
    return 0


def predict(out: Path, name: str, arg: str, record: dict, log) -> int:
    """What LlamaFactory's do_predict writes: one answer per held-out row and the ROUGE/BLEU results."""
    if name == "slow":
        time.sleep(200 * float(arg))
    if name == "predict-crash":
        print("Traceback (most recent call last):\n  File \"/x/transformers/generation/utils.py\", line 1\n"
              "RuntimeError: probability tensor contains either inf, nan or element < 0", file=sys.stderr, flush=True)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": "what is 1 + 1?", "predict": "2", "label": "2"},
            {"prompt": "what is 2 + 1?", "predict": "4", "label": "3"}]
    (out / "generated_predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (out / "predict_results.json").write_text(json.dumps({"predict_bleu-4": 50.0, "predict_rouge-l": 50.0,
                                                          "predict_runtime": 0.1}))
    log.write(json.dumps({**record, "end": time.time(), "finished": True}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
