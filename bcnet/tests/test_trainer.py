import copy

import torch
import torch.nn.functional as F

from algorithm import BCNetAlgorithm
from models.cbm import build_cbm
from sampler import BCNetSampler
from searcher import BCNetSearcher
from supernet import BCNetSupernet
from trainer import BCNetTrainer


def _setup(bilateral=True, full_width_every=0, rec=100):
    torch.manual_seed(0)
    sn = BCNetSupernet(build_cbm('resnet', width_mult=0.0625), 4, 1, (3, 16, 16))
    alg = BCNetAlgorithm(BCNetSampler(4, 1, rng=0), BCNetSearcher(4, 1, prior_init=False), 4, 1, rec)
    return sn, alg, BCNetTrainer('supernet', alg, full_width_every=full_width_every, bilateral=bilateral)


def test_bc_loss_gradient_is_half_left_plus_half_right():
    sn, alg, tr = _setup()
    ref = copy.deepcopy(sn)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    _, loss = tr.forward(sn, x, y)
    left, right = alg.subnet_left, alg.subnet_right
    assert [b - a for a, b in left] == [b - a for a, b in right]
    assert all(a == 0 for a, _ in left) and all(b == 4 for _, b in right)
    ref.set_channel_choices(left)
    l_left = F.cross_entropy(ref(x), y)
    ref.set_channel_choices(right)
    l_right = F.cross_entropy(ref(x), y)
    (0.5 * (l_left + l_right)).backward()
    assert torch.allclose(loss, 0.5 * (l_left + l_right).detach())
    for (n, p), (_, q) in zip(sn.named_parameters(), ref.named_parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), n
    assert alg.loss_records[0][0] == loss.item()


def test_complementary_step_follows_and_records_keep_the_lowest():
    sn, alg, tr = _setup(rec=3)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    for _ in range(12):
        tr.forward(sn, x, y)
    losses = [r[0] for r in alg.loss_records]
    assert len(losses) == 3 and losses == sorted(losses)
    assert alg.sampler.counts['fresh'] + alg.sampler.counts['complementary'] == 12


def test_full_width_steps_and_unilateral_mode():
    sn, alg, tr = _setup(full_width_every=2)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
    tr.forward(sn, x, y)
    assert sn.current is not None
    tr.forward(sn, x, y)             # every 2nd step: the full-width supernet, no record
    assert sn.current is None and len(alg.loss_records) == 1
    sn, alg, tr = _setup(bilateral=False)
    tr.forward(sn, x, y)
    assert alg.subnet_right == alg.subnet_left and all(a == 0 for a, _ in sn.current)


def test_algorithm_state_roundtrip():
    sn, alg, tr = _setup(rec=5)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
    for _ in range(4):
        tr.forward(sn, x, y)
    state = alg.state_dict()
    _, alg2, _ = _setup(rec=5)
    alg2.load_state_dict(state)
    assert alg2.loss_records == alg.loss_records
    choices = sn.get_channel_choices()
    assert alg2.sampler.gen_subnet(choices) == alg.sampler.gen_subnet(choices)
