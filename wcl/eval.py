"""Evaluation of a WCL backbone: kNN monitor, linear probe (official protocol) and semi-supervised fine-tuning
(an option: the authors released no fine-tuning code; this follows SimCLR's label-subset fine-tuning)."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.data import build_loader, labeled_subset, set_epoch
from common.dist import all_reduce_sum, get_world_size, unwrap, wrap_ddp
from common.knn import knn_eval
from common.log import progress
from models import LinearHead

__all__ = ['knn_monitor', 'accuracy', 'linear_probe', 'finetune']


def knn_monitor(net, bank_set, test_set, classes, device, k=200, t=0.1, batch_size=256):
    """Weighted-kNN top-1 (%) of ``net``'s features: the MoCo CIFAR demo recipe (k = 200, t = 0.1)."""
    bank = build_loader(bank_set, batch_size, shuffle=False, drop_last=False)
    test = build_loader(test_set, batch_size, shuffle=False, drop_last=False)
    return knn_eval(net, bank, test, classes, device, k=k, t=t)


@torch.no_grad()
def accuracy(model, dataset, device, batch_size=256):
    """Top-1 (%) of a classifier over ``dataset`` (summed over ranks)."""
    model.eval()
    loader = build_loader(dataset, batch_size, shuffle=False, drop_last=False)
    correct = torch.zeros(2, device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += torch.tensor([(model(x).argmax(1) == y).sum().item(), len(y)], device=device, dtype=torch.float)
    correct = all_reduce_sum(correct)
    return 100.0 * correct[0].item() / max(correct[1].item(), 1)


def linear_probe(net, train_set, test_set, classes, device, epochs=80, batch_size=256, lr=None, momentum=0.9,
                 nesterov=True, weight_decay=0.0, log=print):
    """The official linear evaluation: frozen backbone kept in eval mode, ``Linear(dim, classes)`` with
    N(0, 0.01) init, SGD Nesterov, ``lr = 0.2 * B / 256`` unless given, cosine per iteration, best top-1.
    ``batch_size`` is global (split over processes)."""
    net = copy.deepcopy(unwrap(net)).to(device)
    dim = net.out_dim
    model = LinearHead(net, dim_in=dim, dim_out=classes).to(device)
    lr = 0.2 * batch_size / 256 if lr is None else lr
    opt = torch.optim.SGD(model.fc.parameters(), lr=lr, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay)
    loader = build_loader(train_set, max(batch_size // get_world_size(), 1), shuffle=True, drop_last=False)
    iters = epochs * len(loader)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
    ddp = wrap_ddp(model, device)
    best = 0.0
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        model.eval()  # BN of the frozen backbone stays frozen
        for x, y in progress(loader, desc=f'linear {epoch}'):
            loss = F.cross_entropy(ddp(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracy(model, test_set, device)
        best = max(best, acc)
        log(f'linear probe epoch {epoch}: top-1 {acc:.2f} (best {best:.2f})')
    return best


def finetune(net, train_set, test_set, classes, device, num_per_class=None, file_list=None, seed=0, epochs=30,
             batch_size=256, lr=0.05, momentum=0.9, weight_decay=0.0, log=print):
    """Semi-supervised evaluation: fine-tune the backbone and a new linear layer on a labeled subset
    (``num_per_class`` per class by ``seed``, or the SimCLR 1%/10% ImageNet lists via ``file_list``);
    SGD Nesterov with cosine decay per iteration; returns the final top-1 (%)."""
    idx = labeled_subset(train_set, num_per_class=num_per_class, seed=seed, file_list=file_list)
    subset = torch.utils.data.Subset(train_set, idx)
    net = copy.deepcopy(unwrap(net)).to(device)
    model = nn.Sequential(net, nn.Linear(net.out_dim, classes)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    local = max(min(batch_size, len(subset)) // get_world_size(), 1)
    loader = build_loader(subset, local, shuffle=True, drop_last=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs * len(loader), 1))
    ddp = wrap_ddp(model, device)
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(ddp(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    acc = accuracy(model, test_set, device)
    log(f'fine-tuned on {len(idx)} labels for {epochs} epochs: top-1 {acc:.2f}')
    return acc
