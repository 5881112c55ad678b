"""LightViT against the card: exact sizes, official names, and each equation against a hand computation."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import model as M

CARD = {  # params (official constructor), analytic MACs (official flops()), state_dict keys
    'lightvit_tiny': (9_377_698, 733_224_192, 415),
    'lightvit_small': (19_200_248, 1_742_950_016, 415),
    'lightvit_base': (35_195_653, 3_922_873_344, 493),
}


@pytest.mark.parametrize('arch', list(CARD))
def test_params_flops_and_keys_match_card(arch):
    net = getattr(M, arch)()
    params, macs, keys = CARD[arch]
    assert sum(p.numel() for p in net.parameters()) == params
    assert net.flops((3, 224, 224)) == macs
    assert len(net.state_dict()) == keys
    # the paper's rounded columns
    paper = {'lightvit_tiny': (9.4, 0.7), 'lightvit_small': (19.2, 1.7), 'lightvit_base': (35.2, 3.9)}[arch]
    assert round(params / 1e6, 1) == paper[0] and round(macs / 1e9, 1) == paper[1]


def test_tiny_parameter_breakdown(tiny_model):
    def count(prefix):
        return sum(p.numel() for k, p in tiny_model.named_parameters() if k.startswith(prefix))
    assert count('patch_embed.') == 20_608
    assert count('global_token') == 512
    assert count('stages.0.') == 189_990
    assert count('stages.0.0.') == 94_995
    assert count('stages.0.0.attn.') == 25_298
    assert count('stages.0.0.mlp.') == 69_441
    assert count('stages.0.0.mlp.attn.') == 3_329
    assert count('stages.1.0.') == 49_792
    assert count('stages.1.') - count('stages.1.0.') == 1_468_638
    assert count('stages.2.0.') == 197_888
    assert count('stages.2.') - count('stages.2.0.') == 5_837_238
    assert count('norm.') + count('neck.') == 332_032
    assert count('head.') == 1_281_000


def test_official_state_dict_names(tiny_model):
    sd = tiny_model.state_dict()
    expected = ['patch_embed.stem.0.weight', 'patch_embed.stem.1.running_var', 'patch_embed.stem.3.weight',
                'patch_embed.stem.10.num_batches_tracked', 'patch_embed.proj.bias', 'patch_embed.norm.weight',
                'global_token', 'stages.0.0.norm1.weight', 'stages.0.0.attn.qkv.bias', 'stages.0.0.attn.kv_global.bias',
                'stages.0.0.attn.proj.weight', 'stages.0.0.attn.relative_position_bias_table',
                'stages.0.0.attn.relative_position_index', 'stages.0.0.mlp.fc1.weight', 'stages.0.0.mlp.fc2.bias',
                'stages.0.0.mlp.attn.norm.weight', 'stages.0.0.mlp.attn.global_reduce.weight',
                'stages.0.0.mlp.attn.local_reduce.bias', 'stages.0.0.mlp.attn.channel_select.weight',
                'stages.0.0.mlp.attn.spatial_select.weight', 'stages.1.0.norm.weight', 'stages.1.0.reduction.weight',
                'stages.1.0.norm2.bias', 'stages.1.0.proj.weight', 'stages.1.0.res_proj.weight',
                'stages.2.6.attn.qkv.weight', 'norm.weight', 'neck.0.weight', 'neck.1.bias', 'head.weight']
    missing = [k for k in expected if k not in sd]
    assert not missing
    assert sd['stages.0.0.attn.relative_position_index'].shape == (2401,)
    assert sd['stages.0.0.attn.relative_position_bias_table'].shape == (169, 2)
    assert sd['global_token'].shape == (1, 8, 64)
    assert not any(k.endswith('bias') for k in sd if '.reduction.' in k or '.res_proj.' in k or
                   (k.startswith('stages.1.0.proj') or k.startswith('stages.2.0.proj')))


def test_strict_round_trip_of_a_state_dict():
    torch.manual_seed(0)
    a = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                   num_tokens=2, window_size=2, neck_dim=32, num_classes=5).eval()
    torch.manual_seed(1)
    b = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                   num_tokens=2, window_size=2, neck_dim=32, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict(), strict=True)
    assert torch.equal(a(x), b(x))


def test_stage_shapes_and_batch_independence(tiny_model):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        outs = tiny_model.forward_stages(x)
        logits = tiny_model(x)
        single = tiny_model(x[1:])
    assert [tuple(o.shape) for o in outs] == [(2, 792, 64), (2, 204, 128), (2, 57, 256)]
    assert logits.shape == (2, 1000)
    assert torch.allclose(logits[1:], single, atol=1e-4, rtol=1e-4)


def test_torch_flop_counter_is_about_five_percent_above_the_analytic_count(tiny_model):
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        tiny_model(torch.zeros(1, 3, 224, 224))
    flops = fc.get_total_flops()
    assert abs(flops / 1e9 - 1.544) < 2e-3  # the card's figure
    assert 1.03 < (flops / 2) / tiny_model.flops() < 1.07


# ------------------------------------------------------------------ equations against hand computations
def _hand_attention(attn, x, H, W):
    """Loop-by-loop LightViT attention (float64)."""
    B, N, C = x.shape
    NT, h, ws = attn.num_tokens, attn.num_heads, attn.window_size
    d = C // h
    s = d ** -0.5
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    table = attn.relative_position_bias_table
    HW = H * W
    y_g = torch.zeros(B, NT, C, dtype=x.dtype)
    for b in range(B):
        for hd in range(h):
            c = slice(hd * d, (hd + 1) * d)
            for t in range(NT):  # aggregation over all image tokens
                logits = torch.stack([s * q[b, t, c] @ k[b, NT + j, c] for j in range(HW)])
                w = torch.softmax(logits, 0)
                y_g[b, t, c] = sum(w[j] * v[b, NT + j, c] for j in range(HW))
    kv = y_g @ attn.kv_global.weight.T + attn.kv_global.bias
    k_g, v_g = kv[..., :C], kv[..., C:]
    y_i = torch.zeros(B, HW, C, dtype=x.dtype)
    for b in range(B):
        for hd in range(h):
            c = slice(hd * d, (hd + 1) * d)
            for i in range(HW):
                ri, ci = divmod(i, W)
                members = [j for j in range(HW) if j // W // ws == ri // ws and j % W // ws == ci // ws]
                logits = []
                for j in members:
                    rj, cj = divmod(j, W)
                    dy, dx = (ri % ws) - (rj % ws), (ci % ws) - (cj % ws)
                    bias = table[(dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1), hd]
                    logits.append(s * q[b, NT + i, c] @ k[b, NT + j, c] + bias)
                w = torch.softmax(torch.stack(logits), 0)
                local = sum(w[n] * v[b, NT + j, c] for n, j in enumerate(members))
                wb = torch.softmax(torch.stack([s * q[b, NT + i, c] @ k_g[b, t, c] for t in range(NT)]), 0)
                broadcast = sum(wb[t] * v_g[b, t, c] for t in range(NT))
                y_i[b, i, c] = local + broadcast
    y = torch.cat([y_g, y_i], 1)
    return y @ attn.proj.weight.T + attn.proj.bias


def test_attention_matches_hand_computation():
    torch.manual_seed(0)
    attn = M.LightViTAttention(dim=8, num_tokens=3, num_heads=2, window_size=2, qkv_bias=True).double()
    for p in attn.parameters():
        nn.init.normal_(p, std=0.5)
    H, W = 4, 6
    x = torch.randn(2, 3 + H * W, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(attn(x, H, W), _hand_attention(attn, x, H, W), atol=1e-10)


def test_global_tokens_own_keys_values_are_unused():
    torch.manual_seed(0)
    attn = M.LightViTAttention(dim=8, num_tokens=2, num_heads=2, window_size=2, qkv_bias=True).eval()
    x = torch.randn(1, 2 + 16, 8)
    ref = attn(x, 4, 4)

    def perturb(cols):
        def hook(mod, inp, out):
            out = out.clone()
            out[:, :2, cols] += 10 * torch.randn_like(out[:, :2, cols])
            return out
        return attn.qkv.register_forward_hook(hook)

    h = perturb(slice(8, 24))  # keys and values of the global tokens
    assert torch.allclose(attn(x, 4, 4), ref)
    h.remove()
    h = perturb(slice(0, 8))  # their queries do matter
    assert not torch.allclose(attn(x, 4, 4), ref)
    h.remove()


def test_relative_position_index_by_hand():
    idx = M.get_relative_position_index(2, 2)  # window coords (0,0),(0,1),(1,0),(1,1); side 3
    assert idx.shape == (4, 4)
    # i=(0,0), j=(1,1): dy=dx=-1 -> (0)*3 + 0 = 0; i=(1,1), j=(0,0): (2)*3 + 2 = 8; diagonal -> centre 4
    assert idx[0, 3] == 0 and idx[3, 0] == 8 and all(idx[i, i] == 4 for i in range(4))
    assert idx[1, 2] == (-1 + 1) * 3 + (1 + 1)  # i=(0,1), j=(1,0)
    assert int(M.get_relative_position_index(7, 7).max()) == 13 * 13 - 1


def test_window_partition_and_reverse_are_inverse():
    t = torch.arange(2 * 3 * 24 * 5, dtype=torch.float32).view(2, 3, 24, 5)  # B, heads, H*W (4x6), d
    w = M.window_partition(t, 4, 6, 2)
    assert w.shape == (2 * 6, 3, 4, 5)
    # first window of batch 0 holds grid cells (0,0),(0,1),(1,0),(1,1) = rows 0, 1, 6, 7
    assert torch.equal(w[0, 0, :, 0], t[0, 0, [0, 1, 6, 7], 0])
    merged = w.transpose(1, 2).reshape(12, 4, 15)
    back = M.window_reverse(merged, (4, 6), (2, 2))
    assert torch.equal(back, t.transpose(1, 2).reshape(2, 24, 15))


def test_biattn_by_hand():
    torch.manual_seed(0)
    m = M.BiAttn(8).double()
    for p in m.parameters():
        nn.init.normal_(p, std=0.5)
    z = torch.randn(2, 5, 8, dtype=torch.float64)
    zn = F.layer_norm(z, (8,), m.norm.weight, m.norm.bias, 1e-5)
    g = F.gelu(zn.mean(1, keepdim=True) @ m.global_reduce.weight.T + m.global_reduce.bias)
    l = F.gelu(zn @ m.local_reduce.weight.T + m.local_reduce.bias)
    c = torch.sigmoid(g @ m.channel_select.weight.T + m.channel_select.bias)
    sp = torch.sigmoid(torch.cat([l, g.expand(-1, 5, -1)], -1) @ m.spatial_select.weight.T + m.spatial_select.bias)
    assert m.spatial_select.in_features == 2 * int(8 * 0.25)
    assert torch.allclose(m(z), z * c * sp, atol=1e-12)


def test_merge_patch_by_hand():
    torch.manual_seed(0)
    m = M.ResidualMergePatch(3, 5, num_tokens=2).double()
    for p in m.parameters():
        nn.init.normal_(p, std=0.5)
    H, W = 4, 6
    x = torch.randn(1, 2 + H * W, 3, dtype=torch.float64)
    out, (h2, w2) = m(x, H, W)
    assert (h2, w2) == (2, 3) and out.shape == (1, 2 + 6, 5)
    grid = x[0, 2:].view(H, W, 3)
    g_ref = F.layer_norm(x[0, :2], (3,), m.norm2.weight, m.norm2.bias, 1e-5) @ m.proj.weight.T
    assert torch.allclose(out[0, :2], g_ref)
    for r in range(2):
        for c in range(3):
            cat = torch.cat([grid[2 * r, 2 * c], grid[2 * r + 1, 2 * c], grid[2 * r, 2 * c + 1],
                             grid[2 * r + 1, 2 * c + 1]])
            main = F.layer_norm(cat, (12,), m.norm.weight, m.norm.bias, 1e-5) @ m.reduction.weight.T
            pooled = grid[2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(4, 3).max(0).values
            assert torch.allclose(out[0, 2 + r * 3 + c], main + pooled @ m.res_proj.weight.T)


def test_block_is_prenorm_residual():
    torch.manual_seed(0)
    blk = M.Block(8, 2, num_tokens=2, window_size=2, mlp_ratio=2, qkv_bias=True,
                  norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6)).eval()
    x = torch.randn(2, 2 + 16, 8)
    y = x + blk.attn(blk.norm1(x), 4, 4)
    y = y + blk.mlp(blk.norm2(y))
    assert torch.allclose(blk(x, 4, 4), y)
    assert blk.mlp.fc1.out_features == 16


def test_head_pools_all_tokens_after_the_neck():
    torch.manual_seed(0)
    net = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                     num_tokens=3, window_size=2, neck_dim=24, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = net.forward_stages(x)[-1]
        assert tokens.shape == (2, 3 + 4, 32)
        ref = net.head(net.neck(net.norm(tokens)).mean(1))
        assert torch.allclose(net(x), ref)
        pooled_first = net.head(net.neck(net.norm(tokens).mean(1)))  # pooling before the neck differs
        assert not torch.allclose(net(x), pooled_first)


def test_layer_norm_eps_by_place(tiny_model):
    eps = {k: m.eps for k, m in tiny_model.named_modules() if isinstance(m, nn.LayerNorm)}
    assert eps['norm'] == 1e-6 and eps['stages.0.0.norm1'] == 1e-6 and eps['stages.2.5.norm2'] == 1e-6
    for k in ('patch_embed.norm', 'stages.0.0.mlp.attn.norm', 'stages.1.0.norm', 'stages.1.0.norm2', 'neck.1'):
        assert eps[k] == 1e-5, k


def test_stem_structure(tiny_model):
    stem = tiny_model.patch_embed
    convs = [stem.stem[i] for i in (0, 3, 6, 9)]
    assert [c.groups for c in convs] == [1, 32, 32, 32]
    assert [c.stride[0] for c in convs] == [2, 1, 1, 2]
    assert all(c.bias is None for c in convs) and stem.proj.bias is not None and stem.proj.stride == (2, 2)
    assert all(isinstance(stem.stem[i], nn.BatchNorm2d) for i in (1, 4, 7, 10))
    # conv MACs only: 112^2*32*27 + 112^2*32*9*2 + 56^2*32*9 + 28^2*64*288
    assert stem.flops(224, 224) == 112 ** 2 * 32 * 27 + 2 * 112 ** 2 * 32 * 9 + 56 ** 2 * 32 * 9 + 28 ** 2 * 64 * 288


def test_init_and_drop_path_schedule():
    torch.manual_seed(0)
    net = M.lightvit_tiny(drop_path_rate=0.1)
    assert torch.count_nonzero(net.head.bias) == 0 and 0.015 < net.head.weight.std() < 0.025
    assert all(torch.count_nonzero(m.bias) == 0 for m in net.modules() if isinstance(m, nn.Linear) and
               m.bias is not None)
    rates = [blk.drop_path.drop_prob if isinstance(blk.drop_path, M.DropPath) else 0.
             for stage in net.stages for blk in stage if isinstance(blk, M.Block)]
    assert len(rates) == 14 and rates[0] == 0. and math.isclose(rates[-1], 0.1, rel_tol=1e-6)
    assert all(b > a for a, b in zip(rates, rates[1:]))
    assert net.no_weight_decay() == {'global_token', '[g]relative_position_bias_table'}


def test_bad_grid_is_a_clear_error():
    net = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                     num_tokens=2, window_size=3, neck_dim=16, num_classes=3)
    with pytest.raises(ValueError, match='multiple of the window size'):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='output stride of 8'):
        M.ConvStem(patch_size=16)
