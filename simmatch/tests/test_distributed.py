"""SimMatch's collectives on 2 CPU processes (gloo): gathered bank writes, the all-reduced DA mean, shuffle-BN."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

FOLDER = Path(__file__).resolve().parents[1]


def _worker(rank, world, init_file, out_dir):
    sys.path[:0] = [str(FOLDER), str(FOLDER / 'tests')]
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=world)
    from conftest import TinyEncoder
    from models import SimMatch
    torch.manual_seed(0)  # identical initial models on both ranks
    m = SimMatch(TinyEncoder, num_classes=3, K=6, dim=4, DA_len=4)
    g = torch.Generator().manual_seed(10 + rank)  # different data per rank
    x, uw, us = (torch.randn(n, 3, 8, 8, generator=g) for n in (2, 3, 3))
    y = torch.tensor([rank, 2 - rank])
    idx = torch.tensor([2 * rank, 2 * rank + 1])
    probs = torch.softmax(torch.randn(3, 3, generator=g), 1)
    aligned = m.distribution_alignment(probs)
    m.ema.eval()  # with running statistics the shuffled teacher must give back exactly the unshuffled outputs
    torch.manual_seed(123)
    im_k = torch.cat([x, uw])
    logits_sh, feat_sh = m._teacher(im_k)
    logits_ref, feat_ref = m.ema(im_k)
    with torch.no_grad():
        _, z_x = m.ema(x)
    m._update_bank(z_x, y, idx)
    torch.save({'aligned': aligned, 'probs': probs, 'queue': m.DA_queue.clone(), 'bank': m.bank.clone(),
                'labels': m.labels.clone(), 'z_x': z_x, 'sh': (logits_sh, feat_sh), 'ref': (logits_ref, feat_ref)},
               f'{out_dir}/rank{rank}.pt')
    dist.destroy_process_group()


def test_collectives_on_two_processes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / 'init'), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pt', weights_only=False) for r in range(2))
    # DA: the inserted row is the mean of the two ranks' batch means, identical queues on both ranks
    global_mean = (r0['probs'].mean(0) + r1['probs'].mean(0)) / 2
    assert torch.allclose(r0['queue'][0], global_mean, atol=1e-6) and torch.equal(r0['queue'], r1['queue'])
    expect = r0['probs'] / r0['queue'].mean(0)
    assert torch.allclose(r0['aligned'], expect / expect.sum(1, keepdim=True), atol=1e-6)
    # bank: both ranks hold the gathered writes of both ranks
    assert torch.equal(r0['bank'], r1['bank']) and torch.equal(r0['labels'], r1['labels'])
    assert torch.allclose(r0['bank'][:, :2], r0['z_x'].t(), atol=1e-6)
    assert torch.allclose(r0['bank'][:, 2:4], r1['z_x'].t(), atol=1e-6)
    assert r0['labels'][:4].tolist() == [0, 2, 1, 1]
    # shuffle-BN: un-shuffling restores each rank's own order
    for r in (r0, r1):
        assert torch.allclose(r['sh'][0], r['ref'][0], atol=1e-5) and torch.allclose(r['sh'][1], r['ref'][1], atol=1e-5)
