"""Plain-PyTorch access to the pieces of torchvision models that MasKD needs: the normalised batch, the five
FPN feature maps, the task losses computed from (possibly masked or student) features, the regression outputs
for head distillation, and the 1/8-resolution logits of DeepLabV3. Imports only torch/torchvision.
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.roi_heads import fastrcnn_loss

__all__ = ['TorchvisionDetectorAdapter', 'TorchvisionSegAdapter', 'same_transform']


def same_transform(a, b):
    """True when two torchvision detectors resize and normalise images identically (stage 2 needs it)."""
    ta, tb = a.transform, b.transform
    return (tuple(ta.min_size) == tuple(tb.min_size) and ta.max_size == tb.max_size
            and list(ta.image_mean) == list(tb.image_mean) and list(ta.image_std) == list(tb.image_std)
            and ta.size_divisible == tb.size_divisible and ta.fixed_size == tb.fixed_size)


class TorchvisionDetectorAdapter:
    """Wraps a torchvision ``FasterRCNN`` or ``RetinaNet``.

    ``transform(images, targets)`` -> (ImageList, targets); ``features(batch_tensor)`` -> OrderedDict of the 5
    FPN levels; ``losses_from_features(images, features, targets, outputs=None)`` -> loss dict (the model must
    be in train mode); when ``outputs`` is a dict it receives what head distillation needs ('reg': per-level
    RetinaNet regression maps, or 'proposals' and 'reg': the sampled RoIs and the RoI box regression).
    """

    def __init__(self, model):
        if not isinstance(model, (FasterRCNN, RetinaNet)):
            raise TypeError(f'expected a torchvision FasterRCNN or RetinaNet, got {type(model).__name__}')
        self.model = model
        self.kind = 'retinanet' if isinstance(model, RetinaNet) else 'fasterrcnn'

    def transform(self, images, targets=None):
        return self.model.transform(images, targets)

    def features(self, batch_tensor):
        feats = self.model.backbone(batch_tensor)
        return feats if isinstance(feats, dict) else OrderedDict([('0', feats)])

    # ----------------------------------------------------------------------------------------- losses
    def losses_from_features(self, images, features, targets, outputs=None):
        if self.kind == 'retinanet':
            return self._retinanet_losses(images, features, targets, outputs)
        return self._rcnn_losses(images, features, targets, outputs)

    def _split_levels(self, flat, feats):
        a = flat.shape[1] // sum(f.shape[-2] * f.shape[-1] for f in feats)
        return list(flat.split([f.shape[-2] * f.shape[-1] * a for f in feats], dim=1))

    def _retinanet_losses(self, images, features, targets, outputs):
        m = self.model
        feats = list(features.values())
        head_outputs = m.head(feats)
        anchors = m.anchor_generator(images, feats)
        losses = m.compute_loss(targets, head_outputs, anchors)
        if outputs is not None:
            outputs['reg'] = self._split_levels(head_outputs['bbox_regression'], feats)
        return losses

    def _rcnn_losses(self, images, features, targets, outputs):
        m = self.model
        proposals, rpn_losses = m.rpn(images, features, targets)
        rh = m.roi_heads
        proposals, _, labels, reg_targets = rh.select_training_samples(proposals, targets)
        box = rh.box_predictor(rh.box_head(rh.box_roi_pool(features, proposals, images.image_sizes)))
        class_logits, box_regression = box
        loss_cls, loss_reg = fastrcnn_loss(class_logits, box_regression, labels, reg_targets) \
            if box_regression.shape[1] != 4 else _agnostic_fastrcnn_loss(class_logits, box_regression, labels,
                                                                        reg_targets)
        if outputs is not None:
            outputs['proposals'] = proposals
            outputs['reg'] = [box_regression]
        return {**rpn_losses, 'loss_classifier': loss_cls, 'loss_box_reg': loss_reg}

    # ------------------------------------------------------------------------------- head distillation
    def reg_outputs(self, images, features, student_outputs):
        """The regression outputs this (teacher) model gives on its ``features``: per-level RetinaNet maps, or
        the RoI box regression on the *student's* sampled proposals (Faster R-CNN)."""
        m = self.model
        if self.kind == 'retinanet':
            feats = list(features.values())
            return self._split_levels(m.head.regression_head(feats), feats)
        rh = m.roi_heads
        feats = rh.box_head(rh.box_roi_pool(features, student_outputs['proposals'], images.image_sizes))
        return [rh.box_predictor(feats)[1]]

    @torch.no_grad()
    def detect(self, images):
        """Detections (eval mode) on a list of image tensors, in their input frame."""
        was = self.model.training
        self.model.eval()
        out = self.model(images)
        self.model.train(was)
        return out


def _agnostic_fastrcnn_loss(class_logits, box_regression, labels, regression_targets):
    """``fastrcnn_loss`` for a class-agnostic box head (4 regression outputs per RoI)."""
    labels = torch.cat(labels, dim=0)
    regression_targets = torch.cat(regression_targets, dim=0)
    cls = F.cross_entropy(class_logits, labels)
    pos = torch.where(labels > 0)[0]
    reg = F.smooth_l1_loss(box_regression[pos], regression_targets[pos], beta=1 / 9, reduction='sum')
    return cls, reg / labels.numel()


class TorchvisionSegAdapter:
    """Wraps a torchvision DeepLabV3/FCN: ``logits(x)`` -> (main, aux) logits at the backbone's resolution
    (1/8 with output stride 8), i.e. before the model's upsampling; aux is None without an aux head."""

    def __init__(self, model):
        if not all(hasattr(model, a) for a in ('backbone', 'classifier')):
            raise TypeError(f'expected a torchvision segmentation model, got {type(model).__name__}')
        self.model = model

    def logits(self, x):
        feats = self.model.backbone(x)
        main = self.model.classifier(feats['out'])
        aux = self.model.aux_classifier(feats['aux']) if getattr(self.model, 'aux_classifier', None) is not None \
            and 'aux' in feats else None
        return main, aux

    @staticmethod
    def upsample(logits, size):
        return F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
