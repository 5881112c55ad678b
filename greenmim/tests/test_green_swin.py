"""The green encoder against a dense Swin: exact equivalences, invariance to the grouping, merging order."""
import pytest
import torch

import group_window_attention as gwa
from extract_backbone import convert_patch_merging_order
from green_swin_models import BasicLayer, PatchMerging, SwinTransformer

X = None


def _x():
    global X
    if X is None:
        X = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    return X


def _noise_mask(seed=0, L=49, keep=12):
    noise = torch.rand(1, L, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(1, L, dtype=torch.bool)
    mask[0, noise.argsort(1)[0, :keep]] = False
    return mask


@torch.no_grad()
def test_all_visible_equals_dense_swin(tiny_card_mae):
    enc = tiny_card_mae.encoder
    green = enc(_x(), torch.zeros(1, 49, dtype=torch.bool))
    dense = enc.forward_dense(_x())
    assert green.shape == dense.shape == (2, 49, 256)
    assert (green - dense).abs().max() < 1e-4


@torch.no_grad()
def test_output_independent_of_grouping(tiny_card_mae, monkeypatch):
    enc = tiny_card_mae.encoder
    mask = _noise_mask()
    ref = enc(_x(), mask)
    assert ref.shape == (2, 12, 256)
    # one window per group
    monkeypatch.setattr(gwa, 'group_windows', lambda g, w: (list(w), [[i] for i in range(len(w))]))
    one = enc(_x(), mask)
    monkeypatch.undo()
    assert (one - ref).abs().max() < 1e-4
    # a larger group size (fewer, fuller groups) and the cost search
    for layer in enc.layers:
        layer.group_size = 98
    big = enc(_x(), mask)
    for layer in enc.layers:
        layer.group_size, layer.search_group_size = None, True
    searched = enc(_x(), mask)
    for layer in enc.layers:
        layer.search_group_size = False
    assert (big - ref).abs().max() < 1e-4 and (searched - ref).abs().max() < 1e-4
    # masking mode everywhere (one sequence per stage with an N x N mask)
    monkeypatch.setattr(gwa.GroupingModule, 'prepare',
                        lambda self, coords, n: (setattr(self, '_mode', 'masking'), self._prepare_masking(coords))[1])
    masking = enc(_x(), mask)
    assert (masking - ref).abs().max() < 1e-4


@torch.no_grad()
def test_only_the_first_mask_row_is_used(tiny_card_mae):
    enc = tiny_card_mae.encoder
    m = torch.cat([_noise_mask(0), _noise_mask(1)])
    assert torch.equal(enc(_x(), m), enc(_x(), m[:1]))


def _reference_block(blk, x, vis, H, ws, sh):
    """Swin block on the visible tokens, by definition: a token attends to the visible tokens of its
    cyclic-shifted window and of the same shift region (explicit loops)."""
    yx = torch.nonzero(vis.reshape(H, H))
    ry, rx = (yx[:, 0] - sh) % H, (yx[:, 1] - sh) % H

    def region(r):
        return torch.where(r < H - ws, 0, torch.where(r < H - sh, 1, 2)) if sh else torch.zeros_like(r)
    key = torch.stack([ry // ws, rx // ws, region(ry), region(rx)], 1)
    a = blk.attn
    h, C = a.num_heads, x.shape[-1]
    n = blk.norm1(x)
    qkv = a.qkv(n).reshape(x.shape[0], -1, 3, h, C // h)
    out = torch.zeros(x.shape[0], x.shape[1], h, C // h)
    for i in range(x.shape[1]):
        js = torch.nonzero((key == key[i]).all(1)).squeeze(1)
        dy, dx = ry[i] - ry[js] + ws - 1, rx[i] - rx[js] + ws - 1
        bias = a.relative_position_bias_table[dy * (2 * ws - 1) + dx]  # (J, h)
        logits = torch.einsum('bhd,bjhd->bhj', qkv[:, i, 0] * a.scale, qkv[:, js, 1]) + bias.t()[None]
        out[:, i] = torch.einsum('bhj,bjhd->bhd', logits.softmax(-1), qkv[:, js, 2])
    x = x + a.proj(out.reshape(x.shape[0], -1, C))
    return x + blk.mlp(blk.norm2(x))


@torch.no_grad()
@pytest.mark.parametrize('shift_block', [0, 1])
def test_group_attention_equals_window_attention_on_visible_tokens(shift_block):
    torch.manual_seed(0)
    layer = BasicLayer(dim=8, input_resolution=(12, 12), depth=2, num_heads=2, window_size=6).eval()
    for p in layer.parameters():
        p.normal_(0, 0.3)
    # 3x3-token units (not aligned with the shifted 6x6 windows), 9 of 16 visible
    unit_vis = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1]], dtype=torch.bool)
    vis = unit_vis.repeat_interleave(3, 0).repeat_interleave(3, 1).reshape(1, -1)
    coords = torch.nonzero(vis.reshape(12, 12)).unsqueeze(0)
    x = torch.randn(2, coords.shape[1], 8)
    gm, mask, pos_idx = layer.groupings(coords, x.shape[1])[shift_block]
    assert gm.mode == 'grouping'  # 81 tokens > 2 * 36
    blk = layer.blocks[shift_block]
    out = gm.merge(blk(gm.group(x), mask, pos_idx), batch_size=2)
    ref = _reference_block(blk, x, vis, 12, 6, 3 if shift_block else 0)
    assert (out - ref).abs().max() < 1e-4


@torch.no_grad()
def test_patch_merging_visible_equals_dense_and_swin_order():
    torch.manual_seed(0)
    pm = PatchMerging((4, 4), dim=3)
    x = torch.randn(2, 16, 3)
    # Swin order by hand: x0 = (0,0), x1 = (1,0), x2 = (0,1), x3 = (1,1) of each 2x2 block
    g = x.view(2, 4, 4, 3)
    cat = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 1::2]], -1).reshape(2, 4, 12)
    dense = pm.forward_dense(x)
    assert torch.allclose(dense, pm.reduction(pm.norm(cat)), atol=1e-6)
    # visible blocks: top-right and bottom-left
    vis = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool).reshape(1, 16)
    coords = torch.nonzero(vis.reshape(4, 4)).unsqueeze(0)
    out, coords_new, mask_new = pm(x[:, vis[0]], coords, vis)
    assert torch.allclose(out, dense[:, [1, 2]], atol=1e-6)
    assert mask_new.tolist() == [[False, True, True, False]] and coords_new.tolist() == [[[0, 1], [1, 0]]]
    bad = vis.clone()
    bad[0, 2] = False
    with pytest.raises(ValueError, match='fully visible or fully masked'):
        pm(x[:, bad[0]], torch.nonzero(bad.reshape(4, 4)).unsqueeze(0), bad)


@torch.no_grad()
def test_legacy_merge_order_conversion():
    torch.manual_seed(0)
    pm = PatchMerging((4, 4), dim=3)
    for p in pm.parameters():
        p.normal_()
    x = torch.randn(1, 16, 3)
    legacy = convert_patch_merging_order({f'layers.0.downsample.{k}': v for k, v in pm.state_dict().items()})
    w, b, red = (legacy[f'layers.0.downsample.{k}'] for k in ('norm.weight', 'norm.bias', 'reduction.weight'))
    g = x.view(1, 4, 4, 3)  # row-first concatenation (the pre-2023 order) with the converted weights
    cat = torch.cat([g[:, 0::2, 0::2], g[:, 0::2, 1::2], g[:, 1::2, 0::2], g[:, 1::2, 1::2]], -1).reshape(1, 4, 12)
    out_legacy = torch.nn.functional.layer_norm(cat, (12,), w, b, eps=pm.norm.eps) @ red.t()
    assert torch.allclose(out_legacy, pm.forward_dense(x), atol=1e-5)
    again = convert_patch_merging_order(legacy)
    assert all(torch.equal(again[f'layers.0.downsample.{k}'], v) for k, v in pm.state_dict().items())


def test_stage_modes_and_window_clamp():
    enc = SwinTransformer(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=14)
    assert [l.window_size for l in enc.layers] == [14, 14, 14, 7]
    assert [l.shift_size for l in enc.layers] == [7, 7, 0, 0]
    with pytest.raises(ValueError, match='does not match'):
        enc.patch_embed(torch.zeros(1, 3, 192, 192))
