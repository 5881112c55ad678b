"""The TopoNAS search loop (``quark0/darts/cnn/train_search.py``): per step, an architecture step on a validation
batch (alpha and beta, + lambda_PA * L_PA), then an SGD step on the weights; the derived genotype is logged every
epoch. Glue: imports common."""
import math
import time

import torch
import torch.nn as nn

from common import dist
from common.data import build_loader, set_epoch
from common.log import AverageMeter, Throughput, progress, update_progress
from common.schedule import set_lr

from architect import Architect
from data import search_split
from genotypes import Genotype, in_degrees
from model_search import Network
from topology import PassiveAggressiveReg, darts_derive
from utils import accuracy


def build_search_network(cfg, classes):
    return Network(cfg.init_channels, classes, cfg.layers, nn.CrossEntropyLoss(), topo_param=cfg.topo_param,
                   base=cfg.base, topo_k=cfg.topo_k, partial_k=cfg.partial_k)


def cosine_epoch_lr(epoch, epochs, lr, lr_min):
    """CosineAnnealingLR(T_max=epochs, eta_min=lr_min), stepped once per epoch."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs))


def sync_grads(params):
    """Average the gradients of ``params`` over the processes (one flat all-reduce)."""
    if dist.get_world_size() == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = dist.all_reduce_mean(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def cycle(loader):
    """An endless iterator over ``loader``, reshuffled at every pass (not ``next(iter(loader))``)."""
    epoch = 0
    while True:
        set_epoch(loader, 10_000 + epoch)
        for batch in loader:
            yield batch
        epoch += 1


def skip_count(pairs):
    return sum(1 for e in pairs if e[0] == 'skip_connect')


def describe_genotype(genotype):
    return (f"in-degrees normal {list(in_degrees(genotype.normal).values())} reduce "
            f"{list(in_degrees(genotype.reduce).values())}, skip_connect normal {skip_count(genotype.normal)} "
            f"reduce {skip_count(genotype.reduce)}")


def darts_rule_genotype(model):
    """The genotype the DARTS top-2 rule derives from the same alphas (ignoring beta), for comparison."""
    e_normal, e_reduce = model.topology_marginals() if model.base == 'pcdarts' and model.topo_param == 'none' \
        else (None, None)
    concat = list(range(2, 2 + model._steps))
    return Genotype(normal=darts_derive(model.alphas_normal, model.primitives, 2, model._steps, e_normal),
                    normal_concat=concat,
                    reduce=darts_derive(model.alphas_reduce, model.primitives, 2, model._steps, e_reduce),
                    reduce_concat=concat)


@torch.no_grad()
def infer(model, loader, device):
    model.eval()
    tot = torch.zeros(3, device=device)  # loss sum, correct, count
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        tot[0] += nn.functional.cross_entropy(logits, y, reduction='sum')
        tot[1] += (logits.argmax(1) == y).sum()
        tot[2] += y.numel()
    if dist.get_world_size() > 1:
        tot = dist.all_reduce_sum(tot)
    return float(tot[1] / tot[2] * 100), float(tot[0] / tot[2])


def train_epoch(cfg, run, model, architect, optimizer, train_loader, val_iter, lr, epoch):
    model.train()
    meters = {k: AverageMeter(k) for k in ('loss', 'acc', 'val_loss', 'pa_loss')}
    speed = Throughput()
    bar = progress(train_loader, total=len(train_loader), desc=f'search {epoch}')
    for step, (x, y) in enumerate(bar):
        x, y = x.to(run.device), y.to(run.device)
        xv, yv = next(val_iter)
        xv, yv = xv.to(run.device), yv.to(run.device)
        if epoch >= cfg.arch_start_epoch:  # PC-DARTS: the architecture is frozen for the first epochs
            architect.step(x, y, xv, yv, lr, optimizer, unrolled=cfg.unrolled)
            meters['val_loss'].update(architect.last['val_loss'], yv.numel())
            meters['pa_loss'].update(architect.last['pa_loss'], yv.numel())
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = model._criterion(logits, y)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch}, step {step}')
        loss.backward()
        weights = model.weights()
        sync_grads(weights)
        nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
        optimizer.step()
        n = y.numel()
        meters['loss'].update(loss.item(), n)
        meters['acc'].update(float(accuracy(logits.detach(), y)[0]), n)
        speed.update(n * run.world_size)
        update_progress(bar, loss=meters['loss'].avg, acc=meters['acc'].avg, lr=lr)
        if (step % cfg.report_freq == 0 or step == len(train_loader) - 1) and not hasattr(bar, 'set_postfix'):
            run.log(f'search epoch {epoch} [{step + 1}/{len(train_loader)}] loss {meters["loss"].avg:.4f} '
                    f'acc {meters["acc"].avg:.2f} lr {lr:.5f} {speed.rate:.0f} img/s')
    return {'train_loss': meters['loss'].avg, 'train_acc': meters['acc'].avg, 'val_loss_arch': meters['val_loss'].avg,
            'pa_loss': meters['pa_loss'].avg, 'img_per_s': speed.rate}


def search(cfg, run):
    """Run (or resume) the search; returns (genotype, last epoch summary, resumed checkpoint or None, a function
    giving the search's checkpoint entries)."""
    train_set, val_set, classes = search_split(cfg)
    model = build_search_network(cfg, classes).to(run.device)
    optimizer = torch.optim.SGD(model.weights(), cfg.learning_rate, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    pa_reg = PassiveAggressiveReg(cfg.pa_weight, cfg.pa_reg, k=cfg.topo_k)
    architect = Architect(model, cfg, pa_reg)
    nw = cfg.data.num_workers
    train_loader = build_loader(train_set, cfg.batch_size, shuffle=True, drop_last=True, num_workers=nw,
                                seed=cfg.seed)
    val_loader = build_loader(val_set, cfg.batch_size, shuffle=True, drop_last=True, num_workers=nw,
                              seed=cfg.seed + 1)
    eval_loader = build_loader(val_set, cfg.batch_size, shuffle=False, drop_last=False, num_workers=nw)
    state = run.resume(model=model, optimizer=optimizer, architect_optimizer=architect.optimizer)
    with torch.no_grad():  # every process starts from rank 0's weights and architecture (the ranks seed differently)
        for t in model.state_dict().values():
            dist.broadcast(t, 0)
    n_weights = sum(p.numel() for p in model.weights())
    run.log(f'search: base={cfg.base} topo_param={cfg.topo_param} topo_k={cfg.topo_k} pa_reg={cfg.pa_reg} '
            f'(weight {cfg.pa_weight}, from epoch {cfg.pa_start_epoch}), unrolled={cfg.unrolled}; super-net '
            f'{n_weights:,} weights, {sum(p.numel() for p in model.arch_parameters())} architecture variables; '
            f'{len(train_set)} / {len(val_set)} images for weights / architecture')
    val_iter = cycle(val_loader)

    def snapshot(epochs_done, summary):
        return {'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                'architect_optimizer': architect.optimizer.state_dict(), 'epoch': epochs_done,
                'genotype': str(model.genotype()), 'search_summary': summary}

    summary = dict(state.get('search_summary', {})) if state else {}
    for epoch in range(run.start_epoch, cfg.epochs):
        t0 = time.time()
        lr = cosine_epoch_lr(epoch, cfg.epochs, cfg.learning_rate, cfg.learning_rate_min)
        set_lr(optimizer, lr)
        set_epoch(train_loader, epoch)
        architect.pa_active = epoch >= cfg.pa_start_epoch
        stats = train_epoch(cfg, run, model, architect, optimizer, train_loader, val_iter, lr, epoch)
        valid_acc, valid_loss = infer(model, eval_loader, run.device)
        genotype = model.genotype()
        m_normal, m_reduce = model.topology_marginals()
        run.log(f'epoch {epoch} genotype = {genotype}')
        run.log(f'epoch {epoch} {describe_genotype(genotype)}')
        if cfg.topo_param != 'none':
            baseline = darts_rule_genotype(model)
            run.log(f'epoch {epoch} DARTS rule on the same alphas: normal {baseline.normal} reduce {baseline.reduce}')
            run.log(f'epoch {epoch} edge marginals normal {[round(v, 3) for v in m_normal.tolist()]} reduce '
                    f'{[round(v, 3) for v in m_reduce.tolist()]}')
        summary = {'epoch': epoch, 'lr': lr, **stats, 'valid_acc': valid_acc, 'valid_loss': valid_loss,
                   'genotype': str(genotype), 'darts_rule_genotype': str(darts_rule_genotype(model)),
                   'time': time.time() - t0}
        run.log_metrics(summary)
        run.save(snapshot(epoch + 1, summary))
    genotype = model.genotype()
    return genotype, summary, state, lambda: snapshot(max(run.start_epoch, cfg.epochs), summary)
