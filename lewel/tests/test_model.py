"""LEWEL_B / LEWEL_M models: parameter counts, loss, stop-gradient, EMA schedules, official state_dict keys."""
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

import backbones
import models

TINY = partial(backbones.resnet18_encoder, width=4, small_input=True)


def tiny_model(cls=models.LEWELB_EMAN, **kw):
    torch.manual_seed(0)
    kw = {'dim': 8, 'hid_dim': 16, 'num_heads': 4, 'm': 0.9, **kw}
    return cls(TINY, **kw)


def n_params(module, trainable=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def test_parameter_counts_match_the_card():
    with torch.device('meta'):
        model = models.LEWELB_EMAN(backbones.resnet50_encoder, dim=256, hid_dim=4096, num_heads=4)
    assert n_params(model.online_net.backbone) == 23_508_032
    assert n_params(model.online_net.neck.proj) == n_params(model.online_net.neck.proj_obj) == 9_445_376
    assert n_params(model.predictor) == n_params(model.predictor_obj) == 2_105_344
    assert n_params(model, trainable=True) == 46_609_472
    assert n_params(model.target_net) == 42_398_784 and n_params(model) == 89_008_256


def test_official_state_dict_keys():
    keys = set(tiny_model().state_dict())
    for key in ('online_net.backbone.conv1.weight', 'online_net.backbone.layer4.1.bn2.running_var',
                'online_net.backbone.layer2.0.downsample.1.weight', 'online_net.neck.proj.mlp.0.weight',
                'online_net.neck.proj.mlp.1.running_mean', 'online_net.neck.proj.mlp.3.weight',
                'online_net.neck.proj_obj.mlp.3.weight', 'target_net.neck.proj_obj.mlp.1.weight',
                'predictor.mlp.0.weight', 'predictor_obj.mlp.3.weight'):
        assert key in keys, key
    assert not any(k.endswith('mlp.0.bias') for k in keys)  # no biases in the BYOL MLPs


def test_backbone_keys_are_torchvision_resnet50s():
    import torchvision
    with torch.device('meta'):
        net = backbones.resnet50_encoder(with_avgpool=True)
        ref = torchvision.models.resnet50()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.startswith('fc.')}
    assert ours == theirs
    assert net.out_channels == 2048 and backbones.resnet18_encoder().out_channels == 512


def test_byol_distance_by_hand():
    model = tiny_model()
    pred = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    target = torch.tensor([[4.0, 3.0], [0.0, 2.0]])
    # rows: cos = 24/25 and 0 -> distances 2 - 48/25 and 2, mean
    assert model.mse_loss(pred, target).item() == pytest.approx(((2 - 48 / 25) + 2) / 2)


def test_loss_is_the_sum_of_two_weighted_directions():
    model = tiny_model(loss_weight=0.3).eval()
    x1, x2 = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    loss = model(x1, x2)
    on1, on2 = model.online_net(x1), model.online_net(x2)
    t1, t2 = model.target_net(x1), model.target_net(x2)

    def direction(on, tg):
        p_g = model.predictor(on[0])[:, :, 0]
        l_g = (2 - 2 * F.cosine_similarity(p_g, tg[0][:, :, 0], dim=1)).mean()
        p_a = model.predictor_obj(on[1])                      # [b, D, slots]: slot k against slot k
        l_a = (2 - 2 * F.cosine_similarity(p_a, tg[1], dim=1)).mean()
        return 0.3 * l_g + 0.7 * l_a

    assert loss.item() == pytest.approx((direction(on1, t2) + direction(on2, t1)).item(), rel=1e-5)


def test_loss_starts_near_four_and_gradients_stop_at_the_target():
    model = tiny_model().train()
    model.target_net.eval()
    loss = model(torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8))
    assert 3.0 < loss.item() < 4.5  # sum of two directions of ~2 each at initialisation
    loss.backward()
    assert all(p.grad is None for p in model.target_net.parameters())
    for name in ('online_net.backbone.conv1.weight', 'online_net.neck.proj.mlp.0.weight',
                 'online_net.neck.proj_obj.mlp.3.weight', 'predictor.mlp.0.weight', 'predictor_obj.mlp.3.weight'):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name


def test_target_starts_as_a_copy_and_single_view_returns_pooled_features():
    model = tiny_model()
    for p_o, p_t in zip(model.online_net.parameters(), model.target_net.parameters()):
        assert torch.equal(p_o, p_t) and not p_t.requires_grad
    feats = model.eval()(torch.randn(2, 3, 8, 8))
    assert feats.shape == (2, 32)


def test_momentum_schedule_by_hand():
    model = tiny_model(m=0.98)
    assert model.momentum_at(0, 100) == pytest.approx(0.98)
    assert model.momentum_at(50, 100) == pytest.approx(0.99)
    assert model.momentum_at(25, 100) == pytest.approx(1 - 0.02 * (math.cos(math.pi / 4) + 1) / 2)
    assert model.momentum_at(100, 100) == pytest.approx(1.0)


def _perturb(model):
    with torch.no_grad():
        for v in model.online_net.state_dict().values():
            if v.dtype.is_floating_point:
                v.add_(torch.randn_like(v))
            else:
                v.add_(3)


@pytest.mark.parametrize('cls', [models.LEWELB_EMAN, models.LEWELB])
def test_ema_update_by_hand(cls):
    model = tiny_model(cls, m=0.9)
    _perturb(model)
    online = {k: v.clone() for k, v in model.online_net.state_dict().items()}
    before = {k: v.clone() for k, v in model.target_net.state_dict().items()}
    m = model.momentum_update(30, 100)
    expected_m = 1 - 0.1 * (math.cos(math.pi * 0.3) + 1) / 2
    assert m == pytest.approx(expected_m) and model.curr_m == pytest.approx(expected_m)
    after = model.target_net.state_dict()
    params = {k for k, _ in model.target_net.named_parameters()}
    for k, v in after.items():
        if k in params or (cls is models.LEWELB_EMAN and v.dtype.is_floating_point):
            assert torch.allclose(v, m * before[k] + (1 - m) * online[k], atol=1e-6), k
        elif cls is models.LEWELB_EMAN:          # num_batches_tracked is copied
            assert torch.equal(v, online[k]), k
        else:                                    # LEWELB: buffers are left alone
            assert torch.equal(v, before[k]), k


def test_get_lewel_model():
    assert models.get_lewel_model('LEWELB') is models.LEWELB
    assert models.get_lewel_model('LEWELB_EMAN') is models.LEWELB_EMAN
    assert models.get_lewel_model('LEWELM') is models.LEWELM
    with pytest.raises(ValueError, match='LEWELB_EMAN'):
        models.get_lewel_model('BYOL')


def test_lewel_m_batch_negatives_by_hand_and_queue():
    model = tiny_model(models.LEWELM, queue_size=16, T=0.5, m=0.99).train()
    x1, x2 = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    queue = model.queue.clone()
    torch.manual_seed(1)
    loss = model(x1, x2)
    assert int(model.queue_ptr) == 8                        # both directions' keys enqueued (2 x 4)
    q1, q2 = model.encoder_q(x1), model.encoder_q(x2)
    k1, k2 = model.encoder_k(x1), model.encoder_k(x2)
    norm = lambda t: (F.normalize(t[0][:, :, 0], dim=1), F.normalize(t[1].transpose(2, 1), dim=2))

    def direction(q, k):
        (qg, qo), (kg, ko) = norm(q), norm(k)
        logits = torch.cat([(qg * kg).sum(1, keepdim=True), qg @ queue], 1) / 0.5
        l_g = F.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
        l_a = torch.stack([F.cross_entropy(qo[:, s] @ ko[:, s].T / 0.5, torch.arange(4))
                           for s in range(qo.shape[1])]).mean()
        return l_g, l_a

    (g1, a1), (g2, a2) = direction(q1, k2), direction(q2, k1)
    assert loss.item() == pytest.approx(0.5 * (g1 + g2).item() / 2 + 0.5 * (a1 + a2).item() / 2, rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert not any('mlp.1.' in k for k in model.state_dict())  # MoCo v2 heads: no BatchNorm


def test_lewel_m_slot_queue_and_momentum():
    model = tiny_model(models.LEWELM, queue_size=16, aligned_negatives='queue', obj_queue_size=8, m=0.5)
    loss = model(torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8))
    assert torch.isfinite(loss) and model.queue_obj.shape == (2, 8, 8) and int(model.queue_obj_ptr) == 0
    k_before = [p.clone() for p in model.encoder_k.parameters()]
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    assert model.momentum_update(5, 10) == 0.5               # constant m
    for p_k, p_q, old in zip(model.encoder_k.parameters(), model.encoder_q.parameters(), k_before):
        assert torch.allclose(p_k, 0.5 * old + 0.5 * p_q)
    with pytest.raises(ValueError, match='aligned_negatives'):
        tiny_model(models.LEWELM, aligned_negatives='hungarian')
