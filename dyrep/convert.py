"""Whole-model conversions: every 3x3 conv to a DBB (the DBB baseline), and DBB model -> deploy model.

``deploy`` folds every (possibly nested) DBB into one kxk conv. A grown conv then carries a bias that its
original lacked; by default that bias is folded into the BatchNorm that follows (``mu' = mu - b``, exact in
eval and train mode), so the deployed model has exactly the base architecture and loads into a freshly built
base model with ``strict=True``.
"""
import warnings

import torch
import torch.nn as nn

from dbb import DiverseBranchBlock
from dyrep import get_module, split_path


class AbsorbedBN(nn.Identity):
    """Placeholder left where ``convert_to_dbb`` absorbed a BatchNorm into the preceding DBB.

    ``conv_path`` names that DBB; ``deploy`` puts a BatchNorm back here (holding the fused bias), which
    restores the base architecture.
    """

    def __init__(self, num_features, conv_path):
        super().__init__()
        self.num_features = num_features
        self.conv_path = conv_path

    def extra_repr(self):
        return f'{self.num_features}, conv_path={self.conv_path!r}'


def _convertible(module, kernel_size):
    return (isinstance(module, nn.Conv2d) and not isinstance(module, DiverseBranchBlock)
            and tuple(module.kernel_size) == (kernel_size, kernel_size) and tuple(module.dilation) == (1, 1)
            and module.stride[0] == module.stride[1] and isinstance(module.padding, tuple)
            and module.padding[0] == module.padding[1] and module.padding_mode == 'zeros')


def convert_to_dbb(model, ignore_key=None, dbb_branches=(1, 1, 1, 1, 0, 0, 0), kernel_size=3):
    """Replace every 3x3 conv (and the BatchNorm registered right after it, if any) by a DBB (+ AbsorbedBN).

    The plain-DBB baseline of the paper (official ``dbb_converter.convert_to_dbb``). The blocks start from
    the default module initialisation (the baseline trains from scratch). Returns the converted paths.
    """
    converted = []

    def visit(parent, prefix):
        children = list(parent.named_children())
        for idx, (key, child) in enumerate(children):
            path = f'{prefix}.{key}' if prefix else key
            if _convertible(child, kernel_size) and not (ignore_key and ignore_key in path):
                block = DiverseBranchBlock(child.in_channels, child.out_channels, kernel_size,
                                           stride=child.stride[0], groups=child.groups, padding=child.padding[0],
                                           branches=list(dbb_branches))
                block = block.to(device=child.weight.device, dtype=child.weight.dtype).train(child.training)
                setattr(parent, key, block)
                converted.append(path)
                if idx + 1 < len(children):
                    next_key, next_child = children[idx + 1]
                    if (isinstance(next_child, nn.BatchNorm2d) and next_child.num_features == child.out_channels):
                        setattr(parent, next_key, AbsorbedBN(child.out_channels, path))
            elif not isinstance(child, DiverseBranchBlock):
                visit(child, path)

    visit(model, '')
    return converted


def _replace(model, path, module):
    parent_path, key = split_path(path)
    setattr(get_module(model, parent_path), key, module)


@torch.no_grad()
def fuse_block(block):
    """A plain ``nn.Conv2d`` (with bias) equal to ``block`` in eval mode."""
    w, b = block.get_actual_kernel()
    conv = nn.Conv2d(block.in_channels, block.out_channels, block.kernel_size, stride=block.stride,
                     padding=block.padding, dilation=block.dilation, groups=block.groups, bias=True).to(w)
    conv.weight.copy_(w)
    conv.bias.copy_(b)
    return conv.train(block.training)


def _fold_bias_into_next_bn(model, conv_paths):
    """Fold the bias of each conv in ``conv_paths`` into its BatchNorm when that BN is the conv's only user."""
    if not conv_paths:
        return []
    try:
        import torch.fx
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # untraceable model: keep the biases
        warnings.warn(f'deploy: could not trace the model ({type(e).__name__}: {e}); conv biases are kept')
        return []
    folded = []
    targets = set(conv_paths)
    for node in graph.nodes:
        if node.op != 'call_module' or node.target not in targets or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.op != 'call_module':
            continue
        bn = get_module(model, user.target)
        conv = get_module(model, node.target)
        if not (isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_mean is not None
                and bn.num_features == conv.out_channels and conv.bias is not None):
            continue
        with torch.no_grad():
            bn.running_mean.sub_(conv.bias)
        conv.bias = None
        folded.append(node.target)
    return folded


def deploy(model, fold_bias=True):
    """Fuse every DBB of ``model`` (in place, nested blocks recursively) into one conv; returns ``model``.

    Each outermost DBB becomes an ``nn.Conv2d`` with bias; an ``AbsorbedBN`` left by ``convert_to_dbb`` becomes
    a BatchNorm again (gamma 1, beta = the bias, mu 0, var 1 - eps); with ``fold_bias`` the bias of a grown
    conv is moved into the BatchNorm that follows it. ``model.deploy_report`` lists what was done.
    """
    blocks = []
    for name, m in model.named_modules():
        if isinstance(m, DiverseBranchBlock) and not any(name.startswith(b + '.') for b in blocks):
            blocks.append(name)
    fused = []
    for name in blocks:
        block = get_module(model, name)
        if not isinstance(block.nonlinear, nn.Identity):
            block.switch_to_deploy()  # keep the wrapper so that its nonlinearity stays
            continue
        conv = fuse_block(block)
        if name == '':
            model = conv
        else:
            _replace(model, name, conv)
        fused.append(name)
    restored = []
    for name, m in list(model.named_modules()):
        if isinstance(m, AbsorbedBN):
            conv = get_module(model, m.conv_path)
            bn = nn.BatchNorm2d(m.num_features).to(conv.weight)
            with torch.no_grad():
                bn.bias.copy_(conv.bias)
                bn.running_var.fill_(1.0 - bn.eps)
            bn.train(m.training)
            conv.bias = None
            _replace(model, name, bn)
            restored.append(name)
    folded = _fold_bias_into_next_bn(model, [f for f in fused if f and get_module(model, f).bias is not None]) \
        if fold_bias else []
    model.deploy_report = {'fused': fused, 'bn_restored': restored, 'bias_folded': folded}
    return model
