"""Speed figures (printed, never asserted): supernet training steps per second for each channel
scheme on the embedded-default space, and forward throughput of the released nets.

    python bench.py [--threads N] [--steps 10]
"""
import argparse
import random
import time

import torch

import model
import train as T
from subnet import generate_subnet
from supernet import ViTASSuperNet

TINY = dict(patch_sizes=(4, 8), embed_dim=64, depth=6, heads=(1, 2, 3, 4), at_temp=144, mlp_dim=128,
            num_classes=4, img_size=32, channel_percent=(0.25, 0.5, 0.75, 1.0))


def supernet_steps(scheme, steps, batch=64):
    torch.manual_seed(0)
    sn = ViTASSuperNet(**TINY, side_scheme=scheme)
    opt = torch.optim.AdamW(T.param_groups(sn, 0.05), lr=1e-3)
    rng = random.Random(0)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 4, (batch,))
    t = time.perf_counter()
    for _ in range(steps):
        sub = generate_subnet(6, 0.56, TINY['channel_percent'], rng, 4, 2)
        loss = torch.nn.functional.cross_entropy(sn.forward_train(x, sub), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t)


@torch.no_grad()
def forward_rate(name, batch=8, reps=2):
    m = model.MODELS[name]().eval()
    x = torch.randn(batch, 3, 224, 224)
    m(x)
    t = time.perf_counter()
    for _ in range(reps):
        m(x)
    return batch * reps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--threads', type=int, default=torch.get_num_threads())
    ap.add_argument('--steps', type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f'threads: {args.threads}')
    for scheme in ('BCNet', 'AutoSlim', 'cyclic'):
        print(f'supernet step ({scheme}, tiny space, batch 64): '
              f'{supernet_steps(scheme, args.steps):.2f} steps/s')
    for name in ('ViTAS-A', 'ViTAS-B', 'DeiT-Ti'):
        print(f'{name} forward at 224 px, batch 8: {forward_rate(name):.1f} images/s')


if __name__ == '__main__':
    main()
