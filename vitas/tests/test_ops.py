"""Slicing semantics and attention equations of the dynamic operators."""
import torch
import torch.nn.functional as F

from ops import Attention, Block, DynamicLayerNorm, DynamicLinear, FC, Patch_init, select


def test_select_left_right_and_index():
    t = torch.arange(10.)
    assert select(t, 0, 3, 'left').tolist() == [0, 1, 2]
    assert select(t, 0, 3, 'right').tolist() == [7, 8, 9]
    assert select(t, 0, 3, torch.tensor([9, 0, 1])).tolist() == [9, 0, 1]
    assert select(t, 0, 10, 'right') is t


def test_dynamic_linear_slices_rows_and_columns():
    lin = DynamicLinear(6, 8)
    x = torch.randn(2, 4)
    y = lin(x, out_ratio=0.5, side='right')
    ref = x @ lin.weight[4:, 2:].T + lin.bias[4:]
    assert torch.allclose(y, ref)
    y = lin(x, out_ratio=0.5, side='left')
    assert torch.allclose(y, x @ lin.weight[:4, :4].T + lin.bias[:4])


def test_card_index_patterns_384_space():
    """Index patterns recorded from the official code (patch 16, r_e 0.6 -> 230, r_q 0.3,
    r_m 0.5): left qk[0:288, 0:230], proj[0:230, 0:144]; right qk[672:960, 154:384],
    v[336:480, 154:384], proj[154:384, 336:480], fc1[720:1440, 154:384], head[:, 154:384]."""
    torch.manual_seed(0)
    blk = Block(384, (3, 6, 12, 16), 1440, 384, 1440, 384)
    emb = Patch_init(224, 16, 3, 384)
    head = FC(384, 1000)
    a = blk.attn
    assert torch.equal(emb.proj.sliced(230, 'left')[0], emb.proj.weight[0:230])
    assert torch.equal(emb.proj.sliced(230, 'right')[0], emb.proj.weight[154:384])
    w, _ = a.qkv_weight(0, 0.3, 230, 'left')
    assert torch.equal(w[:288], a.qk0.weight[0:288, 0:230])
    assert torch.equal(w[288:], a.v.weight[0:144, 0:230])
    assert torch.equal(a.proj.sliced(230, 144, 'left')[0], a.proj.weight[0:230, 0:144])
    w, _ = a.qkv_weight(0, 0.3, 230, 'right')
    assert torch.equal(w[:288], a.qk0.weight[672:960, 154:384])
    assert torch.equal(w[288:], a.v.weight[336:480, 154:384])
    assert torch.equal(a.proj.sliced(230, 144, 'right')[0], a.proj.weight[154:384, 336:480])
    assert torch.equal(blk.mlp.fc1.sliced(720, 230, 'right')[0], blk.mlp.fc1.weight[720:1440, 154:384])
    assert torch.equal(head.sliced_in(230, 'right')[0], head.weight[:, 154:384])
    # k rows inside the sliced qk: r_q = 1 -> rows 480..959; r_q = 0.5 left -> rows 240..479
    w, _ = a.qkv_weight(2, 1.0, 384, 'left')
    assert torch.equal(w[480:960], a.qk2.weight[480:960])
    w, _ = a.qkv_weight(2, 0.5, 384, 'left')
    assert torch.equal(w[240:480], a.qk2.weight[240:480])


def test_attention_scale_quirks():
    sup = Attention(384, 1440, 384, (3, 6, 12, 16))
    assert sup.scale == 128 ** -0.5                       # (E_max // 3) ** -0.5 for every choice
    alone = Attention(230, 432, 230, 3, qkv=0)
    assert alone.scale == (230 // 3) ** -0.5              # embedding width / heads (76), not 48


def test_attention_matches_hand_computation():
    torch.manual_seed(1)
    att = Attention(8, 24, 8, (1, 2), qkv=2)
    x = torch.randn(2, 5, 8)
    out = att(x, heads=1, at_ratio=0.5)                   # q width 4, 2 heads of dim 2
    qk = x @ att.qk1.weight[:8].T + att.qk1.bias[:8]
    v = x @ att.v.weight[:4].T + att.v.bias[:4]
    q, k = qk[..., :4], qk[..., 4:]
    heads = []
    for h in range(2):
        s = slice(2 * h, 2 * h + 2)
        a = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) * att.scale, dim=-1)
        heads.append(a @ v[..., s])
    ref = torch.cat(heads, -1) @ att.proj.weight[:, :4].T + att.proj.bias
    assert torch.allclose(out, ref, atol=1e-6)


def test_layernorm_slices_affine_to_input_width():
    ln = DynamicLayerNorm(6)
    with torch.no_grad():
        ln.weight.copy_(torch.arange(1., 7.))
        ln.bias.copy_(torch.arange(6.))
    x = torch.randn(3, 4)
    ref = F.layer_norm(x, (4,), ln.weight[2:], ln.bias[2:], 1e-6)
    assert torch.allclose(ln(x, 'right'), ref)


def test_only_chosen_qk_gets_gradient():
    att = Attention(8, 24, 8, (1, 2, 4))
    att(torch.randn(1, 3, 8), heads=2, at_ratio=0.5).sum().backward()
    assert att.qk2.weight.grad is not None and att.v.weight.grad is not None
    assert att.qk0.weight.grad is None and att.qk1.weight.grad is None
