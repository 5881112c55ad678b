"""Evaluation of a ReSSL backbone: linear probe and weighted kNN.

    python eval.py linear --cfg configs/cifar10.yaml --opts eval.checkpoint=output/ressl_cifar10/last.pth
    python eval.py knn    --cfg cfg.yaml

``LinearHead`` and ``knn_predict`` import only torch, so they can be copied alone; ``linear_eval(cfg)`` and
``knn_eval(cfg)`` are the entry points (they import ``common`` and ``main`` when called).

Protocols (spec card): the backbone is ``encoder_q.net`` of a checkpoint (projection head discarded), frozen and
kept in ``eval()`` mode (BN frozen) throughout.  ImageNet (official ``linear_eval.py``): ``Linear(2048, 1000)``
with weights N(0, 0.01), SGD lr 0.3, momentum 0.9, no weight decay, batch 256, 100 epochs, cosine annealing per
iteration, train ``RandomResizedCrop(224)`` + flip, val resize 256 + centre crop 224, best top-1 over epochs.
Small datasets (paper Table 1, author in issue #8): lr 30 with a step schedule; batch 256, momentum 0.9, wd 0 and
x0.1 at epochs 60 and 80 are our choices where the author is silent.  kNN: k = 200, t = 0.1, MoCo-demo weighting.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class LinearHead(nn.Module):
    """Frozen backbone ``net`` + trainable ``fc`` (official ``network/head.py``)."""

    def __init__(self, net, dim_in=2048, dim_out=1000):
        super().__init__()
        self.net = net
        self.fc = nn.Linear(dim_in, dim_out)
        for param in self.net.parameters():
            param.requires_grad = False
        self.fc.weight.data.normal_(mean=0.0, std=0.01)
        self.fc.bias.data.zero_()

    def train(self, mode=True):
        """Only ``fc`` ever trains: the backbone stays in eval mode (frozen BN statistics)."""
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, x):
        with torch.no_grad():
            feat = self.net(x)
        return self.fc(feat)


def knn_predict(feature, feature_bank, feature_labels, classes, knn_k=200, knn_t=0.1):
    """Weighted kNN class scores (MoCo CIFAR demo): ``feature`` [B, D] and ``feature_bank`` [D, N] L2-normalised,
    ``feature_labels`` [N].  The ``knn_k`` most similar bank entries vote for their class with ``exp(sim / knn_t)``.
    Returns [B, classes]; ``argmax(1)`` is the prediction."""
    sim = feature @ feature_bank
    k = min(knn_k, feature_bank.shape[1])
    sim_weight, sim_idx = sim.topk(k, dim=1)
    sim_labels = feature_labels[sim_idx]                                   # [B, k]
    votes = F.one_hot(sim_labels, classes).to(sim_weight.dtype)            # [B, k, C]
    return (votes * (sim_weight / knn_t).exp().unsqueeze(-1)).sum(dim=1)


def accuracy(output, target, topk=(1,)):
    """Top-k accuracies (%) of ``output`` [B, C] against ``target`` [B]."""
    pred = output.topk(max(topk), dim=1).indices
    correct = pred.eq(target.unsqueeze(1))
    return [100.0 * correct[:, :k].any(dim=1).float().mean().item() for k in topk]


# ---------------------------------------------------------------------------------------------- entry points
def backbone_state_dict(state):
    """``encoder_q.net.*`` of a ReSSL checkpoint (ours or official, with or without ``module.``), prefix removed."""
    state = state.get('model', state)
    out = {}
    for key, value in state.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        if key.startswith('encoder_q.net.'):
            out[key[len('encoder_q.net.'):]] = value
    return out


def _load_backbone(cfg, run):
    import main
    from common.checkpoint import load_checkpoint, load_state_dict
    from common.errors import CheckpointError

    path = cfg.eval.checkpoint or os.path.join(cfg.output_dir, 'last.pth')
    state = backbone_state_dict(load_checkpoint(path))
    if not state:
        raise CheckpointError(f"'{path}' holds no encoder_q.net.* weights: not a ReSSL pre-training checkpoint")
    net = main.build_model(cfg).encoder_q.net
    load_state_dict(net, state, strict=True, what=f'backbone of {path}')
    run.log(f'loaded backbone encoder_q.net from {path}')
    return net.to(run.device).eval()


def _sub_run(cfg, name):
    """A run whose output folder is ``<output_dir>/<name>`` (its own config, log, metrics and last.pth)."""
    import copy
    import main
    from common.runner import setup_run
    main.validate(cfg)
    sub = copy.deepcopy(cfg)
    if not sub.eval.checkpoint:
        sub.eval.checkpoint = os.path.join(cfg.output_dir, 'last.pth')
    sub.output_dir = os.path.join(cfg.output_dir, name)
    return sub, setup_run(sub)


def knn_eval(cfg):
    """kNN top-1 (%) of the checkpoint's backbone on the test split, the labelled split as the bank."""
    import main
    from common import knn
    cfg, run = _sub_run(cfg, 'eval_knn')
    net = _load_backbone(cfg, run)
    memory_loader, test_loader, classes = main.eval_loaders(cfg, cfg.eval.knn.batch_size)
    top1 = knn.knn_eval(net, memory_loader, test_loader, classes, run.device, k=cfg.eval.knn.k, t=cfg.eval.knn.t)
    run.log_metrics({'knn_top1': top1, 'k': cfg.eval.knn.k, 't': cfg.eval.knn.t})
    run.finish(f'kNN top-1 ({cfg.data.name} {cfg.data.test_split}, k={cfg.eval.knn.k}): {top1:.2f}%')
    return top1


def linear_eval(cfg):
    """Linear probe of the checkpoint's frozen backbone; returns the best top-1 (%) over epochs (resumable)."""
    import augment
    import main
    from common.data import set_epoch
    from common.dist import all_reduce_sum, unwrap, wrap_ddp
    from common.log import progress, update_progress

    cfg, run = _sub_run(cfg, 'eval_linear')
    lc = cfg.eval.linear
    net = _load_backbone(cfg, run)
    size, mean, std = main.data_stats(cfg)
    train_loader, test_loader, classes = main.eval_loaders(
        cfg, lc.batch_size, train_transform=augment.get_linear_augment(cfg.dataset, size, mean, std))
    dim_in = getattr(net, 'num_features', None) or main.models.dim_dict[cfg.backbone]
    model = LinearHead(net, dim_in=dim_in, dim_out=classes).to(run.device)
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=lc.lr, momentum=lc.momentum, weight_decay=lc.weight_decay)
    iters = len(train_loader)
    if lc.schedule == 'cosine':  # official ImageNet protocol: annealed per iteration
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(lc.epochs * iters, 1))
    else:                        # small datasets: step decay per epoch (converted to iterations)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [e * iters for e in lc.milestones], lc.gamma)
    state = run.resume(fc=model.fc, optimizer=optimizer, scheduler=scheduler)
    best = state.get('best_top1', 0.0) if state else 0.0
    best5 = state.get('best_top5', 0.0) if state else 0.0
    ddp = wrap_ddp(model, run.device)

    for epoch in range(run.start_epoch, lc.epochs):
        set_epoch(train_loader, epoch)
        ddp.train()
        bar = progress(train_loader, total=iters, desc=f'linear {epoch}')
        loss_sum = torch.zeros(2, device=run.device)
        for images, target in bar:
            images, target = images.to(run.device, non_blocking=True), target.to(run.device, non_blocking=True)
            loss = F.cross_entropy(ddp(images), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += torch.stack([loss.detach() * target.shape[0], torch.tensor(float(target.shape[0]))])
            update_progress(bar, loss=loss.item(), lr=optimizer.param_groups[0]['lr'])
        ddp.eval()
        counts = torch.zeros(3, device=run.device)  # correct@1, correct@5, n
        with torch.no_grad():
            for images, target in test_loader:
                images, target = images.to(run.device), target.to(run.device)
                top1, top5 = accuracy(model(images), target, topk=(1, min(5, classes)))
                counts += torch.tensor([top1 * target.shape[0] / 100, top5 * target.shape[0] / 100,
                                        target.shape[0]], device=run.device)
        counts, loss_sum = all_reduce_sum(counts), all_reduce_sum(loss_sum)
        top1, top5 = (100.0 * counts[:2] / counts[2]).tolist()
        best, best5 = max(best, top1), max(best5, top5)
        run.log_metrics({'epoch': epoch + 1, 'loss': (loss_sum[0] / loss_sum[1]).item(), 'top1': top1,
                         'top5': top5, 'best_top1': best, 'best_top5': best5,
                         'lr': optimizer.param_groups[0]['lr']})
        run.save({'fc': unwrap(ddp).fc.state_dict(), 'optimizer': optimizer.state_dict(),
                  'scheduler': scheduler.state_dict(), 'epoch': epoch + 1, 'best_top1': best, 'best_top5': best5})
    run.finish(f'linear top-1 ({cfg.data.name} {cfg.data.test_split}): {best:.2f}% (best over {lc.epochs} '
               f'epochs; top-5 {best5:.2f}%)')
    return best


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ('linear', 'knn'):
        from common.errors import ConfigError
        raise ConfigError('usage: python eval.py {linear,knn} [--cfg FILE] [--opts key=value ...]')
    from common.config import parse_cli
    import main as pretrain
    protocol, rest = argv[0], argv[1:]
    cfg = parse_cli(pretrain.DEFAULTS, rest, description=f'ReSSL {protocol} evaluation')
    return linear_eval(cfg) if protocol == 'linear' else knn_eval(cfg)


if __name__ == '__main__':
    from common.errors import guard
    guard(main)
