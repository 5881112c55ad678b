"""Inference throughput (images/s) of LightViT-T next to ResNet-18 and a DeiT-Tiny-sized ViT.

    python bench.py                       # batch 64 at 224, fp32, CPU (and CUDA when present)
    python bench.py --cuda-iters 1000 --cuda-warmup 100 --batch-size 1024   # the paper's GPU protocol

Eval mode, no_grad, random input; a few untimed warm-up iterations, then timed ones (see speed.py).
A benchmark, not a test: figures depend on the machine and its load.
"""
import argparse

import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

import model as M
from speed import throughput


def models():
    return {
        'LightViT-T': M.lightvit_tiny(),
        'ResNet-18': torchvision.models.resnet18(),
        'DeiT-Tiny-sized ViT': VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=3,
                                                 hidden_dim=192, mlp_dim=768, num_classes=1000),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--cpu-warmup', type=int, default=1)
    p.add_argument('--cpu-iters', type=int, default=3)
    p.add_argument('--cuda-warmup', type=int, default=20)
    p.add_argument('--cuda-iters', type=int, default=100)
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave the default)')
    p.add_argument('--no-cpu', action='store_true')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = [] if args.no_cpu else [('cpu', args.cpu_warmup, args.cpu_iters)]
    if torch.cuda.is_available():
        devices.append(('cuda', args.cuda_warmup, args.cuda_iters))
    nets = models()
    print(f'batch {args.batch_size}, {args.img_size}px, fp32, eval, no_grad; '
          f'CPU threads {torch.get_num_threads()}' +
          (f', GPU {torch.cuda.get_device_name()}' if torch.cuda.is_available() else ', no CUDA device'))
    header = f"{'model':<22}{'params':>11}" + ''.join(f'{d + " img/s":>14}' for d, _, _ in devices)
    print(header)
    print('-' * len(header))
    for name, net in nets.items():
        row = f'{name:<22}{sum(q.numel() for q in net.parameters()) / 1e6:>10.2f}M'
        for dev, warmup, iters in devices:
            net.to(dev)
            rate = throughput(net, args.batch_size, warmup, iters, args.img_size, dev)
            row += f'{rate:>14.1f}'
            net.to('cpu')
            if dev == 'cuda':
                torch.cuda.empty_cache()
        print(row, flush=True)


if __name__ == '__main__':
    main()
