"""Targets, loss, mixing, optimiser groups and augmentations."""
import numpy as np
import torch
from PIL import Image

import train as T
from conftest import tiny_supernet


def test_label_smoothing_official_form():
    y = T.label_smoothing(torch.tensor([2, 0]), 0.1, 5)
    assert torch.allclose(y[0], torch.tensor([0.025, 0.025, 0.9, 0.025, 0.025]))
    assert torch.allclose(y.sum(1), torch.ones(2))


def test_soft_cross_entropy_by_hand():
    logits = torch.tensor([[1., 2., 0.]])
    t = torch.tensor([[0.2, 0.8, 0.]])
    p = torch.softmax(logits, 1)[0]
    hand = -(0.2 * torch.log(p[0]) + 0.8 * torch.log(p[1]))
    assert torch.allclose(T.soft_cross_entropy(logits, t), hand)


def test_cutmix_box_and_corrected_lambda():
    np.random.seed(0)
    mix = T.build_mixup('cutmix', num_classes=4, smoothing=0.1)
    x = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    y = torch.tensor([0, 3])
    xm, t = mix(x, y)
    frac = xm[0].mean().item()                       # share of image 0 pasted from image 1
    lam = 1 - frac
    off = 0.1 / 4
    assert torch.allclose(t[0], torch.tensor([(1 - 0.1 + off) * lam + off * (1 - lam), off, off,
                                              off * lam + (1 - 0.1 + off) * (1 - lam)]))
    assert torch.allclose(t.sum(1), torch.ones(2))


def test_mixup_blends_images():
    np.random.seed(1)
    mix = T.build_mixup('mixup', num_classes=3, smoothing=0.)
    x = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    xm, t = mix(x, torch.tensor([0, 1]))
    lam = 1 - xm[0, 0, 0, 0].item()
    assert torch.allclose(xm[0], torch.full((1, 4, 4), 1 - lam))
    assert torch.allclose(t[0], torch.tensor([lam, 1 - lam, 0.]))


def test_weight_decay_groups():
    sn = tiny_supernet()
    decay, no_decay = T.param_groups(sn, 0.05)
    names = {id(p): n for n, p in sn.named_parameters()}
    d = {names[id(p)] for p in decay['params']}
    nd = {names[id(p)] for p in no_decay['params']}
    assert 'embeds.0.cls_token' in d and 'embeds.0.pos_embed' in d      # 3-D: decayed
    assert 'blocks.0.attn.qk0.weight' in d and 'embeds.0.proj.weight' in d
    assert 'blocks.0.norm1.weight' in nd and 'head.bias' in nd
    assert no_decay['weight_decay'] == 0 and decay['weight_decay'] == 0.05


def test_augmentations_keep_the_size():
    img = Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype('uint8'))
    assert T.build_deit_aug(32)(img).shape == (3, 32, 32)
    assert T.build_supernet_aug(True, 32)(img).shape == (3, 32, 32)
    test = T.build_test_aug(224)
    assert test.transforms[0].size == 256 and test.transforms[1].size == (224, 224)
    ra = T.RandAugment.from_string('rand-m9-mstd0.5-inc1')
    assert (ra.m, ra.n, ra.std) == (9, 2, 0.5)
    for name in ra.OPS:
        for level in (0, 9, 10):  # the magnitude is clipped to [0, 10]; 10 once crashed posterize (0 bits)
            assert ra._apply(img, name, level).size == img.size
    black = np.asarray(ra._apply(img, 'PosterizeIncreasing', 10))
    assert black.max() == 0 and np.asarray(ra._apply(img, 'PosterizeIncreasing', 0)).max() > 0


def test_supernet_epoch_reduces_loss_and_evaluate():
    from supernet import ViTASSuperNet
    torch.manual_seed(0)
    sn = ViTASSuperNet(patch_sizes=(8, 16), embed_dim=32, depth=4, heads=(1, 2, 4), at_temp=96,
                       mlp_dim=64, num_classes=2, img_size=32)
    x = torch.randn(32, 3, 32, 32)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    loader = [(x, y)] * 15
    from subnet import Subnet
    sub = Subnet(0, 1.0, [(0, 1.0, 1.0)] * 4)
    opt = torch.optim.AdamW(T.param_groups(sn, 0.), lr=3e-3)
    before = T.evaluate(sn, [(x, y)], sub, 'left')[0]
    stats = T.train_supernet({'num_classes': 2, 'smoothing': 0.}, T.SuperNetTrainStep(sn), loader,
                             opt, lambda: sub, lambda s: 3e-3, 0, 'cpu')
    after = T.evaluate(sn, [(x, y)], sub, 'left')[0]
    assert stats['steps'] == 15 and after > before and after >= 90
