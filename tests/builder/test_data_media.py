"""lfgen data on datasets with images: files, placeholders, image tokens, the rows a cutoff_len would cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lfgen.builder.data_media import Span, infer_seqlen
from lfgen.builder.data_report import report
from lfgen.tiny_vlm import CAPTIONS, MISSING, SIZES

from ..conftest import make_dataset_dir


def _media(project: Path, name: str = CAPTIONS, **options):
    result = report([name], project / "data", **options)
    return result, result.datasets[0].media


def test_a_missing_image_is_a_problem_before_any_run(vlm_project):
    result, media = _media(vlm_project, MISSING)
    assert not result.ok and media.missing == 1 and media.images == 12
    assert any("row 2: image images/missing.png does not exist under media_dir" in p and "FileNotFoundError" in p
               for p in result.datasets[0].problems)


def test_every_image_found_is_no_problem_and_text_sets_keep_their_shape(vlm_project):
    result, media = _media(vlm_project)
    assert result.ok and media.missing == 0 and media.images == 12
    assert "image tokens not counted: no --model given" in media.notes[0]
    text = report(["my_sft"], make_dataset_dir(vlm_project / "text")).to_json()
    assert "media" not in text["datasets"][0]  # a text dataset's JSON is what it was


def test_placeholders_must_match_the_images(vlm_project):
    rows = json.loads((vlm_project / "data" / f"{CAPTIONS}.json").read_text())
    rows[0]["messages"][0]["content"] = "<image><image>Describe these."
    rows[2]["images"] = []
    (vlm_project / "data" / f"{CAPTIONS}.json").write_text(json.dumps(rows))
    result, _ = _media(vlm_project)
    problems = result.datasets[0].problems
    assert result.datasets[0].problem_count == 2
    assert "row 1: 2 <image> placeholder(s) for 1 images" in problems[0] and "does not match" in problems[0]
    assert "row 3: 1 <image> placeholder(s) for 0 images" in problems[1]


def test_images_are_found_under_media_dir(vlm_project):
    (vlm_project / "data" / "images").rename(vlm_project / "pictures")
    missing, media = _media(vlm_project)
    assert media.missing == 12 and not missing.ok
    (vlm_project / "media").mkdir()
    (vlm_project / "pictures").rename(vlm_project / "media" / "images")
    found, media = _media(vlm_project, media_dir=vlm_project / "media")
    assert found.ok and media.missing == 0 and media.media_dir == str(vlm_project / "media")


def _expected_tokens(max_pixels: int | None = None) -> list[int]:
    """Qwen2-VL: one token per 28 x 28 pixels of the image rounded to 28, + <|vision_start|> and <|vision_end|>."""
    from lfgen.models.image_tokens import smart_resize

    out = []
    for w, h in SIZES:
        if max_pixels and w * h > max_pixels:
            f = (max_pixels / (w * h)) ** 0.5
            w, h = int(w * f), int(h * f)
        rh, rw = smart_resize(h, w, 28, 3136, 1003520)
        out.append(rh // 28 * (rw // 28) + 2)
    return out


@pytest.mark.parametrize("max_pixels", [None, 12544])
def test_image_tokens_per_row_follow_the_model_rule(vlm_project, max_pixels):
    _, media = _media(vlm_project, model=str(vlm_project / "tiny-qwen2-vl"), image_max_pixels=max_pixels)
    expected = sorted(_expected_tokens(max_pixels) * 2)  # 12 rows cycle through the 6 sizes
    assert media.image_tokens.max == expected[-1] and media.image_tokens.count == 12
    assert media.image_tokens.p50 == expected[5]  # nearest rank: the 6th of 12
    assert media.template == "qwen2_vl" and "one token per 28x28 pixels" in media.rule
    assert media.lengths.max > media.image_tokens.max  # text + the template's tokens on top


def test_a_cutoff_that_cuts_images_is_said_and_the_suggestion_keeps_them_whole(vlm_project):
    model = str(vlm_project / "tiny-qwen2-vl")
    result, media = _media(vlm_project, model=model, cutoff_len=24)
    assert media.cut == 12 and media.cut_rows[0].startswith(f"{CAPTIONS}.json row 1:")
    assert result.ok  # the data is fine; the cutoff is the run's choice
    safe = media.safe_cutoff
    _, at_safe = _media(vlm_project, model=model, cutoff_len=safe)
    _, below = _media(vlm_project, model=model, cutoff_len=safe - 1)
    assert at_safe.cut == 0 and below.cut >= 1
    assert result.suggested_cutoff >= safe and result.suggested_cutoff % 64 == 0
    assert "cutting no image needs cutoff_len >=" in result.suggested_how


def test_the_cli_prints_media_and_exits_1_on_a_missing_image(runner, cli, vlm_project, monkeypatch):
    monkeypatch.chdir(vlm_project)
    ok = runner.invoke(cli, ["data", CAPTIONS, "--model", "tiny-qwen2-vl", "--cutoff-len", "24"])
    assert ok.exit_code == 0, ok.output
    assert f"media: {CAPTIONS}: 12 images, 0 videos, 12 found under data" in ok.stdout
    assert "cuts into the image tokens of 12 rows" in ok.stdout and "R-VLM-TOKENS" in ok.stdout
    bad = runner.invoke(cli, ["data", MISSING, "--json"])
    assert bad.exit_code == 1 and json.loads(bad.stdout)["datasets"][0]["media"]["missing"] == 1


def test_a_catalog_model_counts_image_tokens_without_a_folder(vlm_project):
    _, media = _media(vlm_project, model="llava-hf/llava-1.5-7b-hf")
    assert media.image_tokens.max == 576 and media.template == "llava"


@given(st.integers(1, 400), st.integers(1, 400), st.integers(1, 400))
def test_infer_seqlen_keeps_what_fits(source, target, cutoff):
    kept_source, kept_target = infer_seqlen(source, target, cutoff)
    assert kept_source <= source and kept_target <= target and kept_source + kept_target <= cutoff
    if source + target <= cutoff:  # nothing to cut
        assert (kept_source, kept_target) == (source, target)


@given(st.integers(1, 300), st.integers(1, 300), st.data())
def test_safe_cutoff_is_the_last_cut_plus_one(source, target, data):
    end = data.draw(st.integers(1, source))
    span = Span(source, target, end)
    cuts = [c for c in range(1, source + target + 1) if span.cut_at(c)]
    assert span.safe_cutoff() == (max(cuts) + 1 if cuts else 1)


def test_infer_seqlen_is_llamafactorys():
    pytest.importorskip("llamafactory")
    from llamafactory.data.processor.processor_utils import infer_seqlen as theirs

    for source in range(1, 60, 7):
        for target in range(1, 60, 5):
            for cutoff in range(1, 130, 3):
                assert infer_seqlen(source, target, cutoff) == theirs(source, target, cutoff)


def test_videos_as_frame_lists_and_paths_are_checked(vlm_project):
    # LlamaFactory reads a video as one file or as the list of its frames: one <video> per entry either way.
    data = vlm_project / "data"
    (data / "clip.mp4").write_bytes(b"not decoded")
    rows = [{"messages": [{"role": "user", "content": "<video>What happens?"}, {"role": "assistant", "content": "x"}],
             "videos": [["images/00_yellow_circle.png", "images/01_red_square.png"]]},
            {"messages": [{"role": "user", "content": "<video>And here?"}, {"role": "assistant", "content": "y"}],
             "videos": ["clip.mp4"]},
            {"messages": [{"role": "user", "content": "<video>Gone?"}, {"role": "assistant", "content": "z"}],
             "videos": ["gone.mp4"]}]
    (data / "clips.json").write_text(json.dumps(rows))
    info = json.loads((data / "dataset_info.json").read_text())
    info["clips"] = {**info[CAPTIONS], "file_name": "clips.json", "columns": {"messages": "messages",
                                                                               "videos": "videos"}}
    (data / "dataset_info.json").write_text(json.dumps(info))
    result, media = _media(vlm_project, "clips", model=str(vlm_project / "tiny-qwen2-vl"))
    assert media.videos == 3 and media.missing == 1 and result.datasets[0].problem_count == 1
    assert "row 3: video gone.mp4 does not exist" in result.datasets[0].problems[0]
    assert any("video(s): their tokens are not counted" in n for n in media.notes)
