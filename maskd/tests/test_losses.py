"""MasKD equations against hand computations on tiny tensors; parameter counts and key names of the card."""
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from align import AlignModules
from losses import HeadDistillLoss, MaskModule, MasKDLoss, SegMasKDLoss, dice_coeff, extract_mask_state


def test_masks_on_hand_made_features():
    """M = sigmoid(E . F): plain dot product over channels, no scaling."""
    m = MaskModule(2, num_tokens=2, weight_mask=False)
    with torch.no_grad():
        m.mask_token.copy_(torch.tensor([[1.0, 0.0], [0.0, -2.0]]))
    x = torch.zeros(1, 2, 1, 3)
    x[0, 0] = torch.tensor([1.0, -1.0, 0.0])
    x[0, 1] = torch.tensor([0.5, 0.0, 3.0])
    mask = m.forward_mask(x)
    sig = lambda v: 1 / (1 + math.exp(-v))
    expect = torch.tensor([[[sig(1.0), sig(-1.0), sig(0.0)], [sig(-1.0), sig(0.0), sig(-6.0)]]])
    assert mask.shape == (1, 2, 1, 3)
    assert torch.allclose(mask[:, :, 0], expect, atol=1e-6)


def test_token_init_gives_masks_near_one_half():
    torch.manual_seed(0)
    m = MaskModule(256, 6)
    assert 0.005 < m.mask_token.std().item() < 0.015
    mask = m.forward_mask(torch.randn(2, 256, 4, 4))
    assert (mask - 0.5).abs().max() < 0.2


def test_dice_on_known_masks():
    a = torch.tensor([1.0, 1.0, 0.0, 0.0])
    b = torch.tensor([0.0, 0.0, 1.0, 1.0])
    c = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert dice_coeff(torch.stack([a, b])[None]).item() == pytest.approx(0.0, abs=1e-9)     # disjoint
    assert dice_coeff(torch.stack([a, a])[None]).item() == pytest.approx(1.0, abs=1e-9)     # identical
    # three masks: pairs (a,b)=0, (a,c)=2*1/(2+2)=0.5, (b,c)=0.5; ordered pairs -> mean of 6 terms = 1/3
    assert dice_coeff(torch.stack([a, b, c])[None]).item() == pytest.approx(1 / 3, abs=1e-6)
    # two images average; diagonal excluded (else identical masks would add 1s)
    two = torch.stack([torch.stack([a, b, c]), torch.stack([a, a, a])])
    assert dice_coeff(two).item() == pytest.approx((1 / 3 + 1) / 2, abs=1e-6)
    # eps: all-zero masks give 0, not NaN
    assert dice_coeff(torch.zeros(1, 2, 4)).item() == 0.0
    with pytest.raises(ValueError):
        dice_coeff(torch.zeros(2, 4))


def test_forward_train_is_weighted_sum_of_masked_features():
    torch.manual_seed(1)
    m = MaskModule(3, num_tokens=2, weight_mask=True)
    x = torch.randn(2, 3, 4, 5)
    masked, dice = m(x)
    mask = torch.sigmoid(torch.einsum('tc,nchw->nthw', m.mask_token, x))
    logits = F.adaptive_avg_pool2d(m.prob[0](x), 1)
    p = m.prob[2](logits).flatten(1).softmax(1)
    expect = torch.zeros_like(x)
    for n in range(2):
        for t in range(2):
            expect[n] += p[n, t] * mask[n, t] * x[n]
    assert torch.allclose(masked, expect, atol=1e-6)
    assert torch.allclose(m.forward_prob(x).flatten(1).sum(1), torch.ones(2))
    assert dice.item() == pytest.approx(dice_coeff(mask.flatten(2)).item())
    plain = MaskModule(3, 2, weight_mask=False)
    out, _ = plain(x)
    mk = plain.forward_mask(x)
    assert torch.allclose(out, (mk.unsqueeze(2) * x.unsqueeze(1)).sum(1), atol=1e-6)
    with pytest.raises(RuntimeError):
        plain.forward_prob(x)


def test_parameter_counts_match_the_card():
    count = lambda m: sum(p.numel() for p in m.parameters())
    one = MaskModule(256, 6)
    assert count(one) == 593_158
    assert (one.mask_token.numel(), count(one.prob[0]), count(one.prob[2])) == (1_536, 590_080, 1_542)
    assert count(MasKDLoss([256] * 5)) == 2_965_790
    assert count(MasKDLoss([256] * 5, weight_mask=False)) == 7_680
    assert count(SegMasKDLoss(19, 8)) == 152


def test_head_init_is_he_fan_out_with_zero_bias():
    torch.manual_seed(0)
    m = MaskModule(256, 6)
    assert m.prob[0].weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.02)
    assert m.prob[0].bias.abs().sum() == 0 and m.prob[2].bias.abs().sum() == 0


def test_official_state_dict_keys_and_token_loading(tmp_path):
    loss = MasKDLoss([8, 8], num_tokens=6)
    assert list(loss.state_dict()) == [f'mask_modules.{l}.{k}' for l in (0, 1) for k in
                                       ('mask_token', 'prob.0.weight', 'prob.0.bias', 'prob.2.weight', 'prob.2.bias')]
    assert loss.state_dict()['mask_modules.1.prob.2.weight'].shape == (6, 8, 1, 1)
    src = MasKDLoss([8, 8], num_tokens=6)
    ckpt = {'meta': {}, 'state_dict': OrderedDict(('distiller.neck.' + k, v) for k, v in src.state_dict().items())}
    torch.save(ckpt, tmp_path / 'iter_2000.pth')
    loss.load_tokens(str(tmp_path / 'iter_2000.pth'))               # prefix up to mask_modules stripped
    assert torch.equal(loss.mask_modules[1].mask_token, src.mask_modules[1].mask_token)
    assert loss._iter == 0 and 'iter' not in ''.join(loss.state_dict())   # counter is a plain int
    bad = {k: v for k, v in src.state_dict().items() if 'prob.2' not in k}
    with pytest.raises(RuntimeError):
        loss.load_tokens(bad)                                        # strict
    with pytest.raises(ValueError):
        loss.load_tokens({'backbone.weight': torch.zeros(1)})
    seg = SegMasKDLoss(19, 8)
    seg.load_tokens({'mask_token': torch.ones(8, 19)})               # the official bare segmentation file
    assert seg.mask_module.mask_token.sum() == 152
    assert list(extract_mask_state({'model': {'a.mask_modules.0.mask_token': torch.ones(1)}})) == \
        ['mask_modules.0.mask_token']


def _hand_level_loss(s, t, tokens, p=None, s_mask=False):
    """Loops over n, t, c: (1/C) sum_c sum_hw M^2 (s-t)^2 / sum_hw M; weighted sum (p) or mean over tokens."""
    N, C = s.shape[:2]
    T = tokens.shape[0]
    total = 0.0
    for n in range(N):
        per_img = 0.0
        for k in range(T):
            m = torch.sigmoid((tokens[k][:, None, None] * t[n]).sum(0))
            if s_mask:
                m = m * torch.sigmoid((tokens[k][:, None, None] * s[n]).sum(0))
            l_nt = sum(((m ** 2) * (s[n, c] - t[n, c]) ** 2).sum() / m.sum() for c in range(C)) / C
            per_img += (p[n, k] if p is not None else 1.0 / T) * l_nt
        total += per_img
    return total / N


@pytest.mark.parametrize('weight_mask', [True, False])
def test_maskd_loss_against_hand_computation_and_level_sum(weight_mask):
    torch.manual_seed(2)
    loss = MasKDLoss([4, 4, 4], num_tokens=3, weight_mask=weight_mask, custom_mask=False, loss_weight=2.5)
    with torch.no_grad():
        for m in loss.mask_modules:
            m.mask_token.normal_(0, 0.7)
    ys = [torch.randn(2, 4, 3, 3) for _ in range(3)]
    yt = OrderedDict((k, torch.randn(2, 4, 3, 3)) for k in ('0', '1', 'p6'))
    total = loss(ys, yt)
    hand = []
    for m, s, t in zip(loss.mask_modules, ys, yt.values()):
        p = m.forward_prob(t).flatten(1) if weight_mask else None
        hand.append(2.5 * _hand_level_loss(s, t, m.mask_token, p))
    assert total.item() == pytest.approx(sum(h.item() for h in hand), rel=1e-5)
    assert [v.item() for v in loss.last_level_losses] == pytest.approx([h.item() for h in hand], rel=1e-5)
    assert total.item() == pytest.approx(sum(v.item() for v in loss.last_level_losses), rel=1e-6)
    assert loss._iter == 1
    with pytest.raises(ValueError):
        loss(ys[:2], list(yt.values()))
    single = MasKDLoss(4, num_tokens=3, weight_mask=weight_mask, custom_mask=False)
    assert torch.isfinite(single(ys[0], yt['0']))                    # a single tensor is one level


def test_student_custom_mask_after_warmup_is_detached():
    torch.manual_seed(3)
    loss = MasKDLoss([4], num_tokens=2, weight_mask=False, custom_mask=True, custom_mask_warmup=2)
    with torch.no_grad():
        loss.mask_modules[0].mask_token.normal_(0, 0.8)
    s = torch.randn(1, 4, 3, 3, requires_grad=True)
    t = torch.randn(1, 4, 3, 3)
    tok = loss.mask_modules[0].mask_token
    for it in range(3):
        val = loss([s], [t])
        hand = _hand_level_loss(s.detach(), t, tok, s_mask=it >= 2)
        assert val.item() == pytest.approx(hand.item(), rel=1e-5), it
    # gradient: the student mask is a constant (detached)
    s.grad = None
    loss([s], [t]).backward()
    m = torch.sigmoid(torch.einsum('tc,nchw->nthw', tok, t)) * torch.sigmoid(torch.einsum('tc,nchw->nthw', tok, s)).detach()
    s2 = s.detach().clone().requires_grad_(True)
    ref = ((m.unsqueeze(2) ** 2) * (s2 - t).pow(2).unsqueeze(1)).sum((3, 4)) / m.sum((2, 3)).unsqueeze(-1)
    ref.mean().backward()
    assert torch.allclose(s.grad, s2.grad, atol=1e-6)


def test_tokens_frozen_in_stage_two():
    torch.manual_seed(4)
    loss = MasKDLoss([4], num_tokens=3)
    assert all(not p.requires_grad for p in loss.parameters())
    loss.train()
    assert all(not p.requires_grad for p in loss.parameters())
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    student = torch.nn.Conv2d(4, 4, 1)
    align = AlignModules(4, 4, 1)
    opt = torch.optim.SGD(list(student.parameters()) + list(align.parameters()), lr=0.5)
    x, t = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    for _ in range(3):
        v = loss(align([student(x)]), [t])
        opt.zero_grad()
        v.backward()
        opt.step()
    assert all(p.grad is None for p in loss.parameters())
    assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items())
    assert student.weight.grad is not None and align[0].bias.grad is not None


def test_seg_loss_against_hand_computation():
    torch.manual_seed(5)
    seg = SegMasKDLoss(channels=3, num_tokens=2)
    with torch.no_grad():
        seg.mask_module.mask_token.normal_(0, 1.0)
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    tok = seg.mask_module.mask_token
    terms = []
    for n in range(2):
        for k in range(2):
            m = torch.sigmoid((tok[k][:, None, None] * t[n]).sum(0))
            for c in range(3):
                terms.append(((m ** 2) * (s[n, c] - t[n, c]) ** 2).sum() / (m.sum() + 1e-5))
    assert seg(s, t).item() == pytest.approx(0.5 * torch.stack(terms).mean().item(), rel=1e-5)
    assert seg(t, t).item() == 0.0


def test_head_distill_losses():
    s = [torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0]])]
    t = [torch.tensor([[0.5, 0.0]]), torch.tensor([[1.0]])]
    # l1: mean(|.|) per level, summed: (0.5 + 2)/2 + 0
    assert HeadDistillLoss('l1', loss_weight=2.0)(s, t).item() == pytest.approx(2 * 1.25)
    # smooth l1 beta 1: 0.5*0.25 = 0.125 and 2 - 0.5 = 1.5 -> mean 0.8125
    assert HeadDistillLoss('smooth_l1', beta=1.0)(s, t).item() == pytest.approx(0.8125)
    with pytest.raises(ValueError):
        HeadDistillLoss('l2')


def test_align_modules_have_bias_even_for_equal_channels():
    a = AlignModules(256, 256, 5)
    assert len(a) == 5 and all(c.kernel_size == (1, 1) and c.bias is not None for c in a)
    assert sum(p.numel() for p in a.parameters()) == 5 * (256 * 256 + 256)
    b = AlignModules([2, 3], [4, 5], 2)
    out = b(OrderedDict([('0', torch.randn(1, 2, 3, 3)), ('1', torch.randn(1, 3, 2, 2))]))
    assert list(out) == ['0', '1'] and out['1'].shape == (1, 5, 2, 2)
    with pytest.raises(ValueError):
        AlignModules([2], [4, 5], 2)


def test_a_mask_that_underflows_to_zero_gives_a_finite_loss():
    loss = MasKDLoss([2], num_tokens=2, weight_mask=False, custom_mask=False)
    with torch.no_grad():
        loss.mask_modules[0].mask_token.copy_(torch.tensor([[-1000.0, 0.0], [1.0, 0.0]]))
    t = torch.ones(1, 2, 2, 2)
    s = torch.zeros(1, 2, 2, 2, requires_grad=True)
    v = loss([s], [t])                                   # token 0: M = sigmoid(-1000) = 0 exactly
    assert torch.isfinite(v)
    m1 = torch.sigmoid(torch.tensor(1.0))
    assert v.item() == pytest.approx((0.0 + (4 * m1 ** 2) / (4 * m1)).item() / 2, rel=1e-5)
    v.backward()
    assert torch.isfinite(s.grad).all()
