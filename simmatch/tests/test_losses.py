"""SimMatch's equations against hand computations on tiny tensors."""
import math

import pytest
import torch
import torch.nn.functional as F

from losses import (SimMatchLoss, aggregate, bank_update, distribution_alignment, instance_loss, semantic_loss,
                    simmatch_targets, unfold)


def test_distribution_alignment_hand_computed():
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4]])
    queue = torch.zeros(2, 2)
    aligned, q1, ptr = distribution_alignment(probs, queue, 0)
    # the batch mean (0.7, 0.3) is written first, then divided by the mean of the 2 rows: (0.35, 0.15)
    assert torch.allclose(q1, torch.tensor([[0.7, 0.3], [0.0, 0.0]]))
    assert ptr == 1
    row0 = torch.tensor([0.8 / 0.35, 0.2 / 0.15])
    assert torch.allclose(aligned[0], row0 / row0.sum())
    assert torch.allclose(aligned.sum(1), torch.ones(2))
    assert torch.equal(queue, torch.zeros(2, 2))  # inputs are not modified
    # second call fills row 1, the pointer wraps round to 0
    p2 = torch.tensor([[0.1, 0.9]])
    aligned2, q2, ptr2 = distribution_alignment(p2, q1, ptr)
    assert ptr2 == 0 and torch.allclose(q2[1], p2[0])
    mean = torch.tensor([(0.7 + 0.1) / 2, (0.3 + 0.9) / 2])
    expect = p2[0] / mean
    assert torch.allclose(aligned2[0], expect / expect.sum())


def test_distribution_alignment_uses_given_global_mean():
    probs = torch.tensor([[0.5, 0.5]])
    _, q, _ = distribution_alignment(probs, torch.zeros(3, 2), 2, batch_mean=torch.tensor([0.9, 0.1]))
    assert torch.allclose(q[2], torch.tensor([0.9, 0.1]))


def _tiny_bank():
    # three labeled embeddings in 2-d: slots 0 and 2 of class 0, slot 1 of class 1; class 2 has no slot
    bank = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    return bank, labels


def test_unfold_and_aggregate_hand_computed():
    bank, labels = _tiny_bank()
    p = torch.tensor([[0.2, 0.5, 0.3]])
    assert torch.allclose(unfold(p, labels), torch.tensor([[0.2, 0.5, 0.2]]))
    q = torch.tensor([[0.1, 0.6, 0.3]])
    assert torch.allclose(aggregate(q, labels, 3), torch.tensor([[0.4, 0.6, 0.0]]))


@pytest.mark.parametrize('tt', [0.5, 0.1])
def test_simmatch_targets_hand_computed(tt):
    bank, labels = _tiny_bank()
    z_w = torch.tensor([[1.0, 0.0]])          # cos-similarities to the slots: 1, 0, 1
    p = torch.tensor([[0.3, 0.6, 0.1]])       # DA-adjusted class prediction
    e = math.exp(1.0 / tt)
    qw = torch.tensor([e, 1.0, e]) / (2 * e + 1)                      # softmax((1, 0, 1) / t_t)
    f = torch.tensor([0.3, 0.6, 0.3])                                 # unfolding: p at each slot's label
    q_hat = qw * f / (qw * f).sum()                                    # calibrated instance target
    a = torch.tensor([2 * e / (2 * e + 1), 1 / (2 * e + 1), 0.0])    # aggregation per class
    out = simmatch_targets(p, z_w, bank, labels, 3, tt=tt, c_smooth=0.9)
    assert torch.allclose(out['teacher_prob_orig'][0], qw)
    assert torch.allclose(out['factor'][0], f)
    assert torch.allclose(out['teacher_prob'][0], q_hat)
    assert torch.allclose(out['aggregated_prob'][0], a)
    assert torch.allclose(out['pseudo_label'][0], 0.9 * p[0] + 0.1 * a)        # official mix
    prod = simmatch_targets(p, z_w, bank, labels, 3, tt=tt, aggregation='product')['pseudo_label'][0]
    assert torch.allclose(prod, p[0] * a / (p[0] * a).sum())                   # paper's rule
    assert prod[2] == 0                                                        # no slot of class 2
    assert torch.allclose(simmatch_targets(p, z_w, bank, labels, 3, tt=tt, c_smooth=1.0)['pseudo_label'], p)


def test_simmatch_targets_rows_are_distributions():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(8, 20), dim=0)
    labels = torch.randint(0, 5, (20,))
    z = F.normalize(torch.randn(4, 8), dim=1)
    p = torch.softmax(torch.randn(4, 5), 1)
    for agg in ('mix', 'product'):
        out = simmatch_targets(p, z, bank, labels, 5, aggregation=agg)
        for key in ('pseudo_label', 'teacher_prob', 'teacher_prob_orig', 'aggregated_prob'):
            assert torch.allclose(out[key].sum(1), torch.ones(4), atol=1e-6), (agg, key)
    with pytest.raises(ValueError, match='aggregation'):
        simmatch_targets(p, z, bank, labels, 5, aggregation='sum')


def test_instance_loss_hand_computed_and_gradient_path():
    bank, _ = _tiny_bank()
    z_s = torch.tensor([[0.0, 1.0]], requires_grad=True)   # similarities 0, 1, 0
    q_hat = torch.tensor([[0.25, 0.5, 0.25]])
    st = 0.5
    e = math.exp(1.0 / st)
    log_qs = torch.log(torch.tensor([1.0, e, 1.0]) / (e + 2))
    expect = -(q_hat[0] * log_qs).sum()
    loss = instance_loss(z_s, bank, q_hat, st=st)
    assert loss.shape == (1,) and torch.allclose(loss[0], expect)
    loss.sum().backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    # a target equal to the student distribution gives the entropy, the minimum over targets' cross-entropy
    q_s = torch.softmax(z_s.detach() @ bank / st, 1)
    assert torch.allclose(instance_loss(z_s.detach(), bank, q_s, st), -(q_s * q_s.log()).sum(1))


def test_threshold_mask_and_semantic_loss():
    pseudo = torch.tensor([[0.96, 0.04], [0.5, 0.5], [0.95, 0.05], [0.2, 0.8]])
    logits = torch.zeros(4, 2)  # log-softmax = log 0.5 everywhere
    loss, mask = semantic_loss(logits, pseudo, threshold=0.95)
    assert torch.equal(mask, torch.tensor([1.0, 0.0, 1.0, 0.0]))  # max p^ >= tau, inclusive
    assert torch.allclose(loss, torch.tensor(2 * math.log(2) / 4))  # mean over all samples, masked included
    # the target is the soft p^, not its argmax
    logits = torch.tensor([[2.0, 0.0]])
    target = torch.tensor([[0.9, 0.1]])
    loss, _ = semantic_loss(logits, target, 0.7)
    ls = F.log_softmax(logits, 1)[0]
    assert torch.allclose(loss, -(0.9 * ls[0] + 0.1 * ls[1]))
    # the mask looks at the calibrated p^: nothing passes a threshold above every max
    assert semantic_loss(logits, target, 0.95)[1].sum() == 0


def test_simmatch_loss_weights():
    torch.manual_seed(0)
    logits_x, y = torch.randn(3, 4), torch.tensor([0, 1, 2])
    logits_us = torch.randn(5, 4)
    pseudo = torch.softmax(torch.randn(5, 4) * 4, 1)
    loss_in = torch.rand(5)
    crit = SimMatchLoss(lambda_u=10., lambda_in=5., threshold=0.7)
    loss, stats = crit(logits_x, y, logits_us, pseudo, loss_in)
    lu, mask = semantic_loss(logits_us, pseudo, 0.7)
    assert torch.allclose(loss, F.cross_entropy(logits_x, y) + 10 * lu + 5 * loss_in.mean())
    assert torch.allclose(stats['mask'], mask.mean())
    sup_only, _ = SimMatchLoss(0., 0., 0.7)(logits_x, y, logits_us, pseudo, loss_in)
    assert torch.allclose(sup_only, F.cross_entropy(logits_x, y))


def test_bank_update_overwrite():
    bank = F.normalize(torch.randn(4, 6), dim=0)
    labels = torch.zeros(6, dtype=torch.long)
    k = F.normalize(torch.randn(2, 4), dim=1)
    new_bank, new_labels = bank_update(bank, labels, k, torch.tensor([3, 1]), torch.tensor([5, 2]))
    assert torch.allclose(new_bank[:, 5], k[0]) and torch.allclose(new_bank[:, 2], k[1])
    keep = [0, 1, 3, 4]
    assert torch.equal(new_bank[:, keep], bank[:, keep])
    assert new_labels.tolist() == [0, 0, 1, 0, 0, 3]
    assert labels.sum() == 0  # the inputs are not modified


def test_bank_update_momentum_column_normalised_and_usb_quirk():
    bank = F.normalize(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]]), dim=0)
    labels = torch.zeros(3, dtype=torch.long)
    k = torch.tensor([[0.0, 1.0], [1.0, 0.0]])   # embeddings for slots 0 and 1
    index = torch.tensor([0, 1])
    fixed, _ = bank_update(bank, labels, k, torch.tensor([1, 2]), index, bank_m=0.7, norm_dim=0)
    # slot 0: 0.7 * (1, 0) + 0.3 * (0, 1) = (0.7, 0.3), then unit length
    assert torch.allclose(fixed[:, 0], torch.tensor([0.7, 0.3]) / math.hypot(0.7, 0.3))
    assert torch.allclose(fixed[:, 1], torch.tensor([0.3, 0.7]) / math.hypot(0.3, 0.7))
    assert torch.allclose(fixed.norm(dim=0), torch.ones(3))
    assert torch.equal(fixed[:, 2], bank[:, 2])
    k2 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    usb, _ = bank_update(bank, labels, k2, torch.tensor([1, 2]), index, bank_m=0.7, norm_dim=1)
    # USB normalises each row of the d x B slice [[0.7, 0.0], [0.3, 1.0]]: the columns are no longer unit
    slice_ = torch.tensor([[0.7, 0.0], [0.3, 1.0]])
    assert torch.allclose(usb[:, :2], slice_ / slice_.norm(dim=1, keepdim=True))
    assert not torch.allclose(usb[:, :2].norm(dim=0), torch.ones(2), atol=1e-3)
