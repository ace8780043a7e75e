"""One synthetic curve per pathology of RULES.md §6, written as LlamaFactory writes it, read back and
classified; a healthy run gets no finding but "healthy"."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import yaml

from lfgen.results import diagnosis as dx
from lfgen.runs.reader import read_run
from lfgen.results.table import collect
from tests.results.lf_files import Curves, decay, write_run

N = 300  # logged points; logging_steps 10, so 3,000 optimizer steps
STEPS = range(200, 10 * N + 1, 200)
RULE_IDS = set(yaml.safe_load((Path(__file__).parents[2] / "presets" / "rules.yaml").read_text())["rules"])


def healthy_eval(step: int) -> float:
    return 0.9 + 1.6 * math.exp(-step / 1000)


def grad(seed: int = 1) -> list[float]:
    rnd = random.Random(seed)
    return [0.5 + rnd.uniform(-0.1, 0.1) for _ in range(N)]


def nan_after(k: int) -> list[float]:
    loss = decay(N)
    return loss[:k] + [math.nan] * (N - k)


def zero_loss_run() -> Curves:
    loss = decay(N)[:150] + [0.0] * (N - 150)
    norms = grad()[:150] + [math.nan] * (N - 150)
    return Curves(loss, {s: healthy_eval(s) for s in STEPS}, grad_norm=norms, logging_steps=10)


def oscillating() -> list[float]:
    return [v * (1 + (0.2 if i % 2 else -0.2)) if i >= N // 2 else v for i, v in enumerate(decay(N))]


def spiky_grad() -> list[float]:
    norms = grad()
    norms[170] = 80.0
    return norms


def overfit_eval(step: int) -> float:
    return 1.0 + ((step - 1200) / 2000) ** 2


CASES = {
    "healthy": (Curves(decay(N, noise=0.05), {s: healthy_eval(s) for s in STEPS}, grad(), logging_steps=10),
                dx.HEALTHY, None),
    "nan": (Curves(nan_after(200), {s: healthy_eval(s) for s in STEPS}, grad(), logging_steps=10),
            dx.NAN, "R-DIAG-NAN"),
    "zero-loss": (zero_loss_run(), dx.NAN, "R-DIAG-NAN"),
    "not-learning": (Curves(decay(N, start=2.5, end=2.5), {s: 2.5 for s in STEPS}, grad(), logging_steps=10),
                     dx.STALL, "R-DIAG-STALL"),
    "oscillating": (Curves(oscillating(), {}, grad(), logging_steps=10), dx.OSC, "R-DIAG-OSC"),
    "rising": (Curves([1.2 + 0.8 * i / N for i in range(N)], {}, grad(), logging_steps=10), dx.OSC, "R-DIAG-OSC"),
    "overfitting": (Curves(decay(N, end=0.3, tau=0.1), {s: overfit_eval(s) for s in STEPS}, grad(), logging_steps=10),
                    dx.OVERFIT, "R-DIAG-OVERFIT"),
    "gradient": (Curves(decay(N), {s: healthy_eval(s) for s in STEPS}, spiky_grad(), logging_steps=10),
                 dx.GRAD, "R-DIAG-GRAD"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_pathology_is_classified(case: str, tmp_path: Path) -> None:
    curves, kind, rule = CASES[case]
    findings = dx.diagnose_run(read_run(write_run(tmp_path / case, curves)))
    assert [f.kind for f in findings] == [kind]
    assert findings[0].rule == rule
    if rule:
        assert rule in RULE_IDS
        assert findings[0].message and findings[0].advice


def test_messages_carry_the_numbers(tmp_path: Path) -> None:
    def only(case: str) -> dx.Finding:
        return dx.diagnose_run(read_run(write_run(tmp_path / case, CASES[case][0])))[0]

    assert "first at step 2010" in only("nan").message
    zero = only("zero-loss")
    assert "grad_norm NaN from step 1510" in zero.message and "#2916" in zero.message
    assert "bf16" in zero.advice and "max_grad_norm: 1.0" in zero.advice and "flash_attn: disabled" in zero.advice
    assert "fell only" in only("not-learning").message
    assert "now 2.0e-4" in only("not-learning").advice
    assert "jumps by" in only("oscillating").message
    assert "rose" in only("rising").message
    overfit = only("overfitting")
    assert "after its best at step 1200" in overfit.message and "training loss kept falling" in overfit.message
    assert "lora_dropout, now 0.1" in overfit.advice
    assert "up to 80 at step 1710" in only("gradient").message


def test_overfitting_shows_the_best_step_in_the_table_text(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "o", CASES["overfitting"][0]))
    assert dx.summary_text(dx.diagnose_run(run), run) == "overfitting (best eval @ step 1200)"
    assert run.best_eval == (1.0, 1200.0)


@pytest.mark.parametrize("noise", [0.0, 0.02, 0.05, 0.1, 0.15])
def test_noisy_but_falling_loss_is_healthy(noise: float, tmp_path: Path) -> None:
    curves = Curves(decay(N, noise=noise, seed=3), {s: healthy_eval(s) for s in STEPS}, grad(), logging_steps=10)
    assert [f.kind for f in dx.diagnose_run(read_run(write_run(tmp_path / "r", curves)))] == [dx.HEALTHY]


@pytest.mark.parametrize("n", [100, 150, 400, 1000, 4000])  # read in full, and sampled down to MAX_POINTS
def test_zigzag_is_oscillating_at_any_length(n: int, tmp_path: Path) -> None:
    loss = [v * (1 + (0.08 if i % 2 else -0.08)) if i >= n // 3 else v for i, v in enumerate(decay(n))]
    findings = dx.diagnose_run(read_run(write_run(tmp_path / "r", Curves(loss, logging_steps=10))))
    assert [f.kind for f in findings] == [dx.OSC]


def test_fp16_nan_advice_names_the_switch(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "r", CASES["nan"][0], config={"fp16": True, "bf16": False}))
    assert dx.diagnose_run(run)[0].advice.startswith("fp16 is on: switch to bf16")


def test_slow_run_among_its_peers(tmp_path: Path) -> None:
    for name, seconds in (("a", 0.5), ("b", 0.55), ("c", 2.0)):
        curves = Curves(decay(N), {s: healthy_eval(s) for s in STEPS}, grad(), logging_steps=10,
                        seconds_per_step=seconds)
        write_run(tmp_path / "exp" / name, curves)
    comparison = collect(tmp_path)
    kinds = {name: [f.kind for f in findings] for name, findings in zip(comparison.names, comparison.findings)}
    assert kinds == {"exp/a": ["healthy"], "exp/b": ["healthy"], "exp/c": ["slow"]}
    slow = comparison.findings[2][0]
    assert slow.rule == "R-DIAG-SLOW" and "dataloader_num_workers" in slow.advice


def test_too_little_data_is_not_called_healthy(tmp_path: Path) -> None:
    run = read_run(write_run(tmp_path / "r", Curves(decay(5))))
    assert dx.diagnose_run(run) == []
    assert dx.summary_text([], run) == "too short to judge"


# --- best run and next step (R-EXP-ORDER) -----------------------------------------------------------


def sweep(root: Path, configs: dict[str, dict], quality: dict[str, float], evals: bool = True) -> Path:
    """One run per config; *quality* lowers the run's losses (larger = better)."""
    for name, config in configs.items():
        q = quality[name]
        curves = Curves(decay(N, end=1.2 - q), {s: healthy_eval(s) - q for s in STEPS} if evals else {}, grad(),
                        logging_steps=10)
        write_run(root / name, curves, config=config)
    return root


def summary(root: Path) -> dx.ExperimentSummary:
    (only,) = collect(root).summaries.values()
    return only


def test_rank_sweep_suggests_alpha_at_the_best_rank(tmp_path: Path) -> None:
    configs = {f"r{r}": {"lora_rank": r, "lora_alpha": 2 * r} for r in (16, 32, 64)}
    s = summary(sweep(tmp_path / "rank-sweep", configs, {"r16": 0.0, "r32": 0.1, "r64": 0.2}))
    assert (s.best_run, s.best_by, s.varied) == ("r64", "final_eval_loss", ("lora_rank", "lora_alpha"))
    folder = tmp_path / "rank-sweep"  # lfgen sweep --from picks the best run of the folder itself
    assert s.next_step == f"rank 64 best → sweep alpha at rank 64 (64, 128, 256): `lfgen sweep alpha --from {folder}`"


def test_next_step_paths_are_relative_to_the_working_directory(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    configs = {f"r{r}": {"lora_rank": r, "lora_alpha": 2 * r} for r in (16, 32)}
    sweep(tmp_path / "outputs" / "rank-sweep", configs, {"r16": 0.1, "r32": 0.0})
    monkeypatch.chdir(tmp_path)
    s = summary(Path("outputs/rank-sweep"))
    assert s.next_step.endswith("`lfgen sweep alpha --from outputs/rank-sweep`")


@pytest.mark.parametrize(("key", "values", "expected"), [
    ("lora_alpha", (32, 64, 128), "alpha 128 best (rank 64) → sweep dropout (0.0, 0.1, 0.2): `lfgen sweep dropout"),
    ("lora_dropout", (0.0, 0.1, 0.2), "dropout 0.2 best → sweep target (qv, attn, all): `lfgen sweep target"),
    ("lora_target", ("q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj", "all"),
     "target all best → combine the best value of each stage in one config and validate it on held-out data"),
    ("learning_rate", (1e-4, 2e-4, 5e-4), "lr 5.0e-4 best → sweep rank (16, 32, 64, 128): `lfgen sweep rank --from"),
    ("num_train_epochs", (1.0, 3.0, 5.0), "epochs 5.0 best → sweep rank (16, 32, 64, 128): `lfgen sweep rank --from"),
])
def test_next_step_follows_seed_000s_order(key: str, values: tuple, expected: str, tmp_path: Path) -> None:
    configs = {f"v{i}": {key: value} for i, value in enumerate(values)}
    s = summary(sweep(tmp_path / "exp", configs, {"v0": 0.0, "v1": 0.1, "v2": 0.2}))
    assert s.best_run == "v2" and s.varied == (key,)
    assert s.next_step.startswith(expected)


def test_single_run_starts_with_a_rank_sweep(tmp_path: Path) -> None:
    s = summary(sweep(tmp_path / "one", {"r": {}}, {"r": 0.0}))
    config = tmp_path / "one" / "r" / "lfgen_run.yaml"  # --from a lone run's folder could pick another run
    assert s.next_step == f"one configuration only → sweep rank (16, 32, 64, 128): `lfgen sweep rank --base {config}`"


def test_several_parameters_changed_is_flagged(tmp_path: Path) -> None:
    configs = {"a": {"lora_rank": 16, "lora_dropout": 0.0}, "b": {"lora_rank": 32, "lora_dropout": 0.1}}
    s = summary(sweep(tmp_path / "mixed", configs, {"a": 0.0, "b": 0.1}))
    assert s.next_step.startswith("rank 32 best → sweep alpha at rank 32")
    assert "lora_dropout changed as well" in s.next_step and "R-EXP-ORDER" in s.next_step


def test_best_by_train_loss_without_eval_and_nan_runs_excluded(tmp_path: Path) -> None:
    configs = {f"r{r}": {"lora_rank": r} for r in (8, 16, 32)}
    root = sweep(tmp_path / "exp", configs, {"r8": 0.0, "r16": 0.1, "r32": 0.2}, evals=False)
    loss = [0.01] * N  # the lowest loss of all, but it ended in NaN
    loss[-1] = math.nan
    write_run(root / "r64", Curves(loss, grad_norm=grad(), logging_steps=10), config={"lora_rank": 64})
    s = summary(root)
    assert (s.best_run, s.best_by) == ("r32", "final_train_loss")
    assert s.next_step.endswith(f"`lfgen sweep alpha --from {root} --metric train_loss`")


def test_no_loss_yet_is_not_called_nan(tmp_path: Path) -> None:
    """Runs queued (only their config) or started but before their first loss line: nothing was NaN."""
    root = tmp_path / "exp"
    for name in ("queued-a", "queued-b"):
        (root / name).mkdir(parents=True)
        (root / name / "lfgen_run.yaml").write_text("lora_rank: 8\n")
    (root / "starting").mkdir()
    (root / "starting" / "trainer_log.jsonl").write_text(
        '{"current_steps": 5, "total_steps": 100, "epoch": 0.1, "percentage": 5.0, '
        '"elapsed_time": "0:00:10", "remaining_time": "0:03:10"}\n')
    s = summary(root)
    assert s.best_run is None and "NaN" not in s.next_step
    assert s.next_step.startswith("no run has logged a loss yet")


def test_only_nan_runs_say_nan(tmp_path: Path) -> None:
    loss = decay(N)
    loss[-1] = math.nan
    write_run(tmp_path / "exp" / "bad", Curves(loss, grad_norm=grad(), logging_steps=10))
    (tmp_path / "exp" / "queued").mkdir()
    (tmp_path / "exp" / "queued" / "lfgen_run.yaml").write_text("lora_rank: 8\n")
    s = summary(tmp_path / "exp")
    assert s.best_run is None
    assert s.next_step == "no run has a loss without NaN yet; fix the findings above first"


def test_ties_keep_the_first_run_as_ranking_best_does(tmp_path: Path) -> None:
    configs = {f"r{r}": {"lora_rank": r, "lora_alpha": 2 * r} for r in (16, 32)}
    s = summary(sweep(tmp_path / "tie", configs, {"r16": 0.1, "r32": 0.1}))
    assert s.best_run == "r16" and s.best_by == "final_eval_loss"
