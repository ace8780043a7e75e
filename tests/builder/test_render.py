"""Rendering: the YAML-safe filter (property test), golden files, LlamaFactory's section layout."""

from __future__ import annotations

import os

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lfgen import BuildOptions, build, render_build
from lfgen.catalogs.presets import load_presets
from lfgen.builder.render import SECTIONS, render, yaml_scalar
from lfgen.yamlio import loads

from ..conftest import GOLDEN

scalars = st.one_of(
    st.text(),  # any unicode, including ": ", "#", quotes, newlines, NEL, LS, BOM, surrogates excluded
    st.text(alphabet=st.sampled_from(list(": #'\"\\\n\t-[]{}&*!|>%@`,?1e.")), max_size=12),
    st.floats(allow_nan=False),
    st.integers(),
    st.booleans(),
    st.none(),
)


@given(scalars)
@settings(max_examples=600, deadline=None)
def test_any_value_round_trips_through_both_loaders(value):
    text = yaml_scalar(value)
    assert "\n" not in text
    line = f"key: {text}  # R-NOTE\n"
    assert yaml.safe_load(line) == {"key": value}
    assert loads(line) == {"key": value}  # LlamaFactory's (OmegaConf's) loader reads 1e-4 as a float


@given(st.dictionaries(st.sampled_from(["model_name_or_path", "dataset", "output_dir", "template", "seed"]),
                       st.text(), min_size=1))
@settings(max_examples=200, deadline=None)
def test_rendered_config_round_trips(config):
    assert loads(render(config, header=["a header: with # signs"])) == config


def test_small_floats_are_written_like_llamafactory_examples():
    assert yaml_scalar(2e-4) == "2.0e-4"
    assert yaml_scalar(1e-5) == "1.0e-5"
    assert yaml_scalar(0.05) == "0.05"


def test_strings_llamafactory_would_misread_are_quoted():
    assert yaml_scalar("1e-4") == "'1e-4'"
    assert loads(f"k: {yaml_scalar('1e-4')}")["k"] == "1e-4"


def test_sections_follow_llamafactory_examples():
    text = render_build(build("a800"))
    headers = [line[4:] for line in text.splitlines() if line.startswith("### ")]
    assert headers == ["model", "method", "dataset", "output", "train", "eval"]
    assert list(SECTIONS) == headers


GOLDEN_OPTIONS = {"model": "Qwen/Qwen2.5-7B-Instruct", "gpu": "A100-80", "samples": 12000}


@pytest.mark.parametrize("name", list(load_presets()))
def test_golden_file_per_preset(name):
    """Byte-for-byte against tests/golden/<preset>.yaml, the version masked as {version} (a release does
    not touch the golden files); LFGEN_UPDATE_GOLDEN=1 rewrites them."""
    from lfgen import __version__

    options = dict(GOLDEN_OPTIONS)
    if load_presets()[name].vision is not None and load_presets()[name].vision.only:
        options["model"] = "Qwen/Qwen2.5-VL-7B-Instruct"  # a preset for vision-language models (seed 001's)
    text = render_build(build(name, BuildOptions.parse(**options)))
    text = text.replace(f"lfgen {__version__}:", "lfgen {version}:").replace(f'"lfgen": "{__version__}"',
                                                                              '"lfgen": "{version}"')
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("LFGEN_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with LFGEN_UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(encoding="utf-8")


def test_a_newline_in_a_value_never_becomes_a_key(runner, cli, tmp_path):
    """`--set $'run_name=x\\ntrust_remote_code: true #'` once wrote a header line that loaded as a key."""
    out = tmp_path / "c.yaml"
    value = "x\ntrust_remote_code: true #"
    result = runner.invoke(cli, ["preset", "a800", "--set", f"run_name={value}", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert all(line.startswith("#") for line in text.split("\n###")[0].splitlines())
    config = yaml.safe_load(text)
    assert "trust_remote_code" not in config and config["run_name"] == value


@pytest.mark.parametrize("char", ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029"])
def test_header_lines_are_cut_at_every_yaml_line_break(char):
    text = render({"seed": 1}, header=[f"a{char}b: 1"])
    assert yaml.safe_load(text) == {"seed": 1}


def test_set_keeps_a_hash_in_its_value(runner, cli):
    result = runner.invoke(cli, ["preset", "a800", "--set", "run_name=exp #3"])
    assert result.exit_code == 0, result.stderr
    assert yaml.safe_load(result.stdout)["run_name"] == "exp #3"
