"""Training-step time of DyRep relative to full re-parameterization (the paper: 22% less training time than
DBB on ImageNet ResNet-18).

One run, three models trained side by side on the same random batches, their steps interleaved so that
machine load hits all of them alike:
  * plain   - the base network;
  * DBB     - every 3x3 conv a DBB[1,1,1,1,0,0,0] from the start (the paper's full re-parameterization);
  * DyRep   - starts plain and grows one conv per "epoch" (SynFlow, with the 20-batch BN recalibration and the
              cut rule), for ``--adjust-epochs`` of ``--epochs`` epochs, as in the official schedules (ResNet-18:
              20 growths in 120 epochs, i.e. one every 5; here one every epoch, shortened).
A DyRep step includes ``record_metrics``; the adjustments themselves (growth, recalibration, cut, optimizer
rebuild) are timed and printed separately (they are rare in real schedules: one per ~25,000 ImageNet steps).

    python bench.py [--model resnet20] [--epochs 12] [--adjust-epochs 10] [--steps 4] [--batch 32]
"""
import argparse
import time

import torch
import torch.nn.functional as F

import models
from convert import convert_to_dbb
from dyrep import DyRep, param_groups
from recal_bn import recal_bn


def sgd(model):
    return torch.optim.SGD(param_groups(model)[0], lr=0.01, momentum=0.9, weight_decay=1e-4)


def step(model, opt, x, y, dyrep=None):
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    if dyrep is not None:
        dyrep.record_metrics()
    opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description='DyRep vs full DBB training-step time')
    p.add_argument('--model', default='resnet20', choices=sorted(models.MODELS))
    p.add_argument('--num-classes', type=int, default=10)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--epochs', type=int, default=12)
    p.add_argument('--adjust-epochs', type=int, default=10)
    p.add_argument('--steps', type=int, default=4, help='timed steps per epoch')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    torch.manual_seed(0)

    plain = models.build_model(args.model, args.num_classes).to(dev)
    dbb = models.build_model(args.model, args.num_classes)
    convert_to_dbb(dbb)
    dbb = dbb.to(dev)
    grow = models.build_model(args.model, args.num_classes).to(dev)
    batches = [(torch.randn(args.batch, 3, args.size, args.size, device=dev),
                torch.randint(0, args.num_classes, (args.batch,), device=dev)) for _ in range(args.steps)]
    opts = {'plain': sgd(plain), 'dbb': sgd(dbb), 'dyrep': sgd(grow)}
    dyrep = DyRep(grow, opts['dyrep'], recal_bn_fn=lambda m: recal_bn(grow, batches, 20, m))
    for m, name in ((plain, 'plain'), (dbb, 'dbb'), (grow, 'dyrep')):   # warm-up step, not timed
        step(m, opts[name], *batches[0])
    dyrep.record_metrics()

    times = {'plain': 0.0, 'dbb': 0.0, 'dyrep': 0.0}
    adjust_time, grown = 0.0, []
    print(f'{args.model}, {args.size}px, batch {args.batch}, {args.epochs} epochs x {args.steps} steps, '
          f'device {dev}, {torch.get_num_threads()} threads')
    for epoch in range(args.epochs):
        ep = {'plain': 0.0, 'dbb': 0.0, 'dyrep': 0.0}
        for x, y in batches:
            ep['dyrep'] += step(grow, opts['dyrep'], x, y, dyrep)
            ep['dbb'] += step(dbb, opts['dbb'], x, y)
            ep['plain'] += step(plain, opts['plain'], x, y)
        for k in times:
            times[k] += ep[k]
        if epoch < args.adjust_epochs:
            t0 = time.perf_counter()
            report = dyrep.adjust_model()
            adjust_time += time.perf_counter() - t0
            grown += report['grown']
        print(f'  epoch {epoch:>2}: ms/step plain {1e3 * ep["plain"] / args.steps:7.1f}  '
              f'DBB {1e3 * ep["dbb"] / args.steps:7.1f}  DyRep {1e3 * ep["dyrep"] / args.steps:7.1f}  '
              f'(DyRep blocks: {len(grown)})')
    n = args.epochs * args.steps
    n_adj = min(args.epochs, args.adjust_epochs)
    print(f'grown: {grown}')
    print(f"mean ms/step: plain {1e3 * times['plain'] / n:.1f}, full DBB {1e3 * times['dbb'] / n:.1f}, "
          f"DyRep {1e3 * times['dyrep'] / n:.1f}")
    print(f'DyRep adjustments (growth with 20-batch BN recalibration, cut, optimizer rebuild): '
          f'{adjust_time / max(n_adj, 1):.2f} s each, not in the step times (official schedules: one per '
          f'5 epochs of ImageNet, i.e. per ~25,000 steps)')
    print(f"DyRep / full-DBB training-step time: {times['dyrep'] / times['dbb']:.3f} "
          f"(paper, ImageNet ResNet-18, whole training on GPUs: 0.78, i.e. 22% less); "
          f"plain / full-DBB: {times['plain'] / times['dbb']:.3f}")

if __name__ == '__main__':
    main()
