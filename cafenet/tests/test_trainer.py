import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.cbm import build_cbm
from ops import frozen_bn_stats
from sampler import CafeNetSampler
from sharing import is_candidate
from supernet import CafeSupernet
from trainer import CafeNetTrainer


def toy_supernet():
    """One slot of 4 channels (bin 1, r = 1). Channel 0 votes for class 0, channel 1 for class 1."""
    net = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    sn = CafeSupernet(net, 1, r=1, input_shape=(1, 4, 4))
    with torch.no_grad():
        sn.model[0].weight.fill_(1.0)
        sn.model[3].weight.copy_(torch.tensor([[3.0, -3.0, 0.5, 0.0], [-3.0, 3.0, 0.0, 0.5]]))
        sn.model[3].bias.zero_()
    return sn


def test_min_min_picks_the_free_channel_with_the_lowest_loss_and_trains_only_it():
    sn = toy_supernet()
    x, y = torch.ones(8, 1, 4, 4), torch.zeros(8, dtype=torch.long)
    tr = CafeNetTrainer(num_candidates=2)
    # width 1 of 4 units: S(1) = {(0,), (1,)}; unit 1 is listed first so that argmin must look at the losses
    out, loss = tr.forward(sn, x, y, widths=[1], placements=[((1,),), ((0,),)])
    hand = [F.cross_entropy(torch.tensor([[-3.0, 3.0]]), torch.tensor([0])).item(),    # channel 1 alone
            F.cross_entropy(torch.tensor([[3.0, -3.0]]), torch.tensor([0])).item()]    # channel 0 alone
    assert np.allclose(tr.last['losses'], hand, atol=1e-6)
    assert tr.last['chosen'] == 1 and sn.current[1] == ((0,),)
    assert loss.item() == min(hand)
    g_conv, g_fc = sn.model[0].weight.grad.flatten(), sn.model[3].weight.grad
    assert g_conv[0] != 0 and torch.count_nonzero(g_conv[1:]) == 0      # only the winner receives the gradient
    assert torch.count_nonzero(g_fc[:, 1:]) == 0 and torch.count_nonzero(g_fc[:, 0]) == 2


def test_width_two_candidates_keep_the_base_channel():
    sn = toy_supernet()
    x, y = torch.ones(4, 1, 4, 4), torch.ones(4, dtype=torch.long)
    tr = CafeNetTrainer(num_candidates=2)
    # width 2: base {0}, zone {1, 2}; for class 1 the placement with channel 1 is better
    tr.forward(sn, x, y, widths=[2], placements=[((0, 2),), ((0, 1),)])
    assert tr.last['chosen'] == 1 and tr.last['losses'][1] < tr.last['losses'][0]


def test_scoring_passes_leave_the_bn_statistics_alone():
    torch.manual_seed(0)
    sn = CafeSupernet(build_cbm('mobilenet', width_mult=0.125), [4, 24, 24, 24, 8, 48, 32], 1, (3, 16, 16))
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    sampler = CafeNetSampler(sn.num_units, 1, rng=0)
    w = [2, 3, 1, 2, 3, 2, 1]
    pls = sampler.sample_placements(w, 3)
    before = {k: v.clone() for k, v in sn.state_dict().items()}
    tr = CafeNetTrainer(num_candidates=3)
    losses = tr.score(sn, x, y, w, pls)
    assert all(torch.equal(before[k], v) for k, v in sn.state_dict().items())
    for p, l in zip(pls, losses):          # each score is the batch-statistics loss of that placement
        sn.set_width(w, p)
        with frozen_bn_stats(sn), torch.no_grad():
            assert torch.isclose(F.cross_entropy(sn(x), y), l)
    tr.forward(sn, x, y, widths=w, placements=pls)
    k = tr.last['chosen']
    assert k == int(np.argmin(tr.last['losses']))
    changed = [n for n, v in sn.state_dict().items() if 'running_mean' in n and not torch.equal(before[n], v)]
    assert changed                          # the winner's pass (with grad) updates the running statistics


def test_sampler_draws_legal_widths_and_placements():
    s = CafeNetSampler([4, 6, 2], r=1, rng=0)
    seen = set()
    for _ in range(200):
        w = s.sample_widths()
        assert all(1 <= c <= n for c, n in zip(w, [4, 6, 2]))
        seen.update((l, c) for l, c in enumerate(w))
        for p in s.sample_placements(w, 2):
            assert all(is_candidate(u, n, c, 1) for u, n, c in zip(p, [4, 6, 2], w))
    assert len(seen) == 4 + 6 + 2           # every width of every slot is drawn
    st = s.state_dict()
    a = s.sample_widths()
    s.load_state_dict(st)
    assert s.sample_widths() == a
