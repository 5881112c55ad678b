"""Stage 1 of MasKD: learning the receptive tokens with the teacher fixed.

``MaskLearner`` wraps any frozen teacher given as two functions:
``feature_fn(batch) -> dict of feature levels`` and ``loss_fn(batch, features) -> dict of task losses``.
The masked features ``sum_t p_t M_t F`` replace the chosen levels for every consumer of ``features``; the
objective is ``L_task(masked) + sum_levels Dice`` (Dice weight 1). Only the tokens (and token-weight heads)
are trainable; teacher BN layers stay in eval mode. Imports only torch and the sibling ``losses``.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn

from losses import MaskModule

__all__ = ['MaskLearner', 'token_lr', 'build_token_optimizer', 'TOKEN_DEFAULTS']

# official stage-1 defaults: detection (Adam 0.01, wd 1e-3, cosine to 1e-6, 2000 iters);
# segmentation: SGD 0.1, momentum 0.9, wd 1e-3, poly 0.9, 10k iters
TOKEN_DEFAULTS = {
    'det': {'iters': 2000, 'optimizer': 'adam', 'lr': 0.01, 'weight_decay': 1e-3, 'momentum': 0.9,
            'schedule': 'cosine', 'min_lr': 1e-6, 'power': 0.9},
    'seg': {'iters': 10000, 'optimizer': 'sgd', 'lr': 0.1, 'weight_decay': 1e-3, 'momentum': 0.9,
            'schedule': 'poly', 'min_lr': 0.0, 'power': 0.9},
}


def token_lr(cfg, it):
    """LR at iteration ``it``: cosine annealing from lr to min_lr, or poly ``lr (1 - it/iters)^power``."""
    frac = min(it, cfg['iters']) / max(1, cfg['iters'])
    if cfg['schedule'] == 'cosine':
        return cfg['min_lr'] + 0.5 * (cfg['lr'] - cfg['min_lr']) * (1 + math.cos(math.pi * frac))
    if cfg['schedule'] == 'poly':
        return cfg['lr'] * (1 - frac) ** cfg['power']
    raise ValueError(f"unknown token schedule '{cfg['schedule']}' (cosine | poly)")


def build_token_optimizer(params, cfg):
    params = list(params)
    if cfg['optimizer'] == 'adam':
        return torch.optim.Adam(params, lr=cfg['lr'], weight_decay=cfg['weight_decay'])
    if cfg['optimizer'] == 'sgd':
        return torch.optim.SGD(params, lr=cfg['lr'], momentum=cfg['momentum'], weight_decay=cfg['weight_decay'])
    raise ValueError(f"unknown token optimizer '{cfg['optimizer']}' (adam | sgd)")


class MaskLearner(nn.Module):
    """``MaskLearner(teacher, feature_fn, loss_fn, channels, num_tokens, weight_mask=True, levels=None)``.

    ``channels``: one entry per masked level (an int repeats); ``levels``: the keys of ``feature_fn``'s output
    to mask (default: all, in order). Its ``state_dict`` holds only ``mask_modules.{l}.*`` (the official
    token-file keys): the teacher is kept out of the module tree.
    """

    def __init__(self, teacher, feature_fn, loss_fn, channels, num_tokens=6, weight_mask=True, levels=None):
        super().__init__()
        self.__dict__['teacher'] = teacher          # not a submodule: the state dict holds only the tokens
        self.feature_fn, self.loss_fn = feature_fn, loss_fn
        self.levels = None if levels is None else list(levels)
        n = len(self.levels) if self.levels is not None else (len(channels) if not isinstance(channels, int) else 1)
        channels = [channels] * n if isinstance(channels, int) else list(channels)
        self.mask_modules = nn.ModuleList(MaskModule(c, num_tokens, weight_mask) for c in channels)
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.last_dice = []

    def train(self, mode=True):
        """Teacher in train mode (its losses need it) but every BN layer in eval mode, as the official hook."""
        super().train(mode)
        self.teacher.train(mode)
        for m in self.teacher.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def mask_features(self, feats):
        """Replace the chosen levels by their masked version; returns (new features, list of Dice terms)."""
        keys = list(feats.keys()) if self.levels is None else self.levels
        if len(keys) != len(self.mask_modules):
            raise ValueError(f'{len(self.mask_modules)} mask modules, {len(keys)} feature levels {keys}')
        out, dice = OrderedDict(feats), []
        for module, k in zip(self.mask_modules, keys):
            out[k], d = module(feats[k])
            dice.append(d)
        return out, dice

    def forward(self, batch):
        """Returns (total loss, dict of the task losses and the per-level Dice terms, detached)."""
        with torch.no_grad():
            feats = self.feature_fn(batch)
        masked, dice = self.mask_features(feats)
        task = self.loss_fn(batch, masked)
        self.last_dice = [d.detach() for d in dice]
        total = sum(task.values()) + sum(dice)
        parts = {**{k: v.detach() for k, v in task.items()}, **{f'dice_{i}': d.detach() for i, d in enumerate(dice)}}
        return total, parts

    def token_parameters(self):
        return list(self.mask_modules.parameters())

    def train_tokens(self, batches, cfg, optimizer=None, start_iter=0, on_iter=None, forward=None):
        """The stage-1 loop over ``cfg['iters']`` iterations (``cfg`` as ``TOKEN_DEFAULTS[task]``): the LR is set
        every iteration by ``token_lr``; ``batches`` (re-iterable) is iterated again when exhausted;
        ``forward`` (default: this module; e.g. its DDP wrapper) computes ``(loss, parts)``;
        ``on_iter(it, loss, parts)`` is called after each step. Returns the optimizer (to checkpoint)."""
        optimizer = optimizer or build_token_optimizer(self.token_parameters(), cfg)
        forward = forward or self
        self.train()
        it = start_iter
        while it < cfg['iters']:
            seen = 0
            for batch in batches:
                if it >= cfg['iters']:
                    break
                seen += 1
                for g in optimizer.param_groups:
                    g['lr'] = token_lr(cfg, it)
                loss, parts = forward(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                it += 1
                if on_iter is not None:
                    on_iter(it, loss.detach(), parts)
            if not seen:
                raise ValueError('train_tokens: the batch iterable yielded nothing')
        return optimizer
