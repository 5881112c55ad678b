"""The DP partition, the grouping, the masks and the attention equation against hand computations."""
import pytest
import torch

import group_window_attention as gwa
from group_window_attention import (GroupingModule, WindowAttention, get_coordinates, group_windows, knapsack,
                                    optimal_group_size)


def test_get_coordinates_row_major():
    c = get_coordinates(2, 3)
    assert c.shape == (2, 2, 3)
    assert c[0].tolist() == [[0, 0, 0], [1, 1, 1]] and c[1].tolist() == [[0, 1, 2], [0, 1, 2]]


def test_knapsack_by_hand():
    # capacity 10, items 5/4/6/3: best 10 = 4 + 6 (items 1, 2); item 3 is left out since K[3][10] = 10 already
    assert knapsack(10, [5, 4, 6, 3]) == (10, [1, 2])
    # ties prefer earlier items: 3 alone or 1 + 2 both reach 3 -> backtracking from the end keeps (0, 1)
    assert knapsack(3, [1, 2, 3]) == (3, [0, 1])
    assert knapsack(2, [3, 4]) == (0, [])


def test_group_windows_card_example():
    sizes, groups = group_windows(7, [3, 5, 2, 7, 6, 1, 4, 4])
    assert sizes == [7, 7, 7, 7, 4]
    assert groups == [[1, 2], [3], [4, 5], [0, 6], [7]]
    with pytest.raises(ValueError, match='smaller than the largest window'):
        group_windows(4, [3, 5])


def test_optimal_group_size_by_hand():
    # windows 5,3,5,3 with window 3 (candidates 5..9); cost n_g (4 g C^2 + 2 g^2 C)
    # C = 1: g=5 -> 4 groups, 4*(20+50)=280 < g=6: 3*(24+72)=288 < g=8: 2*(32+128)=320
    assert optimal_group_size([5, 3, 5, 3], 3, 1) == 5
    # C = 100: g=8 -> 2*(320000+12800)=665600 beats g=5 -> 4*(200000+5000)=820000 and g=6 -> 741600
    assert optimal_group_size([5, 3, 5, 3], 3, 100) == 8
    assert optimal_group_size([5, 3, 5, 3], 3, 100, candidates=[5, 6]) == 6


def test_shifted_window_ids_match_cyclic_shift_by_hand():
    # 6x6 map, window 3, shift 1. Swin rolls by -1: rolled windows hold original rows {1,2,3} and {4,5,0};
    # the shift mask separates row 0 from rows 4,5 -> three row bands {0}, {1,2,3}, {4,5}
    gm = GroupingModule(3, 1)
    coords = get_coordinates(6, 6).reshape(2, -1).t()
    ids = gm._get_group_id(coords).reshape(6, 6)
    band = {0: 0, 1: 1, 2: 1, 3: 1, 4: 2, 5: 2}
    for y in range(6):
        for x in range(6):
            for y2 in range(6):
                for x2 in range(6):
                    same = band[y] == band[y2] and band[x] == band[x2]
                    assert (ids[y, x] == ids[y2, x2]).item() == same


def _visible_coords(H, unit, keep_units, side):
    vis = torch.zeros(side, side, dtype=torch.bool)
    for u in keep_units:
        vis[u // side, u % side] = True
    vis = vis.repeat_interleave(unit, 0).repeat_interleave(unit, 1)[:H, :H]
    return torch.nonzero(vis).unsqueeze(0)


@pytest.mark.parametrize('shift', [0, 3])
def test_grouping_invariants(shift):
    coords = _visible_coords(56, 8, [0, 3, 8, 9, 17, 24, 30, 31, 40, 44, 45, 48], 7)  # 12 of 49 units
    N = coords.shape[1]
    gm = GroupingModule(7, shift)
    mask, pos_idx = gm.prepare(coords, N)
    assert gm.mode == 'grouping' and N == 768
    g = gm.group_size
    assert mask.shape == pos_idx.shape == (gm.idx_shuffle.numel() // g, g, g)
    x = torch.randn(2, N, 5)
    grouped = gm.group(x)
    assert grouped.shape == (2 * mask.shape[0], g, 5)
    assert torch.equal(gm.merge(grouped), x)  # merge inverts group, pads discarded
    # allowed pairs are exactly the pairs of real tokens in the same window
    ids = gm._get_group_id(coords)
    tok = gm.idx_shuffle.reshape(-1, g)
    real = torch.zeros_like(tok, dtype=torch.bool)
    real.view(-1)[gm.idx_unshuffle] = True
    same = (ids[tok][:, :, None] == ids[tok][:, None, :]) & real[:, :, None] & real[:, None, :]
    assert torch.equal(mask == 0, same)
    assert set(mask.unique().tolist()) <= {0., -100.}
    # relative index from the true coordinates, in range where allowed, 0 where blocked
    c = coords[0][tok]
    d = c[:, :, None] - c[:, None, :] + 6
    expect = (d[..., 0] * 13 + d[..., 1]).masked_fill(~same, 0)
    assert torch.equal(pos_idx, expect) and pos_idx.max() < 169 and pos_idx.min() >= 0


def test_masking_mode_below_threshold():
    coords = _visible_coords(14, 2, [0, 5, 7, 12, 20, 30, 33, 48], 7)  # 32 tokens <= 2 * 7^2
    gm = GroupingModule(7, 0)
    mask, pos_idx = gm.prepare(coords, coords.shape[1])
    assert gm.mode == 'masking' and mask.shape == (1, 32, 32) and gm.idx_shuffle is None
    x = torch.randn(1, 32, 4)
    assert gm.group(x) is x and gm.merge(x) is x


def test_window_attention_equation_by_hand():
    torch.manual_seed(0)
    attn = WindowAttention(dim=4, window_size=2, num_heads=2).eval()
    x = torch.randn(1, 3, 4)
    mask = torch.tensor([[[0., 0., -100.], [0., 0., -100.], [-100., -100., 0.]]])
    pos_idx = torch.tensor([[[4, 3, 99], [5, 4, 99], [99, 99, 4]]])  # 99 is out of the 9-entry table: blocked
    out = attn(x, mask, pos_idx)
    qkv = x[0] @ attn.qkv.weight.t() + attn.qkv.bias
    table = attn.relative_position_bias_table
    heads = []
    for h in range(2):
        q, k, v = qkv[:, h * 2:h * 2 + 2], qkv[:, 4 + h * 2:4 + h * 2 + 2], qkv[:, 8 + h * 2:8 + h * 2 + 2]
        rows = []
        for i in range(3):
            logits = []
            for j in range(3):
                a = (q[i] * k[j]).sum() / 2 ** 0.5
                a = a + (table[pos_idx[0, i, j], h] if mask[0, i, j] == 0 else 0.) + mask[0, i, j]
                logits.append(a)
            w = torch.softmax(torch.stack(logits), 0)
            rows.append((w[:, None] * v).sum(0))
        heads.append(torch.stack(rows))
    expect = torch.cat(heads, dim=1) @ attn.proj.weight.t() + attn.proj.bias
    assert torch.allclose(out[0], expect, atol=1e-5)


def test_relative_position_index_buffer_is_swin_index():
    attn = WindowAttention(8, 2, 2)
    # window 2: tokens (0,0),(0,1),(1,0),(1,1); index ((dy+1)*3 + dx+1)
    assert attn.relative_position_index.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_bad_shift_rejected():
    with pytest.raises(ValueError, match='shift_size'):
        GroupingModule(4, 4)
