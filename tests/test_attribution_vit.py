"""Attention methods for ViTs: rollout against a hand-computed case, Chefer et al. against their reference code's
formula, attention recording that leaves the model's outputs alone, and Grad-CAM on ViT tokens."""

from __future__ import annotations

import pytest
import torch

import xai_bench  # noqa: F401  (before torchvision/timm)
from xai_bench.attribution.vit_attention import (AttentionRollout, RawAttention, TransformerAttribution,
                                                 recorded_attention, rollout)
from xai_bench.models import create_model
from xai_bench.models.vit import attention_modules


def tiny_vit():
    torch.manual_seed(0)
    return create_model("vit_tiny_shapes", num_classes=3, input_size=16).eval()


def images(n=2):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(4))


def test_rollout_hand_computed():
    # one head, three tokens (class token + 2 patches), two blocks
    a1 = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    a2 = torch.tensor([[0.2, 0.3, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # 0.5·I + 0.5·A: [[.75,.25,0],…] and [[.6,.15,.25],…]; class-token row of the product Ã2·Ã1:
    # .6·[.75,.25,0] + .15·[0,1,0] + .25·[0,0,1] = [.45, .30, .25]
    joint = rollout([a1.view(1, 1, 3, 3), a2.view(1, 1, 3, 3)])
    assert torch.allclose(joint[0, 0], torch.tensor([0.45, 0.30, 0.25]))
    # heads are averaged first: mean(A2, I) = [[.6,.15,.25],…] → Ã2 = [[.8,.075,.125],…];
    # .8·[.75,.25,0] + .075·[0,1,0] + .125·[0,0,1] = [.6, .275, .125]
    two = rollout([torch.stack([a1, a1]).unsqueeze(0), torch.stack([a2, torch.eye(3)]).unsqueeze(0)])
    assert torch.allclose(two[0, 0], torch.tensor([0.6, 0.275, 0.125]))


def test_recording_attention_leaves_outputs_and_model_unchanged():
    model, x = tiny_vit(), images()
    modules = attention_modules(model.net)
    assert len(modules) == 4 and all(m.fused_attn for m in modules) or not any(m.fused_attn for m in modules)
    flags = [m.fused_attn for m in modules]
    with torch.no_grad():
        ref = model(x)
        with recorded_attention(modules) as store:
            out = model(x)
    assert torch.allclose(out, ref, atol=1e-5)
    assert len(store) == 4 and store[0].shape == (2, 4, 17, 17)
    assert torch.allclose(store[0].sum(-1), torch.ones(2, 4, 17))
    assert [m.fused_attn for m in modules] == flags and all(not m.attn_drop._forward_hooks for m in modules)


def test_raw_attention_and_rollout_maps():
    model, x = tiny_vit(), images()
    with torch.no_grad(), recorded_attention(attention_modules(model.net)) as store:
        model(x)
    raw = RawAttention(model).attribute(x)
    assert raw.shape == (2, 1, 4, 4)
    assert torch.allclose(raw.flatten(1), store[-1].mean(1)[:, 0, 1:], atol=1e-6)
    roll = AttentionRollout(model).attribute(x)
    assert torch.allclose(roll.flatten(1), rollout(store)[:, 0, 1:], atol=1e-6)
    assert not torch.allclose(roll, raw)


def _chefer_reference(model, image, index):
    """hila-chefer/Transformer-MM-Explainability (ViT example, ``generate_relevance``), one image at a time:
    R = I; for each block R += avg_heads(grad ⊙ A)⁺ · R; returns R[0, 1:]."""
    maps = []

    def keep(module, args, out):  # their Attention.save_attention_map / save_attn_gradients
        out.retain_grad()
        maps.append(out)

    hooks = [m.attn_drop.register_forward_hook(keep) for m in attention_modules(model.net)]
    for m in attention_modules(model.net):
        m.fused_attn = False
    try:
        output = model(image.unsqueeze(0))
        one_hot = torch.zeros_like(output)
        one_hot[0, index] = 1
        model.zero_grad()
        (one_hot * output).sum().backward()
    finally:
        for h in hooks:
            h.remove()
        for m in attention_modules(model.net):
            m.fused_attn = True
    num_tokens = maps[0].shape[-1]
    r = torch.eye(num_tokens)
    for cam in maps:
        grad = cam.grad.reshape(-1, num_tokens, num_tokens)
        cam = cam.detach().reshape(-1, num_tokens, num_tokens)
        cam = (grad * cam).clamp(min=0).mean(dim=0)
        r = r + torch.matmul(cam, r)
    return r[0, 1:]


def test_transformer_attribution_matches_reference_formula():
    model, x = tiny_vit(), images()
    targets = torch.tensor([2, 0])
    ours = TransformerAttribution(model).attribute(x, target=targets)
    for i in range(2):
        ref = _chefer_reference(model, x[i], int(targets[i]))
        assert torch.allclose(ours[i].flatten(), ref, atol=1e-5), (ours[i].flatten(), ref)
    # class-specific: another class gives another map
    assert not torch.allclose(ours, TransformerAttribution(model).attribute(x, target=torch.tensor([1, 1])))


def test_gradcam_on_vit_tokens_matches_pytorch_grad_cam():
    pgc = pytest.importorskip("pytorch_grad_cam", reason="optional peer library for reference checks")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    import torch.nn.functional as F

    from xai_bench.attribution import GradCAM

    model, x, t = tiny_vit(), images(), [1, 2]
    layer = model.net.blocks[-1].norm1
    ours = GradCAM(model, layer).attribute(x, target=t)  # reshape_transform taken from the model
    assert ours.shape == (2, 1, 4, 4)

    def reshape(tensor, height=4, width=4):  # pytorch-grad-cam's ViT example
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    with pgc.GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        ref = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in t]))

    def scale(m):
        m = m - m.flatten(1).amin(1).view(-1, 1, 1)
        return m / (1e-7 + m.flatten(1).amax(1).view(-1, 1, 1))

    up = F.interpolate(scale(ours[:, 0]).unsqueeze(1), size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(scale(up), ref, atol=1e-3), (scale(up) - ref).abs().max()
