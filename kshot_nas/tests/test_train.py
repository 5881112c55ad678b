"""Iterative training: phases, frozen / stopped gradients, per-copy gradient scaling, K = 1 equals SPOS."""
import copy

import pytest
import torch
import torch.nn.functional as F

from ops import KShotBatchNorm2d
from simplex import SimplexNet
from supernet import KShotSuperNet
from train import KShotTrainer, cosine, supernet_param_groups, train_kshot


def _make(tiny, K=3, channel_search=False, **kw):
    torch.manual_seed(0)
    net = KShotSuperNet(K=K, num_classes=4, channel_search=channel_search, **tiny)
    simplex = SimplexNet(net.num_layers, net.space.num_ops, K, num_widths=5 if channel_search else None)
    args = dict(total_iters=20, warmup_iters=2, lr=0.1, num_paths=2, seed=0)
    args.update(kw)
    return net, simplex, KShotTrainer(net, simplex, **args)


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


def test_schedule_of_phases(tiny):
    _, _, tr = _make(tiny, warmup_iters=2)
    assert [tr.phase(i) for i in range(6)] == ['warmup', 'warmup', 'supernet', 'simplex', 'supernet', 'simplex']
    _, _, uni = _make(tiny, code='uniform')
    assert [uni.phase(i) for i in range(2, 5)] == ['supernet'] * 3
    _, _, spos = _make(tiny, K=1)  # K = 1: the code is always (1,), no simplex-net steps
    assert [spos.phase(i) for i in range(2, 5)] == ['supernet'] * 3 and spos.code_of([0] * 4).tolist() == [1.0]
    assert cosine(0, 10, 1.0) == 1.0 and cosine(10, 10, 1.0, 0.1) == pytest.approx(0.1)


def test_warmup_and_supernet_steps_do_not_touch_the_simplex_net(tiny):
    net, simplex, tr = _make(tiny)
    before = copy.deepcopy(simplex.state_dict())
    x, y = _batch()
    outs = [tr.step(x, y) for _ in range(3)]  # warmup, warmup, supernet
    assert [o['phase'] for o in outs] == ['warmup', 'warmup', 'supernet']
    assert torch.allclose(outs[0]['lam'], torch.full((3,), 1 / 3))
    assert all(torch.equal(before[k], v) for k, v in simplex.state_dict().items())
    assert all(p.grad is None for p in simplex.parameters())  # lam = stop_grad(pi(alpha))


def test_simplex_step_freezes_the_supernets(tiny):
    net, simplex, tr = _make(tiny, warmup_iters=0)
    tr.iter = 1  # an even (simplex-net) iteration
    params = {k: v.clone() for k, v in net.named_parameters()}
    before = copy.deepcopy(simplex.state_dict())
    out = tr.step(*_batch())
    assert out['phase'] == 'simplex' and torch.allclose(out['lam'].sum(), torch.tensor(1.0))
    assert all(torch.equal(params[k], v) and v.requires_grad for k, v in net.named_parameters())
    assert any(not torch.equal(before[k], v) for k, v in simplex.state_dict().items())


def test_channel_search_step_adds_the_regulariser(tiny):
    net, simplex, tr = _make(tiny, channel_search=True, warmup_iters=0, num_paths=4)
    tr.iter = 1
    out = tr.step(*_batch())
    assert out['phase'] == 'simplex' and out['reg'] <= 0
    tr.iter = 2
    assert tr.step(*_batch())['phase'] == 'supernet'


def test_supernet_gradients_of_the_copies_are_scaled_by_the_code(tiny):
    net, simplex, tr = _make(tiny)
    x, y = _batch()
    arch, lam = [3, 12, 7, 1], torch.tensor([0.6, 0.3, 0.1])
    F.cross_entropy(net(x, arch, lam), y).backward()
    checked = 0
    for name, p in net.named_parameters():
        if p.grad is None or name.startswith('classifier') or p.grad.abs().sum() == 0:
            continue
        ref = p.grad[0] / lam[0]
        for k in (1, 2):
            assert torch.allclose(p.grad[k] / lam[k], ref, rtol=1e-4, atol=1e-7), name
        checked += 1
    assert checked > 20


def test_weight_decay_groups():
    net = KShotSuperNet(K=2, num_classes=4, stages=[(8, 1, 1)], stem_channels=4, first_channels=4,
                        last_channels=8, stem_stride=1)
    decay, rest = supernet_param_groups(net, 1e-4)
    bn_ids = {id(p) for m in net.modules() if isinstance(m, KShotBatchNorm2d) for p in m.parameters()}
    assert all(id(p) not in bn_ids for p in decay['params']) and decay['weight_decay'] == 1e-4
    assert bn_ids <= {id(p) for p in rest['params']} and rest['weight_decay'] == 0.0
    assert any(p is net.conv_stem.weight for p in decay['params'])


def test_k1_training_step_equals_spos_on_the_path(tiny):
    """A K = 1 supernet step is the SGD step of the plain one-shot network on the sampled path."""
    net, simplex, tr = _make(tiny, K=1, warmup_iters=0, weight_decay=0.0, label_smoothing=0.0, simplex_interval=0)
    state = copy.deepcopy(tr.rng.getstate())
    arch, _ = tr.sample_path()
    tr.rng.setstate(state)
    plain = net.export_subnet(arch, torch.ones(1)).train()
    opt = torch.optim.SGD(plain.parameters(), lr=tr.lr, momentum=0.9, nesterov=True)
    x, y = _batch()
    out = tr.step(x, y)
    loss = F.cross_entropy(plain(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert out['loss'] == pytest.approx(loss.item(), rel=1e-5)
    after = net.export_subnet(arch, torch.ones(1))
    for (k, a), b in zip(after.state_dict().items(), plain.state_dict().values()):
        if k.endswith('num_batches_tracked'):
            continue
        assert torch.allclose(a, b, atol=1e-6), k


def test_train_kshot_and_state_round_trip(tiny):
    net, simplex, tr = _make(tiny, total_iters=6)
    loader = [_batch(8), _batch(8), _batch(8)]
    seen = []
    hist = train_kshot({'epochs': 2}, tr, loader, on_epoch_end=lambda e, s: seen.append(e))
    assert seen == [0, 1] and tr.iter == 6 and 'simplex_loss' in hist[1] and len(hist[1]['mean_code']) == 3
    _, _, tr2 = _make(tiny, total_iters=6)
    tr2.load_state_dict(tr.state_dict())
    assert tr2.iter == 6 and tr2.sample_path() == tr.sample_path()
