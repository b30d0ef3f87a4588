"""Video with text on tiny Qwen2-VL / Qwen2.5-VL models: the frame sampling rule, the video patches as
transformers' Qwen2VLVideoProcessor lays them out (its formula applied by hand), end scores equal to a plain
transformers forward under either padding and two budgets, one encoder pass a video for a pair, the readers,
bad videos named, and score/rank/eval/inspect/serve/train on video rows. Videos are drawn by the tests: an
MPEG-4 file written with PyAV, an animated GIF, a folder of frames."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_jsonl
from vision_models import encoder_inputs, make_vlm, picture, stock, train_steps

from rmkit.data.images import Picture
from rmkit.data.rows import RowReader
from rmkit.data.video import frame_indices, open_video, sample
from rmkit.data.vision import VisionExample, iter_vision_examples
from rmkit.errors import DataError

av = pytest.importorskip("av", reason="video needs PyAV (pip install 'rmkit[video]')")


def write_video(path: Path, frames: int = 30, rate: int = 10, size: tuple[int, int] = (64, 48)) -> Path:
    """An MPEG-4 video of ``frames`` flat frames, frame i of grey level 8·i (so a decoded frame names its index)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for i in range(frames):
            pixels = np.full((size[1], size[0], 3), 8 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def index_of(image) -> int:
    return round(float(np.asarray(image, dtype=np.float32).mean()) / 8)


def clip(path: Path, row: int = 1):
    return open_video(str(path), RowReader("data.jsonl", row), "video", base=None)


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def video_rm(request, tmp_path_factory):
    """``(rm, path)``: a tiny VLM with Qwen's video token and a seeded value head, saved by rmkit and read back
    with ``video_fps`` 4 (so Qwen2.5-VL's seconds a temporal patch, 0.5, differ from its default of 1)."""
    from rmkit.vlm import VisionRewardModel

    backbone = make_vlm(tmp_path_factory.mktemp(request.param), request.param, video=True)
    torch.manual_seed(2)
    out = tmp_path_factory.mktemp(f"{request.param}_video_rm")
    VisionRewardModel.from_pretrained(backbone).save_pretrained(out)
    return VisionRewardModel.from_pretrained(out, video_fps=4.0), out


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A folder holding a 3 s video (30 frames at 10 a second), a red and a blue picture."""
    folder = tmp_path_factory.mktemp("media")
    write_video(folder / "clip.mp4")
    picture("red").save(folder / "red.png")
    picture("blue").save(folder / "blue.png")
    return folder


@pytest.mark.parametrize(
    "total, rate, fps, most, expected",
    [
        (30, 10.0, 2.0, 768, [0, 6, 12, 17, 23, 29]),  # 3 s at 2 a second: 6 frames, evenly spaced
        (10, 10.0, 2.0, 768, [0, 3, 6, 9]),  # 1 s gives 2, raised to the least, 4
        (300, 30.0, 2.0, 8, [0, 43, 85, 128, 171, 214, 256, 299]),  # 20 bounded by --max-frames 8
        (7, 30.0, 2.0, 5, [0, 2, 4, 6]),  # 4 frames, under max_frames 5 rounded down to 4
        (3, 10.0, 2.0, 768, [0, 2]),  # at most the frames there are, rounded down to 2
        (1, 10.0, 2.0, 768, [0]),  # one frame (the processor repeats it)
        (5, None, 2.0, 768, [0, 1, 2, 3, 4]),  # frames given as images: all
        (10, None, 2.0, 4, [0, 3, 6, 9]),  # ... thinned evenly beyond --max-frames
    ],
)
def test_the_frame_sampling_rule(total, rate, fps, most, expected):
    """n = total / rate × fps, at least 4, at most max_frames and total, rounded down to a multiple of 2; the
    frames at round(linspace(0, total - 1, n)) (qwen-vl-utils' smart_nframes and its frame indices)."""
    assert frame_indices(total, rate, fps, most) == expected
    if len(expected) > 1:
        assert expected == [int(i) for i in np.round(np.linspace(0, total - 1, len(expected)))]


def test_a_video_file_a_gif_and_frames_are_sampled_by_the_rule(media, tmp_path):
    """The decoded frames are those the rule names, and their rate is the count over the duration."""
    video = clip(media / "clip.mp4")
    assert (video.total, video.rate, video.kind) == (30, 10.0, "av")
    frames = sample(video, 2.0, 768)
    assert [index_of(f) for f in frames.images] == [0, 6, 12, 17, 23, 29] and frames.fps == 2.0
    assert [index_of(f) for f in sample(video, 4.0, 768).images] == frame_indices(30, 10.0, 4.0)
    stored = {"bytes": (media / "clip.mp4").read_bytes(), "path": "clip.mp4"}  # datasets' Video feature
    as_dict = open_video(stored, RowReader("d", 1), "video", base=None)
    assert as_dict.ref == "clip.mp4" and [index_of(f) for f in sample(as_dict).images] == [
        0,
        6,
        12,
        17,
        23,
        29,
    ]

    from PIL import Image

    grey = [Image.new("RGB", (56, 56), (8 * i,) * 3) for i in range(10)]
    grey[0].save(tmp_path / "a.gif", save_all=True, append_images=grey[1:], duration=100, loop=0)
    gif = clip(tmp_path / "a.gif")
    assert (gif.total, gif.rate, gif.kind) == (10, 10.0, "gif")
    assert [index_of(f) for f in sample(gif, 2.0).images] == [0, 3, 6, 9]

    (tmp_path / "frames").mkdir()
    for i, name in enumerate(["f10.png", "f02.png", "f01.png"]):
        grey[i].save(tmp_path / "frames" / name)
    folder = clip(tmp_path / "frames")
    assert [index_of(f) for f in sample(folder).images] == [2, 1, 0]  # in the order of their names
    as_list = open_video(["frames/f10.png", "frames/f01.png"], RowReader("d", 1), "video", base=tmp_path)
    assert [index_of(f) for f in sample(as_list).images] == [0, 2] and sample(as_list, 3.0).fps == 3.0
    with pytest.raises(DataError, match="no such file") as caught:  # a missing frame: named when read
        open_video(["frames/f10.png", "frames/f99.png"], RowReader("d", 3), "video", base=tmp_path)
    assert (caught.value.row, caught.value.field) == (3, "video[1]")


def test_video_patches_follow_the_video_processors_formula(video_rm, tmp_path):
    """Qwen2VLVideoProcessor's layout, applied by hand: frames rescaled and normalised (CLIP's mean and std),
    padded to a multiple of the temporal patch size by repeating the last, viewed as (t, 2, C, h/m, m, p, w/m,
    m, p), permuted to (t, h/m, w/m, m, m, C, 2, p, p) and flattened; the grid (t, h, w); the video's token
    count t·h·w / merge² and the seconds of a temporal patch 2 / fps."""
    from PIL import Image
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    rm, _ = video_rm
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(3)]  # 56x84: no resize
    frames = [str(tmp_path / f"{i}.png") for i in range(3)]
    for p, f in zip(pixels, frames, strict=True):
        Image.fromarray(p).save(f)
    video = open_video(frames, RowReader("d", 1), "video", base=None)
    ex = VisionExample(1, [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What?"}]}],
                       ["a"], False, videos=[video])  # fmt: skip
    (row,) = rm.example_tokenizer().tokenize([ex])[0]

    x = np.stack(pixels + pixels[-1:]).astype(np.float64).transpose(0, 3, 1, 2) / 255.0  # (4, C, H, W)
    x = (x - np.array(OPENAI_CLIP_MEAN)[:, None, None]) / np.array(OPENAI_CLIP_STD)[:, None, None]
    t, span, merge, patch, (gh, gw) = 2, 2, 2, 14, (56 // 14, 84 // 14)
    x = x.reshape(t, span, 3, gh // merge, merge, patch, gw // merge, merge, patch)
    expected = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(t * gh * gw, 3 * span * patch * patch)
    assert row.videos.grids == [(t, gh, gw)] and row.patches is None
    np.testing.assert_allclose(row.videos.patches, expected, atol=1e-5)
    video_id = rm.model.config.video_token_id
    assert row.ids.count(video_id) == t * gh * gw // merge**2
    assert row.videos.seconds == [2 / 4.0]  # frames given as images run at --video-fps (4 here)


def video_examples(media: Path) -> list[VisionExample]:
    """A pair on the 3 s video, a row with an image and the video, and a text row (all of different lengths)."""
    parts = [{"type": "video"}, {"type": "text", "text": "What happens?"}]
    both = [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Same colour?"}]
    video, red = clip(media / "clip.mp4"), Picture(picture("red"), "red.png")
    return [
        VisionExample(1, [{"role": "user", "content": parts}], ["it fades in", "It turns white, slowly, over time"],
                      True, videos=[video]),
        VisionExample(2, [{"role": "user", "content": both}], ["no, they differ"], False, images=[red], videos=[video]),
        VisionExample(3, [{"role": "user", "content": "hello how can I help"}], ["Paris"], False),
    ]  # fmt: skip


@torch.no_grad()
def plain_forward(rm, row, seconds=None) -> float:
    """The score transformers gives one row alone: the VLM's forward with the processor's inputs
    (mm_token_type_ids 1 at image tokens, 2 at video tokens; Qwen2.5-VL's second_per_grid_ts), the value head
    at the last token."""
    config = rm.model.config
    ids = torch.tensor([row.ids])
    kwargs = {
        "mm_token_type_ids": (ids == config.image_token_id).int() + 2 * (ids == config.video_token_id).int()
    }
    if row.patches is not None:
        kwargs.update(pixel_values=torch.from_numpy(row.patches), image_grid_thw=torch.tensor(row.grids))
    if row.videos is not None:
        kwargs.update(pixel_values_videos=torch.from_numpy(row.videos.patches),
                      video_grid_thw=torch.tensor(row.videos.grids))  # fmt: skip
        if config.model_type == "qwen2_5_vl":
            kwargs["second_per_grid_ts"] = torch.tensor(seconds or row.videos.seconds)
    with stock(rm.model) as model:
        hidden = model.model(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs).last_hidden_state
    return float(rm.head(hidden[0, -1]))


@pytest.mark.parametrize("budget", [16, 10_000])
def test_end_scores_equal_plain_transformers(video_rm, media, budget):
    """Every row's score (a row a batch, or all in one) equals the plain forward of that row alone."""
    rm, _ = video_rm
    rows = [r for row in rm.example_tokenizer().tokenize(video_examples(media)) for r in row]
    assert len({len(r.ids) for r in rows}) == len(rows)
    assert rows[0].videos.grids == [(6, 4, 4)] and rows[0].videos.seconds == [0.5]  # 12 frames at 4 a second
    scores = rm.score_rows(rows, batch_tokens=budget)
    assert scores == pytest.approx([plain_forward(rm, r) for r in rows], abs=1e-5)
    if rm.model.config.model_type == "qwen2_5_vl":  # the seconds count: 1.0 a patch gives another score
        assert abs(plain_forward(rm, rows[0], seconds=[1.0]) - scores[0]) > 1e-6


def test_either_padding_gives_the_scores_of_the_rows_alone(video_rm, media):
    rm, _ = video_rm
    pair = rm.example_tokenizer().tokenize(video_examples(media)[:1])[0]
    alone = [plain_forward(rm, r) for r in pair]
    batch = rm.batch(pair)
    width = batch["input_ids"].shape[1]
    left_ids = torch.full_like(batch["input_ids"], rm.pad_token_id)
    left_mask = torch.zeros_like(batch["attention_mask"])
    for i, r in enumerate(pair):
        left_ids[i, width - len(r.ids) :] = torch.tensor(r.ids)
        left_mask[i, width - len(r.ids) :] = 1
    videos = {k: batch[k] for k in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")}
    with torch.inference_mode():
        right = rm(**batch).end_scores.tolist()
        left = rm(left_ids, left_mask, **videos).end_scores.tolist()
    assert right == pytest.approx(alone, abs=1e-5) and left == pytest.approx(alone, abs=1e-5)


def test_a_pair_sharing_a_video_runs_the_encoder_once_on_it(video_rm, media):
    """The pair's two rows, scored in different batches (budget 16), read one encoder pass over the video."""
    rm, _ = video_rm
    rows = rm.example_tokenizer().tokenize(video_examples(media)[:1])[0]
    seen = encoder_inputs(rm, rm.model.model.visual, rows, 16)
    assert seen == [len(rows[0].videos.patches)]


def test_the_readers_of_video_rows(media):
    """align-anything TV2T, TRL's messages with video parts, MM-RLHF's video rows and rmkit's scoring rows with
    a videos column all read to the record: a video part where the video goes, the video opened."""
    rows = [
        {"prompt": "<video>What happens?", "video_path": "./clip.mp4", "response_1": "it fades", "response_2": "It brightens",
         "overall_response": 2},
        {"prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
         "chosen": [{"role": "assistant", "content": "It brightens"}],
         "rejected": [{"role": "assistant", "content": "it fades"}], "videos": ["clip.mp4"]},
        {"prompt": "What happens?", "chosen": "It brightens", "rejected": "it fades", "video": "clip.mp4",
         "image": None},
        {"prompt": "<video>What happens?", "response": "It brightens", "videos": ["clip.mp4"]},
    ]  # fmt: skip
    data = write_jsonl(media / "readers.jsonl", rows)
    examples = list(iter_vision_examples(data))
    parts = [{"type": "video"}, {"type": "text", "text": "What happens?"}]
    for ex in examples:
        assert ex.prompt == [{"role": "user", "content": parts}]
        assert [v.total for v in ex.videos] == [30] and ex.images == []
    assert [ex.responses for ex in examples[:3]] == [["It brightens", "it fades"]] * 3
    assert all(ex.is_pair for ex in examples[:3]) and examples[3].responses == ["It brightens"]


@pytest.mark.parametrize(
    "value, message",
    [
        ("gone.mp4", "no such file"),
        ("junk.mp4", "cannot decode the video"),
        ("empty", "has no frames"),
        ("https://x.org/v.mp4", "is not fetched"),
    ],
)
def test_a_bad_video_is_named(media, value, message):
    (media / "junk.mp4").write_bytes(b"\x00\x01 not a video at all" * 20)
    (media / "empty").mkdir(exist_ok=True)
    data = write_jsonl(media / "bad.jsonl", [
        {"prompt": "What?", "chosen": "a", "rejected": "b", "video": "clip.mp4"},
        {"prompt": "What?", "chosen": "a", "rejected": "b", "video": value},
    ])  # fmt: skip
    with pytest.raises(DataError, match=message) as caught:
        list(iter_vision_examples(data))
    assert (caught.value.file, caught.value.row, caught.value.field) == (str(data), 2, "video")


def test_a_video_over_the_pixel_limit_is_refused_and_skipping_counts_it(media):
    from rmkit.data.images import ImageTooLarge
    from rmkit.inspect_data import inspect
    from rmkit.jobs.config import InspectConfig

    data = write_jsonl(media / "big.jsonl", [{"prompt": "What?", "response": "a", "video": "clip.mp4"}])
    with pytest.raises(ImageTooLarge, match="64x48 = 3072 pixels, over the limit of 3000"):
        list(iter_vision_examples(data, max_pixels=3000))
    (media / "junk.mp4").write_bytes(b"not a video" * 20)
    mixed = write_jsonl(media / "mixed.jsonl", [
        {"prompt": "What?", "chosen": "a", "rejected": "b", "video": "clip.mp4"},
        {"prompt": "What?", "chosen": "a", "rejected": "b", "video": "junk.mp4"},
    ])  # fmt: skip
    rejects = media / "rejects.jsonl"
    summary = inspect(InspectConfig(data=str(mixed), on_error="skip", rejects=str(rejects)))
    assert (summary["pairs"], summary["videos"], summary["skipped"]) == (1, 1, 1)
    assert "cannot decode the video" in rejects.read_text()


def test_without_pyav_a_video_file_says_how_to_install_it(media, monkeypatch):
    import sys

    from rmkit.errors import RMKitError

    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails, as where PyAV is not installed
    with pytest.raises(RMKitError, match=r"pip install 'rmkit\[video\]'"):
        clip(media / "clip.mp4")


def test_a_training_step_sharing_each_pairs_video_equals_the_unshared_step(video_rm, media):
    """rmkit train's step on video pairs: each pair's video encoded once gives the loss and gradients of
    encoding it once a row."""
    rm, path = video_rm
    results = train_steps(rm, path, video_examples(media)[:1])
    (loss_s, grads_s), (loss_u, grads_u) = results
    assert torch.allclose(loss_s, loss_u, atol=1e-6) and any(
        n.startswith("model.model.visual.") for n in grads_s
    )
    for name, grad in grads_s.items():
        assert torch.allclose(grad, grads_u[name], atol=1e-5), name


def test_score_rank_eval_on_video_rows(video_rm, media, tmp_path):
    """The faces on video pairs: score writes each row's videos and the model's own scores (--video-fps
    given as the model was loaded); eval's accuracy from them; rank ranks a best-of-N row on a video."""
    from rmkit.cli import main

    rm, path = video_rm
    pairs = write_jsonl(media / "pairs.jsonl", [
        {"prompt": "What happens?", "chosen": "it fades in", "rejected": "It turns white, slowly, over time",
         "video": "clip.mp4"},
        {"prompt": "What happens?", "chosen": "It brightens", "rejected": "nothing", "video": "clip.mp4"},
    ])  # fmt: skip
    out = tmp_path / "s.jsonl"
    assert (
        main(["score", "--model", str(path), "--data", str(pairs), "--output", str(out), "--video-fps", "4"])
        == 0
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["videos"] for x in lines] == [["clip.mp4"], ["clip.mp4"]] and lines[0][
        "prompt"
    ] == "<video>What happens?"
    rows = rm.example_tokenizer().tokenize(video_examples(media)[:1])[0]
    assert [lines[0]["score_chosen"], lines[0]["score_rejected"]] == pytest.approx(
        rm.score_rows(rows), abs=1e-5
    )

    args = [
        "eval",
        "--model",
        str(path),
        "--data",
        str(pairs),
        "--output-dir",
        str(tmp_path / "ev"),
        "--video-fps",
        "4",
    ]
    assert main(args) == 0
    figures = next(iter(json.loads((tmp_path / "ev" / "metrics.json").read_text())["results"].values()))
    margins = [x["score_chosen"] - x["score_rejected"] for x in lines]
    assert figures["pairs"]["all"]["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 2)

    bon = write_jsonl(media / "bon.jsonl", [{"prompt": "What happens?", "videos": ["clip.mp4"],
                                             "responses": ["it fades", "It brightens", "nothing"]}])  # fmt: skip
    assert (
        main(["rank", "--model", str(path), "--data", str(bon), "--output", str(tmp_path / "r.jsonl")]) == 0
    )
    (ranked,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert ranked["videos"] == ["clip.mp4"] and ranked["scores"][ranked["best"]] == max(ranked["scores"])


def test_the_server_scores_video_url_parts_and_frame_lists_as_offline(video_rm, media):
    """rmkit serve: a video_url part holding the video as a data URL, and a video given as its frames' data
    URLs, score as the same conversation does offline; a file path is refused naming the part."""
    import io
    import urllib.error
    import urllib.request

    import rmkit
    from rmkit.serving import running

    rm, _ = video_rm
    url = "data:video/mp4;base64," + base64.b64encode((media / "clip.mp4").read_bytes()).decode()
    frames = []
    for colour in ("red", "blue", "red"):
        buffer = io.BytesIO()
        picture(colour).save(buffer, format="PNG")
        frames.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())

    def conversation(part, answer):
        return [{"role": "user", "content": [part, {"type": "text", "text": "What happens?"}]},
                {"role": "assistant", "content": answer}]  # fmt: skip

    body = {"messages": [conversation({"type": "video_url", "video_url": {"url": url}}, "it fades in"),
                         conversation({"type": "video", "video": frames}, "red, blue")]}  # fmt: skip
    parts = [{"type": "video"}, {"type": "text", "text": "What happens?"}]
    offline_examples = [
        VisionExample(0, [{"role": "user", "content": parts}], ["it fades in"], False, videos=[clip(media / "clip.mp4")]),
        VisionExample(0, [{"role": "user", "content": parts}], ["red, blue"], False,
                      videos=[open_video(frames, RowReader("r", 0), "v", base=None, files=False)]),
    ]  # fmt: skip
    offline = [rm.score_rows(row)[0] for row in rm.example_tokenizer().tokenize(offline_examples)]

    def post(payload):
        req = urllib.request.Request(
            base + "/score", json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with running(rmkit.serve(rm, max_wait_ms=10)) as base:
        status, reply = post(body)
        assert status == 200 and reply["scores"] == pytest.approx(offline, abs=1e-5)
        path = {"type": "video_url", "video_url": {"url": str(media / "clip.mp4")}}
        status, reply = post({"messages": [conversation(path, "a")]})
        assert status == 422 and "data URL" in reply["error"]["message"]
        assert reply["error"]["param"] == "messages[0].content[0]"


def test_train_on_video_pairs_then_score(media, tmp_path):
    """rmkit train on video pairs (the same task as images: each pair's video encoded once) writes a value
    head that rmkit score reads."""
    from safetensors.torch import load_file

    from rmkit.cli import main

    backbone = make_vlm(tmp_path / "vlm", "qwen2_vl", video=True)
    rows = [
        {"prompt": "What happens?", "chosen": "It brightens", "rejected": "it fades", "video": "clip.mp4"}
    ] * 4
    data = write_jsonl(media / "train.jsonl", rows)
    out = tmp_path / "rm"
    args = ["train", "--model", str(backbone), "--data", str(data), "--output-dir", str(out), "--max-steps", "1",
            "--batch-size", "2", "--max-frames", "4"]  # fmt: skip
    assert main(args) == 0
    assert set(load_file(str(out / "value_head.safetensors"))) == {
        "v_head.summary.weight",
        "v_head.summary.bias",
    }
    assert (
        main(["score", "--model", str(out), "--data", str(data), "--output", str(tmp_path / "s.jsonl")]) == 0
    )
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 4


def test_a_model_without_a_video_token_refuses_video_rows(media, tmp_path):
    """A VLM whose tokenizer has no <|video_pad|> (here a Qwen2-VL built without one; LLaVA and Gemma3 alike)
    refuses a row with a video, naming the row and field, rather than scoring it without its video."""
    from rmkit.vlm import VisionRewardModel

    rm = VisionRewardModel.from_pretrained(make_vlm(tmp_path / "vlm", "qwen2_vl"))
    assert rm.tokens.video_id is None
    with pytest.raises(DataError, match="reads no video") as caught:
        rm.example_tokenizer().tokenize(video_examples(media)[:1])
    assert (caught.value.row, caught.value.field) == (1, "videos")


def test_mm_rlhf_rewardbench_reads_its_video_rows(video_rm, media, tmp_path):
    """MM-RLHF-RewardBench's video rows (a video path, no image) are scored with their video: the video
    category's ACC and ACC+ equal a hand computation from the model's own scores of those pairs."""
    import shutil

    from rmkit.cli import main

    rm, path = video_rm
    (media / "video").mkdir(exist_ok=True)  # the category is the path's: video/..., mcq/...
    shutil.copy(media / "clip.mp4", media / "video" / "clip.mp4")
    answers = [("It brightens", "it fades"), ("nothing happens", "The light grows, slowly, to white")]
    rows = [{"id": "i", "prompt": "What colour?", "image": "red.png", "video": None, "chosen": "red",
             "rejected": "blue", "chosen_reason": "", "rejected_reason": ""}]  # fmt: skip
    rows += [{"id": "v", "prompt": "What happens?", "image": None, "video": "video/clip.mp4", "chosen": c, "rejected": r,
              "chosen_reason": "", "rejected_reason": ""} for c, r in answers]  # fmt: skip
    data = write_jsonl(media / "mm_reward_bench.jsonl", rows)
    args = ["eval", "--model", str(path), "--data", str(data), "--output-dir", str(tmp_path / "ev"),
            "--bootstrap", "20", "--no-plots", "--video-fps", "4"]  # fmt: skip
    assert main(args) == 0
    (official,) = json.loads((tmp_path / "ev" / "metrics.json").read_text())["suite"]["models"].values()
    parts = [{"type": "video"}, {"type": "text", "text": "What happens?"}]
    right = []
    for c, r in answers:
        ex = VisionExample(
            1, [{"role": "user", "content": parts}], [c, r], True, videos=[clip(media / "clip.mp4")]
        )
        chosen, rejected = rm.score_rows(rm.example_tokenizer().tokenize([ex])[0])
        right.append(chosen > rejected)
    video = official["subsets"]["video"]
    assert (video["score"], video["acc_plus"], video["pairs"]) == (
        pytest.approx(sum(right) / 2),
        float(all(right)),
        2,
    )


def test_qwen3_vl_refuses_video_rows_even_with_its_video_token(media, tmp_path):
    """Qwen3-VL's videos (timestamps written in the text, DeepStack features) are not read yet: a Qwen3-VL
    whose tokenizer and config both have <|video_pad|> still refuses a row with a video, naming row and field,
    rather than reading it by Qwen2-VL's rule."""
    from transformers import AutoTokenizer

    from rmkit.vlm import VisionRewardModel

    path = make_vlm(tmp_path / "vlm", "qwen3_vl")
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.add_special_tokens({"additional_special_tokens": ["<|video_pad|>"]})
    tok.save_pretrained(str(path))
    config = json.loads((path / "config.json").read_text())
    config["video_token_id"] = tok.convert_tokens_to_ids("<|video_pad|>")
    (path / "config.json").write_text(json.dumps(config))
    rm = VisionRewardModel.from_pretrained(path)
    assert rm.model.config.video_token_id == rm.tokenizer.get_vocab()["<|video_pad|>"]
    assert rm.tokens.video_id is None
    with pytest.raises(DataError, match="reads no video") as caught:
        rm.example_tokenizer().tokenize(video_examples(media)[:1])
    assert (caught.value.row, caught.value.field) == (1, "videos")
