"""BatchNorm recalibration (official ``lib/models/utils/recal_bn.py``; card Sec. 4 step 2 and Sec. 7)."""
import torch
import torch.distributed as dist
import torch.nn as nn


@torch.no_grad()
def recal_bn(model, loader, recal_bn_iters=200, module=None):
    """Re-estimate the running statistics of the BNs in ``module`` (default: all of ``model``).

    ``model`` runs ``recal_bn_iters`` forward passes on batches of ``loader`` (cycled if shorter) in eval mode,
    except the BNs being recalibrated, which are reset and put in train mode with cumulative averaging
    (``momentum=None``). With torch.distributed initialised the statistics are averaged over ranks. The
    momenta and the train/eval mode of every module are restored afterwards.
    """
    target = model if module is None else module
    bns = [m for m in target.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if recal_bn_iters <= 0 or not bns:
        return
    modes = {m: m.training for m in model.modules()}
    model.eval()
    momenta = {}
    for bn in bns:
        bn.reset_running_stats()
        momenta[bn] = bn.momentum
        bn.momentum = None
        bn.train()
    device = next(model.parameters()).device
    done = 0
    while done < recal_bn_iters:
        seen = 0
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(x.to(device, non_blocking=True))
            done += 1
            seen += 1
            if done >= recal_bn_iters:
                break
        if seen == 0:
            raise ValueError('recal_bn: the loader yielded no batch')
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        for bn in bns:
            dist.all_reduce(bn.running_mean)
            dist.all_reduce(bn.running_var)
            bn.running_mean.div_(world)
            bn.running_var.div_(world)
    for bn in bns:
        bn.momentum = momenta[bn]
    for m, mode in modes.items():
        m.training = mode
