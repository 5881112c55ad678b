"""torch.distributed helpers: launch from torchrun's environment, ranks, gathers, DDP wrapping, seeding."""
import os
import random

import numpy as np
import torch
import torch.distributed as dist

__all__ = ['init_distributed', 'is_distributed', 'get_rank', 'get_world_size', 'get_local_rank',
           'is_main_process', 'barrier', 'all_gather', 'all_reduce_mean', 'all_reduce_sum', 'broadcast',
           'wrap_ddp', 'unwrap', 'seed_everything', 'resolve_device', 'cleanup']


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_distributed() else 0


def get_world_size():
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank():
    return int(os.environ.get('LOCAL_RANK', 0)) if is_distributed() else 0


def is_main_process():
    return get_rank() == 0


def init_distributed(backend=None):
    """Initialise the default process group from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK).

    Without them (a plain ``python main.py``) nothing happens and ``(0, 1, 0)`` is returned. The backend is
    nccl when CUDA is available, else gloo.
    """
    if is_distributed():
        return get_rank(), get_world_size(), get_local_rank()
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return 0, 1, 0
    rank, world = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if world == 1:
        return 0, 1, 0
    if backend is None:
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    if backend == 'nccl':
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method='env://', rank=rank, world_size=world)
    return rank, world, local_rank


def cleanup():
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def barrier():
    if is_distributed():
        dist.barrier()


class _AllGatherGrad(torch.autograd.Function):
    """All-gather whose backward returns the gradient of the local slice (summed over ranks)."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.zeros_like(x) for _ in range(get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # each rank's loss depends on every slice: sum the contributions
        n = grad.shape[0] // get_world_size()
        return grad[get_rank() * n:(get_rank() + 1) * n]


def all_gather(tensor, grad=False):
    """Concatenate ``tensor`` from every rank along dim 0 (same shape on every rank).

    ``grad=False`` returns a constant (no gradient, like MoCo's ``concat_all_gather``); ``grad=True`` lets the
    gradient of the whole gathered batch flow back to each rank's own slice (summed over ranks, as the total
    loss is the sum of the per-rank losses that DDP averages). Identity on one process.
    """
    if not is_distributed() or get_world_size() == 1:
        return tensor if grad else tensor.detach()
    if grad:
        return _AllGatherGrad.apply(tensor)
    with torch.no_grad():
        out = [torch.zeros_like(tensor) for _ in range(get_world_size())]
        dist.all_gather(out, tensor.contiguous())
    return torch.cat(out, 0)


def all_reduce_sum(tensor):
    if is_distributed():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def all_reduce_mean(tensor):
    """Mean of ``tensor`` over ranks (a copy; identity on one process)."""
    if is_distributed():
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        tensor /= get_world_size()
    return tensor


def broadcast(tensor, src=0):
    """Broadcast ``tensor`` in place from ``src``; returns it."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def wrap_ddp(model, device=None, **kwargs):
    """``DistributedDataParallel`` when more than one process runs, else ``model`` unchanged."""
    if get_world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP
    if device is not None and torch.device(device).type == 'cuda':
        kwargs.setdefault('device_ids', [torch.device(device).index or 0])
    return DDP(model, **kwargs)


def unwrap(model):
    """The module inside a DDP (or DataParallel) wrapper."""
    return model.module if hasattr(model, 'module') and isinstance(
        model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)) else model


def seed_everything(seed, rank=0):
    """Seed python, numpy and torch with ``seed + rank`` (so ranks draw different augmentations)."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % (2 ** 32))
    torch.manual_seed(s)
    return s


def resolve_device(name='auto'):
    """``auto``: CUDA (this process's local rank) when available, else CPU; ``cpu``; ``cuda``/``cuda:N``."""
    from .errors import ConfigError
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cpu':
        return torch.device('cpu')
    if name.startswith('cuda'):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}' was asked for but CUDA is not available; use device=auto or cpu")
        if name == 'cuda':
            return torch.device('cuda', get_local_rank())
        return torch.device(name)
    raise ConfigError(f"device '{name}' is not one of: auto, cpu, cuda, cuda:N")
