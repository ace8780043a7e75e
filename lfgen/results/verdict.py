"""An experiment's verdict: its best run when the evidence names one, and why not when it does not.

In order, each step able to end the verdict (an abstention says what to do first):

1. unfinished runs (running, interrupted, pending): the verdict is provisional; the leader so far is said, never
   named best, and no next sweep is given before they finish;
2. the runs' health (lfgen.results.diagnosis): a run that did not learn (NaN, a loss that did not fall or rose,
   empty or looping answers) is never ranked; when no finished run learned, "no run learned: <the advice> first";
3. the ranking with its noise (lfgen.runs.ranking.with_noise, lfgen.runs.uncertainty): final eval loss (else the
   last training loss) with its standard error; when the best is within the noise of the next best, no run is
   named; answer scores (ROUGE-L, accuracy) disagreeing with the loss are said only beyond their bootstrap
   interval;
4. the next step (lfgen.results.next_step): seed 000's order after what the experiment family searched.

The summary's ``verdict`` is one of VERDICTS; ``headline`` the sentence with its evidence; ``standing`` each run's
place (compare's ``verdict`` column).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lfgen.results.diagnosis import NAN, Finding
from lfgen.results.next_step import next_step, varied
from lfgen.runs.ranking import Ranking, disagreement, with_noise
from lfgen.runs.reader import NOT_STARTED, RunData
from lfgen.runs.uncertainty import loss_spread

BEST_BY = ("final_eval_loss", "final_train_loss")  # what ranks an experiment's runs, first found first
BEST, NOISE, NOT_LEARNING, PROVISIONAL, NO_LOSS = "best", "within-noise", "not-learning", "provisional", "no-loss"
VERDICTS = (BEST, NOISE, NOT_LEARNING, PROVISIONAL, NO_LOSS)
UNFINISHED = ("running", "interrupted", "stopped", "pending", "empty")  # states that will still change
EXCLUDED = ("failed", "missing", "pruned")  # ended without results to rank


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """The verdict of one experiment: the best run (None when the evidence names none) and the next step."""

    experiment: str
    runs: int
    best_run: str | None
    best_by: str | None  # "final_eval_loss" or "final_train_loss"
    best_value: float | None
    varied: tuple[str, ...]
    next_step: str
    disagreement: str | None = None  # the best run by ROUGE-L / accuracy, when it is beyond noise of the loss's best
    verdict: str = NO_LOSS  # one of VERDICTS
    headline: str = ""  # the verdict as one sentence, with its evidence
    evidence: tuple[str, ...] = ()  # one line per fact behind it
    standing: dict[str, str] = field(default_factory=dict)  # run -> its place in the verdict
    leader: str | None = None  # the best so far when the verdict names no best (provisional, within noise)
    searched: tuple[str, ...] = ()  # the family's experiments and their axes, oldest first ("rank-sweep: rank")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


Entry = tuple[str, RunData, Sequence[Finding]]


def summarize_experiment(name: str, runs: Sequence[Entry],
                         history: Sequence[tuple[str, Sequence[str]]] = ()) -> ExperimentSummary:
    """The verdict of experiment *name* over its (label, run, findings); *history*: its family's experiments and
    the axes each searched, oldest first, this one last (lfgen.results.family)."""
    standing: dict[str, str | None] = {}
    for label, run, findings in runs:
        standing[label] = _standing(run, findings)
    finished = [(label, run) for label, run, _ in runs if standing[label] is None]
    provisional = [(label, run) for label, run, _ in runs if (standing[label] or "").startswith("provisional")]
    varied_keys = varied([run for _, run in finished + provisional]
                         or [run for _, run, _ in runs if run.state not in NOT_STARTED] or [run for _, run, _ in runs])
    standing = {label: place for label, place in standing.items() if place is not None}
    common = {"varied": varied_keys, "standing": standing,
              "searched": tuple(f"{exp}: {', '.join(axes) or '-'}" for exp, axes in history)}
    open_runs = [label for label, run, _ in runs if run.state in UNFINISHED]
    if open_runs:  # the leader so far among every run with a loss, finished or not
        metric, ranking = _rank(finished + provisional)
        return _provisional(name, runs, open_runs, metric, ranking, common)
    metric, ranking = _rank(finished)
    if ranking is None or not ranking.order:
        return _abstain(name, runs, common)
    return _judged(name, runs, finished, metric, ranking, [axes for _, axes in history], common)


def _standing(run: RunData, findings: Sequence[Finding]) -> str | None:
    """Why a run is not ranked (None: it is)."""
    blocking = [f.kind for f in findings if f.blocks]
    if run.state in NOT_STARTED:
        return "pending"
    if run.state in EXCLUDED:
        return f"not ranked: {run.state}"
    if blocking:
        return f"not ranked: {', '.join(blocking)}"
    if run.state in UNFINISHED:
        step = f" at step {run.current_step}/{run.total_steps}" if run.current_step and run.total_steps else ""
        return f"provisional: {run.state}{step}"
    return None


def _value(metric: str, run: RunData) -> float | None:
    return getattr(run, metric)


def _rank(runs: Sequence[tuple[str, RunData]]) -> tuple[str | None, Ranking | None]:
    """The first metric of BEST_BY any run has, and the runs ranked by it with their errors."""
    for metric in BEST_BY:
        spreads = [(label, spread) for label, run in runs if (spread := loss_spread(run, metric)) is not None]
        if spreads:
            return metric, with_noise(spreads, metric)
    return None, None


def _provisional(name: str, runs: Sequence[Entry], open_runs: list[str], metric: str | None,
                 ranking: Ranking | None, common: dict) -> ExperimentSummary:
    by_state: dict[str, int] = {}
    for _, run, _ in runs:
        if run.state in UNFINISHED:
            state = "pending" if run.state in NOT_STARTED else run.state
            by_state[state] = by_state.get(state, 0) + 1
    waiting = ", ".join(f"{n} {state}" for state, n in by_state.items())
    lead = None
    if ranking is not None and ranking.best is not None:
        lead = ranking.best[0]
        place = common["standing"].get(lead, "finished")
        leading = f"leading so far: {lead} ({metric} {ranking.best[1].shown()}, {place})"
    else:
        leading = "no run has logged a loss yet"
    headline = (f"provisional: {len(runs) - len(open_runs)} of {len(runs)} runs finished ({waiting}); {leading}; "
                "no best until every run has finished")
    evidence = tuple(f"{label}: {standing}" for label, standing in common["standing"].items())
    nan = any(f.kind == NAN for _, _, found in runs for f in found)
    step = ("let the unfinished runs finish (lfgen run resumes them), then compare again" if lead else
            "no run has a loss without NaN yet; fix the findings above first" if nan else
            "no run has logged a loss yet; compare again once training has logged its first steps")
    return ExperimentSummary(name, len(runs), None, metric, None, common["varied"], step,
                             verdict=PROVISIONAL, headline=headline, evidence=evidence, leader=lead,
                             standing=common["standing"], searched=common["searched"])


def _abstain(name: str, runs: Sequence[Entry], common: dict) -> ExperimentSummary:
    """No finished run can be ranked: none learned, all NaN, all failed, or nothing logged yet."""
    findings = [f for _, run, found in runs if run.state not in NOT_STARTED for f in found if f.blocks]
    evidence = tuple(f"{label}: {'; '.join(f.message for f in found if f.blocks) or common['standing'].get(label, '')}"
                     for label, _, found in runs)
    stalled = [f for f in findings if f.kind != NAN]
    if stalled:
        advice = stalled[0].advice
        headline = f"no run learned: {advice} first ({', '.join(sorted({f.kind for f in stalled}))})"
        return ExperimentSummary(name, len(runs), None, None, None, common["varied"], f"{advice}, then train again",
                                 verdict=NOT_LEARNING, headline=headline, evidence=evidence,
                                 standing=common["standing"], searched=common["searched"])
    nan = any(f.kind == NAN for f in findings)
    why = ("no run has a loss without NaN yet; fix the findings above first" if nan else
           "no run finished: see lfgen status for why" if any(run.state in EXCLUDED for _, run, _ in runs) else
           "no run has logged a loss yet; compare again once training has logged its first steps")
    return ExperimentSummary(name, len(runs), None, None, None, common["varied"], why, verdict=NO_LOSS,
                             headline=why, evidence=evidence, standing=common["standing"], searched=common["searched"])


def _judged(name: str, runs: Sequence[Entry], finished, metric: str, ranking: Ranking,
            history: list[Sequence[str]], common: dict) -> ExperimentSummary:
    label, spread = ranking.best
    best = next(run for lbl, run in finished if lbl == label)
    standing = dict(common["standing"])
    named = ranking.apart is not False or len(ranking.order) == 1
    for other, value in ranking.order:
        standing[other] = ("best" if other == label and named else "leads, within noise" if other == label
                           else "within noise of the best" if other in ranking.tied and named
                           else "within noise of the leader" if other in ranking.tied
                           else f"behind by {abs(value.value - spread.value):.3g} (beyond noise)")
    evidence = [f"{other}: {metric} {value.shown()}" for other, value in ranking.order]
    errors = {value.how for _, value in ranking.order}
    evidence.append(f"± is {2:g} standard errors, from {'; '.join(sorted(errors))}")
    evidence += [f"{other}: {standing[other]}" for other, _, _ in runs if standing[other].startswith("not ranked")]
    folder = Path(os.path.commonpath([str(run.path) for _, run, _ in runs])) if len(runs) > 1 else None
    items = [(lbl, run) for lbl, run in finished]
    said = disagreement(items, lambda item, m: item[1].results.get(m), label, metric, spread.value, _score_lead)
    if len(ranking.order) > 1 and ranking.apart is False:
        second = ranking.order[1]
        headline = (f"no run is better beyond noise: {label} ({spread.shown()}) and {second[0]} "
                    f"({second[1].shown()}) differ by {abs(spread.value - second[1].value):.3g}, within the noise "
                    f"of {metric}")
        step = next_step(best, common["varied"], folder, metric, history, lead=f"{', '.join(ranking.tied)} tie")
        return ExperimentSummary(name, len(runs), None, metric, None, common["varied"],
                                 "more evidence first (a larger held-out set: val_size, or lfgen eval on more rows), "
                                 f"or go on from either: {step}", said, NOISE, headline, tuple(evidence), standing,
                                 label, common["searched"])
    if len(ranking.order) == 1:
        others = len(runs) - 1
        headline = f"{label} is the only run to rank ({metric} {spread.shown()})" + \
            (f"; {others} other run(s) not ranked" if others else "")
    else:
        second = ranking.order[1]
        gap = "beyond the noise" if ranking.apart else "noise unknown (too few logged points), the gap is over 1 %"
        headline = (f"{label} is best: {metric} {spread.shown()} against {second[1].shown()} for {second[0]}, "
                    f"{gap}")
    return ExperimentSummary(name, len(runs), label, metric, spread.value, common["varied"],
                             next_step(best, common["varied"], folder, metric, history), said, BEST, headline,
                             tuple(evidence), standing, None, common["searched"])


def _score_lead(theirs: tuple[str, RunData], mine: tuple[str, RunData], metric: str) -> tuple[float, float] | None:
    """The bootstrap interval of their score minus mine over the scored samples (paired on the same rows)."""
    from lfgen.runs.uncertainty import PER_SAMPLE, difference_interval, sample_scores

    if metric not in PER_SAMPLE:
        return None
    a, b = sample_scores(theirs[1].path, metric), sample_scores(mine[1].path, metric)
    if a is None or b is None:
        return None
    return difference_interval(a[1], b[1], paired=a[0] == b[0])

