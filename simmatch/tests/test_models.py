"""Networks against the card's parameter counts, and the SimMatch step's invariants on a tiny encoder."""
import pytest
import torch
import torch.nn.functional as F

import backbones
from losses import distribution_alignment, instance_loss, simmatch_targets
from models import ResNet, SimMatch, get_simmatch_model


def _count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('builder, classes, body, head', [
    (backbones.wrn_28_2, 10, 1_467_626, 33_024),
    (backbones.wrn_28_8, 100, 23_401_028, 328_320),
    (backbones.wrn_var_37_2, 10, 5_929_450, 98_688),
])
def test_wide_resnet_parameter_counts(builder, classes, body, head):
    with torch.device('meta'):  # shapes only, no initialisation cost
        net = ResNet(builder, classes)
    assert _count(net.backbone) + _count(net.fc) == body
    assert _count(net.head) == head


def test_resnet50_parameter_counts_and_official_keys():
    with torch.device('meta'):
        net = ResNet(backbones.resnet50_encoder, 1000)
        full = SimMatch(backbones.resnet50_encoder, num_classes=1000, K=13000)
    assert _count(net.backbone) == 23_508_032
    assert _count(net.fc) == 2_049_000
    assert _count(net.head) == 4_458_624
    assert _count(net) == 30_015_656
    keys = net.state_dict().keys()
    for k in ('backbone.conv1.weight', 'backbone.layer4.2.bn3.running_var', 'fc.weight', 'head.0.bias',
              'head.2.weight'):
        assert k in keys
    assert not any(k.startswith('backbone.fc') for k in keys)
    assert _count(full) == 60_031_312  # student + teacher
    assert full.bank.shape == (128, 13000) and full.DA_queue.shape == (256, 1000)


def test_wrn_var_shapes_at_96px():
    with torch.device('meta'):
        enc = backbones.wrn_var_37_2()
        out = enc(torch.zeros(2, 3, 96, 96))
    assert enc.out_channels == 256 and out.shape == (2, 256)
    small = backbones.wrn_22_1_s2()
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def _model(tiny_encoder, **kw):
    torch.manual_seed(0)
    kw.setdefault('num_classes', 3)
    kw.setdefault('K', 5)
    kw.setdefault('dim', 4)
    kw.setdefault('DA_len', 4)
    return SimMatch(tiny_encoder, **kw)


def _batch(bx=2, bu=3):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(bx, 3, 8, 8, generator=g), torch.randn(bu, 3, 8, 8, generator=g),
            torch.randn(bu, 3, 8, 8, generator=g), torch.tensor([2, 0]), torch.tensor([4, 1]))


def test_state_dict_keys_follow_official(tiny_encoder):
    m = _model(tiny_encoder)
    sd = m.state_dict()
    for k in ('bank', 'labels', 'DA_queue', 'DA_ptr', 'main.fc.weight', 'main.head.0.weight', 'ema.head.2.bias'):
        assert k in sd
    assert sd['bank'].shape == (4, 5) and sd['DA_queue'].shape == (4, 3)
    assert torch.allclose(sd['bank'].norm(dim=0), torch.ones(5))
    assert 'DA_queue' not in _model(tiny_encoder, DA=False).state_dict()
    assert get_simmatch_model('SimMatch') is SimMatch
    assert all(not p.requires_grad for p in m.ema.parameters())
    for pm, pe in zip(m.main.parameters(), m.ema.parameters()):
        assert torch.equal(pm, pe)


def test_embedding_is_unit_norm_and_eval_forward(tiny_encoder):
    m = _model(tiny_encoder)
    logits, z = m.main(torch.randn(4, 3, 8, 8))
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-6)
    m.eval()
    assert torch.allclose(m(torch.ones(1, 3, 8, 8)), m.main(torch.ones(1, 3, 8, 8))[0])


def test_ema_teacher_step_uses_bank_before_update(tiny_encoder):
    m = _model(tiny_encoder)
    m.labels.copy_(torch.tensor([0, 1, 2, 0, 1]))
    x, uw, us, y, idx = _batch()
    bank0, labels0 = m.bank.clone(), m.labels.clone()
    # what the teacher and student see, computed independently (train mode, the same batches)
    ema_copy = ResNet(tiny_encoder, 3, dim=4)
    ema_copy.load_state_dict(m.ema.state_dict())
    logits_k, z_k = ema_copy(torch.cat([x, uw]))
    p = torch.softmax(logits_k[2:], 1)
    p_da, _, _ = distribution_alignment(p, torch.zeros(4, 3), 0)
    expect = simmatch_targets(p_da, z_k[2:], bank0, labels0, 3, tt=0.1, c_smooth=0.9)

    logits_x, pseudo, logits_us, loss_in = m(x, uw, us, labels=y, index=idx, start_unlabel=True)
    assert torch.allclose(pseudo, expect['pseudo_label'], atol=1e-6)
    _, z_s = m.main(torch.cat([x, us]))
    assert torch.allclose(loss_in, instance_loss(z_s[2:], bank0, expect['teacher_prob'], 0.1), atol=1e-5)
    assert loss_in.shape == (3,) and logits_x.shape == (2, 3) and logits_us.shape == (3, 3)
    # the bank is overwritten with the teacher embeddings of the labeled images, after the targets
    assert torch.allclose(m.bank[:, 4], z_k[0], atol=1e-6) and torch.allclose(m.bank[:, 1], z_k[1], atol=1e-6)
    assert torch.equal(m.bank[:, [0, 2, 3]], bank0[:, [0, 2, 3]])
    assert m.labels.tolist() == [0, 0, 2, 0, 2]
    assert int(m.DA_ptr) == 1 and torch.allclose(m.DA_queue[0], p.mean(0), atol=1e-6)


def test_epoch_zero_has_no_instance_loss_but_keeps_da_and_bank(tiny_encoder):
    m = _model(tiny_encoder)
    x, uw, us, y, idx = _batch()
    bank0 = m.bank.clone()
    _, pseudo, _, loss_in = m(x, uw, us, labels=y, index=idx, start_unlabel=False)
    assert torch.equal(loss_in, torch.zeros(3))
    assert torch.allclose(pseudo.sum(1), torch.ones(3))
    assert int(m.DA_ptr) == 1
    assert not torch.equal(m.bank, bank0)


def test_gradients_reach_only_the_student(tiny_encoder):
    m = _model(tiny_encoder)
    x, uw, us, y, idx = _batch()
    logits_x, pseudo, logits_us, loss_in = m(x, uw, us, labels=y, index=idx, start_unlabel=True)
    loss = F.cross_entropy(logits_x, y) + (-(pseudo * F.log_softmax(logits_us, 1)).sum(1)).mean() + loss_in.mean()
    loss.backward()
    assert all(p.grad is None for p in m.ema.parameters())
    assert m.main.head[0].weight.grad.abs().sum() > 0 and m.main.fc.weight.grad.abs().sum() > 0
    assert not pseudo.requires_grad and not m.bank.requires_grad


def test_momentum_update_ema_params_only(tiny_encoder):
    m = _model(tiny_encoder, momentum=0.9)
    with torch.no_grad():
        for p in m.main.parameters():
            p.add_(1.0)
        m.main.backbone.bn.running_mean.fill_(3.0)
    before = [p.clone() for p in m.ema.parameters()]
    m.momentum_update_ema()
    for pe, p0, pm in zip(m.ema.parameters(), before, m.main.parameters()):
        assert torch.allclose(pe, 0.9 * p0 + 0.1 * pm)
    assert torch.equal(m.ema.backbone.bn.running_mean, torch.zeros(6))  # official: buffers are not averaged


def test_momentum_update_eman_and_eval_only_ema(tiny_encoder):
    m = _model(tiny_encoder, momentum=0.5, eman=True)
    m.main.backbone.bn.running_mean.fill_(2.0)
    m.main.backbone.bn.num_batches_tracked.fill_(7)
    m.momentum_update_ema()
    assert torch.allclose(m.ema.backbone.bn.running_mean, torch.ones(6))
    assert int(m.ema.backbone.bn.num_batches_tracked) == 7
    m.train()
    assert m.main.training and not m.ema.training  # EMAN teacher runs in eval mode
    usb = _model(tiny_encoder, use_ema_teacher=False, bank_m=0.7)
    usb.main.backbone.bn.running_var.fill_(5.0)
    usb.momentum_update_ema()
    assert torch.equal(usb.ema.backbone.bn.running_var, torch.full((6,), 5.0))


def test_usb_single_pass_and_momentum_bank(tiny_encoder):
    m = _model(tiny_encoder, use_ema_teacher=False, bank_m=0.7, bank_norm_dim=0)
    x, uw, us, y, idx = _batch()
    bank0 = m.bank.clone()
    logits_x, pseudo, logits_us, loss_in = m(x, uw, us, labels=y, index=idx, start_unlabel=True)
    student = ResNet(tiny_encoder, 3, dim=4)
    student.load_state_dict(m.main.state_dict())
    logits, z = student(torch.cat([x, uw, us]))
    assert torch.allclose(logits_x, logits[:2], atol=1e-5) and torch.allclose(logits_us, logits[5:], atol=1e-5)
    expect = F.normalize(0.7 * bank0[:, [4, 1]] + 0.3 * z[:2].t(), dim=0)
    assert torch.allclose(m.bank[:, [4, 1]], expect, atol=1e-5)
    assert torch.allclose(m.bank.norm(dim=0), torch.ones(5), atol=1e-5)


def test_product_aggregation_switch(tiny_encoder):
    m = _model(tiny_encoder, aggregation='product')
    x, uw, us, y, idx = _batch()
    _, pseudo, _, _ = m(x, uw, us, labels=y, index=idx, start_unlabel=True)
    assert torch.allclose(pseudo.sum(1), torch.ones(3), atol=1e-6)
    assert (pseudo[:, 1:] == 0).all()  # the bank holds only class 0 at start (labels initialised to 0)
