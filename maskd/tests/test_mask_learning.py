"""Stage 1: MaskLearner on a toy teacher (features -> task loss), schedules, BN kept in eval mode."""
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mask_learning import TOKEN_DEFAULTS, MaskLearner, build_token_optimizer, token_lr


class ToyTeacher(nn.Module):
    """conv+BN 'backbone' with two levels, a classifier head that reads both."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 3)

    def features(self, x):
        a = self.stem(x)
        return OrderedDict([('0', a), ('1', self.down(a))])

    def loss(self, feats, y):
        z = torch.cat([f.mean((2, 3)) for f in feats.values()], 1)
        return {'loss_cls': F.cross_entropy(self.head(z), y)}


def make_learner(weight_mask=True, levels=None, channels=(8, 8)):
    torch.manual_seed(0)
    teacher = ToyTeacher()
    return teacher, MaskLearner(teacher, lambda b: teacher.features(b[0]), lambda b, f: teacher.loss(f, b[1]),
                                list(channels), num_tokens=4, weight_mask=weight_mask, levels=levels)


def test_only_tokens_trainable_and_state_dict_holds_only_tokens():
    teacher, learner = make_learner()
    assert all(not p.requires_grad for p in teacher.parameters())
    keys = list(learner.state_dict())
    assert keys and all(k.startswith('mask_modules.') for k in keys)
    assert {k.split('.', 2)[2] for k in keys} == {'mask_token', 'prob.0.weight', 'prob.0.bias', 'prob.2.weight',
                                                  'prob.2.bias'}
    learner.train()
    assert teacher.training and not teacher.stem[1].training          # BN stays in eval mode


def test_objective_is_task_loss_on_masked_features_plus_dice():
    teacher, learner = make_learner()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    learner.train()
    total, parts = learner((x, y))
    feats = teacher.features(x)
    masked, dice = OrderedDict(), []
    for m, (k, f) in zip(learner.mask_modules, feats.items()):
        masked[k], d = m(f)
        dice.append(d)
    expect = teacher.loss(masked, y)['loss_cls'] + sum(dice)
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)
    assert set(parts) == {'loss_cls', 'dice_0', 'dice_1'}
    # initial masks ~0.5 everywhere: the Dice terms start near 1
    assert all(0.95 < d.item() <= 1.0 for d in dice)


def test_training_separates_the_masks_and_leaves_the_teacher_untouched():
    teacher, learner = make_learner()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    torch.manual_seed(1)
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 3, (8,))) for _ in range(4)]
    cfg = dict(TOKEN_DEFAULTS['det'], iters=60, lr=0.05)
    seen = []
    learner.train_tokens(data, cfg, on_iter=lambda it, loss, parts: seen.append(
        sum(float(v) for k, v in parts.items() if k.startswith('dice'))))
    assert len(seen) == 60                                       # the 4 batches were re-iterated
    assert seen[-1] < 0.8 * seen[0]                              # Dice (mask overlap) goes down
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())   # incl. BN running stats


def test_levels_select_which_outputs_are_masked():
    teacher, learner = make_learner(weight_mask=False, levels=['1'], channels=[8])
    feats = teacher.features(torch.randn(2, 3, 8, 8))
    out, dice = learner.mask_features(feats)
    assert torch.equal(out['0'], feats['0']) and not torch.equal(out['1'], feats['1']) and len(dice) == 1
    with pytest.raises(ValueError):
        make_learner(levels=None, channels=[8])[1].mask_features(feats)


def test_token_schedules():
    det = dict(TOKEN_DEFAULTS['det'], iters=100)
    assert token_lr(det, 0) == pytest.approx(0.01)
    assert token_lr(det, 50) == pytest.approx(1e-6 + 0.5 * (0.01 - 1e-6))
    assert token_lr(det, 100) == pytest.approx(1e-6)
    seg = dict(TOKEN_DEFAULTS['seg'], iters=100)
    assert token_lr(seg, 0) == pytest.approx(0.1)
    assert token_lr(seg, 50) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert token_lr(seg, 100) == 0.0
    p = [nn.Parameter(torch.zeros(1))]
    assert isinstance(build_token_optimizer(p, det), torch.optim.Adam)
    opt = build_token_optimizer(p, seg)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults['weight_decay'] == 1e-3
    with pytest.raises(ValueError):
        token_lr(dict(det, schedule='step'), 1)
