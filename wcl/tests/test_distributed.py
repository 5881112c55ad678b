"""Weak labels and losses are identical on 1 and 2 processes (gloo) for the same global batch."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F


def _port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _global_batch(n=10, d=6):
    g = torch.Generator().manual_seed(3)
    return [F.normalize(torch.randn(n, d, generator=g), dim=1) for _ in range(4)]  # u1, u2, z1, z2


def _worker(rank, world, port, out):
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from losses import nt_xent_logits
    from models import WCL, concat_other_gather
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    u1, u2, z1, z2 = _global_batch()
    n = u1.shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    model = WCL('resnet18', dim_hidden=8, dim=6, small_input=True, width=4)
    a1, a2 = u1[sl].clone().requires_grad_(), u2[sl].clone().requires_grad_()
    loss, (y1, y2) = model.graph_loss(a1, a2, t=0.1)
    loss.backward()
    logits, labels = nt_xent_logits(z1[sl], z2[sl], concat_other_gather(z1[sl]), concat_other_gather(z2[sl]))
    # plain lists: tensors in a queue would be shared through a socket that dies with this process
    out.put((rank, loss.item(), y1.tolist(), y2.tolist(), a1.grad.tolist(), F.cross_entropy(logits, labels).item(),
             tuple(logits.shape)))
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_equal_one_process():
    from losses import nt_xent_logits
    from models import WCL
    u1, u2, z1, z2 = _global_batch()
    model = WCL('resnet18', dim_hidden=8, dim=6, small_input=True, width=4)
    a1, a2 = u1.clone().requires_grad_(), u2.clone().requires_grad_()
    loss, (y1, y2) = model.graph_loss(a1, a2, t=0.1)
    loss.backward()
    logits, labels = nt_xent_logits(z1, z2)
    nce = F.cross_entropy(logits, labels).item()

    ctx = mp.get_context('spawn')
    q = ctx.Queue()
    port = _port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted([q.get(timeout=120) for _ in range(2)], key=lambda r: r[0])
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # masks: the rows of each rank are the rows of the single-process global mask
    assert torch.equal(torch.tensor(results[0][2] + results[1][2]), y1)
    assert torch.equal(torch.tensor(results[0][3] + results[1][3]), y2)
    # losses: per-rank means average to the global mean; anchor gradients match up to the 1/world factor
    assert abs(sum(r[1] for r in results) / 2 - loss.item()) < 1e-5
    assert torch.allclose(torch.tensor(results[0][4] + results[1][4]) / 2, a1.grad, atol=1e-6)
    assert abs(sum(r[5] for r in results) / 2 - nce) < 1e-5
    assert results[0][6] == (10, 19)  # 2n_local x (2N_global - 1)
