"""LLaVA-NeXT-Video with video parts on a tiny model (tests/vision_models.py): a video's frames resized,
centre-cropped and normalised by LlavaNextVideoVideoProcessor's rule (applied by hand here), its ``<video>``
token expanded to the processor's count, end scores equal to a plain transformers forward of the same model
and head under either padding and two budgets (image rows too), one vision-tower pass a video for a pair, and
``--freeze vision,projector``. Videos are drawn by the tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_vision_video import write_video
from vision_models import encoder_inputs, make_vlm, picture, train_steps

from rmkit.data.images import Picture
from rmkit.data.rows import RowReader
from rmkit.data.video import open_video
from rmkit.data.vision import VisionExample

FAMILY = "llava_next_video"


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory):
    """``(rm, path)``: the tiny LLaVA-NeXT-Video with a seeded value head, saved by rmkit and read back with
    at most 4 frames a video."""
    from rmkit.vlm import VisionRewardModel

    backbone = make_vlm(tmp_path_factory.mktemp(FAMILY), FAMILY)
    torch.manual_seed(3)
    out = tmp_path_factory.mktemp(f"{FAMILY}_rm")
    VisionRewardModel.from_pretrained(backbone).save_pretrained(out)
    return VisionRewardModel.from_pretrained(out, max_frames=4), out


def frames_of(tmp_path, name: str, size: tuple[int, int], count: int, seed: int):
    """``count`` random frames of ``size`` (height, width) written as PNGs, and the video they make."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]
    (tmp_path / name).mkdir()
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / name / f"{i}.png")
    return pixels, open_video(str(tmp_path / name), RowReader("d", 1), "video", base=None)


def by_hand(frame: np.ndarray) -> np.ndarray:
    """LlavaNextVideoVideoProcessor's rule with the tiny model's settings: shortest edge to 56 (bicubic), the
    centre 56x56, /255, CLIP's mean and std; (C, H, W)."""
    from PIL import Image
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    h, w = frame.shape[:2]
    short = min(h, w)
    size = (56, int(56 * w / short)) if h == short else (int(56 * h / short), 56)
    x = np.asarray(Image.fromarray(frame).resize(size[::-1], Image.BICUBIC), dtype=np.float64)
    top, left = (size[0] - 56) // 2, (size[1] - 56) // 2
    x = x[top : top + 56, left : left + 56].transpose(2, 0, 1) / 255.0
    return (x - np.array(OPENAI_CLIP_MEAN)[:, None, None]) / np.array(OPENAI_CLIP_STD)[:, None, None]


def question(*parts: str, text: str = "What happens?") -> list[dict]:
    return [{"role": "user", "content": [*({"type": p} for p in parts), {"type": "text", "text": text}]}]


def test_video_pixels_and_tokens_follow_the_video_processors_rule(rm_path, tmp_path):
    """Two videos (one needing no resize, one resized and cropped): each frame by the rule, one (frames, C, H,
    W) array a video, its grid (frames, H, W), its ``<video>`` tokens frames·(H/14)·(W/14)/4; four frames kept
    of six (--max-frames 4, evenly spaced)."""
    rm, _ = rm_path
    small, first = frames_of(tmp_path, "a", (56, 84), 3, 0)
    large, second = frames_of(tmp_path, "b", (105, 70), 6, 1)
    ex = VisionExample(1, question("video", "video"), ["a"], False, videos=[first, second])
    (row,) = rm.example_tokenizer().tokenize([ex])[0]
    kept = [large[i] for i in (0, 2, 3, 5)]
    expected = np.stack([by_hand(f) for f in small + kept])
    assert row.videos.grids == [(3, 56, 56), (4, 56, 56)] and row.patches is None
    np.testing.assert_allclose(row.videos.patches, expected, atol=1e-5)
    assert row.ids.count(rm.model.config.video_token_id) == (3 + 4) * (4 * 4 // 4)
    from transformers import LlavaNextVideoProcessor  # its count, from its own code (no torchvision needed)

    counted = LlavaNextVideoProcessor.replace_video_token(
        SimpleNamespace(patch_size=14, video_token="<video>"),
        {"pixel_values_videos": [expected[:3], expected[3:]]},
    )
    assert counted.count("<video>") == 3 * 4


def examples(media) -> list[VisionExample]:
    """A pair on a video file, a row with an image and the video, an image row and a text row."""
    video = open_video(str(media / "clip.mp4"), RowReader("d", 1), "video", base=None)
    red, blue = Picture(picture("red"), "r.png"), Picture(picture("blue", (84, 56), seed=1), "b.png")
    return [
        VisionExample(1, question("video"), ["it fades in", "It turns white, slowly, over time"], True,
                      videos=[video]),
        VisionExample(2, question("image", "video", text="Same colour?"), ["no, they differ"], False,
                      images=[red], videos=[video]),
        VisionExample(3, question("image", text="Which colour?"), ["blue, I think"], False, images=[blue]),
        VisionExample(4, [{"role": "user", "content": "hello how can I help"}], ["Paris"], False),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    write_video(folder / "clip.mp4")  # 30 frames of 64x48 at 10 a second
    return folder


@torch.no_grad()
def plain_forward(rm, row) -> float:
    """transformers' forward of one row alone (pixel_values_videos (1, frames, C, H, W), the image's
    pixel_values and image_sizes), the head at its last token."""
    ids = torch.tensor([row.ids])
    kwargs = {}
    if row.patches is not None:
        kwargs.update(pixel_values=torch.from_numpy(row.patches),
                      image_sizes=torch.tensor([g[1:] for g in row.grids]))  # fmt: skip
    if row.videos is not None:
        kwargs["pixel_values_videos"] = torch.from_numpy(row.videos.patches)[None]
    hidden = rm.model.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).last_hidden_state
    return float(rm.head(hidden[0, -1]))


@pytest.mark.parametrize("budget", [16, 10_000])
def test_end_scores_equal_plain_transformers(rm_path, media, budget):
    rm, _ = rm_path
    rows = [r for row in rm.example_tokenizer().tokenize(examples(media)) for r in row]
    assert len({len(r.ids) for r in rows}) == len(rows)
    assert rows[0].videos.grids == [(4, 56, 56)]  # 6 frames at 2 a second, bounded by --max-frames 4
    scores = rm.score_rows(rows, batch_tokens=budget, groups=[[0, 1]])
    assert scores == pytest.approx([plain_forward(rm, r) for r in rows], abs=1e-5)


def test_either_padding_gives_the_scores_of_the_rows_alone(rm_path, media):
    rm, _ = rm_path
    rows = [r for row in rm.example_tokenizer().tokenize(examples(media)[:2]) for r in row]
    alone = [plain_forward(rm, r) for r in rows]
    batch = rm.batch(rows)
    ids, mask = batch.pop("input_ids"), batch.pop("attention_mask")
    batch.pop("right_padded")
    left_ids, left_mask = torch.full_like(ids, rm.pad_token_id), torch.zeros_like(mask)
    for i, r in enumerate(rows):
        left_ids[i, ids.shape[1] - len(r.ids) :] = torch.tensor(r.ids)
        left_mask[i, ids.shape[1] - len(r.ids) :] = 1
    with torch.inference_mode():
        right = rm(ids, mask, **batch).end_scores.tolist()
        left = rm(left_ids, left_mask, **batch).end_scores.tolist()
    assert right == pytest.approx(alone, abs=1e-5) and left == pytest.approx(alone, abs=1e-5)


def test_a_pair_sharing_a_video_runs_the_vision_tower_once_on_it(rm_path, media):
    """The pair's two rows, in different batches (budget 16), read one tower pass over the video's 4 frames."""
    rm, _ = rm_path
    rows = rm.example_tokenizer().tokenize(examples(media)[:1])[0]
    seen = encoder_inputs(rm, rm.model.model.vision_tower, rows, 16)
    assert seen == [4]


@pytest.mark.parametrize("pool", ["average", "conv"])
def test_freeze_vision_and_projector_counts(rm_path, pool):
    """--freeze vision,projector stops the CLIP tower and the projector (with the image newline, and a conv
    pooler's weights) and counts each; the language model and head still train."""
    from transformers import AutoConfig, LlavaNextVideoForConditionalGeneration

    from rmkit.training.vision import freeze
    from rmkit.vlm import VisionRewardModel

    rm, path = rm_path
    config = AutoConfig.from_pretrained(path)
    config.spatial_pool_mode = pool
    rm = VisionRewardModel(LlavaNextVideoForConditionalGeneration(config), rm.tokenizer, rm.processor)
    params = dict(rm.model.named_parameters())
    vision = {n for n in params if n.startswith("model.vision_tower.")}
    parts = ("model.multi_modal_projector.", "model.image_newline", "model.vision_resampler.")
    projector = {n for n in params if n.startswith(parts)}
    assert any("vision_resampler" in n for n in projector) == (pool == "conv")
    frozen = freeze(rm, ["vision", "projector"])
    assert vision and projector
    assert frozen == {
        "vision": sum(params[n].numel() for n in vision),
        "projector": sum(params[n].numel() for n in projector),
    }
    assert not any(params[n].requires_grad for n in vision | projector)
    assert all(p.requires_grad for n, p in params.items() if n not in vision | projector)
    assert rm.head.weight.requires_grad


def test_a_training_step_sharing_the_pairs_video_equals_the_unshared_step(rm_path, media):
    """rmkit train's step on a video pair: its video through the tower once gives the loss and every gradient
    (the tower's included) of running it once a row."""
    rm, path = rm_path
    results = train_steps(rm, path, examples(media)[:1])
    (loss_s, grads_s), (loss_u, grads_u) = results
    assert torch.allclose(loss_s, loss_u, atol=1e-6)
    assert (
        any(n.startswith("model.model.vision_tower.") for n in grads_s) and grads_s.keys() == grads_u.keys()
    )
    for name, grad in grads_s.items():
        assert torch.allclose(grad, grads_u[name], atol=1e-5), name


def test_rmkit_score_on_align_anythings_video_rows(rm_path, media, tmp_path):
    """rmkit score on TV2T rows writes each pair's videos and the scores of the rows scored in Python."""
    import json

    from conftest import write_jsonl

    from rmkit.cli import main

    rm, path = rm_path
    data = write_jsonl(media / "tv2t.jsonl", [
        {"prompt": "<video>What happens?", "video_path": "./clip.mp4", "response_1": "it fades in",
         "response_2": "It turns white, slowly, over time", "overall_response": 1},
    ])  # fmt: skip
    out = tmp_path / "s.jsonl"
    args = ["score", "--model", str(path), "--data", str(data), "--output", str(out), "--max-frames", "4"]
    assert main(args) == 0
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    rows = rm.example_tokenizer().tokenize(examples(media)[:1])[0]
    assert line["videos"] == ["./clip.mp4"]
    assert [line["score_chosen"], line["score_rejected"]] == pytest.approx(rm.score_rows(rows), abs=1e-5)
