"""The backbones read after the first four (Qwen3-VL and Qwen3-VL-MoE, LLaVA-NeXT, LLaVA-OneVision, Idefics3),
on tiny random models: the image tokens as each family's processor gives them (its processor class where one
builds without torchvision, else its rule by hand), end scores equal to a plain transformers forward at the
last real token under either padding and two batch budgets, --freeze by the family's module names, a training
step sharing each pair's image equal to the unshared one, truncation that never cuts into an image's ids; and
where an external value-head checkpoint is read (its model card's token, not one past it)."""

from __future__ import annotations

import pytest
import torch
from vision_models import mixed_examples, picture, saved_rm, stock

FAMILIES = ["qwen3_vl", "qwen3_vl_moe", "llava_next", "llava_onevision", "idefics3"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_rm(request, tmp_path_factory):
    """``(rm, path)``: a tiny VLM of each family given a seeded value head, saved by rmkit and read back."""
    return saved_rm(tmp_path_factory, request.param, seed=1)


def question(text: str, images: int = 1) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": "Look:"}, *[{"type": "image"}] * images,
                                         {"type": "text", "text": text}]}]  # fmt: skip


def examples():
    return mixed_examples(question)


def plain_inputs(rm, row) -> dict:
    """One row's inputs as the family's transformers processor gives them to its forward."""
    ids, family = torch.tensor([row.ids]), rm.model.config.model_type
    out = {"input_ids": ids}
    if family.startswith("qwen3_vl"):
        out["mm_token_type_ids"] = (ids == rm.model.config.image_token_id).int()
    if row.patches is not None:
        out["pixel_values"] = torch.from_numpy(row.patches)
    if row.patches is not None and family == "idefics3":  # one sample of tiles, its pixel mask all ones
        out["pixel_values"] = out["pixel_values"][None]
        out["pixel_attention_mask"] = torch.ones(
            1, *row.patches.shape[:1], *row.patches.shape[2:], dtype=torch.long
        )
    if row.patches is not None and family.startswith("qwen3_vl"):
        out["image_grid_thw"] = torch.tensor(row.grids)
    if row.patches is not None and family in ("llava_next", "llava_onevision"):  # its images' sizes
        out["image_sizes"] = torch.tensor([g[1:] for g in row.grids])
    if row.patches is not None and family == "llava_onevision":  # one sample: its count of images
        out["batch_num_images"] = torch.tensor([len(row.grids)])
    return out


@torch.no_grad()
def plain_forward(rm, row) -> float:
    """The score transformers gives one sequence alone: the VLM's forward, the value head at the last token."""
    with stock(rm.model) as model:
        hidden = model.model(**plain_inputs(rm, row)).last_hidden_state
    return float(rm.head(hidden[0, -1]))


def test_qwen3_vl_image_tokens_follow_its_processor_rule(tmp_path_factory):
    """Qwen3VLProcessor cannot be built without torchvision (its video processor), so its rule by hand: the
    image processor resizes each side to a multiple of patch·merge = 32 (56 -> 64, 84 -> 96), the grid is
    (1, h/16, w/16), and the one <|image_pad|> between <|vision_start|> and <|vision_end|> becomes
    h·w/16²/2² tokens, marked 1 in mm_token_type_ids; the pixel values are the image processor's."""
    rm, _ = saved_rm(tmp_path_factory, "qwen3_vl", seed=1)
    ex = examples()[1]  # a 56x56 and an 84x56 (width x height) image
    assert [p.image.size for p in ex.images] == [(56, 56), (84, 56)]
    (row,) = rm.example_tokenizer().tokenize([ex])[0]
    assert row.grids == [(1, 4, 4), (1, 4, 6)]
    config, tok = rm.model.config, rm.tokenizer
    image_id, start, end = config.image_token_id, config.vision_start_token_id, config.vision_end_token_id
    marks = "".join(
        "I" if t == image_id else "<" if t == start else ">" if t == end else "." for t in row.ids
    )
    assert [run for run in marks.split(".") if run] == ["<" + "I" * 4 + "><" + "I" * 6 + ">"]
    types = rm.family.inputs(torch.tensor([row.ids]), torch.ones(1, len(row.ids)), image_id, None)
    assert types["mm_token_type_ids"][0].tolist() == [int(t == image_id) for t in row.ids]
    direct = rm.processor(images=[p.image for p in ex.images], return_tensors="np")
    assert row.patches.shape == (4 * 4 + 4 * 6, 3 * 2 * 16 * 16)
    assert (row.patches == direct["pixel_values"]).all()
    assert tok.decode(row.ids[-1:]) == tok.eos_token


def anyres_processor(rm):
    """transformers' LlavaNextProcessor or LlavaOnevisionProcessor over rmkit's tokenizer and PIL image
    processor; LLaVA-OneVision's with no video processor (its class needs torchvision, so the class check is
    skipped for it alone)."""
    import transformers

    config = rm.model.config
    strategy = config.vision_feature_select_strategy
    if config.model_type == "llava_next":
        return transformers.LlavaNextProcessor(
            image_processor=rm.processor,
            tokenizer=rm.tokenizer,
            patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=strategy,
            num_additional_image_tokens=1,  # CLIP's class token
        )

    class Processor(transformers.LlavaOnevisionProcessor):
        def check_argument_for_proper_class(self, name, argument):
            return None if argument is None else super().check_argument_for_proper_class(name, argument)

    return Processor(
        image_processor=rm.processor,
        tokenizer=rm.tokenizer,
        video_processor=None,
        num_image_tokens=(config.vision_config.image_size // config.vision_config.patch_size) ** 2,
        vision_feature_select_strategy=strategy,
        vision_aspect_ratio=config.vision_aspect_ratio,
    )


@pytest.mark.parametrize("family", ["llava_next", "llava_onevision"])
def test_anyres_inputs_equal_the_family_processor(tmp_path_factory, family):
    """The ids rmkit expands itself equal LlavaNextProcessor's / LlavaOnevisionProcessor's for the same
    rendered text and the example's images as one sample (rmkit then appends EOS), and so do the pixel values
    (images, tiles, C, H, W), the image sizes and LLaVA-OneVision's batch_num_images; cases: a square image
    (2x2 tiles; LLaVA-OneVision's scaled down past anyres_max_1), a wide one (its padding rows removed), a very
    wide one (another grid), two images (LLaVA-OneVision: base tile and newline each); each row scores as the
    plain forward does."""
    from rmkit.data.images import Picture
    from rmkit.data.rendering import ExampleTokenizer
    from rmkit.data.vision import VisionExample

    rm, _ = saved_rm(tmp_path_factory, family, seed=1)
    tokenizer, processor = rm.example_tokenizer(), anyres_processor(rm)
    sizes = [[(56, 56)], [(84, 56)], [(200, 40)], [(56, 56), (84, 56)]]
    counts = []
    for i, size in enumerate(sizes):
        images = [picture("red", s, seed=j) for j, s in enumerate(size)]
        ex = VisionExample(i, question("Which?", len(images)), ["red"], False,
                           images=[Picture(im, f"{j}.png") for j, im in enumerate(images)])  # fmt: skip
        (row,) = tokenizer.tokenize([ex])[0]
        text = ExampleTokenizer.render(tokenizer, ex.prompt, ex.responses[0])
        theirs = processor(text=[text], images=[images], return_tensors="np", add_special_tokens=False)
        assert row.ids[:-1] == theirs["input_ids"][0].tolist() and row.ids[-1] == rm.tokenizer.eos_token_id
        assert row.patches.shape == theirs["pixel_values"].shape
        assert (row.patches == theirs["pixel_values"]).all()
        ids = torch.tensor([row.ids])
        inputs = rm.family.inputs(ids, torch.ones_like(ids), 0, torch.tensor(row.grids))
        assert inputs["image_sizes"].tolist() == theirs["image_sizes"].tolist()
        if family == "llava_onevision":
            assert inputs["batch_num_images"].tolist() == theirs["batch_num_images"].tolist()
        counts.append(row.ids.count(rm.model.config.image_token_id))
        assert rm.score_rows([row]) == pytest.approx([plain_forward(rm, row)], abs=1e-5)
    assert len(set(counts[:3])) == 3
    several = 2 * (4 + 1) if family == "llava_onevision" else counts[0] + counts[1]
    assert counts[3] == several


@pytest.mark.parametrize("splitting", [True, False])
def test_idefics3_inputs_equal_its_processor(tmp_path_factory, splitting):
    """The ids rmkit writes itself equal Idefics3Processor's for the same rendered text and images (rmkit then
    appends EOS): each tile's <fake_token_around_image><row_i_col_j> and image tokens, the newlines, the global
    tile's <global-img> run; without image splitting, the global run alone. The pixel values are the
    processor's tiles in order (its pixel attention mask all ones); each row scores as the plain forward."""
    import transformers

    from rmkit.data.images import Picture
    from rmkit.data.rendering import ExampleTokenizer
    from rmkit.data.vision import VisionExample

    rm, _ = saved_rm(tmp_path_factory, "idefics3", seed=1)
    rm.processor.do_image_splitting = splitting
    tokenizer = rm.example_tokenizer()
    processor = transformers.Idefics3Processor(
        image_processor=rm.processor, tokenizer=rm.tokenizer, image_seq_len=4
    )
    for i, size in enumerate([[(56, 56)], [(84, 56)], [(200, 40), (56, 56)]]):
        images = [picture("red", s, seed=j) for j, s in enumerate(size)]
        ex = VisionExample(i, question("Which?", len(images)), ["red"], False,
                           images=[Picture(im, f"{j}.png") for j, im in enumerate(images)])  # fmt: skip
        (row,) = tokenizer.tokenize([ex])[0]
        text = ExampleTokenizer.render(tokenizer, ex.prompt, ex.responses[0])
        theirs = processor(text=[text], images=[images], return_tensors="np", add_special_tokens=False)
        assert row.ids[:-1] == theirs["input_ids"][0].tolist() and row.ids[-1] == rm.tokenizer.eos_token_id
        assert (row.patches == theirs["pixel_values"][0]).all() and theirs["pixel_attention_mask"].all()
        assert all((rows > 0) == splitting for _, rows, _ in row.grids)
        assert rm.score_rows([row]) == pytest.approx([plain_forward(rm, row)], abs=1e-5)


@pytest.mark.parametrize("budget", [16, 10_000])
def test_end_scores_equal_plain_transformers(family_rm, budget):
    """Every row's score equals the plain forward of that row alone, one row a batch or all in one; the rows
    of one example read one pass of the vision encoder."""
    rm, _ = family_rm
    prepared = rm.example_tokenizer().tokenize(examples())
    rows = [r for row in prepared for r in row]
    assert len({len(r.ids) for r in rows}) > 2  # different lengths: padding is exercised
    seen = []
    tower = rm.model.get_submodule(rm.family.vision.rstrip("."))
    hook = tower.register_forward_hook(lambda *args: seen.append(1))
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
    ids, mask = batch.pop("input_ids"), batch.pop("attention_mask")
    batch.pop("right_padded")
    left_ids, left_mask = torch.full_like(ids, rm.pad_token_id), torch.zeros_like(mask)
    for i, r in enumerate(pair):
        left_ids[i, ids.shape[1] - len(r.ids) :] = torch.tensor(r.ids)
        left_mask[i, ids.shape[1] - len(r.ids) :] = 1
    assert not torch.equal(mask, left_mask)
    with torch.inference_mode():
        right = rm(ids, mask, **batch).end_scores.tolist()
        left = rm(left_ids, left_mask, **batch).end_scores.tolist()
    assert right == pytest.approx(alone, abs=1e-5) and left == pytest.approx(alone, abs=1e-5)


# family: (the vision encoder's module, its projector's modules and parameters into the language model)
MODULES = {
    "qwen3_vl": ("model.visual", ["model.visual.merger", "model.visual.deepstack_merger_list"]),
    "qwen3_vl_moe": ("model.visual", ["model.visual.merger", "model.visual.deepstack_merger_list"]),
    "llava_next": ("model.vision_tower", ["model.multi_modal_projector", "model.image_newline"]),
    "llava_onevision": ("model.vision_tower", ["model.multi_modal_projector", "model.image_newline"]),
    "idefics3": ("model.vision_model", ["model.connector"]),
}


def test_freeze_matches_the_family_modules(family_rm):
    """--freeze vision,projector stops exactly the family's vision encoder (less its projector) and projector
    parameters and counts them; the language model still trains."""
    from rmkit.training.vision import freeze
    from rmkit.vlm import VisionRewardModel

    _, path = family_rm
    rm = VisionRewardModel.from_pretrained(path)
    tower, projectors = MODULES[rm.model.config.model_type]
    params = dict(rm.model.named_parameters())
    under = lambda prefix: {n for n in params if n == prefix or n.startswith(prefix + ".")}  # noqa: E731
    projector = set().union(*map(under, projectors))
    vision = under(tower) - projector
    frozen = freeze(rm, ["vision", "projector"])
    assert projector and vision
    assert frozen == {
        "vision": sum(params[n].numel() for n in vision),
        "projector": sum(params[n].numel() for n in projector),
    }
    assert not any(params[n].requires_grad for n in vision | projector)
    rest = [p for n, p in params.items() if n not in vision | projector]  # the language model
    assert all(p.requires_grad for p in rest) and rm.head.weight.requires_grad


def test_a_training_step_sharing_each_pairs_image_equals_the_unshared_step(family_rm):
    """Each pair's image encoded once (its features, DeepStack's too, kept and given to both rows) gives the
    loss and every gradient of encoding it once a row."""
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
    assert grads_s.keys() == grads_u.keys()
    _, projectors = MODULES[rm.model.config.model_type]
    assert all(any(n.startswith(f"model.{p}") for n in grads_s) for p in projectors)
    for name, grad in grads_s.items():
        assert torch.allclose(grad, grads_u[name], atol=1e-5), name


@pytest.fixture(scope="module")
def skywork_layout(tmp_path_factory):
    """An external checkpoint in Skywork-VL-Reward's layout, without rmkit's settings: a tiny Qwen2.5-VL (its
    base) whose tokenizer adds no BOS (as Qwen's), ``value_head.safetensors`` beside it. ``(path, W, b)``."""
    from safetensors.torch import save_file
    from tokenizers import processors
    from transformers import AutoTokenizer
    from vision_models import make_vlm

    path = make_vlm(tmp_path_factory.mktemp("skywork"), "qwen2_5_vl", seed=4)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save_pretrained(str(path))
    torch.manual_seed(8)
    weight, bias = torch.randn(1, 32), torch.randn(1)
    save_file(
        {"v_head.summary.weight": weight, "v_head.summary.bias": bias}, str(path / "value_head.safetensors")
    )
    return path, weight, bias


@torch.no_grad()
def test_an_external_checkpoint_is_read_where_its_model_card_reads(skywork_layout, tmp_path):
    """Skywork-VL-Reward's model card (and LLaMA-Factory's pairwise data, which trained such heads): the chat
    template's text of the conversation (add_generation_prompt=False), through the processor (each
    <|image_pad|> expanded, the tokenizer's defaults), the value head read at attention_mask.sum() - 1, the
    template's last token ('\\n' after <|im_end|>). rmkit reads an external checkpoint there, one token before
    where it would with EOS appended; the same model saved by rmkit keeps rmkit's end (EOS appended), and
    align-anything's score_head layout is read at the EOS its preference data appends."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer, Qwen2VLImageProcessorPil

    from rmkit import kinds
    from rmkit.vlm import VisionRewardModel

    path, weight, bias = skywork_layout
    kind, rm = kinds.load(path)
    assert kind.name == "vision" and not rm.metadata
    ex = examples()[0]
    rows = rm.example_tokenizer().tokenize([ex])[0]

    tok = AutoTokenizer.from_pretrained(str(path))
    images = Qwen2VLImageProcessorPil.from_pretrained(str(path))(
        images=[p.image for p in ex.images], return_tensors="pt"
    )
    model = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    pad = model.config.image_token_id
    count = int(images["image_grid_thw"].prod() // 4)
    card = []
    for row, answer in zip(rows, ex.responses, strict=True):
        text = tok.apply_chat_template(
            [*ex.prompt, {"role": "assistant", "content": answer}],
            tokenize=False,
            add_generation_prompt=False,
        )
        assert text.endswith("<|im_end|>\n")
        text = text.replace("<|image_pad|>", "<|image_pad|>" * count)  # the processor's expansion
        inputs = tok([text], return_tensors="pt")
        ids = inputs["input_ids"]
        hidden = model.model(
            input_ids=ids,
            attention_mask=inputs["attention_mask"],
            pixel_values=images["pixel_values"],
            image_grid_thw=images["image_grid_thw"],
            mm_token_type_ids=(ids == pad).int(),
        ).last_hidden_state
        last = int(inputs["attention_mask"].sum()) - 1
        assert tok.decode(ids[0, last]) == "\n"
        assert row.ids == ids[0].tolist()
        card.append(float(weight[0] @ hidden[0, last] + bias[0]))
    assert rm.score_rows(rows, batch_tokens=64) == pytest.approx(card, abs=1e-5)

    VisionRewardModel.from_pretrained(path).save_pretrained(tmp_path / "own")
    own = VisionRewardModel.from_pretrained(tmp_path / "own")
    assert own.metadata["kind"] == "vision"
    mine = own.example_tokenizer().tokenize([ex])[0]
    assert [r.ids for r in mine] == [[*r.ids, tok.eos_token_id] for r in rows]

    # align-anything's layout (score_head among the VLM's weights): its preference data appends eos_token
    model.score_head = torch.nn.Linear(32, 1, bias=False)
    model.save_pretrained(tmp_path / "aa")
    for f in path.iterdir():  # the tokenizer, its chat template and the image processor
        if f.suffix != ".safetensors" and not (tmp_path / "aa" / f.name).exists():
            (tmp_path / "aa" / f.name).write_bytes(f.read_bytes())
    theirs = VisionRewardModel.from_pretrained(tmp_path / "aa").example_tokenizer().tokenize([ex])[0]
    assert [r.ids for r in theirs] == [[*r.ids, tok.eos_token_id] for r in rows]


def test_pixel_bounds_are_refused_where_the_image_processor_has_none(family_rm):
    """--min-pixels/--max-pixels bound Qwen's image processors (Qwen3-VL's too); for the others, whose image
    processors would ignore them silently, they are refused in one line naming the model type."""
    from rmkit.errors import RMKitError
    from rmkit.vlm import VisionRewardModel

    rm, path = family_rm
    family = rm.model.config.model_type
    if family.startswith("qwen3_vl"):
        bounded = VisionRewardModel.from_pretrained(path, max_pixels=64 * 64)
        assert bounded.processor.size["longest_edge"] == 64 * 64
        return
    with pytest.raises(RMKitError, match=f"--min-pixels/--max-pixels.*{family}"):
        VisionRewardModel.from_pretrained(path, max_pixels=64 * 64)


def test_the_kind_recognises_every_family():
    """The model types the vision kind recognises without importing torch are the families rmkit reads."""
    from rmkit.kinds.vision import MODEL_TYPES
    from rmkit.vlm_families import FAMILIES

    assert sorted(MODEL_TYPES) == sorted(FAMILIES)


def test_truncation_never_cuts_into_an_images_tags(tmp_path_factory):
    """A prompt cut from the left keeps each image whole, its ids before the image tokens included: Idefics3's
    <fake_token_around_image><row_1_col_1> of the first tile. The shortest cut that keeps them keeps the
    example (its row then begins <|im_start|>, the image's run); one token more drops it, named and counted
    as for any image the cut would reach."""
    from rmkit.data.images import Picture
    from rmkit.data.vision import VisionExample

    rm, _ = saved_rm(tmp_path_factory, "idefics3", seed=1)
    words = " ".join(["the capital of France is Paris"] * 6)
    prompt = [{"role": "user", "content": [{"type": "text", "text": words}, {"type": "image"},
                                           {"type": "text", "text": "Which?"}]}]  # fmt: skip
    ex = VisionExample(1, prompt, ["red"], False, images=[Picture(picture("red"), "r.png")])
    (full,) = rm.example_tokenizer().tokenize([ex])[0]
    fake = rm.tokenizer.convert_tokens_to_ids("<fake_token_around_image>")
    first = full.ids.index(fake)
    assert full.ids[0] == rm.tokenizer.convert_tokens_to_ids("<|im_start|>") and first > 2
    shortest = len(full.ids) - (first - 1)  # the cut removes the text between <|im_start|> and the image
    (kept,) = rm.example_tokenizer(max_length=shortest).tokenize([ex])[0]
    assert kept.truncated and kept.ids == full.ids[:1] + full.ids[first:]
    assert rm.example_tokenizer(max_length=shortest - 1).tokenize([ex]) == [None]
