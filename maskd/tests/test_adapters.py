"""The torchvision plumbing: FPN levels, losses from (replaced) features, head outputs, DeepLabV3 1/8 logits,
and the stage-2 module on tiny detectors."""
import pytest
import torch

import models
from adapters import TorchvisionDetectorAdapter, TorchvisionSegAdapter, same_transform
from align import AlignModules
from distiller import DetDistiller, SegDistiller
from losses import HeadDistillLoss, MasKDLoss, SegMasKDLoss

TINY = dict(fpn_channels=16, norm='bn', trainable_layers=5, min_size=64, max_size=64,
            anchor_sizes=(16, 32, 64, 128, 256), roi_batch_size=32, representation_size=32)


def tiny(arch, backbone='resnet18', **kw):
    torch.manual_seed(0)
    return models.build_detector(arch, backbone, 4, **{**TINY, **kw})


def batch():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]
    targets = [{'boxes': torch.tensor([[4.0, 6.0, 30.0, 40.0]]), 'labels': torch.tensor([1])},
               {'boxes': torch.tensor([[10.0, 10.0, 50.0, 30.0], [2.0, 40.0, 20.0, 60.0]]),
                'labels': torch.tensor([2, 3])}]
    return images, targets


@pytest.mark.parametrize('arch,keys', [('fasterrcnn', ['0', '1', '2', '3', 'pool']),
                                       ('retinanet', ['0', '1', '2', 'p6', 'p7'])])
def test_five_fpn_levels_and_losses_from_features_match_the_model(arch, keys):
    model = tiny(arch).train()
    ad = TorchvisionDetectorAdapter(model)
    images, targets = batch()
    torch.manual_seed(1)                     # the training transform draws the size from the RNG
    il, tg = ad.transform(images, targets)
    feats = ad.features(il.tensors)
    assert list(feats) == keys and all(f.shape[1] == 16 for f in feats.values())
    ours = ad.losses_from_features(il, feats, tg)
    torch.manual_seed(1)
    ref = model(images, targets)
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k].item() == pytest.approx(ref[k].item(), rel=1e-5), k
    # a replaced feature changes the losses (the masked features reach every consumer)
    zeroed = {k: torch.zeros_like(v) for k, v in feats.items()}
    torch.manual_seed(1)
    other = ad.losses_from_features(il, zeroed, tg)
    assert any(abs(other[k].item() - ref[k].item()) > 1e-6 for k in ref)


def test_regression_outputs_for_head_distillation():
    r = tiny('retinanet').train()
    ad = TorchvisionDetectorAdapter(r)
    images, targets = batch()
    il, tg = ad.transform(images, targets)
    feats = ad.features(il.tensors)
    out = {}
    ad.losses_from_features(il, feats, tg, out)
    assert len(out['reg']) == 5
    assert [o.shape[1] for o in out['reg']] == [f.shape[2] * f.shape[3] * 9 for f in feats.values()]
    same = ad.reg_outputs(il, feats, out)
    assert all(torch.allclose(a, b) for a, b in zip(same, out['reg']))
    f = tiny('fasterrcnn').train()
    fa = TorchvisionDetectorAdapter(f)
    il, tg = fa.transform(images, targets)
    feats = fa.features(il.tensors)
    out = {}
    fa.losses_from_features(il, feats, tg, out)
    teacher = tiny('fasterrcnn', representation_size=48).eval()
    t_reg = TorchvisionDetectorAdapter(teacher).reg_outputs(il, TorchvisionDetectorAdapter(teacher).features(il.tensors),
                                                            out)
    rois = sum(len(p) for p in out['proposals'])
    assert t_reg[0].shape == out['reg'][0].shape == (rois, 4 * 4)     # teacher run on the student's RoIs
    agn = tiny('fasterrcnn', class_agnostic_reg=True).train()
    losses = TorchvisionDetectorAdapter(agn).losses_from_features(*_tf(agn, images, targets))
    assert torch.isfinite(losses['loss_box_reg'])


def _tf(model, images, targets):
    ad = TorchvisionDetectorAdapter(model)
    il, tg = ad.transform(images, targets)
    return il, ad.features(il.tensors), tg


def test_det_distiller_adds_maskd_and_keeps_tokens_out_of_training():
    student, teacher = tiny('retinanet').train(), tiny('retinanet', backbone='resnet34').eval()
    kd = MasKDLoss([16] * 5, num_tokens=6, custom_mask_warmup=1)
    align = AlignModules(16, 16, 5)
    d = DetDistiller(student, teacher, kd, align, [HeadDistillLoss('l1')])
    images, targets = batch()
    losses = d(images, targets)
    assert {'classification', 'bbox_regression', 'loss_maskd', 'loss_head_l1_0'} <= set(losses)
    assert losses['loss_maskd'].item() > 0
    names = [n for n, _ in d.named_parameters()]
    assert not any('mask_modules' in n or n.startswith('teacher') for n in names)
    assert any(n.startswith('align.') for n in names)
    sum(losses.values()).backward()
    assert align[0].weight.grad is not None and all(p.grad is None for p in teacher.parameters())
    base = DetDistiller(tiny('retinanet').train())
    ref = student.train()(images, targets)
    got = base(images, targets)
    assert got['classification'].item() == pytest.approx(ref['classification'].item(), rel=1e-5)
    other = tiny('retinanet', min_size=96, max_size=96)
    assert not same_transform(student, other)
    with pytest.raises(ValueError):
        DetDistiller(student, other, kd, align)


def test_deeplab_logits_at_one_eighth_and_seg_distiller():
    torch.manual_seed(0)
    seg = models.build_segmenter('resnet18', num_classes=5).eval()
    x = torch.rand(2, 3, 64, 64)
    main, aux = TorchvisionSegAdapter(seg).logits(x)
    assert main.shape == aux.shape == (2, 5, 8, 8)
    out = seg(x)
    assert torch.allclose(TorchvisionSegAdapter.upsample(main, (64, 64)), out['out'], atol=1e-5)
    teacher = models.build_segmenter('resnet34', num_classes=5).eval()
    d = SegDistiller(seg.train(), teacher, SegMasKDLoss(5, 8), loss_weight=1.0)
    y = torch.randint(-1, 5, (2, 64, 64))
    losses = d(x, y)
    assert set(losses) == {'loss_ce', 'loss_maskd'} and losses['loss_maskd'].item() > 0
