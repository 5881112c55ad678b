"""Stage 2 of MasKD as one module per task, so that DistributedDataParallel sees a single forward:

- ``DetDistiller(student, teacher, maskd_loss, align, head_losses)``: one transform of the batch, student
  features and detection losses, teacher features (no grad), ``L_MasKD`` on the aligned student features, and
  the optional head-distillation terms (RetinaNet regression maps / RoI box regression on the student's RoIs).
- ``SegDistiller(student, teacher, seg_loss, loss_weight, aux_weight)``: CE on the upsampled main and aux logits
  plus ``lambda (L_seg(main) + 0.4 L_seg(aux))`` on the 1/8 logits.

With ``maskd_loss=None`` and no head losses they train the student alone (the baseline). The teacher and the
frozen token modules are kept out of the module tree (not trained, not synchronised, not checkpointed).
Imports only torch and sibling modules.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from adapters import TorchvisionDetectorAdapter, TorchvisionSegAdapter, same_transform

__all__ = ['DetDistiller', 'SegDistiller', 'seg_task_loss']


class DetDistiller(nn.Module):
    def __init__(self, student, teacher=None, maskd_loss=None, align=None, head_losses=()):
        super().__init__()
        self.student, self.align = student, align
        self.__dict__['teacher'] = teacher
        self.__dict__['maskd_loss'] = maskd_loss
        self.__dict__['head_losses'] = list(head_losses)
        if (maskd_loss is not None or self.head_losses) and teacher is None:
            raise ValueError('distillation losses need a teacher')
        if maskd_loss is not None and align is None:
            raise ValueError('MasKD needs the align convs (align.AlignModules)')
        if teacher is not None and not same_transform(student, teacher):
            raise ValueError('student and teacher must resize and normalise images identically '
                             '(min_size, max_size, image_mean, image_std)')

    def forward(self, images, targets):
        s = TorchvisionDetectorAdapter(self.student)
        batch, targets = s.transform(images, targets)
        feats = s.features(batch.tensors)
        outputs = {} if self.head_losses else None
        losses = dict(s.losses_from_features(batch, feats, targets, outputs))
        if self.maskd_loss is None and not self.head_losses:
            return losses
        t = TorchvisionDetectorAdapter(self.teacher)
        with torch.no_grad():
            t_feats = t.features(batch.tensors)
        if self.maskd_loss is not None:
            losses['loss_maskd'] = self.maskd_loss(self.align(feats), t_feats)
        if self.head_losses:
            with torch.no_grad():
                t_reg = t.reg_outputs(batch, t_feats, outputs)
            for i, hl in enumerate(self.head_losses):
                losses[f'loss_head_{hl.kind}_{i}'] = hl(outputs['reg'], t_reg)
        return losses


def seg_task_loss(main, aux, label, aux_weight=0.4):
    """CE (ignore index -1) on the upsampled main logits + ``aux_weight`` CE on the upsampled aux logits."""
    size = label.shape[-2:]
    loss = F.cross_entropy(TorchvisionSegAdapter.upsample(main, size), label, ignore_index=-1)
    if aux is not None:
        loss = loss + aux_weight * F.cross_entropy(TorchvisionSegAdapter.upsample(aux, size), label, ignore_index=-1)
    return loss


class SegDistiller(nn.Module):
    def __init__(self, student, teacher=None, seg_loss=None, loss_weight=1.0, aux_weight=0.4):
        super().__init__()
        self.student = student
        self.__dict__['teacher'] = teacher
        self.__dict__['seg_loss'] = seg_loss
        self.loss_weight, self.aux_weight = float(loss_weight), float(aux_weight)
        if seg_loss is not None and teacher is None:
            raise ValueError('distillation needs a teacher')

    def forward(self, images, labels):
        main, aux = TorchvisionSegAdapter(self.student).logits(images)
        losses = {'loss_ce': seg_task_loss(main, aux, labels, self.aux_weight)}
        if self.seg_loss is not None:
            with torch.no_grad():
                t_main, t_aux = TorchvisionSegAdapter(self.teacher).logits(images)
            kd = self.seg_loss(main, t_main)
            if aux is not None and t_aux is not None:
                kd = kd + self.aux_weight * self.seg_loss(aux, t_aux)
            losses['loss_maskd'] = self.loss_weight * kd
        return losses
