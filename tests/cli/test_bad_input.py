"""The fault battery: bad input to every command ends in one clean line, the right exit code, no
traceback and nothing written.

Each case runs in a fresh temporary directory (the current directory of the command), prepared by the
setups it names. The whole tree is snapshot (path, kind, size, mtime, mode) before and after: a bad
input must leave it exactly as it was. No process may start: ``launch.spawn`` and ``run_captured``
fail the test if bad input reaches them.

Exit 1 is an lfgen error (``Error: <field>: <what is wrong>; <fix>``), exit 2 a click usage error
(its own ``Error: ...`` line after the usage). ``validate`` reports problems as ``FILE: problem``
lines and exits 1. ``says`` is a fragment the message must contain: the field or the value at fault.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import bad_data_folder

LONG = "x" * 300  # one path component longer than any file system allows (NAME_MAX is 255)
INJECT = "run_name=x\ntrust_remote_code: true #"

# --- what the cases start from ------------------------------------------------------------------------


def _preset(runner, cli, *args: str) -> None:
    result = runner.invoke(cli, ["preset", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _config(tmp, runner, cli):
    _preset(runner, cli, "a800", "-o", "c.yaml")


def _afile(tmp, runner, cli):
    (tmp / "afile").write_text("not a folder\n", encoding="utf-8")


def _readonly(tmp, runner, cli):
    (tmp / "ro").mkdir()
    (tmp / "ro" / "keep.txt").write_text("kept\n", encoding="utf-8")
    os.chmod(tmp / "ro", 0o555)


def _fifo(tmp, runner, cli):
    os.mkfifo(tmp / "f.yaml")


def _bomb(tmp, runner, cli):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (tmp / "bomb.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _odd_files(tmp, runner, cli):
    (tmp / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    (tmp / "empty.yaml").write_text("", encoding="utf-8")
    (tmp / "broken.yaml").write_text("key: [unclosed\n", encoding="utf-8")
    (tmp / "dup.yaml").write_text("lora_rank: 8\nlora_rank: 16\n", encoding="utf-8")
    (tmp / "binary.yaml").write_bytes(b"\xff\xfe\x00bad")
    (tmp / "intkey.yaml").write_text("1: a\n", encoding="utf-8")
    (tmp / "tag.yaml").write_text("x: !!python/object/apply:os.system ['echo hi']\n", encoding="utf-8")


def _datasets(kind: str) -> Callable:
    """data/dataset_info.json with one entry ``my`` shaped as *kind*."""
    entries = {"str": {"my": "my.json"}, "list": {"my": ["my.json"]}, "int_file": {"my": {"file_name": 5}},
               "bad_samples": {"my": {"num_samples": "many"}}, "top_list": ["my"], "junk": None,
               "null_entry": {"my": None}}

    def setup(tmp, runner, cli):
        (tmp / "data").mkdir()
        (tmp / "data" / "my.json").write_text(json.dumps([{"instruction": "a", "output": "b"}]), encoding="utf-8")
        text = "{not json" if kind == "junk" else json.dumps(entries[kind])
        (tmp / "data" / "dataset_info.json").write_text(text, encoding="utf-8")
    return setup


def _good_data(tmp, runner, cli):
    from tests.conftest import make_dataset_dir

    make_dataset_dir(tmp / "data", rows=50, name="my")


def _experiment(tmp, runner, cli):
    result = runner.invoke(cli, ["sweep", "rank", "16", "32", "--name", "x"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _garbage_state(tmp, runner, cli):
    _experiment(tmp, runner, cli)
    (tmp / "experiments" / "x" / "state.sqlite").write_bytes(b"this is not sqlite" * 40)


def _garbage_manifest(tmp, runner, cli):
    _experiment(tmp, runner, cli)
    (tmp / "experiments" / "x" / "experiment.yaml").write_text("runs: [unclosed\n", encoding="utf-8")


def _run_dir(tmp, runner, cli):
    from tests.results.lf_files import Curves, decay, write_run

    run = write_run(tmp / "outputs" / "r1", Curves(loss=decay(10), eval={10: 1.0}))
    (run / "adapter_model.safetensors").write_bytes(b"\0" * 16)  # a finished run, for export, chat, sample
    (tmp / "p.txt").write_text("hello\n", encoding="utf-8")
    (tmp / "empty.txt").write_text("", encoding="utf-8")


def _empty_outputs(tmp, runner, cli):
    (tmp / "outputs").mkdir()


def _report(tmp, runner, cli):
    (tmp / "report.html").write_text("<p>an older report</p>\n", encoding="utf-8")
    (tmp / "t.csv").write_text("old\n", encoding="utf-8")


def _space(tmp, runner, cli):
    (tmp / "space.yaml").write_text("lora_rank: {choices: [16]}\n", encoding="utf-8")
    (tmp / "nospace.yaml").write_text("- 1\n", encoding="utf-8")
    (tmp / "badrange.yaml").write_text("learning_rate: {low: 1, high: 0}\n", encoding="utf-8")


def _model_dir(tmp, runner, cli):
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text("[1, 2]", encoding="utf-8")
    (tmp / "m2").mkdir()


def _bad_calibration(shape: str) -> Callable:
    values = {"list": [1, 2], "str_factor": {"factors": {"a800|qwen2": {"factor": "big"}}},
              "junk": None, "factors_list": {"factors": [1]}}

    def setup(tmp, runner, cli):
        text = "{junk" if shape == "junk" else json.dumps(values[shape])
        (tmp / "calibration.json").write_text(text, encoding="utf-8")
    return setup


def _long_config(tmp, runner, cli):
    """Configs whose model, dataset_dir or output_dir is one over-long component."""
    from lfgen.yamlio import loads

    _preset(runner, cli, "a800", "-o", "c.yaml")
    base = (tmp / "c.yaml").read_text(encoding="utf-8")
    data = loads(base)
    for name, key, value in (("long_model", "model_name_or_path", f"./{LONG}"),
                             ("long_data", "dataset_dir", LONG)):
        text = base.replace(f"{key}: {data.get(key)}", f"{key}: {value}") if key in data else \
            base + f"{key}: {value}\n"
        (tmp / f"{name}.yaml").write_text(text, encoding="utf-8")


def _prices(text: str):
    def setup(tmp, runner, cli):
        (tmp / "prices.yaml").write_text(text, encoding="utf-8")
    return setup


def _bad_info(kind: str) -> Callable:
    """data/dataset_info.json itself malformed: nested too deep, a 5000-digit number, a FIFO, not UTF-8."""
    def setup(tmp, runner, cli):
        (tmp / "data").mkdir()
        info = tmp / "data" / "dataset_info.json"
        if kind == "fifo":
            os.mkfifo(info)
        elif kind == "deep":
            info.write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
        elif kind == "digits":
            info.write_text('{"my": {"file_name": "my.json", "num_samples": ' + "9" * 5000 + "}}", encoding="utf-8")
        else:
            info.write_bytes('{"caf\u00e9": {"file_name": "my.json"}}'.encode("latin-1"))
    return setup


def _deep_model(tmp, runner, cli):
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text('{"model_type": ' + "[" * 200_000 + "]" * 200_000 + "}", encoding="utf-8")


def _eval_in_the_way(kind: str) -> Callable:
    """A finished run whose eval/ (where lfgen eval writes) is a file, a link to a folder, or a dangling link."""
    def setup(tmp, runner, cli):
        _run_dir(tmp, runner, cli)
        target = tmp / "outputs" / "r1" / "eval"
        if kind == "file":
            target.write_text("someone's notes\n", encoding="utf-8")
        elif kind == "link":
            (tmp / "elsewhere").mkdir()
            (tmp / "elsewhere" / "keep.txt").write_text("kept\n", encoding="utf-8")
            os.symlink(tmp / "elsewhere", target)
        else:
            os.symlink(tmp / "nowhere", target)
    return setup


def _dangling_links(tmp, runner, cli):
    for name in ("link.html", "link.csv", "link.yaml"):
        os.symlink(tmp / "gone" / name, tmp / name)


def _bad_spaces(tmp, runner, cli):
    for name, text in (("nan_low", "learning_rate: {low: .nan, high: 1.0e-3}"),
                       ("nan_high", "lora_dropout: {low: 0.0, high: .nan}"),
                       ("nan_int", "lora_rank: {low: .nan, high: 16, type: int}"),
                       ("inf_high", "learning_rate: {low: 1.0e-4, high: .inf}"),
                       ("no_int", "lora_rank: {low: 8.2, high: 8.7, type: int}")):
        (tmp / f"{name}.yaml").write_text(text + "\n", encoding="utf-8")


SETUPS: dict[str, Callable] = {
    "config": _config, "afile": _afile, "ro": _readonly, "fifo": _fifo, "bomb": _bomb, "odd": _odd_files,
    "experiment": _experiment, "garbage_state": _garbage_state, "garbage_manifest": _garbage_manifest,
    "run_dir": _run_dir, "empty_outputs": _empty_outputs, "old_files": _report, "space": _space,
    "model_dir": _model_dir, "long_config": _long_config, "good_data": _good_data,
    **{f"data_{kind}": _datasets(kind) for kind in
       ("str", "list", "int_file", "bad_samples", "top_list", "junk", "null_entry")},
    **{f"cal_{shape}": _bad_calibration(shape) for shape in ("list", "str_factor", "junk", "factors_list")},
    "prices_unknown_gpu": _prices("H10O: 2.0\n"), "prices_negative": _prices("H100: -3\n"),
    "prices_list": _prices("- H100\n"),
    "bad_data": bad_data_folder, "deep_model": _deep_model, "dangling": _dangling_links, "bad_spaces": _bad_spaces,
    **{f"info_{kind}": _bad_info(kind) for kind in ("fifo", "deep", "digits", "latin1")},
    **{f"eval_{kind}": _eval_in_the_way(kind) for kind in ("file", "link", "dangling")},
}


@dataclass(frozen=True)
class Bad:
    args: tuple[str, ...]
    code: int
    says: str
    setup: tuple[str, ...]
    problems: bool = False  # validate: FILE: problem lines instead of one Error: line


def bad(case_id: str, args: str | list[str], code: int = 1, says: str = "", *setup: str, problems: bool = False,
        marks=()):
    argv = args.split() if isinstance(args, str) else args
    return pytest.param(Bad(tuple(argv), code, says, setup, problems), id=case_id, marks=marks)


CASES = [
    # presets
    bad("presets-unknown-option", "presets --bogus", 2, "--bogus"),
    bad("presets-extra-argument", "presets extra", 2, "extra"),
    # preset: names and numbers
    bad("preset-unknown-name", "preset nope", 1, "nope"),
    bad("preset-missing-name", "preset", 2, "NAME"),
    bad("preset-rank-zero", "preset a800 --rank 0", 1, "--rank"),
    # preset: run shapes (issue 19)
    bad("preset-stage-unknown", "preset auto --stage sftt", 2, "--stage"),
    bad("preset-method-unknown", "preset auto --method qlora", 2, "--method"),
    bad("preset-lora-preset-full", "preset a800 --method full", 1, "auto --method full"),
    bad("preset-rank-with-full", "preset auto --method full --rank 8", 1, "--rank"),
    bad("preset-target-with-freeze", "preset auto --method freeze --target qv", 1, "--target"),
    bad("preset-stage-conflicts-set", "preset auto --stage orpo --set pref_loss=sigmoid", 1, "pref_loss"),
    bad("preset-stage-ppo-set", "preset auto --set stage=ppo", 1, "PPO"),
    bad("preset-quant-with-full", "preset auto --method full --quant 4", 1, "--quant"),
    bad("preset-rank-negative", "preset a800 --rank -4", 1, "--rank"),
    bad("preset-rank-not-int", "preset a800 --rank abc", 2, "--rank"),
    bad("preset-alpha-zero", "preset a800 --alpha 0", 1, "--alpha"),
    bad("preset-dropout-one", "preset a800 --dropout 1.0", 1, "--dropout"),
    bad("preset-dropout-negative", "preset a800 --dropout -0.1", 1, "--dropout"),
    bad("preset-dropout-nan", "preset a800 --dropout nan", 1, "--dropout"),
    bad("preset-lr-inf", "preset a800 --lr inf", 1, "--lr"),
    bad("preset-lr-minus-inf", "preset a800 --lr -inf", 1, "--lr"),
    bad("preset-lr-nan", "preset a800 --lr nan", 1, "--lr"),
    bad("preset-lr-zero", "preset a800 --lr 0", 1, "--lr"),
    bad("preset-lr-negative", "preset a800 --lr -1e-4", 1, "--lr"),
    bad("preset-lr-word", "preset a800 --lr fast", 2, "--lr"),
    bad("preset-epochs-inf", "preset a800 --epochs inf", 1, "--epochs"),
    bad("preset-epochs-nan", "preset a800 --epochs nan", 1, "--epochs"),
    bad("preset-epochs-zero", "preset a800 --epochs 0", 1, "--epochs"),
    bad("preset-gpu-mem-inf", "preset a800 --gpu-mem inf", 1, "--gpu-mem"),
    bad("preset-gpu-mem-nan", "preset a800 --gpu-mem nan", 1, "--gpu-mem"),
    bad("preset-gpu-mem-zero", "preset a800 --gpu-mem 0", 1, "--gpu-mem"),
    bad("preset-gpu-unknown", "preset a800 --gpu Z9000", 1, "Z9000"),
    bad("preset-num-gpus-zero", "preset a800 --num-gpus 0", 1, "--num-gpus"),
    bad("preset-cutoff-zero", "preset a800 --cutoff-len 0", 1, "--cutoff-len"),
    bad("preset-samples-negative", "preset a800 --samples -5", 1, "--samples"),
    bad("preset-precision-unknown", "preset a800 --precision fp8", 2, "--precision"),
    bad("preset-set-no-equals", "preset a800 --set seed", 1, "seed"),
    bad("preset-set-empty-key", "preset a800 --set =7", 1, "--set"),
    bad("preset-set-bad-type", "preset a800 --set lora_rank=abc", 1, "lora_rank"),
    # preset: data and model
    bad("preset-dataset-unregistered", "preset a800 --dataset nope --dataset-dir data", 1, "nope", "good_data"),
    bad("preset-dataset-wrong-kind", "preset auto --stage dpo --dataset my --dataset-dir data -o c.yaml", 1,
        "stage dpo trains on pairwise rows", "good_data"),
    bad("data-stage-unknown", "data my --dataset-dir data --stage nope", 2, "--stage", "good_data"),
    bad("preset-dataset-dir-missing", "preset a800 --dataset my --dataset-dir nodata", 1, "nodata"),
    bad("preset-dataset-dir-too-long", f"preset a800 --dataset my --dataset-dir {LONG}", 1, "dataset_dir"),
    bad("preset-dataset-info-junk", "preset a800 --dataset my --dataset-dir data", 1, "dataset_info.json", "data_junk"),
    bad("preset-dataset-info-list", "preset a800 --dataset my --dataset-dir data", 1, "dataset_info.json",
        "data_top_list"),
    bad("preset-dataset-entry-str", "preset a800 --dataset my --dataset-dir data", 1, "my", "data_str"),
    bad("preset-dataset-entry-list", "preset a800 --dataset my --dataset-dir data", 1, "my", "data_list"),
    bad("preset-dataset-entry-null", "preset a800 --dataset my --dataset-dir data", 1, "my", "data_null_entry"),
    bad("preset-dataset-file-name-int", "preset a800 --dataset my --dataset-dir data", 1, "file_name",
        "data_int_file"),
    bad("preset-dataset-num-samples-word", "preset a800 --dataset my --dataset-dir data", 1, "num_samples",
        "data_bad_samples"),
    bad("preset-model-too-long", f"preset a800 --model ./{LONG}", 1, "--model"),
    bad("preset-model-too-long-gpu", f"preset a800 --model ./{LONG} --gpu a800", 1, "--model"),
    bad("preset-model-config-list", "preset a800 --model ./m", 1, "config.json", "model_dir"),
    bad("preset-model-no-config", "preset a800 --model ./m2", 1, "m2", "model_dir"),
    # preset: output paths
    bad("preset-output-exists", "preset a800 -o c.yaml", 1, "--force", "config"),
    bad("preset-output-is-dir", "preset a800 -o data", 2, "data", "good_data"),
    bad("preset-output-readonly", "preset a800 -o ro/c.yaml", 1, "ro/c.yaml", "ro"),
    bad("preset-output-under-file", "preset a800 -o afile/c.yaml", 1, "afile", "afile"),
    bad("preset-output-too-long", f"preset a800 -o {LONG}.yaml", 1, "-o"),
    bad("preset-output-deep-too-long", f"preset a800 -o a/{LONG}/c.yaml", 1, "-o"),
    # explain
    bad("explain-missing-file", "explain missing.yaml", 1, "missing.yaml"),
    bad("explain-directory", "explain data", 1, "data", "good_data"),
    bad("explain-fifo", "explain f.yaml", 1, "f.yaml", "fifo"),
    bad("explain-alias-bomb", "explain bomb.yaml", 1, "alias", "bomb"),
    bad("explain-list", "explain list.yaml", 1, "mapping", "odd"),
    bad("explain-empty", "explain empty.yaml", 1, "empty", "odd"),
    bad("explain-broken-yaml", "explain broken.yaml", 1, "YAML", "odd"),
    bad("explain-duplicate-key", "explain dup.yaml", 1, "lora_rank", "odd"),
    bad("explain-binary", "explain binary.yaml", 1, "UTF-8", "odd"),
    bad("explain-int-key", "explain intkey.yaml", 1, "not a string", "odd"),
    bad("explain-python-tag", "explain tag.yaml", 1, "tag.yaml", "odd"),
    bad("explain-too-long", f"explain {LONG}.yaml", 1, "too long"),
    bad("explain-under-file", "explain afile/c.yaml", 1, "afile", "afile"),
    bad("explain-preset-bad-rank", "explain a800 --rank 0", 1, "--rank"),
    bad("explain-preset-lr-inf", "explain a800 --lr inf", 1, "--lr"),
    bad("explain-price-negative", "explain a800 --gpu H100 --price -2", 1, "--price"),
    bad("explain-price-zero", "explain a800 --gpu H100 --price 0", 1, "--price"),
    bad("explain-price-absurd", "explain a800 --gpu H100 --price 4000", 1, "--price"),
    bad("explain-price-nan", "explain a800 --price nan", 1, "--price"),
    bad("explain-price-not-a-number", "explain a800 --price cheap", 2, "--price"),
    bad("explain-price-file-unknown-gpu", ["explain", "a800", "--gpu", "H100", "--model", "Qwen/Qwen2.5-7B-Instruct",
                                           "--samples", "1000"], 1, "H10O", "prices_unknown_gpu"),
    bad("explain-price-file-negative", ["explain", "a800", "--gpu", "H100", "--model", "Qwen/Qwen2.5-7B-Instruct",
                                        "--samples", "1000"], 1, "H100", "prices_negative"),
    bad("explain-price-file-list", ["explain", "a800", "--gpu", "H100", "--model", "Qwen/Qwen2.5-7B-Instruct",
                                    "--samples", "1000"], 1, "prices.yaml", "prices_list"),
    # validate
    bad("validate-no-files", "validate", 2, "FILE"),
    bad("validate-missing", "validate --no-parser missing.yaml", 1, "missing.yaml", problems=True),
    bad("validate-fifo", "validate --no-parser f.yaml", 1, "f.yaml", "fifo", problems=True),
    bad("validate-alias-bomb", "validate --no-parser bomb.yaml", 1, "alias", "bomb", problems=True),
    bad("validate-list", "validate --no-parser list.yaml", 1, "mapping", "odd", problems=True),
    bad("validate-broken", "validate --no-parser broken.yaml", 1, "YAML", "odd", problems=True),
    bad("validate-duplicate", "validate --no-parser dup.yaml", 1, "lora_rank", "odd", problems=True),
    bad("validate-python-tag", "validate --no-parser tag.yaml", 1, "tag.yaml", "odd", problems=True),
    bad("validate-too-long", f"validate --no-parser {LONG}.yaml", 1, "too long", problems=True),
    bad("validate-long-model", "validate --no-parser long_model.yaml", 1, "model_name_or_path", "long_config",
        problems=True),
    bad("validate-long-dataset-dir", "validate --no-parser long_data.yaml", 1, "dataset_dir", "long_config",
        problems=True),
    bad("validate-dataset-dir-file", "validate --no-parser --dataset-dir afile c.yaml", 2, "afile", "afile", "config"),
    bad("validate-dataset-entry-str", "validate --no-parser --dataset-dir data c.yaml", 1, "dataset", "config",
        "data_str", problems=True),
    # sweep: axes and values
    bad("sweep-unknown-axis", "sweep nope", 1, "nope"),
    bad("sweep-missing-axis", "sweep", 2, "AXIS"),
    bad("sweep-rank-word", "sweep rank abc", 1, "abc"),
    bad("sweep-rank-zero", "sweep rank 0 16", 1, "0"),
    bad("sweep-beta-on-sft", "sweep beta", 1, "pref_beta"),
    bad("sweep-rank-on-full", "sweep rank --base auto --method full", 1, "lora_rank"),
    bad("sweep-beta-word", "sweep beta high --base auto --stage dpo", 1, "high"),
    bad("sweep-lr-inf", "sweep lr inf", 1, "inf"),
    bad("sweep-lr-nan", "sweep lr nan", 1, "nan"),
    bad("sweep-epochs-inf", "sweep epochs inf", 1, "inf"),
    bad("sweep-dropout-above-one", "sweep dropout 1.5", 1, "1.5"),
    bad("sweep-grid-empty", "sweep grid", 1, "grid"),
    bad("sweep-grid-duplicate-key", "sweep grid lora_rank=16 lora_rank=32", 1, "lora_rank"),
    bad("sweep-grid-no-equals", "sweep grid lora_rank", 1, "lora_rank"),
    bad("sweep-grid-no-values", "sweep grid lora_rank=", 1, "lora_rank"),
    bad("sweep-grid-bad-type", "sweep grid lora_rank=abc,16", 1, "abc"),
    bad("sweep-random-no-space", "sweep random 5", 1, "--space"),
    bad("sweep-random-word", "sweep random abc --space space.yaml", 1, "abc", "space"),
    bad("sweep-random-zero", "sweep random 0 --space space.yaml", 1, "0", "space"),
    bad("sweep-random-space-missing", "sweep random 3 --space absent.yaml", 1, "absent.yaml"),
    bad("sweep-random-space-fifo", "sweep random 3 --space f.yaml", 1, "f.yaml", "fifo"),
    bad("sweep-random-space-bomb", "sweep random 3 --space bomb.yaml", 1, "alias", "bomb"),
    bad("sweep-random-space-list", "sweep random 3 --space nospace.yaml", 1, "nospace.yaml", "space"),
    bad("sweep-random-space-range", "sweep random 3 --space badrange.yaml", 1, "learning_rate", "space"),
    bad("sweep-seed-word", "sweep rank --seed abc", 2, "--seed"),
    bad("sweep-export-unknown", "sweep rank --export mlflow", 2, "--export"),
    bad("sweep-base-unknown", "sweep rank --base nope", 1, "nope"),
    bad("sweep-base-missing-file", "sweep rank --base absent.yaml", 1, "absent.yaml"),
    bad("sweep-base-fifo", "sweep rank --base f.yaml", 1, "f.yaml", "fifo"),
    bad("sweep-base-lr-inf", "sweep rank --lr inf", 1, "--lr"),
    # sweep: names and folders
    bad("sweep-name-exists", "sweep rank 16 32 --name x", 1, "--force", "experiment"),
    bad("sweep-name-slash", "sweep rank --name a/b", 1, "--name"),
    bad("sweep-name-dots", "sweep rank --name ..", 1, "--name"),
    bad("sweep-name-newline", ["sweep", "rank", "--name", "a\nb"], 1, "--name"),
    bad("sweep-name-too-long", f"sweep rank --name {LONG}", 1, "too long"),
    bad("sweep-experiments-dir-readonly", "sweep rank --experiments-dir ro", 1, "ro", "ro"),
    bad("sweep-experiments-dir-file", "sweep rank --experiments-dir afile", 1, "afile", "afile"),
    bad("sweep-experiments-dir-under-file", "sweep rank --experiments-dir afile/e", 1, "afile", "afile"),
    bad("sweep-experiments-dir-too-long", f"sweep rank --experiments-dir {LONG}", 1, "too long"),
    bad("sweep-outputs-dir-file", "sweep rank --outputs-dir afile", 1, "afile", "afile"),
    bad("sweep-outputs-dir-under-file", "sweep rank --outputs-dir afile/o", 1, "afile", "afile"),
    bad("sweep-outputs-dir-too-long", f"sweep rank --outputs-dir {LONG}", 1, "--outputs-dir"),
    bad("sweep-from-missing", "sweep alpha --from absent", 1, "absent"),
    bad("sweep-from-no-runs", "sweep alpha --from outputs", 1, "outputs", "empty_outputs"),
    bad("sweep-from-unknown-metric", "sweep alpha --from outputs --metric predict_bleu-9", 1, "predict_bleu-9",
        "run_dir"),
    # run
    bad("run-missing", "run absent", 1, "absent"),
    bad("run-missing-file", "run absent.yaml", 1, "absent.yaml"),
    bad("run-fifo", "run f.yaml", 1, "f.yaml", "fifo"),
    bad("run-alias-bomb", "run bomb.yaml", 1, "alias", "bomb"),
    bad("run-list", "run list.yaml", 1, "mapping", "odd"),
    bad("run-too-long", f"run {LONG}.yaml", 1, "too long"),
    bad("run-gpus-word", "run x --gpus abc", 1, "--gpus", "experiment"),
    bad("run-gpus-per-run-zero", "run x --gpus-per-run 0", 1, "--gpus-per-run", "experiment"),
    bad("run-gpus-per-run-word", "run x --gpus-per-run two", 2, "--gpus-per-run", "experiment"),
    bad("run-oom-retries-negative", "run x --max-oom-retries -1", 2, "--max-oom-retries", "experiment"),
    bad("run-rerun-unknown", "run x --rerun nope --dry-run", 1, "nope", "experiment"),
    bad("run-garbage-state", "run x --dry-run", 1, "state.sqlite", "garbage_state"),
    bad("run-garbage-manifest", "run x --dry-run", 1, "experiment.yaml", "garbage_manifest"),
    bad("run-experiments-dir-file", "run x --experiments-dir afile", 1, "x", "afile"),
    # status
    bad("status-missing", "status absent", 1, "absent"),
    bad("status-too-long", f"status {LONG}.yaml", 1, "too long"),
    bad("status-garbage-state", "status x", 1, "state.sqlite", "garbage_state"),
    bad("status-garbage-manifest", "status x", 1, "experiment.yaml", "garbage_manifest"),
    bad("status-experiments-dir-file", "status --experiments-dir afile", 1, "afile", "afile"),
    bad("status-unknown-option", "status --watch", 2, "--watch"),
    # export, chat, sample
    bad("export-missing", "export absent", 1, "absent"),
    bad("export-file", "export afile", 1, "afile", "afile"),
    bad("export-no-run", "export outputs", 1, "outputs", "empty_outputs"),
    bad("export-dir-is-file", "export outputs/r1 --export-dir afile", 2, "afile", "run_dir", "afile"),
    bad("export-dir-too-long", f"export outputs/r1 --export-dir {LONG}", 1, "--export-dir", "run_dir"),
    bad("export-dir-under-file", "export outputs/r1 --export-dir afile/m", 1, "afile", "run_dir", "afile"),
    bad("chat-missing", "chat absent", 1, "absent"),
    bad("chat-file", "chat afile", 1, "afile", "afile"),
    bad("chat-no-run", "chat outputs", 1, "outputs", "empty_outputs"),
    bad("sample-no-prompts", "sample outputs/r1", 2, "--prompts", "run_dir"),
    bad("sample-prompts-missing", "sample outputs/r1 --prompts absent.txt", 1, "absent.txt", "run_dir"),
    bad("sample-prompts-fifo", "sample outputs/r1 --prompts f.yaml", 1, "f.yaml", "run_dir", "fifo"),
    bad("sample-prompts-dir", "sample outputs/r1 --prompts outputs", 2, "outputs", "run_dir"),
    bad("sample-prompts-empty", "sample outputs/r1 --prompts empty.txt", 1, "empty.txt", "run_dir"),
    bad("sample-max-new-tokens-zero", "sample outputs/r1 --prompts p.txt --max-new-tokens 0", 1, "--max-new-tokens",
        "run_dir"),
    bad("sample-output-readonly", "sample outputs/r1 --prompts p.txt -o ro/s.jsonl", 1, "ro/s.jsonl", "run_dir", "ro"),
    bad("sample-output-under-file", "sample outputs/r1 --prompts p.txt -o afile/s.jsonl", 1, "afile", "run_dir",
        "afile"),
    bad("sample-max-new-tokens-huge", "sample outputs/r1 --prompts p.txt --max-new-tokens 99999999999999999999", 1,
        "--max-new-tokens", "run_dir"),
    bad("sample-missing-run", "sample absent --prompts p.txt", 1, "absent", "run_dir"),
    # calibrate
    bad("calibrate-missing", "calibrate absent", 1, "absent"),
    bad("calibrate-no-gpu", "calibrate outputs/r1", 1, "--gpu", "run_dir"),
    bad("calibrate-no-vram", "calibrate outputs/r1 --gpu a800", 1, "vram", "run_dir"),
    bad("calibrate-gpu-unknown", "calibrate outputs/r1 --gpu Z9000", 1, "Z9000", "run_dir"),
    bad("calibrate-file", "calibrate afile", 1, "afile", "afile"),
    bad("calibrate-no-dirs", "calibrate", 2, "RUN_DIR"),
    # compare
    bad("compare-missing", "compare absent", 1, "absent"),
    bad("compare-file", "compare afile", 1, "afile", "afile"),
    bad("compare-filter-not-number", ["compare", "outputs", "--filter", "lora_rank > abc"], 2, "abc", "run_dir"),
    bad("compare-filter-garbage", ["compare", "outputs", "--filter", "lora_rank"], 2, "--filter", "run_dir"),
    bad("compare-filter-unknown-column", ["compare", "outputs", "--filter", "nosuch = 1"], 2, "nosuch", "run_dir"),
    bad("compare-sort-unknown", "compare outputs --sort nosuch", 1, "nosuch", "run_dir"),
    bad("compare-format-unknown", "compare outputs --format xls", 2, "--format", "run_dir"),
    bad("compare-output-exists", "compare outputs --format csv -o t.csv", 1, "--force", "run_dir", "old_files"),
    bad("compare-output-readonly", "compare outputs --format csv -o ro/t.csv", 1, "ro/t.csv", "run_dir", "ro"),
    bad("compare-output-under-file", "compare outputs --format csv -o afile/t.csv", 1, "afile", "run_dir", "afile"),
    bad("compare-output-too-long", f"compare outputs --format csv -o {LONG}.csv", 1, "-o", "run_dir"),
    bad("compare-output-is-dir", "compare outputs -o outputs", 2, "outputs", "run_dir"),
    bad("compare-plot-under-file", "compare outputs --plot afile/p.png", 1, "afile", "run_dir", "afile"),
    # report
    bad("report-missing", "report absent", 1, "absent"),
    bad("report-exists", "report outputs", 1, "--force", "run_dir", "old_files"),
    bad("report-readonly", "report outputs -o ro/r.html", 1, "ro/r.html", "run_dir", "ro"),
    bad("report-under-file", "report outputs -o afile/r.html", 1, "afile", "run_dir", "afile"),
    bad("report-too-long", f"report outputs -o {LONG}.html", 1, "-o", "run_dir"),
    bad("report-filter-not-number", ["report", "outputs", "--filter", "lora_rank > abc"], 2, "abc", "run_dir"),
    bad("report-sort-unknown", "report outputs --sort nosuch", 1, "nosuch", "run_dir"),
    # tensorboard
    bad("tensorboard-missing", "tensorboard absent", 1, "absent"),
    bad("tensorboard-no-runs", "tensorboard outputs", 1, "outputs", "empty_outputs"),
    bad("tensorboard-port-word", "tensorboard outputs --port http", 2, "--port", "run_dir"),
    bad("tensorboard-port-range", "tensorboard outputs --port 70000", 2, "--port", "run_dir"),
    # demo
    bad("demo-directory-is-file", "demo afile", 2, "afile", "afile"),
    bad("demo-under-file", "demo afile/d", 1, "afile", "afile"),
    bad("demo-readonly", "demo ro/d", 1, "ro/d", "ro"),
    bad("demo-too-long", f"demo {LONG}", 1, "too long"),
    # data: what the datasets hold (issue 24)
    *[bad(f"data-{name.replace('_', '-')}", f"data {name} --dataset-dir data", 1, says, "bad_data") for name, says in (
        ("empty", "no rows"), ("blank", "no rows"), ("header", "no rows"), ("folder", "no rows"),
        ("strings", "strings.json"), ("number", "number.json"), ("uneven", "uneven.json"),
        ("deep", "nested"), ("deep_line", "nested"), ("digits", "digits"), ("badline", "line 2"),
        ("garbage", "garbage.parquet"), ("empty_parquet", "empty.parquet"), ("latin1", "UTF-8"),
        ("latin1_csv", "UTF-8"), ("fifo", "fifo.json"), ("zero", "zero.json"), ("long_name", "too long"),
        ("columns_str", "columns"), ("columns_list", "columns"), ("columns_int", "columns"), ("tags_list", "tags"),
        ("tags_nested", "tags"), ("formatting_int", "formatting"))],
    bad("data-eval-empty", "data ok --eval empty --dataset-dir data", 1, "no rows", "bad_data"),
    bad("data-entry-str", "data my --dataset-dir data", 1, "my", "data_str"),
    bad("data-entry-list", "data my --dataset-dir data", 1, "my", "data_list"),
    bad("data-entry-null", "data my --dataset-dir data", 1, "my", "data_null_entry"),
    *[bad(f"data-info-{kind}", "data my --dataset-dir data", 1, "dataset_info.json", f"info_{kind}")
      for kind in ("fifo", "deep", "digits", "latin1")],
    bad("data-model-missing", "data my --dataset-dir data --model ./nosuch", 1, "./nosuch", "good_data"),
    bad("data-model-file", "data my --dataset-dir data --model afile", 1, "afile", "good_data", "afile"),
    bad("data-model-too-long", f"data my --dataset-dir data --model ./{LONG}", 1, "--model", "good_data"),
    bad("data-cutoff-zero", "data my --dataset-dir data --cutoff-len 0", 1, "--cutoff-len", "good_data"),
    # preset and the other readers of the same files
    *[bad(f"preset-dataset-{name.replace('_', '-')}", f"preset a800 --dataset {name} --dataset-dir data", 1, says,
          "bad_data") for name, says in (("columns_str", "columns"), ("columns_list", "columns"),
                                         ("tags_list", "tags"), ("formatting_int", "formatting"))],
    *[bad(f"preset-dataset-info-{kind}", "preset a800 --dataset my --dataset-dir data", 1, "dataset_info.json",
          f"info_{kind}") for kind in ("fifo", "deep", "digits", "latin1")],
    bad("preset-model-config-deep", "preset a800 --model ./m", 1, "config.json", "deep_model"),
    bad("validate-dataset-info-deep", "validate --no-parser --dataset-dir data c.yaml", 1, "dataset_info.json",
        "config", "info_deep", problems=True),
    # eval
    bad("eval-temperature-nan", "eval outputs/r1 --temperature nan", 1, "--temperature", "run_dir"),
    bad("eval-temperature-inf", "eval outputs/r1 --temperature inf", 1, "--temperature", "run_dir"),
    bad("eval-temperature-minus-inf", "eval outputs/r1 --temperature -inf", 1, "--temperature", "run_dir"),
    bad("eval-temperature-negative", "eval outputs/r1 --temperature -1", 1, "--temperature", "run_dir"),
    bad("eval-max-new-tokens-huge", "eval outputs/r1 --max-new-tokens 99999999999999999999", 1, "--max-new-tokens",
        "run_dir"),
    bad("eval-max-new-tokens-zero", "eval outputs/r1 --max-new-tokens 0", 1, "--max-new-tokens", "run_dir"),
    bad("eval-dir-is-file", "eval outputs/r1", 1, "eval", "eval_file"),
    bad("eval-dir-is-link", "eval outputs/r1", 1, "eval", "eval_link"),
    bad("eval-dir-dangling-link", "eval outputs/r1 --force", 1, "eval", "eval_dangling"),
    bad("eval-too-long", f"eval {LONG}", 1, "too long"),
    bad("eval-experiments-dir-too-long", f"eval x --experiments-dir {LONG}", 1, "--experiments-dir"),
    bad("eval-missing", "eval absent", 1, "absent"),
    bad("eval-ray-host-label-too-long", f"eval x --ray {'h' * 64}.example:6379", 1, "--ray", "experiment"),
    # tune (the checks before a study is set up)
    bad("tune-experiments-dir-too-long", f"tune t --base a800 --experiments-dir {LONG}", 1, "--experiments-dir"),
    bad("tune-outputs-dir-too-long", f"tune t --base a800 --outputs-dir {LONG}", 1, "--outputs-dir"),
    bad("tune-experiments-dir-file", "tune t --base a800 --experiments-dir afile", 1, "afile", "afile"),
    *[bad(f"tune-space-{name.replace('_', '-')}", f"tune t --base a800 --space {name}.yaml", 1, says, "bad_spaces")
      for name, says in (("nan_low", "nan (not a number)"), ("nan_high", "nan (not a number)"),
                         ("nan_int", "nan (not a number)"), ("inf_high", "finite numbers"),
                         ("no_int", "no whole number"))],
    *[bad(f"sweep-random-space-{name.replace('_', '-')}", f"sweep random 3 --space {name}.yaml", 1, says,
          "bad_spaces") for name, says in (("nan_low", "nan (not a number)"), ("nan_int", "nan (not a number)"),
                                           ("no_int", "no whole number"))],
    bad("tune-max-new-tokens-huge", "tune t --base a800 --metric predict_rouge-l --max-new-tokens 99999999999999999999",
        1, "--max-new-tokens"),
    bad("tune-ray-host-label-too-long", f"tune t --base a800 --ray {'h' * 64}.example:6379", 1, "--ray"),
    # status and run: over-long folders
    bad("status-experiments-dir-too-long", f"status --experiments-dir {LONG}", 1, "--experiments-dir"),
    bad("status-name-experiments-dir-too-long", f"status x --experiments-dir {LONG}", 1, "--experiments-dir"),
    bad("run-experiments-dir-too-long", f"run x --experiments-dir {LONG}", 1, "--experiments-dir"),
    bad("run-ray-host-label-too-long", f"run x --ray {'h' * 64}.example:6379", 1, "--ray", "experiment"),
    bad("run-ray-empty-label", "run x --ray a..b:6379", 1, "--ray", "experiment"),
    # -o onto a dangling symlink: the link is the user's, replaced only with --force
    bad("report-output-dangling-link", "report outputs -o link.html", 1, "--force", "run_dir", "dangling"),
    bad("compare-output-dangling-link", "compare outputs --format csv -o link.csv", 1, "--force", "run_dir",
        "dangling"),
    bad("preset-output-dangling-link", "preset a800 -o link.yaml", 1, "--force", "dangling"),
    # preset --gpu --model with a broken calibration file
    *[bad(f"preset-calibration-{shape}", "preset a800 --gpu a800 --model Qwen/Qwen2-7B-Instruct", 1,
          "calibration.json", f"cal_{shape}") for shape in ("list", "str_factor", "junk", "factors_list")],
]


# --- the harness --------------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, tuple]:
    """Every entry under *root*: kind, size, mtime and mode, so any write shows."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            seen[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return seen


def _refuse_processes(monkeypatch):
    from lfgen import launch

    def refuse(*args, **kwargs):
        raise AssertionError(f"bad input reached a process start: {args[:1]}")

    monkeypatch.setattr(launch, "spawn", refuse)
    monkeypatch.setattr(launch, "run_captured", refuse)


def _emulate_readonly(monkeypatch, folder: Path) -> None:
    """As root, a 0555 folder is still writable: make writes into it fail as they do for any other user."""
    import builtins
    import errno
    import io

    folder = str(folder.resolve())

    def inside(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(folder + os.sep)
        except TypeError:
            return False

    def deny(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and (inside(path) or os.path.abspath(os.fsdecode(path)) == folder):
            return False
        return real_access(path, mode, *args, **kwargs)

    real_open, real_mkdir, real_rename, real_replace, real_io_open = os.open, os.mkdir, os.rename, os.replace, io.open

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            deny(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            deny(path)
        return real_mkdir(path, *args, **kwargs)

    def rename(src, dst, *args, **kwargs):
        if inside(dst) or inside(src):
            deny(dst)
        return real_rename(src, dst, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if inside(dst) or inside(src):
            deny(dst)
        return real_replace(src, dst, *args, **kwargs)

    def io_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
            deny(file)
        return real_io_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr(builtins, "open", io_open)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LFGEN_CALIBRATION", str(work / "calibration.json"))
    monkeypatch.setenv("LFGEN_PRICES", str(work / "prices.yaml"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield work
    ro = work / "ro"
    if ro.exists():
        os.chmod(ro, 0o755)


class Hang(Exception):
    """Raised by the deadline; not an OSError (TimeoutError is one), so no `except OSError` swallows it."""


@contextlib.contextmanager
def _deadline(seconds: int):
    def expire(signum, frame):
        signal.alarm(1)  # again, should the code under test catch this one
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_cleanly(case: Bad, runner, cli, workdir, monkeypatch):
    for name in case.setup:
        SETUPS[name](workdir, runner, cli)
    _refuse_processes(monkeypatch)
    if "ro" in case.setup and os.access(workdir / "ro", os.W_OK):
        _emulate_readonly(monkeypatch, workdir / "ro")
    before = _tree(workdir)

    with _deadline(60):  # a hang (a FIFO read, an endless sampling loop) is a failure, not a stuck suite
        result = runner.invoke(cli, list(case.args))

    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"uncaught {type(result.exception).__name__}: {result.exception}\n{output}"
    assert "Traceback" not in output, output
    assert result.exit_code == case.code, output
    assert case.says in output, f"the message should name {case.says!r}:\n{output}"
    errors = _error_lines(output)
    if case.problems:
        assert not errors, output
        assert any(line.startswith(case.args[-1]) and case.says in line for line in output.splitlines()), output
    else:
        assert len(errors) == 1, output
        assert case.says in errors[0] or case.code == 2, errors
    if case.code == 2:
        assert "Usage:" in output, output
    assert _tree(workdir) == before, "bad input changed the files"


def test_battery_size():
    """The issue asks for at least 100 bad inputs across every command."""
    commands = {case.values[0].args[0] for case in CASES}
    assert len(CASES) >= 100
    assert commands >= {"presets", "preset", "explain", "validate", "sweep", "run", "status", "export", "chat",
                        "sample", "calibrate", "compare", "report", "tensorboard", "demo", "data", "eval", "tune"}
