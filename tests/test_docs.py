"""Docs are part of the feature: generated references stay in sync, the README keeps its two commands."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(script: str):
    spec = importlib.util.spec_from_file_location(script, ROOT / "scripts" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rules_md_matches_the_registry():
    assert (ROOT / "docs" / "rules.md").read_text(encoding="utf-8") == _load("gen_rules_doc").render(), \
        "docs/rules.md is stale: run python scripts/gen_rules_doc.py"


def test_the_scale_table_has_every_scenario_before_and_after():
    """Issue 20's measure: at least 12 scenarios, each recorded from the code before the scale rules and built now."""
    import json

    module = _load("gen_scale_table")
    before = json.loads(module.BEFORE.read_text(encoding="utf-8"))
    assert set(before) == set(module.SCENARIOS) and len(module.SCENARIOS) >= 12
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8").split("## The scale table (issue 20)")[1]
    assert text.count("\n| ") == 1 + len(module.SCENARIOS)
    assert "does NOT fit, exit 0" in text and "**exit 1**: cheapest fix" in text


def test_shapes_md_is_current():
    """The table of each shape x model x GPU beside LlamaFactory's example (issue 19) is generated from builds."""
    text = (ROOT / "docs" / "shapes.md").read_text(encoding="utf-8")
    assert text == _load("gen_shapes_doc").render(), "docs/shapes.md is stale: run python scripts/gen_shapes_doc.py"
    assert text.count("\n| ") >= 1 + 12 * 4  # header + 12 shapes x 2 models x 2 GPUs
    assert "| LoRA DPO (`--stage dpo --method lora`) |" in text and "5.0e-6 (R-STAGE-LR)" in text


def test_every_rule_id_a_build_uses_is_documented():
    from lfgen import BuildOptions, build
    from lfgen.catalogs.presets import load_presets
    from lfgen.catalogs.rules import registry

    from lfgen.builder.shapes import method_names, stage_names

    used = set()
    for name in load_presets():
        result = build(name, BuildOptions.parse(gpu="T4", samples=3000, lr=1e-3, set={"seed": 1}))
        used |= {d.rule for d in result.decisions.values()} | {w.split(":")[0] for w in result.warnings}
    for stage in stage_names():
        for method in method_names():
            result = build("auto", BuildOptions.parse(stage=stage, method=method, gpu="T4", samples=3000))
            used |= {d.rule for d in result.decisions.values()} | {w.split(":")[0] for w in result.warnings}
            used |= set(result.shape.skipped)
    assert used <= set(registry()), used - set(registry())


def test_readme_has_exactly_two_setup_commands_and_the_command_tour():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = re.search(r"## Set up\n(.*?)\n## ", readme, re.S).group(1)
    commands = re.findall(r"```(?:bash|sh)\n(.*?)```", setup, re.S)
    assert len(commands) == 2, commands
    assert "scripts/test" in commands[1]
    from lfgen.cli import cli

    commands = cli.list_commands(None)  # every command, loaded or not
    assert len(commands) >= 18, commands
    for command in commands:
        assert f"lfgen {command}" in readme, command


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    test_command = re.search(r"## Set up\n.*?```(?:bash|sh)\n.*?```.*?```(?:bash|sh)\n(.*?)```", readme, re.S).group(1)
    assert test_command.strip() in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
