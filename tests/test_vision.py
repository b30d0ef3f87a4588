"""Vision-language RMs (Qwen2-VL, Qwen2.5-VL) on tiny random models: the image tokens as transformers'
processor rule counts them, end scores equal to a plain transformers forward at the last real token under
either padding and any batch, the value-head checkpoint layout, and score/rank/eval/inspect on image rows."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl
from vision_models import make_vlm, mixed_examples, picture, saved_rm, stock

from rmkit.data.images import Picture
from rmkit.data.vision import VisionExample


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def vlm_rm(request, tmp_path_factory):
    """``(rm, path)``: a tiny VLM of each family given a seeded value head, saved by rmkit and read back."""
    return saved_rm(tmp_path_factory, request.param, seed=1)


def question(text: str, images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * images + [{"type": "text", "text": text}]}]


def examples() -> list[VisionExample]:
    return mixed_examples(question)


@torch.no_grad()
def plain_forward(rm, row) -> float:
    """The score transformers gives one sequence alone: the VLM's forward (its image processor's pixel values
    and grids, mm_token_type_ids), the value head at the last token."""
    ids = torch.tensor([row.ids])
    kwargs = {}
    if row.patches is not None:
        kwargs = dict(pixel_values=torch.from_numpy(row.patches), image_grid_thw=torch.tensor(row.grids))
    with stock(rm.model) as model:
        hidden = model.model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            mm_token_type_ids=(ids == rm.model.config.image_token_id).int(),
            **kwargs,
        ).last_hidden_state
    return float(rm.head(hidden[0, -1]))


def test_image_tokens_follow_the_processor_rule(vlm_rm):
    """Each image's placeholder becomes grid_t·grid_h·grid_w / merge² tokens, the count transformers' processor
    gives (its image processor's patches for that size, over merge²); the pixel values are the processor's."""
    rm, _ = vlm_rm
    ex = examples()[1]
    (row,) = rm.example_tokenizer().tokenize([ex])[0]
    merge = rm.processor.merge_size
    expected = [
        rm.processor.get_number_of_image_patches(p.image.height, p.image.width) // merge**2 for p in ex.images
    ]
    image_id = rm.model.config.image_token_id
    runs = "".join("I" if t == image_id else "." for t in row.ids).split(".")
    assert [len(r) for r in runs if r] == expected
    direct = rm.processor(images=[p.image for p in ex.images], return_tensors="np")
    assert (row.patches == direct["pixel_values"]).all()
    assert [list(g) for g in row.grids] == direct["image_grid_thw"].tolist()


@pytest.mark.parametrize("budget", [16, 10_000])
def test_end_scores_equal_plain_transformers(vlm_rm, budget):
    """Every row's score equals the plain forward of that row alone, one row a batch or all in one."""
    rm, _ = vlm_rm
    rows = [r for row in rm.example_tokenizer().tokenize(examples()) for r in row]
    assert len({len(r.ids) for r in rows}) == len(rows)  # different lengths: padding is exercised
    scores = rm.score_rows(rows, batch_tokens=budget)
    assert scores == pytest.approx([plain_forward(rm, r) for r in rows], abs=1e-5)


def test_either_padding_and_the_last_column_fault(vlm_rm):
    """A right-padded pair of different lengths: rmkit reads each at its last real token, so left and right
    padding agree with the rows alone; reading position -1 (align-anything's [:, -1]) scores the shorter
    answer at a pad token and differs."""
    rm, _ = vlm_rm
    pair = rm.example_tokenizer().tokenize(examples()[:1])[0]
    alone = [plain_forward(rm, r) for r in pair]
    batch = rm.batch(pair)
    right = rm(**batch).end_scores.tolist()
    width = batch["input_ids"].shape[1]
    left_ids = torch.full_like(batch["input_ids"], rm.pad_token_id)
    left_mask = torch.zeros_like(batch["attention_mask"])
    for i, r in enumerate(pair):
        left_ids[i, width - len(r.ids) :] = torch.tensor(r.ids)
        left_mask[i, width - len(r.ids) :] = 1
    with torch.inference_mode():
        left = rm(left_ids, left_mask, batch["pixel_values"], batch["image_grid_thw"]).end_scores.tolist()
        out = rm(**{**batch, "token_scores": True})
    assert right == pytest.approx(alone, abs=1e-5) and left == pytest.approx(alone, abs=1e-5)
    last_column = out.scores[:, -1].tolist()
    assert last_column[1] == pytest.approx(alone[1], abs=1e-5)  # the longer answer: no pad after it
    assert abs(last_column[0] - alone[0]) > 1e-4  # the shorter answer read at a pad token


def test_value_head_checkpoint_scores_by_the_formula(vlm_rm):
    """The saved layout: an unmodified VLM checkpoint plus value_head.safetensors (v_head.summary.weight and
    bias); its score is weight · h[last token] + bias, h the VLM's last hidden state, computed by hand."""
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText

    rm, path = vlm_rm
    head = load_file(str(path / "value_head.safetensors"))
    assert set(head) == {"v_head.summary.weight", "v_head.summary.bias"}
    config = json.loads((path / "config.json").read_text())
    assert (
        config["architectures"][0].endswith("ForConditionalGeneration")
        and config["rmkit"]["kind"] == "vision"
    )
    vlm = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    (row,) = rm.example_tokenizer().tokenize([examples()[1]])[0]
    ids = torch.tensor([row.ids])
    with torch.no_grad():
        h = vlm.model(
            input_ids=ids,
            pixel_values=torch.from_numpy(row.patches),
            image_grid_thw=torch.tensor(row.grids),
            mm_token_type_ids=(ids == config["image_token_id"]).int(),
        ).last_hidden_state[0, -1]
    by_hand = float(head["v_head.summary.weight"][0] @ h + head["v_head.summary.bias"][0])
    assert rm.score_rows([row]) == pytest.approx([by_hand], abs=1e-5)


def test_a_backbone_without_value_head_is_refused_for_scoring(tmp_path):
    from rmkit import kinds
    from rmkit.errors import RMKitError

    path = make_vlm(tmp_path / "vlm")
    with pytest.raises(RMKitError, match="no trained score head"):
        kinds.load(path)


def test_score_rank_eval_inspect_on_image_rows(vlm_rm, tmp_path):
    """The faces on image data: score writes each row's images and scores equal to the model's own;
    eval's pairs give the usual figures; inspect names the modality and counts images; rank ranks."""
    from rmkit.cli import main

    rm, path = vlm_rm
    picture("red").save(tmp_path / "red.png")
    picture("blue").save(tmp_path / "blue.png")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"question": "What colour is it?", "image": "red.png", "chosen": "red", "rejected": "blue"},
        {"question": "What colour is it?", "image": "blue.png", "chosen": "It is blue", "rejected": "red"},
    ])  # fmt: skip
    assert (
        main(["score", "--model", str(path), "--data", str(pairs), "--output", str(tmp_path / "s.jsonl")])
        == 0
    )
    lines = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [x["images"] for x in lines] == [["red.png"], ["blue.png"]]
    assert lines[0]["prompt"] == "<image>What colour is it?"
    expected = VisionExample(1, question("What colour is it?"), ["red", "blue"], True,
                             images=[Picture(picture("red"), "red.png")])  # fmt: skip
    rows = rm.example_tokenizer().tokenize([expected])[0]
    assert [lines[0]["score_chosen"], lines[0]["score_rejected"]] == pytest.approx(
        rm.score_rows(rows), abs=1e-5
    )

    assert (
        main(
            [
                "eval",
                "--model",
                str(path),
                "--data",
                str(pairs),
                "--format",
                "rlaif_v",
                "--output-dir",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    figures = next(iter(metrics["results"].values()))["pairs"]["all"]
    margins = [x["score_chosen"] - x["score_rejected"] for x in lines]
    assert figures["accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 2)

    from rmkit.inspect_data import inspect
    from rmkit.jobs.config import InspectConfig

    summary = inspect(InspectConfig(data=str(pairs)))
    assert (summary["kind"], summary["modality"], summary["pairs"], summary["images"]) == (
        "vision",
        "image+text",
        2,
        2,
    )

    bon = write_jsonl(tmp_path / "bon.jsonl", [{"prompt": "<image>Which colour?", "images": ["red.png"],
                                                "responses": ["red", "blue", "green"]}])  # fmt: skip
    assert (
        main(["rank", "--model", str(path), "--data", str(bon), "--output", str(tmp_path / "r.jsonl")]) == 0
    )
    (ranked,) = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted(ranked["ranking"]) == [0, 1, 2] and ranked["images"] == ["red.png"]
    assert ranked["scores"][ranked["best"]] == max(ranked["scores"])


def test_the_server_scores_image_url_parts_as_offline(vlm_rm):
    """rmkit serve: OpenAI-style messages whose user turn holds an image_url part with a data URL score as the
    same conversation does offline; a remote URL is refused naming the part, and the server goes on."""
    import base64
    import io
    import urllib.error
    import urllib.request

    import rmkit
    from rmkit.serving import running

    rm, _ = vlm_rm
    buffer = io.BytesIO()
    picture("red").save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    user = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                        {"type": "text", "text": "What colour is it?"}]}  # fmt: skip
    answers = ["red", "It is blue, the colour of the sky today"]
    body = {"messages": [[user, {"role": "assistant", "content": a}] for a in answers]}
    offline = [
        rm.score_rows(row)[0]
        for a in answers
        for row in rm.example_tokenizer().tokenize(
            [
                VisionExample(
                    0, question("What colour is it?"), [a], False, images=[Picture(picture("red"), "")]
                )
            ]
        )
    ]

    def post(path, payload):
        req = urllib.request.Request(
            base + path, json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    with running(rmkit.serve(rm, max_wait_ms=10)) as base:
        status, reply = post("/score", body)
        assert status == 200 and reply["scores"] == pytest.approx(offline, abs=1e-5)
        status, reply = post("/v1/classify", {"messages": body["messages"][0], "use_activation": False})
        assert status == 200 and reply["data"][0]["probs"][0] == pytest.approx(offline[0], abs=1e-5)
        remote = {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}],
        }
        status, reply = post("/score", {"messages": [[remote, {"role": "assistant", "content": "a"}]]})
        assert status == 422 and "data URL" in reply["error"]["message"]
        assert reply["error"]["param"] == "messages[0].content[0]"
        assert post("/score", body)[0] == 200


def test_truncation_cuts_the_shared_prompt_once_and_never_an_image(vlm_rm):
    """Over the limit, the prompt is cut from the left once for both answers, after the images are expanded;
    where the cut would reach an image the pair is dropped (and counted)."""
    from conftest import WORDS

    from rmkit.data import RowCounts

    rm, _ = vlm_rm
    long_text = " ".join(WORDS * 3)
    text_first = [{"role": "user", "content": [{"type": "text", "text": long_text}, {"type": "image"},
                                               {"type": "text", "text": "What colour?"}]}]  # fmt: skip
    red = [Picture(picture("red"), "r.png")]
    ex = VisionExample(1, text_first, ["red", "It is blue, the colour of the sky"], True, images=red)
    (full,) = rm.example_tokenizer().tokenize([ex])
    limit = max(len(r.ids) for r in full) - 20
    (cut,) = rm.example_tokenizer(max_length=limit).tokenize([ex])
    image_id = rm.model.config.image_token_id
    assert max(len(r.ids) for r in cut) == limit and all(r.truncated for r in cut)
    assert [r.ids.count(image_id) for r in cut] == [r.ids.count(image_id) for r in full]
    assert [len(f.ids) - len(c.ids) for f, c in zip(full, cut, strict=True)] == [20, 20]  # one cut for both
    image_first = VisionExample(2, question(long_text + "What colour?"), ex.responses, True, images=red)
    stats = RowCounts()
    for row in rm.example_tokenizer(max_length=limit).tokenize([image_first]):
        stats.add(row)
    assert stats.dropped == 1


@pytest.mark.parametrize("budget", [16, 10_000])
def test_each_examples_images_run_through_the_encoder_once(vlm_rm, budget):
    """A pair's two rows (and a row a batch, budget 16) read one pass of the vision encoder over their image."""
    rm, _ = vlm_rm
    prepared = rm.example_tokenizer().tokenize(examples())
    rows = [r for row in prepared for r in row]
    seen = []
    hook = rm.model.model.visual.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    try:
        rm.score_rows(rows, batch_tokens=budget)
    finally:
        hook.remove()
    assert sum(seen) == sum(len(row[0].patches) for row in prepared if row[0].patches is not None)
