"""The architecture: parameter counts against the card, state_dict names, the equations of the body."""
import torch
import torch.nn.functional as F

import model as M

CARD = {(2,): 115_460_419, (3,): 115_645_059, (4,): 115_608_131, (1,): 115_312_707,
        (2, 3, 4, 1, 1, 1): 118_892_370}


def tiny(**kw):
    d = dict(n_feats=16, patch_size=24, patch_dim=3, num_heads=4, num_layers=1)
    d.update(kw)
    return M.IPT(**d)


def n_trainable(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_full_size_param_counts_match_card():
    full = M.IPT(scales=(2, 3, 4, 1, 1, 1), num_queries=6)
    assert n_trainable(full) == CARD[(2, 3, 4, 1, 1, 1)]
    assert sum(p.numel() for p in full.parameters()) - n_trainable(full) == 24  # frozen mean shifts
    # single-task models = one head + the body with one task embedding + that task's tail
    one_query = full.body.query_embed.weight[0].numel()
    body1 = n_trainable(full.body) - 5 * one_query
    for t, s in enumerate((2, 3, 4, 1)):
        assert n_trainable(full.head[t]) + body1 + n_trainable(full.tail[t]) == CARD[(s,)]
    assert body1 == 114_899_328
    m = full
    assert sum(p.numel() for p in m.body.encoder.layers[0].parameters()) == 3_986_496
    assert sum(p.numel() for p in m.body.decoder.layers[0].parameters()) == 5_314_752
    assert sum(p.numel() for p in m.head[0].parameters()) == 411_648
    assert sum(p.numel() for p in m.tail[0].parameters()) == 149_443
    assert m.body.query_embed.weight.shape == (6, 256 * 576)  # one 256x576 embedding per task
    assert m.body.position_encoding.pe.weight.shape == (256, 576)


def test_tiny_param_count_and_official_names():
    m = tiny()
    assert n_trainable(m) == 1_043_490  # the card's small setting
    keys = list(m.state_dict())
    assert keys[:4] == ['sub_mean.weight', 'sub_mean.bias', 'add_mean.weight', 'add_mean.bias']
    for k in ['head.5.2.body.2.weight', 'body.linear_encoding.weight', 'body.mlp_head.3.bias',
              'body.query_embed.weight', 'body.encoder.layers.0.self_attn.in_proj_weight',
              'body.encoder.layers.0.self_attn.out_proj.weight', 'body.decoder.layers.0.multihead_attn.in_proj_weight',
              'body.decoder.layers.0.norm3.weight', 'body.position_encoding.pe.weight',
              'body.position_encoding.position_ids', 'tail.2.0.2.weight', 'tail.1.0.0.weight', 'tail.3.1.weight']:
        assert k in keys, k
    assert not any(k.endswith('in_proj_bias') or k.endswith('out_proj.bias') for k in keys)  # bias-free attention
    assert 'tail.3.0.0.weight' not in keys  # x1 tail: no upsampler
    m2 = tiny()
    m2.load_state_dict(m.state_dict(), strict=True)


def test_output_shapes_and_task_selection():
    torch.manual_seed(0)
    m = tiny().eval()
    x = torch.rand(2, 3, 24, 24) * 255
    for t, s in enumerate((2, 3, 4, 1, 1, 1)):
        assert m(x, t).shape == (2, 3, 24 * s, 24 * s)
    m.set_scale(4)
    assert torch.equal(m(x), m(x, 4))
    assert not torch.allclose(m(x, 4), m(x, 5))  # different head / tail / task embedding
    y, tokens = m(x, 0, return_tokens=True)
    assert tokens.shape == (2, 64, 144)


def test_batch_independence():
    torch.manual_seed(0)
    m = tiny().eval()
    x = torch.rand(3, 3, 24, 24) * 255
    with torch.no_grad():
        full = m(x, 0)
        single = torch.cat([m(x[i:i + 1], 0) for i in range(3)])
    assert torch.allclose(full, single, atol=1e-3)


def test_mean_shift_and_patchify_order():
    ms = M.MeanShift(255)
    x = torch.zeros(1, 3, 2, 2)
    assert torch.allclose(ms(x)[0, :, 0, 0], -255 * torch.tensor(M.DIV2K_MEAN))
    vt = tiny().body
    x = torch.arange(16 * 24 * 24, dtype=torch.float32).view(1, 16, 24, 24)
    tok = vt.patchify(x)  # [N, B, 144]
    # token 1 = patch (row 0, col 1); vector index c*9 + 3*i + j
    c, i, j = 5, 2, 1
    assert tok[1, 0, c * 9 + 3 * i + j] == x[0, c, i, 3 + j]
    assert torch.equal(vt.unpatchify(tok.transpose(0, 1)), x)


def test_body_equations_by_hand():
    """One encoder + one decoder layer recomputed from the card's equations."""
    torch.manual_seed(1)
    vt = M.VisionTransformer(img_dim=6, patch_dim=3, num_channels=2, embedding_dim=18, num_heads=2, num_layers=1,
                             hidden_dim=8, num_queries=2).eval()
    for p in vt.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 2, 6, 6)

    def mha(attn, q, k, v):
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        heads = 2
        def split(t):  # [N, D] -> [h, N, d]
            return t.view(t.size(0), heads, -1).transpose(0, 1)
        qh, kh, vh = split(q @ w_q.t()), split(k @ w_k.t()), split(v @ w_v.t())
        a = torch.softmax(qh @ kh.transpose(1, 2) / (qh.size(-1) ** 0.5), -1)
        return (a @ vh).transpose(0, 1).reshape(q.size(0), -1) @ attn.out_proj.weight.t()

    enc, dec = vt.encoder.layers[0], vt.decoder.layers[0]
    ffn = lambda l, h: l.linear2(F.relu(l.linear1(h)))  # noqa: E731
    outs = []
    for b in range(2):
        t = F.unfold(x[b:b + 1], 3, stride=3)[0].t()   # [4, 18]
        t = t + vt.linear_encoding(t)
        z = t + vt.position_encoding.pe.weight
        h = enc.norm1(z); z = z + mha(enc.self_attn, h, h, h); z = z + ffn(enc, enc.norm2(z))
        m = z
        e_t = vt.query_embed.weight[1].view(4, 18)
        h = dec.norm1(z); z = z + mha(dec.self_attn, h + e_t, h + e_t, h)
        h = dec.norm2(z); z = z + mha(dec.multihead_attn, h + e_t, m, m)
        z = z + ffn(dec, dec.norm3(z))
        z = z + vt.mlp_head(z)
        outs.append(F.fold(z.t()[None], 6, 3, stride=3))
    with torch.no_grad():
        assert torch.allclose(vt(x, 1), torch.cat(outs), atol=1e-4)


def test_ipt_forward_composition():
    torch.manual_seed(2)
    m = tiny().eval()
    x = torch.rand(1, 3, 24, 24) * 255
    with torch.no_grad():
        f = m.head[0](x - 255 * torch.tensor(M.DIV2K_MEAN).view(1, 3, 1, 1))
        want = m.tail[0](m.body(f, 0) + f) + 255 * torch.tensor(M.DIV2K_MEAN).view(1, 3, 1, 1)
        assert torch.allclose(m(x, 0), want, atol=1e-3)


def test_official_namespace_builder_and_errors():
    import pytest
    args = M.official_args(scale=(1,), n_feats=16, patch_size=24, num_heads=4, num_layers=1)
    m = M.make_model(args)
    assert m.scales == [1] and m.body.query_embed.weight.shape[0] == 1
    with pytest.raises(ValueError, match='takes 24x24'):
        m(torch.zeros(1, 3, 30, 30), 0)
    with pytest.raises(ValueError, match='out of range'):
        m(torch.zeros(1, 3, 24, 24), 1)


def test_tiny_flops_match_card():
    import tables
    m = tiny()
    gflops = tables.flops(m, torch.rand(1, 3, 24, 24) * 255, 0) / 1e9
    assert abs(gflops - 0.148) < 5e-4  # the card's small setting, FlopCounterMode + attention core
