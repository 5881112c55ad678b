"""Architecture: parameter counts against the card, the Taylor recursion, flatten orders, norms, causality."""
import math

import pytest
import torch

import model as M

SMALL = dict(c=4, cd1=8, p=1, dilations=(1, 2))


@pytest.mark.parametrize('kw,expected', [
    ({}, 5_401_351), ({'order_num': 0}, 2_934_337), ({'order_num': 1}, 3_756_675), ({'order_num': 2}, 4_579_013),
    ({'order_num': 4}, 6_223_689), ({'order_num': 5}, 7_046_027), ({'is_param_share': True}, 3_756_675),
    ({'is_encoder_share': True}, 4_659_271), ({'inter_connect': 'add'}, 5_292_807), ({'norm_type': 'BN'}, 5_423_143),
    ({'norm_type': 'cLN'}, 5_423_143), ({'is_u2': False}, 3_476_743)])
def test_param_counts_match_card(kw, expected):
    assert M.num_params(M.TaylorSENet(**kw)) == expected


def test_part_counts_match_card():
    net = M.TaylorSENet()
    z = net.zeroorderblock
    assert M.num_params(z) == 2_192_257 and M.num_params(z.en) == 741_440 and M.num_params(z.de) == 859_457
    assert M.num_params(net.separate_en) == 742_080
    assert M.num_params(net.highorderblock_list[0]) == 822_338
    assert M.num_params(z.tcms[0].tcm_list[0]) == 73_920


def test_official_state_dict_keys():
    keys = set(M.TaylorSENet().state_dict())
    for k in ['zeroorderblock.en.meta_unet_list.0.in_conv.0.conv.weight',
              'zeroorderblock.en.meta_unet_list.0.enco.0.conv.1.weight',
              'zeroorderblock.de.meta_unet_list.0.deco.0.deconv.0.weight',
              'zeroorderblock.de.last_conv.3.weight', 'zeroorderblock.tcms.1.tcm_list.3.left_conv.3.weight',
              'zeroorderblock.tcms.0.tcm_list.0.right_conv.0.weight', 'zeroorderblock.tcms.0.tcm_list.0.out_conv.2.weight',
              'separate_en.last_conv.0.conv.weight', 'highorderblock_list.2.in_conv.weight',
              'highorderblock_list.0.real_resi.bias', 'highorderblock_list.0.imag_resi.weight']:
        assert k in keys, k


def test_taylor_recursion_card_example():
    ones = torch.ones(1, 2, 1, 1)
    ops = [lambda u, v=v: torch.full_like(u, v) for v in (0.5, 0.25, 0.125)]
    out, terms = M.taylor_superposition(ones, ops, 3)
    assert [t.flatten()[0].item() for t in terms] == pytest.approx([0.5, 0.75, 1.625])
    assert out.flatten()[0].item() == pytest.approx(1 + 0.5 + 0.375 + 1.625 / 6)
    assert out.flatten()[0].item() == pytest.approx(2.1458333, abs=1e-7)


def test_model_forward_is_taylor_sum_of_its_terms():
    torch.manual_seed(0)
    net = M.TaylorSENet(order_num=3, **SMALL).eval()
    x = torch.randn(2, 2, 12, 161)
    out, aux = net(x, return_terms=True)
    t0, terms = aux['zero_term'], aux['terms']
    mag = torch.norm(x, dim=1)
    assert torch.allclose(torch.norm(t0, dim=1), aux['gain'] * mag, atol=1e-5)        # T0 = G |X| e^{j theta}
    assert ((aux['gain'] > 0) & (aux['gain'] < 1)).all()
    cos_x, cos_t0 = x[:, 0] / mag, t0[:, 0] / torch.norm(t0, dim=1)                     # noisy phase kept
    assert torch.allclose(cos_x, cos_t0, atol=1e-4)
    expected = t0 + sum(u / math.factorial(q) for q, u in enumerate(terms, 1))
    assert torch.allclose(out, expected, atol=1e-6)
    h = M.flatten_feature(net.separate_en(x)[0])
    prev = t0
    for q, u in enumerate(terms, 1):       # U_q = D_q(h, U_{q-1}) + (q-1) U_{q-1}
        assert torch.allclose(u, net.highorderblock_list[q - 1](h, prev) + (q - 1) * prev, atol=1e-5)
        prev = u


def test_flatten_orders():
    x = torch.arange(3 * 5 * 4.).view(1, 3, 5, 4)
    f = M.flatten_feature(x)                                  # (1, 12, 5), index c*4 + f
    assert f.shape == (1, 12, 5)
    assert f[0, 2 * 4 + 1, 3] == x[0, 2, 3, 1]
    u = torch.randn(1, 2, 5, 161)
    fu = M.flatten_feature(u)                                 # real bins then imag bins
    assert torch.equal(fu[0, :161, 2], u[0, 0, 2]) and torch.equal(fu[0, 161:, 2], u[0, 1, 2])


def test_gate_conv_value_first_then_gate():
    g = M.GateConv2d(1, 1, (1, 1), (1, 1))
    with torch.no_grad():
        g.conv.weight.copy_(torch.tensor([2.0, 3.0]).view(2, 1, 1, 1))
        g.conv.bias.zero_()
    x = torch.full((1, 1, 1, 1), 0.5)
    assert g(x).item() == pytest.approx(1.0 * torch.sigmoid(torch.tensor(1.5)).item())


def test_instance_norm_default_is_official_eps_one_no_affine():
    n = M.NormSwitch('IN', '2D', 8)
    assert n.norm.eps == 1.0 and not n.norm.affine and sum(p.numel() for p in n.parameters()) == 0
    x = torch.randn(1, 8, 4, 5) * 0.1
    m, v = x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), keepdim=True, unbiased=False)
    assert torch.allclose(n(x), (x - m) / torch.sqrt(v + 1.0), atol=1e-6)
    textbook = M.TaylorSENet(in_eps=1e-5, in_affine=True, **SMALL)
    assert textbook.zeroorderblock.en.meta_unet_list[0].in_conv[1].norm.eps == 1e-5


def test_cumulative_layer_norm_matches_prefix_statistics():
    ln = M.CumulativeLayerNorm2d(3, eps=1e-5)
    x = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    y = ln.double()(x)
    t = 3
    pre = x[:, :, :t + 1]
    m = pre.mean(dim=(1, 2, 3), keepdim=True)
    v = pre.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
    assert torch.allclose(y[:, :, t], ((x[:, :, t:t + 1] - m) / torch.sqrt(v + 1e-5))[:, :, 0], atol=1e-10)


def test_exact_causality_with_cumulative_layer_norm():
    torch.manual_seed(0)
    net = M.TaylorSENet(norm_type='cLN', order_num=2, **SMALL).double().eval()
    x = torch.randn(1, 2, 30, 161, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :, 20:] += torch.randn_like(x2[:, :, 20:])
    y, y2 = net(x), net(x2)
    assert torch.equal(y[:, :, :20], y2[:, :, :20])          # exact: past frames unaffected by the future
    assert not torch.allclose(y[:, :, 20:], y2[:, :, 20:])


def test_instance_norm_model_is_not_truly_causal():
    torch.manual_seed(0)
    net = M.TaylorSENet(norm_type='IN', order_num=1, **SMALL).eval()
    x = torch.randn(1, 2, 30, 161)
    x2 = x.clone()
    x2[:, :, 20:] *= 5
    assert not torch.allclose(net(x)[:, :, :20], net(x2)[:, :, :20], atol=1e-6)


@pytest.mark.parametrize('kw', [{'norm_type': 'GN'}, {'inter_connect': 'sum'}, {'order_num': -1}])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        M.TaylorSENet(**kw)


def test_bad_input_shape():
    with pytest.raises(ValueError, match='161'):
        M.TaylorSENet(**SMALL)(torch.randn(1, 2, 5, 160))
