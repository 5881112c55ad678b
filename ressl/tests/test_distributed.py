"""Shuffle-BN and the queue under two CPU processes (gloo), as torchrun would run them."""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

FOLDER = Path(__file__).resolve().parents[1]


def _worker(rank, world, init_file, out_dir):
    sys.path.insert(0, str(FOLDER))
    import models
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    torch.manual_seed(0)  # identical weights and queue on both ranks, as DDP's broadcast would make them
    model = models.ReSSL(models.resnet18(small_input=True, bn_splits=2, width=4), dim=8, K=16, m=0.9,
                         hidden_dim=8)
    torch.manual_seed(100 + rank)  # different data and shuffle draws per rank (rank 0's permutation wins)
    x = torch.arange(4.).view(4, 1) + 10 * rank
    shuffled, idx_unshuffle = model._batch_shuffle(x)
    restored = model._batch_unshuffle(shuffled, idx_unshuffle)
    im_q, im_k = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    _, _, _, k = model(im_q, im_k, return_embeddings=True)
    torch.save({'x': x, 'shuffled': shuffled, 'restored': restored, 'k': k, 'queue': model.queue,
                'ptr': model.queue_ptr}, os.path.join(out_dir, f'rank{rank}.pt'))
    dist.destroy_process_group()


def test_shuffle_bn_and_queue_across_two_processes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt') for r in (0, 1))
    for r in (r0, r1):
        assert torch.equal(r['restored'], r['x'])  # unshuffle undoes shuffle on each rank
    shards = torch.cat([r0['shuffled'], r1['shuffled']]).flatten().tolist()
    assert sorted(shards) == sorted(torch.cat([r0['x'], r1['x']]).flatten().tolist())  # one global permutation
    assert not torch.equal(r0['shuffled'], r0['x']) or not torch.equal(r1['shuffled'], r1['x'])
    # both ranks enqueue the gathered keys of the global batch (8 = 2 x 4): the queues stay identical
    assert torch.equal(r0['queue'], r1['queue']) and r0['ptr'].item() == r1['ptr'].item() == 8
    assert torch.allclose(r0['queue'][:, :8], torch.cat([r0['k'], r1['k']]).T, atol=1e-6)
