"""Speed figures (printed, never asserted): the DIST loss against KL-based KD on logits of the official sizes,
and one distillation training step of the default student/teacher pair on this machine.

    python bench.py
"""
import time

import torch

import losses
import models


def _time(fn, repeat=20):
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e3


def loss_speed():
    print(f"{'logits (B x C)':<16} {'DIST fwd+bwd ms':>16} {'KD fwd+bwd ms':>14}")
    for b, c in [(64, 100), (32, 1000), (96, 1000), (256, 1000)]:
        z_s, z_t = torch.randn(b, c, requires_grad=True), torch.randn(b, c)
        dist, kd = losses.DIST(tau=4), losses.KLDivergence(tau=4)
        t_dist = _time(lambda: dist(z_s, z_t).backward())
        t_kd = _time(lambda: kd(z_s, z_t).backward())
        print(f'{f"{b} x {c}":<16} {t_dist:>16.3f} {t_kd:>14.3f}')


def step_speed(student='cifar_resnet8', teacher='cifar_resnet20', batch=64, classes=10):
    print(f'\none training step, {student} from {teacher}, batch {batch} at 32x32, '
          f'{torch.get_num_threads()} thread(s):')
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, classes, (batch,))
    t = models.build_model(teacher, classes)
    for kd, ori_w, kd_w in [('', 1.0, 0.0), ('kd', 0.9, 1.0), ('dist_t4', 1.0, 2.0)]:
        torch.manual_seed(0)
        s = models.build_model(student, classes)
        opt = torch.optim.SGD(s.parameters(), 0.01, momentum=0.9)
        crit = losses.KDLoss(s, t if kd else None, torch.nn.CrossEntropyLoss(), kd, ori_w, kd_w)

        def step():
            loss = crit(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        ms = _time(step, repeat=5)
        print(f"  kd={kd or 'none':<8} {ms:8.1f} ms/step  {batch / ms * 1e3:7.1f} img/s")


if __name__ == '__main__':
    loss_speed()
    step_speed()
