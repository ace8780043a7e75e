"""R-STAGE-DATA: what kind of rows a registration holds, as LlamaFactory's parser reads it, and which stage it fits."""

from __future__ import annotations

import json

import pytest

from lfgen.builder.data_kinds import columns_of, fit_problem, kind_of

from ..conftest import LF_EXAMPLES

LF_INFO = json.loads((LF_EXAMPLES / "data" / "dataset_info.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name,kind", [("dpo_en_demo", "pairwise"), ("ultrafeedback", "pairwise"),
                                       ("kto_en_demo", "feedback"), ("kto_mix_en", "feedback"), ("c4_demo", "text"),
                                       ("wiki_demo", "text"), ("alpaca_en_demo", "supervised"),
                                       ("glaive_toolcall_en_demo", "supervised"), ("identity", "supervised")])
def test_llamafactorys_own_registrations_have_the_kind_it_trains_them_as(name, kind):
    assert kind_of(LF_INFO[name]) == kind


def test_columns_given_leave_the_others_unset_as_llamafactorys_parser_does():
    # data/parser.py DatasetAttr.join: once `columns` is given, every column it does not name is None.
    assert columns_of({"columns": {"prompt": "text"}})["response"] is None
    assert columns_of({})["response"] == "output" and columns_of({"formatting": "sharegpt"})["messages"] == \
        "conversations"


@pytest.mark.parametrize("name,stage,data,fits", [
    ("dpo_en_demo", "dpo", "pairwise", True), ("dpo_en_demo", "rm", "pairwise", True),
    ("dpo_en_demo", "sft", "supervised", False), ("alpaca_en_demo", "orpo", "pairwise", False),
    ("kto_en_demo", "kto", "feedback", True), ("alpaca_en_demo", "kto", "feedback", False),
    ("c4_demo", "pt", "text", True), ("alpaca_en_demo", "pt", "text", False), ("c4_demo", "sft", "supervised", False),
    ("alpaca_en_demo", "ppo", "prompts", True), ("dpo_en_demo", "ppo", "prompts", False)])
def test_a_stage_accepts_only_its_kind(name, stage, data, fits):
    problem = fit_problem(name, LF_INFO[name], stage, data, "data")
    assert (problem is None) == fits
    if problem is not None:
        assert problem.startswith(f"dataset: {name!r} holds ") and f"stage {stage} trains on" in problem
        assert "register" in problem  # the fix


def test_the_mismatch_line_says_how_llamafactory_fails():
    assert "refuses it at start-up, after loading the model" in fit_problem(
        "alpaca_en_demo", LF_INFO["alpaca_en_demo"], "dpo", "pairwise", "data")
    assert "drops every row without a kto_tag" in fit_problem(
        "alpaca_en_demo", LF_INFO["alpaca_en_demo"], "kto", "feedback", "data")
    assert "the answers are never trained on" in fit_problem(
        "alpaca_en_demo", LF_INFO["alpaca_en_demo"], "pt", "text", "data")
    assert fit_problem("x", "not an object", "dpo", "pairwise", "data") is None  # checked_entry reports that
