"""Training-step time and peak memory of GreenMIM vs the dense baseline (the paper's 2.7x faster / -70% memory).

    python bench.py                      # Swin-B w7, 224 px, mask 0.75: CPU (batch 2), and CUDA (batch 64) when present
    python bench.py --device cpu --batch 4 --steps 3

GreenMIM: the pre-training model of this folder (encoder on the 12/49 visible units + 1-block decoder +
normalised-pixel MSE). Dense baseline ("SimMIM" style, as the paper compares against): the same Swin-B encoder
on all 3136 patches, masked patches replaced by a learned mask token, a linear head predicting the 32x32x3
pixels of every last-stage token, L1 loss on the masked units. A step is forward + backward (the optimizer
step is the same for both and leaves out). CPU peak memory is the growth of the process's peak RSS during
one step, measured in a fresh process per model; CUDA peak memory is torch's max_memory_allocated.
One run each, no repetition: figures, not a test.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_factory  # noqa: E402

PAPER = 'paper: about 2.7x faster pre-training and about 70% less GPU memory than the dense baseline'


class DenseMIM(nn.Module):
    """The dense baseline: Swin on all patches with mask tokens, linear pixel head, L1 on masked units."""

    def __init__(self, mae):
        super().__init__()
        self.encoder, self.unit = mae.encoder, mae.final_patch_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.encoder.embed_dim))
        self.head = nn.Linear(self.encoder.num_features, self.unit ** 2 * 3)
        self.patchify = mae.patchify

    def forward(self, imgs, mask_ratio=0.75):
        enc = self.encoder
        x = enc.patchify(imgs)
        L = (imgs.shape[-1] // self.unit) ** 2
        keep = int(L * (1 - mask_ratio))
        mask = torch.ones(1, L, device=imgs.device)
        mask[0, torch.randperm(L, device=imgs.device)[:keep]] = 0
        H = enc.patches_resolution[0]
        r = H // int(L ** .5)
        w = mask.reshape(1, H // r, 1, H // r, 1).expand(-1, -1, r, -1, r).reshape(1, -1, 1)
        x = x * (1 - w) + self.mask_token * w
        for layer in enc.layers:
            x = layer.forward_dense(x)
        pred = self.head(enc.norm(x))
        loss = (F.l1_loss(pred.float(), self.patchify(imgs), reduction='none').mean(-1) * mask).sum() / mask.sum()
        return loss, pred, mask


def build(kind, arch):
    torch.manual_seed(0)
    mae = model_factory.get_pretrain_model(arch)
    return mae if kind == 'green' else DenseMIM(mae)


def _rss_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def step(model, x, device, amp):
    with torch.autocast(device.type, enabled=amp):
        loss, _, _ = model(x, 0.75)
    loss.backward()
    return loss


def worker_cpu(kind, arch, batch, steps, size):
    """Runs in a fresh process: peak RSS growth of the first step, then the mean time of ``steps`` steps."""
    device = torch.device('cpu')
    model = build(kind, arch).train()
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    x = torch.randn(batch, 3, size, size)
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset the peak RSS
    except OSError:
        pass
    base = _rss_kb('VmRSS')
    step(model, x, device, False)
    peak = _rss_kb('VmHWM') - base
    t0 = time.perf_counter()
    for _ in range(steps):
        step(model, x, device, False)
    return {'time_s': (time.perf_counter() - t0) / steps, 'peak_mb': peak / 1024}


def bench_cuda(arch, batch, steps, size):
    device = torch.device('cuda')
    out = {}
    for kind in ('green', 'dense'):
        model = build(kind, arch).to(device).train()
        x = torch.randn(batch, 3, size, size, device=device)
        step(model, x, device, True)  # warm-up (kernels, allocator)
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(model, x, device, True)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        t0 = time.perf_counter()
        for _ in range(steps):
            step(model, x, device, True)
        torch.cuda.synchronize()
        out[kind] = {'time_s': (time.perf_counter() - t0) / steps, 'peak_mb': peak / 2 ** 20}
        del model, x
        torch.cuda.empty_cache()
    return out


def report(device, batch, res, size, arch):
    g, d = res['green'], res['dense']
    print(f'{arch} at {size}px, mask 0.75, batch {batch}, {device} (forward+backward per step):')
    print(f"  GreenMIM  step {g['time_s']:.3f} s   peak memory {g['peak_mb']:.0f} MB")
    print(f"  dense     step {d['time_s']:.3f} s   peak memory {d['peak_mb']:.0f} MB")
    print(f"  -> {d['time_s'] / g['time_s']:.2f}x faster, {100 * (1 - g['peak_mb'] / d['peak_mb']):.0f}% less memory "
          f"({PAPER}, on GPUs)")
    return {'speedup': d['time_s'] / g['time_s'], 'memory_saving': 1 - g['peak_mb'] / d['peak_mb'], **res}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--arch', default='green_mim_swin_base_patch4_dec512b1')
    ap.add_argument('--device', default='all', choices=['all', 'cpu', 'cuda'])
    ap.add_argument('--batch', type=int, default=None, help='default: 2 on CPU, 64 on CUDA')
    ap.add_argument('--steps', type=int, default=2)
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--worker', choices=['green', 'dense'], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker_cpu(args.worker, args.arch, args.batch, args.steps, args.size)))
        return None
    results = {}
    if args.device in ('all', 'cpu'):
        batch = args.batch or 2
        res = {}
        for kind in ('green', 'dense'):
            cmd = [sys.executable, os.path.abspath(__file__), '--worker', kind, '--arch', args.arch, '--batch',
                   str(batch), '--steps', str(args.steps), '--size', str(args.size)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        results['cpu'] = report('cpu', batch, res, args.size, args.arch)
    if args.device in ('all', 'cuda'):
        if torch.cuda.is_available():
            batch = args.batch or 64
            results['cuda'] = report(f'cuda ({torch.cuda.get_device_name()}, AMP)', batch,
                                     bench_cuda(args.arch, batch, max(args.steps, 5), args.size), args.size, args.arch)
        else:
            print('CUDA not available: GPU figures skipped')
    return results


if __name__ == '__main__':
    main()
