"""Alignment maps and aligned features against hand computations (spec card, 'Alignment-map head')."""
import math

import pytest
import torch
import torch.nn.functional as F

import align
import models


def reference_maps(s, num_heads, scale):
    """Loop transcription of the card: normalise each pixel over all D channels, softmax over positions."""
    b, d, hw = s.shape
    out = torch.zeros(b, num_heads, d // num_heads, hw)
    for i in range(b):
        norms = [math.sqrt(sum(s[i, c, p].item() ** 2 for c in range(d))) for p in range(hw)]
        for k in range(d):
            logits = [s[i, k, p].item() / norms[p] / scale for p in range(hw)]
            z = sum(math.exp(v) for v in logits)
            for p in range(hw):
                out[i, k // (d // num_heads), k % (d // num_heads), p] = math.exp(logits[p]) / z
    return out


def test_maps_are_spatial_distributions_of_l2_normalised_projections():
    torch.manual_seed(0)
    s = torch.randn(2, 8, 5)
    maps = align.alignment_maps(s, num_heads=2, scale=1.0)
    assert maps.shape == (2, 2, 4, 5)
    assert torch.allclose(maps, reference_maps(s, 2, 1.0), atol=1e-6)
    assert (maps > 0).all() and torch.allclose(maps.sum(-1), torch.ones(2, 2, 4), atol=1e-6)
    # unit-norm logits lie in [-1, 1]: with scale 1 no map is sharper than e^2 (max/min)
    assert (maps.amax(-1) / maps.amin(-1) <= math.e ** 2 + 1e-4).all()
    # the norm is over all D channels, not per head: scaling one pixel's vector changes nothing ...
    s2 = s.clone()
    s2[:, :, 3] *= 7.0
    assert torch.allclose(align.alignment_maps(s2, 2), maps, atol=1e-6)
    # ... but scaling one head's half of that pixel does (a per-head norm would not notice)
    s3 = s.clone()
    s3[:, :4, 3] *= 7.0
    assert not torch.allclose(align.alignment_maps(s3, 2), maps, atol=1e-3)


def test_scale_sharpens_and_norm_is_optional_in_the_pure_function():
    torch.manual_seed(1)
    s = torch.randn(1, 4, 6)
    sharp = align.alignment_maps(s, 1, scale=0.1)
    assert torch.allclose(sharp, reference_maps(s, 1, 0.1), atol=1e-5)
    raw = align.alignment_maps(s, 1, l2_norm=False)
    assert torch.allclose(raw[0, 0], F.softmax(s[0], dim=1), atol=1e-6)


def test_aggregate_matches_the_per_head_sum_over_positions():
    torch.manual_seed(2)
    b, c, d, hw, heads = 2, 6, 4, 5, 2
    x, s = torch.randn(b, c, hw), torch.randn(b, d, hw)
    feats, maps = align.lewel_align(x, s, heads)
    assert feats.shape == (b, c, d // heads) and maps.shape == (b, heads, d // heads, hw)
    expected = torch.zeros(b, c, d // heads)
    for i in range(b):
        for ch in range(c):
            h = ch // (c // heads)
            for j in range(d // heads):
                expected[i, ch, j] = sum(x[i, ch, p] * maps[i, h, j, p] for p in range(hw))
    assert torch.allclose(feats, expected, atol=1e-6)


def test_one_hot_maps_pick_the_pixel_of_each_head():
    torch.manual_seed(3)
    x = torch.randn(1, 4, 3)                     # C = 4 channels, 3 positions, 2 heads of 2 channels
    maps = torch.zeros(1, 2, 1, 3)
    maps[0, 0, 0, 2] = 1.0                       # head 0 selects pixel 2, head 1 selects pixel 0
    maps[0, 1, 0, 0] = 1.0
    feats = align.aggregate(x, maps)
    assert torch.equal(feats[0, :2, 0], x[0, :2, 2]) and torch.equal(feats[0, 2:, 0], x[0, 2:, 0])


def test_aligned_embedding_of_a_one_pixel_map_is_that_pixels_projection():
    """A near-zero scale turns every map into a one-hot selection of its arg-max pixel: the aligned embedding of
    slot j is then g_a applied to that pixel's backbone feature."""
    torch.manual_seed(4)
    neck = models.ObjectNeck(8, 4, hid_channels=16, num_heads=1, scale=1e-6, return_maps=True).eval()
    y = torch.randn(2, 8, 3, 3)
    z_g, obj_val, maps = neck(y)
    assert z_g.shape == (2, 4, 1) and obj_val.shape == (2, 4, 4) and maps.shape == (2, 1, 4, 9)
    pixels = y.flatten(2)
    for i in range(2):
        for j in range(4):
            p = maps[i, 0, j].argmax().item()
            assert maps[i, 0, j, p].item() == pytest.approx(1.0, abs=1e-6)
            expected = neck.proj_obj(pixels[i:i + 1, :, p:p + 1])[0, :, 0]
            assert torch.allclose(obj_val[i, :, j], expected, atol=1e-5)


def test_neck_runs_the_shared_head_on_gap_and_pixels_in_one_batch():
    torch.manual_seed(5)
    neck = models.ObjectNeck(8, 4, hid_channels=16, num_heads=2, return_maps=True).train()
    y = torch.randn(3, 8, 2, 2)
    z_g, obj_val, maps = neck(y)
    tokens = torch.cat([y.mean((2, 3)).unsqueeze(2), y.flatten(2)], dim=2)
    z = neck.proj(tokens)                        # train-mode BN over b x (1 + HW) tokens, as one batch
    assert torch.allclose(z_g, z[:, :, :1], atol=1e-5)
    assert torch.allclose(maps, align.alignment_maps(z[:, :, 1:], 2), atol=1e-5)
    assert not torch.allclose(z_g, neck.proj(tokens[:, :, :1]), atol=1e-3)  # separate BN batches differ
    feats, _ = align.lewel_align(y.flatten(2), z[:, :, 1:], 2)
    assert torch.allclose(obj_val, neck.proj_obj(feats), atol=1e-5)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match='num_heads'):
        align.alignment_maps(torch.randn(1, 6, 4), num_heads=4)
    with pytest.raises(ValueError, match='num_heads'):
        models.ObjectNeck(6, 8, num_heads=4)
    with pytest.raises(ValueError, match='l2_norm'):
        models.ObjectNeck(8, 8, l2_norm=False)
