"""Qwen's Conv3d patch embedding computed as one matrix product (rmkit.lean): the same function,
parameters and gradients as transformers' layer."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from vision_models import saved_rm

from rmkit.lean import PatchConv3d, as_matmul


def conv_pair(bias: bool) -> tuple[nn.Conv3d, nn.Conv3d]:
    torch.manual_seed(0)
    stock = nn.Conv3d(3, 48, (2, 14, 14), (2, 14, 14), bias=bias)
    ours = nn.Conv3d(3, 48, (2, 14, 14), (2, 14, 14), bias=bias)
    ours.load_state_dict(stock.state_dict())
    assert as_matmul(ours) == 1
    return stock, ours


@pytest.mark.parametrize("bias", [False, True])
def test_the_product_equals_the_convolution_and_its_gradients(bias):
    """Qwen2-VL's layer has no bias, Qwen3-VL's has one: outputs, input and parameter gradients agree."""
    stock, ours = conv_pair(bias)
    assert type(ours) is PatchConv3d
    x = torch.randn(37, 3, 2, 14, 14)
    xs, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_s, out_o = stock(xs), ours(xo)
    assert out_o.shape == out_s.shape == (37, 48, 1, 1, 1)
    torch.testing.assert_close(out_o, out_s, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out_s)
    (out_s * weights).sum().backward()
    (out_o * weights).sum().backward()
    torch.testing.assert_close(xo.grad, xs.grad, rtol=1e-5, atol=1e-5)
    for name, p in stock.named_parameters():
        torch.testing.assert_close(dict(ours.named_parameters())[name].grad, p.grad, rtol=1e-4, atol=1e-4)


def test_other_inputs_and_layers_keep_the_convolution():
    """An input larger than the kernel runs the convolution itself; a layer with padding is left alone."""
    stock, ours = conv_pair(True)
    x = torch.randn(2, 3, 4, 28, 28)
    assert torch.equal(ours(x), stock(x))
    padded = nn.Conv3d(3, 8, 2, 2, padding=1)
    assert as_matmul(padded) == 0 and type(padded) is nn.Conv3d


def test_a_qwen_vlm_rm_embeds_patches_by_the_product_and_saves_the_same_weights(tmp_path_factory, tmp_path):
    """Loading makes the patch embedding the product; the checkpoint it writes holds the layer's weight under
    transformers' own name and shape."""
    rm, _ = saved_rm(tmp_path_factory, "qwen2_vl", seed=1)
    layers = [m for m in rm.model.modules() if isinstance(m, nn.Conv3d)]
    assert layers and all(type(m) is PatchConv3d for m in layers)
    rm.save_pretrained(tmp_path / "out")
    weights = {
        k: v for f in sorted((tmp_path / "out").glob("model*.safetensors")) for k, v in load_file(f).items()
    }
    name = next(k for k in weights if k.endswith("patch_embed.proj.weight"))
    assert weights[name].shape == layers[0].weight.shape
    torch.testing.assert_close(weights[name], layers[0].weight.detach())


def test_the_last_feed_forward_runs_only_where_the_final_state_is_read(tmp_path_factory):
    """Under inference, with each row's end given, the last layer's feed-forward sees one token a row and the
    final states there equal the whole forward's; a prompt's pass (no end read) keeps the very same cache;
    with gradients on nothing changes."""
    from rmkit.lean import last_feed_forward, read_only_at
    from rmkit.packing import last_real

    rm, _ = saved_rm(tmp_path_factory, "qwen2_vl", seed=1)
    torch.manual_seed(0)
    ids = torch.randint(5, 60, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    ends = last_real(mask)
    seen = []
    hook = last_feed_forward(rm.model).register_forward_hook(lambda m, a, o: seen.append(a[0].shape[:2]))
    try:
        with torch.inference_mode():
            whole = rm.run(ids, mask, use_cache=True)
            with read_only_at(rm.model, ends):
                lean = rm.run(ids, mask, use_cache=True)
            with read_only_at(rm.model, torch.zeros(0, dtype=torch.long)):
                prompt = rm.run(ids, mask, use_cache=True)
        rows = torch.arange(3)
        torch.testing.assert_close(
            lean.last_hidden_state[rows, ends], whole.last_hidden_state[rows, ends], rtol=1e-5, atol=1e-5
        )
        assert seen[:3] == [(3, 9), (3, 1), (3, 1)]
        for a, b in zip(whole.past_key_values.layers, prompt.past_key_values.layers, strict=True):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
        seen.clear()
        with read_only_at(rm.model, ends):
            trained = rm.run(ids, mask, use_cache=False)
        assert seen == [(3, 9)] and trained.last_hidden_state.requires_grad
    finally:
        hook.remove()
