"""Weight-decay parameter groups of the official ReSSL scripts.  Imports nothing."""


def param_groups(model, weight_decay, no_decay_keys=('bn', 'bias')):
    """Split ``model.named_parameters()`` by *name substring*: a name containing any of ``no_decay_keys`` gets
    weight decay 0, every other parameter ``weight_decay``.

    This is the official ImageNet rule (``'bn' in n or 'bias' in n``), name-based on purpose: with torchvision
    names the shortcut BatchNorm (``downsample.1.*``) does not match and keeps its decay, as in the official run.
    The small-dataset recipe passes ``no_decay_keys=()`` (decay on everything).  Like the official scripts, all
    parameters are listed, including the teacher's (they never get a gradient, so SGD skips them); this keeps the
    optimizer state layout of official checkpoints.  Empty groups are dropped.
    """
    no_decay, decay = [], []
    for name, param in model.named_parameters():
        (no_decay if any(key in name for key in no_decay_keys) else decay).append(param)
    groups = [{'params': no_decay, 'weight_decay': 0.0}, {'params': decay, 'weight_decay': weight_decay}]
    return [g for g in groups if g['params']]
