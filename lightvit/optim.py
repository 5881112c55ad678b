"""AdamW with the official decay / no-decay split (torch only)."""
import torch


def param_groups(model, weight_decay, skip=None):
    """Two groups: no decay on 1-D params, on every ``*.bias``, and on the names in ``model.no_weight_decay()``.

    ``no_weight_decay()`` returns exact names (``global_token``) and ``[g]name`` patterns that match every
    parameter whose name contains ``name`` (``[g]relative_position_bias_table``).
    """
    if skip is None:
        skip = model.no_weight_decay() if hasattr(model, 'no_weight_decay') else set()
    exact = {s for s in skip if not s.startswith('[g]')}
    contains = [s[3:] for s in skip if s.startswith('[g]')]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith('.bias') or name in exact or any(c in name for c in contains):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{'params': no_decay, 'weight_decay': 0.}, {'params': decay, 'weight_decay': weight_decay}]


def build_optimizer(model, lr, weight_decay, eps=1e-8, betas=(0.9, 0.999)):
    """AdamW(lr, betas, eps) over :func:`param_groups` (the recipe: lr 1e-3, weight decay 0.04)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)
