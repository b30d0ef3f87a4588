"""LLaVA and Gemma3 read as vision-language RMs, on tiny random models: the image tokens equal to what
transformers' own processors (LlavaProcessor, Gemma3Processor) give, end scores equal to a plain transformers
forward at the last real token under either padding and any batch, --freeze by each family's module names,
and Gemma3's standard sequence-classification checkpoint scored as transformers scores it."""

from __future__ import annotations

import pytest
import torch
from vision_models import make_vlm, mixed_examples, picture, saved_rm, stock

from rmkit.data.images import Picture
from rmkit.data.rendering import ExampleTokenizer
from rmkit.data.vision import VisionExample


@pytest.fixture(scope="module", params=["llava", "gemma3"])
def family_rm(request, tmp_path_factory):
    """``(rm, path)``: a tiny VLM of each family given a seeded value head, saved by rmkit and read back."""
    return saved_rm(tmp_path_factory, request.param, seed=1)


def question(text: str, images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "Look:"}, *[{"type": "image"}] * images,
                                         {"type": "text", "text": text}]}]  # fmt: skip


def examples() -> list[VisionExample]:
    return mixed_examples(question)


def family_inputs(rm, ids: torch.Tensor) -> dict:
    """What the family's forward takes beside ids, as its transformers processor gives it: Gemma3's
    token_type_ids (1 at image tokens), nothing for LLaVA."""
    if rm.model.config.model_type == "gemma3":
        return {"token_type_ids": (ids == rm.model.config.image_token_id).long()}
    return {}


@torch.no_grad()
def plain_forward(rm, row) -> float:
    """The score transformers gives one sequence alone: the VLM's forward, the value head at the last token."""
    ids = torch.tensor([row.ids])
    pixels = {"pixel_values": torch.from_numpy(row.patches)} if row.patches is not None else {}
    with stock(rm.model) as model:
        hidden = model.model(input_ids=ids, **pixels, **family_inputs(rm, ids)).last_hidden_state
    return float(rm.head(hidden[0, -1]))


def transformers_processor(rm):
    """The family's own transformers processor over rmkit's tokenizer and PIL image processor."""
    import transformers

    tok, config = rm.tokenizer, rm.model.config
    if config.model_type == "llava":
        return transformers.LlavaProcessor(
            image_processor=rm.processor,
            tokenizer=tok,
            patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1,  # CLIP's class token
        )
    tok.boi_token, tok.eoi_token, tok.image_token = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
    tok.boi_token_id, tok.image_token_id = config.boi_token_id, config.image_token_id
    return transformers.Gemma3Processor(
        image_processor=rm.processor, tokenizer=tok, image_seq_length=config.mm_tokens_per_image
    )


def test_image_tokens_equal_the_family_processor(family_rm):
    """The ids rmkit expands itself equal what transformers' LlavaProcessor / Gemma3Processor give for the same
    rendered text and images (rmkit then appends the end token), and so do the pixel values and Gemma3's
    token_type_ids."""
    rm, _ = family_rm
    tokenizer = rm.example_tokenizer()
    newline = VisionExample(4, [{"role": "user", "content": [{"type": "text", "text": "Look:\n"}, {"type": "image"},
                                                           {"type": "text", "text": "\nWhat colour?"}]}],
                            ["red"], False, images=[Picture(picture("red"), "r.png")])  # fmt: skip
    for ex in [*examples()[:2], newline]:
        images = [p.image for p in ex.images]
        (row, *_) = tokenizer.tokenize([ex])[0]
        text = ExampleTokenizer.render(tokenizer, ex.prompt, ex.responses[0])  # the chat template's text
        theirs = transformers_processor(rm)(
            text=[text], images=[images], return_tensors="pt", add_special_tokens=False
        )
        assert row.ids[:-1] == theirs["input_ids"][0].tolist() and row.ids[-1] == rm.tokenizer.eos_token_id
        assert (row.patches == theirs["pixel_values"].numpy()).all()
        if "token_type_ids" in theirs:
            ids = torch.tensor([row.ids[:-1]])
            assert family_inputs(rm, ids)["token_type_ids"].tolist() == theirs["token_type_ids"].tolist()


@pytest.mark.parametrize("budget", [16, 10_000])
def test_end_scores_equal_plain_transformers(family_rm, budget):
    """Every row's score equals the plain forward of that row alone, one row a batch or all in one; the rows
    of one example read one pass of the vision encoder."""
    rm, _ = family_rm
    prepared = rm.example_tokenizer().tokenize(examples())
    rows = [r for row in prepared for r in row]
    assert len({len(r.ids) for r in rows}) == len(rows)  # different lengths: padding is exercised
    seen = []
    tower = rm.model.model.vision_tower
    hook = tower.register_forward_hook(lambda module, args, kwargs, out: seen.append(1), with_kwargs=True)
    try:
        scores = rm.score_rows(rows, batch_tokens=budget)
    finally:
        hook.remove()
    assert scores == pytest.approx([plain_forward(rm, r) for r in rows], abs=1e-5)
    assert len(seen) <= sum(row[0].patches is not None for row in prepared)


def test_either_padding_gives_the_rows_alone(family_rm):
    """A pair of different lengths padded on the right and on the left: each read at its last real token, at
    its own positions, equal to the row alone."""
    rm, _ = family_rm
    pair = rm.example_tokenizer().tokenize(examples()[:1])[0]
    alone = [plain_forward(rm, r) for r in pair]
    batch = rm.batch(pair)
    width = batch["input_ids"].shape[1]
    left_ids = torch.full_like(batch["input_ids"], rm.pad_token_id)
    left_mask = torch.zeros_like(batch["attention_mask"])
    for i, r in enumerate(pair):
        left_ids[i, width - len(r.ids) :] = torch.tensor(r.ids)
        left_mask[i, width - len(r.ids) :] = 1
    with torch.inference_mode():
        right = rm(**batch).end_scores.tolist()
        left = rm(left_ids, left_mask, batch["pixel_values"], batch["image_grid_thw"]).end_scores.tolist()
    assert right == pytest.approx(alone, abs=1e-5) and left == pytest.approx(alone, abs=1e-5)


def test_freeze_matches_the_family_modules(family_rm):
    """--freeze vision,projector stops exactly the vision tower's and the multi-modal projector's parameters
    (LLaVA's and Gemma3's module names) and counts them; the language model still trains."""
    from rmkit.training.vision import freeze
    from rmkit.vlm import VisionRewardModel

    _, path = family_rm
    rm = VisionRewardModel.from_pretrained(path)
    frozen = freeze(rm, ["vision", "projector"])
    inner = rm.model.model
    assert frozen == {
        "vision": sum(p.numel() for p in inner.vision_tower.parameters()),
        "projector": sum(p.numel() for p in inner.multi_modal_projector.parameters()),
    }
    assert not any(p.requires_grad for p in inner.vision_tower.parameters())
    assert not any(p.requires_grad for p in inner.multi_modal_projector.parameters())
    assert all(p.requires_grad for p in inner.language_model.parameters())


def test_gemma3_sequence_classification_checkpoint(tmp_path):
    """transformers' own Gemma3ForSequenceClassification checkpoint (the VLM's ``model`` plus ``score.weight``)
    is recognised as a vision RM and scores as transformers' forward does at the last token."""
    from transformers import AutoConfig, Gemma3ForSequenceClassification

    from rmkit import kinds

    backbone = make_vlm(tmp_path / "vlm", "gemma3")
    config = AutoConfig.from_pretrained(backbone)
    config.num_labels = 1
    torch.manual_seed(2)
    classifier = Gemma3ForSequenceClassification(config).eval()
    out = tmp_path / "cls"
    classifier.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (out / name).write_bytes((backbone / name).read_bytes())
    kind, rm = kinds.load(out)
    assert kind.name == "vision"
    rows = [r for row in rm.example_tokenizer().tokenize(examples()) for r in row]
    expected = []
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r.ids])
            pixels = {"pixel_values": torch.from_numpy(r.patches)} if r.patches is not None else {}
            logits = classifier(input_ids=ids, **pixels, **family_inputs(rm, ids)).logits
            expected.append(float(logits[0, 0]))
    assert rm.score_rows(rows, batch_tokens=64) == pytest.approx(expected, abs=1e-5)


def test_align_anything_checkpoint_scores_by_the_formula(tmp_path):
    """align-anything's VLM RM layout (its class subclasses the VLM: the VLM's weights plus score_head.weight,
    no bias, an architecture transformers does not know) is read without remote code, and scores
    score_head.weight · h[last token], h the VLM's last hidden state, computed by hand."""
    from safetensors.torch import load_file
    from torch import nn
    from transformers import AutoModelForImageTextToText

    from rmkit import kinds

    backbone = make_vlm(tmp_path / "vlm", "qwen2_vl")
    vlm = AutoModelForImageTextToText.from_pretrained(backbone)
    torch.manual_seed(3)
    vlm.score_head = nn.Linear(vlm.config.text_config.hidden_size, 1, bias=False)
    vlm.config.architectures = ["AccustomedQwen2VLRewardModel"]
    out = tmp_path / "aa"
    vlm.save_pretrained(out)
    assert "score_head.weight" in load_file(str(out / "model.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (out / name).write_bytes((backbone / name).read_bytes())
    kind, rm = kinds.load(out)
    assert kind.name == "vision" and rm.head.bias is None
    (row,) = rm.example_tokenizer().tokenize([examples()[0]])[0][:1]
    ids = torch.tensor([row.ids])
    with torch.no_grad():
        h = vlm.model(
            input_ids=ids,
            pixel_values=torch.from_numpy(row.patches),
            image_grid_thw=torch.tensor(row.grids),
            mm_token_type_ids=(ids == vlm.config.image_token_id).int(),
        ).last_hidden_state[0, -1]
        by_hand = float(vlm.score_head.weight[0] @ h)
    assert rm.score_rows([row]) == pytest.approx([by_hand], abs=1e-5)


def test_a_training_step_sharing_each_pairs_image_equals_the_unshared_step(family_rm):
    """LLaVA's and Gemma3's training step: each pair's image encoded once gives the loss and every gradient
    (the vision tower's too) of encoding it once a row."""
    from rmkit.training.config import TrainConfig
    from rmkit.training.vision import VisionPair, pair_scores
    from rmkit.vlm import VisionRewardModel

    _, path = family_rm
    rm = VisionRewardModel.from_pretrained(path).train()
    pairs = [VisionPair(*rows) for rows in rm.example_tokenizer().tokenize(examples()[:1])]
    config = TrainConfig(model=str(path), data="x", output_dir="y", score_reg=0.01)
    results = []
    for shared in (True, False):
        rm.zero_grad()
        loss, _, _ = pair_scores(rm, pairs, config, shared=shared)
        loss.sum().backward()
        results.append(
            (loss.detach(), {n: p.grad.clone() for n, p in rm.named_parameters() if p.grad is not None})
        )
    (loss_s, grads_s), (loss_u, grads_u) = results
    assert torch.allclose(loss_s, loss_u, atol=1e-6)
    assert grads_s.keys() == grads_u.keys() and any(".vision_tower." in n for n in grads_s)
    for name, grad in grads_s.items():
        assert torch.allclose(grad, grads_u[name], atol=1e-5), name
