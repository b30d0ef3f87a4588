"""Multimodal rows: each format read into one record (image parts where the images go, the images opened),
images from paths, bytes, data URLs and datasets' dicts, and every bad image a one-line error naming the
file, row and field (or skipped, counted and written to the rejects file)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from conftest import write_jsonl
from vision_models import picture

from rmkit.data import Rejects
from rmkit.data.vision import iter_vision_examples
from rmkit.errors import DataError

IMAGE_FIRST = [{"type": "image"}, {"type": "text", "text": "What colour?"}]


def png(colour: str = "red", size: tuple[int, int] = (56, 56)) -> bytes:
    out = io.BytesIO()
    picture(colour, size).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "red.png").write_bytes(png("red"))
    (tmp_path / "img" / "blue.png").write_bytes(png("blue", (84, 56)))
    return tmp_path


FORMATS = {
    "aa_ti2t": (
        {"question": "What colour?", "image": "img/red.png", "response_1": "blue", "response_2": "red",
         "overall_response": 2, "id": 7},
        IMAGE_FIRST, ["red", "blue"],
    ),
    "rlaif_v": (
        {"question": "What colour?", "image": "img/red.png", "chosen": "red", "rejected": "blue", "id": 7},
        IMAGE_FIRST, ["red", "blue"],
    ),
    "trl_vision": (
        {"images": ["img/red.png"], "prompt": [{"role": "user", "content": IMAGE_FIRST}],
         "chosen": [{"role": "assistant", "content": "red"}], "rejected": [{"role": "assistant", "content": "blue"}],
         "id": 7},
        IMAGE_FIRST, ["red", "blue"],
    ),
    "sharegpt": (
        {"conversations": [{"from": "human", "value": "<image>What colour?"}], "images": ["img/red.png"],
         "chosen": {"from": "gpt", "value": "red"}, "rejected": {"from": "gpt", "value": "blue"}, "id": 7},
        IMAGE_FIRST, ["red", "blue"],
    ),
    "mm_rlhf": (
        {"prompt": "<image>What colour?", "image": "img/red.png", "chosen": "red", "rejected": "blue", "id": 7},
        IMAGE_FIRST, ["red", "blue"],
    ),
    "vlfeedback": (
        {"prompt": "What colour?", "img_path": "img/red.png", "id": 7,
         "completions": [{"response": a, "model": "m", "annotations": {"Helpfulness": {"Rating": "3"}}}
                         for a in ("red", "blue", "green")]},
        IMAGE_FIRST, ["red", "blue", "green"],
    ),
    "prompt_response": (
        {"prompt": "Compare <image> with <image>.", "response": "red, then blue",
         "images": ["img/red.png", "img/blue.png"], "id": 7},
        [{"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " with "},
         {"type": "image"}, {"type": "text", "text": "."}],
        ["red, then blue"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_reads_into_the_one_record(folder, name):
    record, content, responses = FORMATS[name]
    path = write_jsonl(folder / "rows.jsonl", [record])
    (ex,) = iter_vision_examples(path)
    assert ex.prompt == [{"role": "user", "content": content}]
    assert ex.responses == responses and ex.is_pair == (len(responses) == 2)
    assert ex.extra == {"id": 7}
    assert [p.image.size for p in ex.images] == [(56, 56), (84, 56)][: len(ex.images)]
    assert ex.images[0].image.getpixel((28, 28)) == (220, 30, 30)  # the red square: the right file, decoded


def test_image_values_of_every_kind(folder):
    """A path relative to the data file, raw bytes, a base64 data URL and a datasets dict give one image."""
    raw = png("blue")
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    rows = [
        {"prompt": "What colour?", "response": "blue", "images": [value]}
        for value in (
            "img/red.png",
            str(folder / "img" / "red.png"),
            url,
            {"bytes": None, "path": "img/red.png"},
        )
    ]
    path = write_jsonl(folder / "rows.jsonl", rows)
    refs = [ex.image_refs[0] for ex in iter_vision_examples(path)]
    assert refs[0] == "img/red.png" and refs[2].startswith("<data URL")
    from rmkit.data.images import open_image
    from rmkit.data.rows import RowReader

    assert open_image(raw, RowReader("x", 1), "images", base=None).image.getpixel((28, 28)) == (30, 60, 220)


BAD = {
    "missing file": ("img/none.png", "cannot read the image file"),
    "not an image": (
        "data:image/png;base64," + base64.b64encode(b"hello").decode(),
        "cannot decode the image",
    ),
    "truncated": (
        "data:image/png;base64," + base64.b64encode(png()[:200]).decode(),
        "cannot decode the image",
    ),
    "remote": ("https://example.com/cat.png", "is not fetched"),
    "bad base64": ("data:image/png;base64,@@@", "base64 is malformed"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_image_is_named(folder, case):
    value, message = BAD[case]
    rows = [{"prompt": "ok", "response": "ok", "images": ["img/red.png"]},
            {"prompt": "What?", "response": "x", "images": [value]}]  # fmt: skip
    path = write_jsonl(folder / "rows.jsonl", rows)
    with pytest.raises(DataError, match=message) as e:
        list(iter_vision_examples(path))
    assert (e.value.file, e.value.row, e.value.field) == (str(path), 2, "images")


def test_a_decompression_bomb_and_a_count_mismatch_are_named(folder):
    (folder / "big.png").write_bytes(png("red", (400, 300)))
    path = write_jsonl(folder / "rows.jsonl", [{"prompt": "x", "response": "y", "images": ["big.png"]}])
    with pytest.raises(DataError, match="400x300 = 120000 pixels, over the limit of 100000"):
        list(iter_vision_examples(path, max_pixels=100_000))
    path = write_jsonl(
        folder / "rows.jsonl", [{"prompt": "<image> and <image>", "response": "y", "images": ["img/red.png"]}]
    )
    with pytest.raises(DataError, match="1 images for 2 <image> marks") as e:
        list(iter_vision_examples(path))
    assert (e.value.row, e.value.field) == (1, "images")


def test_bad_images_skipped_counted_and_written(folder):
    rows = [{"prompt": "a", "response": "b", "images": ["img/none.png"]},
            {"prompt": "a", "response": "b", "images": ["img/red.png"]}]  # fmt: skip
    path = write_jsonl(folder / "rows.jsonl", rows)
    with Rejects(folder / "rejects.jsonl") as rejects:
        kept = list(iter_vision_examples(path, rejects=rejects))
    assert [ex.row for ex in kept] == [2] and rejects.count == 1
    (line,) = [json.loads(x) for x in (folder / "rejects.jsonl").read_text().splitlines()]
    assert "img/none.png" in json.dumps(line) and "cannot read the image file" in json.dumps(line)


def test_text_rows_read_without_images(folder):
    path = write_jsonl(folder / "rows.jsonl", [{"prompt": "Hi", "chosen": "Hello", "rejected": "Go"}])
    (ex,) = iter_vision_examples(path, pairs=True)
    assert ex.prompt == [{"role": "user", "content": "Hi"}] and not getattr(ex, "images", [])


def test_a_requests_oversized_image_is_413_from_its_header(folder):
    """A PNG whose header claims 10000x8000 pixels is refused from the header, before any pixel is decoded:
    a data error in a file, a 413 in a server request naming the part."""
    import struct
    import zlib

    from rmkit.data.formats import examples_from
    from rmkit.serving.protocols import RequestError, with_images

    raw = bytearray(png())
    ihdr = raw.index(b"IHDR")
    raw[ihdr + 4 : ihdr + 12] = struct.pack(">II", 10000, 8000)
    raw[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(raw[ihdr : ihdr + 17])))
    url = "data:image/png;base64," + base64.b64encode(bytes(raw)).decode()
    parts = [{"type": "image", "image": url}, {"type": "text", "text": "What colour?"}]
    with pytest.raises(RequestError) as e:
        with_images(
            examples_from(
                messages=[[{"role": "user", "content": parts}, {"role": "assistant", "content": "red"}]]
            )
        )
    assert e.value.status == 413 and e.value.field == "messages[0].content[0]"
    assert "10000x8000 = 80000000 pixels, over the limit of 50000000" in e.value.message


def vlfeedback_row(ratings: list[tuple[str, str, str]]) -> dict:
    """A VLFeedback row (its published columns) whose answers are rated ``(helpfulness, faithfulness,
    ethics)``, answer i being ``"answer i"``."""
    aspects = ("Helpfulness", "Visual Faithfulness", "Ethical Considerations")
    completions = [
        {"annotations": {a: {"Rating": r, "Rationale": "because"} for a, r in zip(aspects, rated, strict=True)},
         "model": f"model-{i}", "response": f"answer {i}"}
        for i, rated in enumerate(ratings)
    ]  # fmt: skip
    return {"id": "v1", "prompt": "Describe it.", "models": [c["model"] for c in completions],
            "completions": completions, "img_path": "img/red.png"}  # fmt: skip


def test_vlfeedback_is_binarised_by_rmkit_pairs_and_read_with_its_image(folder):
    """VLFeedback's completions binarised as rated data is (rmkit pairs, here by the sum of the three
    aspects, best against the rest, the tie left out): each pair keeps img_path and is read with the image."""
    from rmkit.cli import main

    data = write_jsonl(
        folder / "vlf.jsonl", [vlfeedback_row([("4", "5", "5"), ("2", "3", "5"), ("5", "4", "5")])]
    )
    weights = "Helpfulness=1,Visual Faithfulness=1,Ethical Considerations=1"
    out = folder / "pairs.jsonl"
    assert main(["pairs", "--data", str(data), "--output", str(out), "--weights", weights]) == 0
    pairs = list(iter_vision_examples(out, pairs=True))
    assert [ex.responses for ex in pairs] == [["answer 0", "answer 1"]]  # answer 2 ties answer 0 for best
    assert pairs[0].prompt == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}
    ]
    assert pairs[0].images[0].image.getpixel((28, 28)) == (220, 30, 30)
    assert pairs[0].margin == 4


def test_mm_rlhf_rows_and_their_video_rows(folder):
    """MM-RLHF's pairs (prompt, chosen, rejected, image, has_image) read with the image at its <image> mark;
    a video row is read as video (tests/test_vision_video.py): here its file is missing, which is named with
    its field, or skipped and counted with --on-error skip."""
    rows = [
        {"id": "a", "prompt": "<image>\nWhat colour?", "chosen": "red", "rejected": "blue", "image": "img/red.png",
         "has_image": True},
        {"id": "b", "prompt": "What happens?", "chosen": "x", "rejected": "y", "video": "v/clip.mp4"},
    ]  # fmt: skip
    path = write_jsonl(folder / "mm.jsonl", rows)
    with pytest.raises(DataError, match=r"row 2.*video.*no such file"):
        list(iter_vision_examples(path, pairs=True))
    with Rejects(folder / "rejects.jsonl") as rejects:
        (ex,) = iter_vision_examples(path, pairs=True, rejects=rejects)
    assert rejects.count == 1
    assert ex.prompt[0]["content"][0] == {"type": "image"} and ex.responses == ["red", "blue"]
