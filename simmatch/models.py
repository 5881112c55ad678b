"""SimMatch (Zheng et al., CVPR 2022): student/teacher networks, the labeled memory bank, distribution alignment
and one training forward that returns the logits, the calibrated pseudo-label and the instance loss.

Names, arguments and buffers follow the official ``models/simmatch.py`` (``main``, ``ema``, ``bank``, ``labels``,
``DA_queue``, ``DA_ptr``), so its released checkpoints load with ``strict=True`` once the ``module.`` prefix is
stripped. Two settings share this module:

* ImageNet (official, ``use_ema_teacher=True``): the student sees ``cat(x, u_s)``, the EMA teacher (params-only
  EMA, train mode, shuffle-BN across GPUs) sees ``cat(x, u_w)``; the bank is overwritten with the teacher's
  embeddings of the labeled images.
* CIFAR/SVHN (USB port, ``use_ema_teacher=False``): one student pass over ``cat(x, u_w, u_s)`` whose weak-view
  outputs are used as constants; the EMA model is only evaluated; the bank is a 0.7-momentum average
  (``bank_m``), column-normalised (``bank_norm_dim=0``, the fix) or row-normalised as USB does (``=1``).
"""
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from losses import bank_update, distribution_alignment as _da, instance_loss, simmatch_targets

__all__ = ['ResNet', 'SimMatch', 'get_simmatch_model', 'concat_all_gather']


def _world_size():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(tensor):
    """All-gather along dim 0 without gradient (identity on one process)."""
    if _world_size() == 1:
        return tensor
    out = [torch.empty_like(tensor) for _ in range(_world_size())]
    dist.all_gather(out, tensor.contiguous())
    return torch.cat(out, dim=0)


class ResNet(nn.Module):
    """Encoder + classifier ``fc`` (the class centres) + projection ``head`` (Linear-ReLU-Linear, no BN).

    ``forward(x) -> (logits, z)`` from one backbone pass, ``z`` L2-normalised.
    """

    def __init__(self, base_encoder, num_classes, norm_layer=None, dim=128):
        super().__init__()
        self.backbone = base_encoder(norm_layer=norm_layer)
        assert not hasattr(self.backbone, 'fc'), 'the encoder must not have an fc layer'
        c = self.backbone.out_channels
        self.fc = nn.Linear(c, num_classes)
        self.head = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, dim))

    def forward(self, x):
        v = self.backbone(x)
        return self.fc(v), F.normalize(self.head(v), dim=1)


class SimMatch(nn.Module):
    """SimMatch with a labeled memory bank of ``K`` slots (``K`` = size of the labeled set).

    ``forward(im_x, im_u_w, im_u_s, labels, index, start_unlabel)`` returns
    ``(logits_x, pseudo_label, logits_u_s, loss_in)`` with ``loss_in`` per unlabeled sample (zeros while
    ``start_unlabel`` is False); with ``im_x`` alone it returns the student's logits.
    """

    def __init__(self, base_encoder, num_classes=1000, eman=False, momentum=0.999, dim=128, norm=None, K=256,
                 DA=True, DA_len=256, tt=0.1, st=0.1, c_smooth=0.9, use_ema_teacher=True, bank_m=None,
                 bank_norm_dim=0, shuffle_bn=True, aggregation='mix', args=None):
        super().__init__()
        if args is not None:  # the official constructor reads these from its argparse namespace
            DA, tt, st = getattr(args, 'DA', DA), getattr(args, 'tt', tt), getattr(args, 'st', st)
            c_smooth = getattr(args, 'c_smooth', c_smooth)
        if bank_norm_dim not in (0, 1):
            raise ValueError(f'bank_norm_dim must be 0 (columns) or 1 (USB rows), got {bank_norm_dim}')
        self.num_classes, self.eman, self.momentum = num_classes, eman, momentum
        self.DA, self.tt, self.st, self.c_smooth, self.aggregation = DA, tt, st, c_smooth, aggregation
        self.use_ema_teacher, self.bank_m, self.bank_norm_dim = use_ema_teacher, bank_m, bank_norm_dim
        self.shuffle_bn = shuffle_bn

        self.main = ResNet(base_encoder, num_classes, norm_layer=norm, dim=dim)
        self.ema = ResNet(base_encoder, num_classes, norm_layer=norm, dim=dim)
        self.ema.load_state_dict(self.main.state_dict())
        for p in self.ema.parameters():
            p.requires_grad = False

        self.register_buffer('bank', F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer('labels', torch.zeros(K, dtype=torch.long))
        if DA:
            self.DA_len = DA_len
            self.register_buffer('DA_queue', torch.zeros(DA_len, num_classes, dtype=torch.float))
            self.register_buffer('DA_ptr', torch.zeros(1, dtype=torch.long))

    def train(self, mode=True):
        """The teacher runs in train mode (its own BN statistics) unless ``eman`` or it is only an eval model."""
        super().train(mode)
        self.ema.train(mode and self.use_ema_teacher and not self.eman)
        return self

    # ------------------------------------------------------------------------------------ state updates
    @torch.no_grad()
    def momentum_update_ema(self):
        """``xi <- m xi + (1 - m) theta`` after the optimizer step.

        Official (``eman=False``): parameters only; the teacher's BN buffers come from its own forwards. With
        ``eman`` the whole state_dict is averaged and ``num_batches_tracked`` copied. When the EMA model is only
        an evaluation model (``use_ema_teacher=False``) it never runs in train mode, so its BN buffers are copied
        from the student (TorchSSL/USB's EMA keeps the student's buffers too).
        """
        m = self.momentum
        if self.eman:
            main_sd = self.main.state_dict()
            for k, v in self.ema.state_dict().items():
                if 'num_batches_tracked' in k:
                    v.copy_(main_sd[k])
                else:
                    v.copy_(v * m + (1. - m) * main_sd[k])
            return
        for p_main, p_ema in zip(self.main.parameters(), self.ema.parameters()):
            p_ema.mul_(m).add_(p_main.detach(), alpha=1. - m)
        if not self.use_ema_teacher:
            for b_main, b_ema in zip(self.main.buffers(), self.ema.buffers()):
                b_ema.copy_(b_main)

    @torch.no_grad()
    def _update_bank(self, k, labels, index):
        """Write the (gathered) labeled embeddings ``k`` and their labels into the slots ``index``."""
        k, labels, index = concat_all_gather(k), concat_all_gather(labels), concat_all_gather(index)
        bank, bank_labels = bank_update(self.bank, self.labels, k, labels, index, self.bank_m, self.bank_norm_dim)
        self.bank.copy_(bank)
        self.labels.copy_(bank_labels)

    @torch.no_grad()
    def distribution_alignment(self, probs):
        """DA with the queue buffer; the batch mean is averaged over all processes before it is inserted."""
        batch_mean = probs.mean(0)
        if _world_size() > 1:
            dist.all_reduce(batch_mean)
            batch_mean = batch_mean / _world_size()
        aligned, queue, ptr = _da(probs, self.DA_queue, self.DA_ptr, batch_mean)
        self.DA_queue.copy_(queue)
        self.DA_ptr[0] = ptr
        return aligned

    # ------------------------------------------------------------------------------------ shuffle-BN (MoCo)
    @torch.no_grad()
    def _batch_shuffle_ddp(self, x):
        x_all = concat_all_gather(x)
        idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
        dist.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        idx_this = idx_shuffle.view(_world_size(), -1)[dist.get_rank()]
        return x_all[idx_this], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_ddp(self, x, idx_unshuffle):
        x_all = concat_all_gather(x)
        return x_all[idx_unshuffle.view(_world_size(), -1)[dist.get_rank()]]

    @torch.no_grad()
    def _teacher(self, im_k):
        if self.eman or not self.shuffle_bn or _world_size() == 1:
            return self.ema(im_k)
        im, idx_unshuffle = self._batch_shuffle_ddp(im_k)
        logits, feat = self.ema(im)
        return self._batch_unshuffle_ddp(logits, idx_unshuffle), self._batch_unshuffle_ddp(feat, idx_unshuffle)

    # ------------------------------------------------------------------------------------ forward
    def forward(self, im_x, im_u_w=None, im_u_s=None, labels=None, index=None, start_unlabel=False):
        if im_u_w is None and im_u_s is None:
            return self.main(im_x)[0]
        bx = im_x.shape[0]
        bank = self.bank.clone().detach()  # every similarity of this step uses the bank before its update

        if self.use_ema_teacher:
            logits, feats = self.main(torch.cat((im_x, im_u_s)))
            logits_x, logits_u_s, feat_u_s = logits[:bx], logits[bx:], feats[bx:]
            logits_k, feat_k = self._teacher(torch.cat((im_x, im_u_w)))
            feat_kx, feat_ku, logits_ku = feat_k[:bx], feat_k[bx:], logits_k[bx:]
        else:
            logits, feats = self.main(torch.cat((im_x, im_u_w, im_u_s)))
            logits_x = logits[:bx]
            logits_ku, logits_u_s = logits[bx:].chunk(2)
            feat_ku, feat_u_s = feats[bx:].chunk(2)
            feat_kx, feat_ku, logits_ku = feats[:bx].detach(), feat_ku.detach(), logits_ku.detach()

        with torch.no_grad():
            prob_ku = F.softmax(logits_ku, dim=-1)
            if self.DA:
                prob_ku = self.distribution_alignment(prob_ku)

        if start_unlabel:
            targets = simmatch_targets(prob_ku, feat_ku, bank, self.labels, self.num_classes, self.tt,
                                       self.c_smooth, self.aggregation)
            pseudo_label = targets['pseudo_label']
            loss_in = instance_loss(feat_u_s, bank, targets['teacher_prob'], self.st)
        else:
            pseudo_label = prob_ku
            loss_in = logits_u_s.new_zeros(logits_u_s.shape[0])

        self._update_bank(feat_kx, labels, index)
        return logits_x, pseudo_label, logits_u_s, loss_in


def get_simmatch_model(name):
    """The model class by name (``'SimMatch'``), or ``name`` itself when it is already a class."""
    if isinstance(name, str):
        try:
            return {'SimMatch': SimMatch}[name]
        except KeyError:
            raise ValueError(f"unknown arch '{name}'; known: SimMatch") from None
    return name
