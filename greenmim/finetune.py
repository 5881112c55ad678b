"""End-to-end fine-tuning of a GreenMIM encoder (the SimMIM recipe the official README points to): a dense
Swin classifier built from the same modules (so pre-trained weights load by name), layer-wise LR decay,
and the no-weight-decay rule.

Imports only torch and sibling algorithm modules.
"""
from functools import partial

import torch
import torch.nn as nn

from extract_backbone import extract_backbone
from green_swin_models import SwinTransformer


class SwinClassifier(SwinTransformer):
    """Swin on all patches (cyclic-shift windows) + global average pool + linear head. The state_dict is the
    encoder's (``patch_embed``, ``layers``, ``norm``) plus ``head`` (SimMIM's Swin names)."""

    def __init__(self, num_classes=1000, **kwargs):
        kwargs.setdefault('norm_layer', partial(nn.LayerNorm, eps=1e-6))
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(self._init_weights)

    def forward_features(self, x):
        return self.forward_dense(x).mean(dim=1)

    def forward(self, x):
        return self.head(self.forward_features(x))


def load_pretrained_encoder(model, state_dict):
    """Load a GreenMIM checkpoint (a whole MAE state_dict with ``encoder.`` keys, or an extracted backbone)
    into a ``SwinClassifier``. Every encoder weight must match; only the head and the (recomputed)
    relative-position-index buffers may be missing. Returns the missing keys other than those buffers."""
    if any(k.startswith('encoder.') for k in state_dict):
        state_dict = extract_backbone(state_dict)
    own = model.state_dict()
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k in state_dict if k in own and own[k].shape != state_dict[k].shape]
    missing = [k for k in own if k not in state_dict]
    bad_missing = [k for k in missing if not (k.startswith('head.') or k.endswith('relative_position_index'))]
    if unexpected or mismatched or bad_missing:
        raise KeyError(f'pre-trained encoder does not fit the classifier: unexpected {unexpected[:5]}, '
                       f'shape mismatch {mismatched[:5]}, missing {bad_missing[:5]}')
    model.load_state_dict(state_dict, strict=False)
    return [k for k in missing if not k.endswith('relative_position_index')]


def get_layer_id(name, depths):
    """SimMIM's layer id for Swin: patch embed 0, block j of stage i ``sum(depths[:i]) + j + 1``, the
    downsample of stage i ``sum(depths[:i+1])``, everything else ``sum(depths) + 1``."""
    if name in ('mask_token',) or name.startswith('patch_embed'):
        return 0
    if name.startswith('layers.'):
        parts = name.split('.')
        stage = int(parts[1])
        if parts[2] == 'downsample':
            return sum(depths[:stage + 1])
        return sum(depths[:stage]) + int(parts[3]) + 1
    return sum(depths) + 1


def param_groups_lrd(model, weight_decay=0.05, layer_decay=0.9, skip_list=(), skip_keywords=()):
    """AdamW parameter groups with ``lr_scale = layer_decay^(sum(depths) + 1 - layer_id)``; no weight decay
    for 1-D parameters, biases, names in ``skip_list`` and names containing a ``skip_keywords`` entry."""
    depths = model.depths
    top = sum(depths) + 1
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = (p.ndim == 1 or name.endswith('.bias') or name in skip_list
                    or any(k in name for k in skip_keywords))
        lid = get_layer_id(name, depths)
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {'params': [], 'weight_decay': 0. if no_decay else weight_decay,
                           'lr_scale': layer_decay ** (top - lid), 'layer_id': lid, 'names': []}
        groups[key]['params'].append(p)
        groups[key]['names'].append(name)
    out = []
    for key in sorted(groups):
        g = groups[key]
        g.pop('names')
        out.append(g)
    return out


def build_finetune_optimizer(model, lr, weight_decay=0.05, layer_decay=0.9, betas=(0.9, 0.999), eps=1e-8):
    groups = param_groups_lrd(model, weight_decay, layer_decay, skip_list=model.no_weight_decay(),
                              skip_keywords=model.no_weight_decay_keywords())
    for g in groups:
        g['lr'] = lr * g['lr_scale']
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
