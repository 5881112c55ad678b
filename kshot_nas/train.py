"""Iterative training of the K-shot supernets and the simplex-net.

1. Warm-up: ``warmup_iters`` supernet steps with the uniform code lam = (1/K, ..., 1/K) on uniformly sampled paths.
2. Iterative phase, alternating (``simplex_interval`` = 2: odd iterations supernet, even iterations simplex-net):
   - supernet step: alpha ~ U(A) (and widths), lam = stop_grad(pi(alpha)), CE with label smoothing on the combined
     weights; SGD on all K copies (copy k gets lam_k times the gradient of the combined tensor, by autograd);
   - simplex-net step: m paths, the batch split into m chunks, chunk i through path alpha_i with lam_i = pi(alpha_i);
     the supernets frozen (BN in train mode); loss = mean CE over the batch (+ gamma_reg * R with channel search);
     only the simplex-net is updated.
Both optimisers follow the same per-iteration cosine schedule.  Under torch.distributed every rank samples the
same paths (one shared seed) and gradients are averaged over ranks.
"""
import math
import random

import torch
import torch.distributed as tdist
import torch.nn as nn
import torch.nn.functional as F

from ops import KShotBatchNorm2d
from simplex import code_distinction_reg, encode_arch, encode_widths


def cosine(step, total, base_lr, min_lr=0.0):
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def allreduce_grads(params):
    """Average gradients over ranks (identity without an initialised process group)."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return
    world = tdist.get_world_size()
    for p in params:
        if p.grad is not None:
            tdist.all_reduce(p.grad)
            p.grad.div_(world)


def supernet_param_groups(supernet, weight_decay, no_wd_bn_bias=True):
    """Weight decay on conv/linear weights (per copy: the stacked tensor decays as sum_k ||theta^(k)||^2);
    none on BN affine copies and biases when ``no_wd_bn_bias``."""
    no_decay = set()
    if no_wd_bn_bias:
        for m in supernet.modules():
            if isinstance(m, (KShotBatchNorm2d, nn.BatchNorm2d)):
                no_decay.update(id(p) for p in m.parameters(recurse=False))
        no_decay.update(id(p) for n, p in supernet.named_parameters() if n.endswith('bias'))
    decay = [p for p in supernet.parameters() if id(p) not in no_decay]
    rest = [p for p in supernet.parameters() if id(p) in no_decay]
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': rest, 'weight_decay': 0.0}]


class KShotTrainer:
    """Holds the two optimisers, the iteration counter and the path sampler; ``step(x, y)`` does one iteration."""

    def __init__(self, supernet, simplex_net, total_iters, warmup_iters, lr=0.12, min_lr=0.0, momentum=0.9,
                 nesterov=True, weight_decay=4e-5, simplex_lr=None, simplex_weight_decay=None, label_smoothing=0.1,
                 num_paths=16, simplex_interval=2, reg_gamma=0.1, code='simplex', no_wd_bn_bias=True, seed=0):
        if code not in ('simplex', 'uniform'):
            raise ValueError(f"code must be 'simplex' or 'uniform', got {code!r}")
        self.supernet, self.simplex_net = supernet, simplex_net
        self.space, self.K = supernet.space, supernet.K
        self.total_iters, self.warmup_iters = total_iters, warmup_iters
        self.lr, self.min_lr = lr, min_lr
        self.simplex_lr = lr if simplex_lr is None else simplex_lr
        self.label_smoothing, self.num_paths, self.simplex_interval = label_smoothing, num_paths, simplex_interval
        self.reg_gamma, self.code = reg_gamma, code
        # K = 1 is SPOS: the code is always (1,), there is nothing for a simplex-net to learn
        self.learn_code = code == 'simplex' and self.K > 1
        self.channel_search = supernet.channel_search
        self.sup_opt = torch.optim.SGD(supernet_param_groups(supernet, weight_decay, no_wd_bn_bias), lr=lr,
                                       momentum=momentum, nesterov=nesterov)
        swd = weight_decay if simplex_weight_decay is None else simplex_weight_decay
        self.simplex_opt = torch.optim.SGD(simplex_net.parameters(), lr=self.simplex_lr, momentum=momentum,
                                           nesterov=nesterov, weight_decay=swd)
        self.rng = random.Random(seed)  # the same on every rank: all ranks train the same paths
        self.iter = 0

    # ------------------------------------------------------------------ codes and paths
    def phase(self, it=None):
        it = self.iter if it is None else it
        if it < self.warmup_iters:
            return 'warmup'
        if self.learn_code and self.simplex_interval > 0 and \
                (it - self.warmup_iters) % self.simplex_interval == self.simplex_interval - 1:
            return 'simplex'
        return 'supernet'

    def sample_path(self):
        arch = self.space.sample_arch(self.rng)
        widths = self.space.sample_widths(self.rng) if self.channel_search else None
        return self.space.canonical(arch, widths)

    def encode(self, paths, device):
        archs = [a for a, _ in paths]
        e_op = encode_arch(archs, self.space.num_ops).to(device)
        e_ch = None
        if self.channel_search:
            e_ch = encode_widths([w for _, w in paths], self.space.width_choices).to(device)
        return e_op, e_ch

    def uniform_code(self, device):
        shape = (self.space.num_layers + 1, self.K) if getattr(self.simplex_net, 'per_layer', False) else (self.K,)
        return torch.full(shape, 1.0 / self.K, device=device)

    def code_of(self, arch, widths=None, device='cpu'):
        """lam(alpha) as used in training after the warm-up (no gradient)."""
        if not self.learn_code:
            return self.uniform_code(device)
        with torch.no_grad():
            return self.simplex_net(*self.encode([(arch, widths)], device))[0]

    # ------------------------------------------------------------------ steps
    def _set_lr(self):
        lr = cosine(self.iter, self.total_iters, self.lr, self.min_lr)
        for g in self.sup_opt.param_groups:
            g['lr'] = lr
        for g in self.simplex_opt.param_groups:
            g['lr'] = cosine(self.iter, self.total_iters, self.simplex_lr, self.min_lr)
        return lr

    def supernet_step(self, x, y, uniform=False):
        arch, widths = self.sample_path()
        lam = self.uniform_code(x.device) if uniform else self.code_of(arch, widths, x.device)
        self.supernet.train()
        logits = self.supernet(x, arch, lam, widths)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.sup_opt.zero_grad(set_to_none=True)
        loss.backward()
        allreduce_grads(self.supernet.parameters())
        self.sup_opt.step()
        acc = (logits.argmax(1) == y).float().mean().item() * 100
        return {'loss': loss.item(), 'acc': acc, 'lam': lam.detach()}

    def simplex_step(self, x, y):
        m = max(1, min(self.num_paths, x.shape[0]))
        paths = [self.sample_path() for _ in range(m)]
        self.supernet.train()  # BN uses batch statistics of each chunk
        self.simplex_net.train()
        lams = self.simplex_net(*self.encode(paths, x.device))
        frozen = [p for p in self.supernet.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            loss, correct = 0.0, 0
            for (arch, widths), lam, xc, yc in zip(paths, lams, x.tensor_split(m), y.tensor_split(m)):
                logits = self.supernet(xc, arch, lam, widths)
                loss = loss + F.cross_entropy(logits, yc, label_smoothing=self.label_smoothing, reduction='sum')
                correct += (logits.argmax(1) == yc).sum().item()
            loss = loss / x.shape[0]
            reg = code_distinction_reg(lams, [w for _, w in paths]) if self.channel_search else None
            total = loss + self.reg_gamma * reg if reg is not None else loss
            self.simplex_opt.zero_grad(set_to_none=True)
            total.backward()
        finally:
            for p in frozen:
                p.requires_grad_(True)
        allreduce_grads(self.simplex_net.parameters())
        self.simplex_opt.step()
        out = {'loss': loss.item(), 'acc': correct / x.shape[0] * 100, 'lam': lams.detach().mean(0)}
        if reg is not None:
            out['reg'] = reg.item()
        return out

    def step(self, x, y):
        lr = self._set_lr()
        phase = self.phase()
        if phase == 'simplex':
            out = self.simplex_step(x, y)
        else:
            out = self.supernet_step(x, y, uniform=phase == 'warmup' or not self.learn_code)
        self.iter += 1
        out.update(phase=phase, lr=lr)
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self):
        return {'iter': self.iter, 'rng': self.rng.getstate(), 'sup_opt': self.sup_opt.state_dict(),
                'simplex_opt': self.simplex_opt.state_dict()}

    def load_state_dict(self, state):
        self.iter = state['iter']
        self.rng.setstate(state['rng'])
        self.sup_opt.load_state_dict(state['sup_opt'])
        self.simplex_opt.load_state_dict(state['simplex_opt'])


def train_kshot(cfg, trainer, loader, device='cpu', start_epoch=0, on_epoch_end=None, progress=None,
                set_epoch=None):
    """Warm-up (uniform lam) then alternating supernet / simplex-net steps for ``cfg['epochs']`` epochs.

    ``on_epoch_end(epoch, stats)`` is called after each epoch (logging, checkpointing); ``progress(iterable, desc)``
    wraps the loader (a progress bar); ``set_epoch(loader, epoch)`` reseeds a distributed sampler.
    """
    history = []
    for epoch in range(start_epoch, cfg['epochs']):
        if set_epoch is not None:
            set_epoch(loader, epoch)
        sums = {'supernet': [0.0, 0.0, 0], 'simplex': [0.0, 0.0, 0], 'warmup': [0.0, 0.0, 0]}
        lam_sum, lr = None, trainer.lr
        batches = progress(loader, f'epoch {epoch}') if progress is not None else loader
        for x, y in batches:
            out = trainer.step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
            if not math.isfinite(out['loss']):
                raise FloatingPointError(f'loss is {out["loss"]} at iteration {trainer.iter}')
            s = sums[out['phase']]
            s[0] += out['loss']
            s[1] += out['acc']
            s[2] += 1
            lr = out['lr']
            if out['phase'] != 'warmup':
                lam_sum = out['lam'] if lam_sum is None else lam_sum + out['lam']
        stats = {'epoch': epoch, 'iter': trainer.iter, 'lr': lr}
        for phase, (loss, acc, n) in sums.items():
            if n:
                stats[f'{phase}_loss'], stats[f'{phase}_acc'] = loss / n, acc / n
        if lam_sum is not None:
            n = sums['supernet'][2] + sums['simplex'][2]
            stats['mean_code'] = [round(v, 4) for v in (lam_sum / n).flatten()[:trainer.K].tolist()]
        history.append(stats)
        if on_epoch_end is not None:
            on_epoch_end(epoch, stats)
    return history
