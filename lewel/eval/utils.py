"""Shared glue of the evaluation modes: checkpoint -> backbone, sub-run folders, a classifier training loop."""
import copy
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

PREFIXES = ('online_net.backbone.', 'encoder_q.backbone.')   # LEWEL_B / LEWEL_M


def backbone_state_dict(state):
    """``online_net.backbone.*`` (LEWEL_B) or ``encoder_q.backbone.*`` (LEWEL_M) of a checkpoint (ours or the
    official ``{'state_dict': {'module.online_net...'}}``), prefixes removed: torchvision ResNet keys."""
    state = state.get('model', state.get('state_dict', state))
    out = {}
    for key, value in state.items():
        key = key[len('module.'):] if key.startswith('module.') else key
        for prefix in PREFIXES:
            if key.startswith(prefix):
                out[key[len(prefix):]] = value
    return out


def sub_run(cfg, name):
    """A run writing into ``<output_dir>/<name>`` (its own config, log, metrics and last.pth)."""
    from common.runner import setup_run
    sub = copy.deepcopy(cfg)
    if not sub.eval.checkpoint:
        sub.eval.checkpoint = os.path.join(cfg.output_dir, 'last.pth')
    sub.output_dir = os.path.join(cfg.output_dir, name)
    return sub, setup_run(sub)


def load_backbone(cfg, run, with_avgpool=True):
    import main
    from common.checkpoint import load_checkpoint, load_state_dict
    from common.errors import CheckpointError
    path = cfg.eval.checkpoint
    state = backbone_state_dict(load_checkpoint(path))
    if not state:
        raise CheckpointError(f"'{path}' holds no online_net.backbone.* weights: not a LEWEL pre-training checkpoint")
    net = main.base_encoder(cfg)(norm_layer=None, with_avgpool=with_avgpool)
    load_state_dict(net, state, strict=True, what=f'backbone of {path}')
    run.log(f'loaded the online backbone from {path}')
    return net.to(run.device)


class Classifier(nn.Module):
    """Backbone (pooled features) + ``fc`` initialised N(0, 0.01), bias 0.  ``frozen``: the backbone gets no
    gradient and stays in eval mode (linear evaluation); otherwise it is fine-tuned (semi-supervised)."""

    def __init__(self, backbone, num_classes, frozen=True):
        super().__init__()
        self.backbone, self.frozen = backbone, frozen
        self.fc = nn.Linear(backbone.out_channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        if frozen:
            for p in self.backbone.parameters():
                p.requires_grad = False

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x):
        if self.frozen:
            with torch.no_grad():
                feats = self.backbone(x)
        else:
            feats = self.backbone(x)
        return self.fc(feats.flatten(1))


def accuracy_counts(output, target, topk=(1, 5)):
    pred = output.topk(max(topk), dim=1).indices
    correct = pred.eq(target.unsqueeze(1))
    return [correct[:, :k].any(dim=1).float().sum().item() for k in topk]


def train_classifier(cfg, run, model, optimizer, section, train_set, test_set, name):
    """Epoch loop shared by linear and semi-supervised evaluation: step decay (x``gamma`` at ``milestones``
    epochs), top-1/top-5 on ``test_set`` after every epoch, best top-1 returned; resumable."""
    from common.data import build_loader, set_epoch
    from common.dist import all_reduce_sum, unwrap, wrap_ddp
    from common.log import progress, update_progress
    kw = dict(num_workers=cfg.data.num_workers, seed=cfg.seed)
    train_loader = build_loader(train_set, section.batch_size, shuffle=True, drop_last=False, **kw)
    test_loader = build_loader(test_set, section.batch_size, shuffle=False, drop_last=False, **kw)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(section.milestones), section.gamma)
    state = run.resume(model=model, optimizer=optimizer, scheduler=scheduler)
    best, best5 = (state.get('best_top1', 0.0), state.get('best_top5', 0.0)) if state else (0.0, 0.0)
    ddp = wrap_ddp(model, run.device)
    classes = model.fc.out_features
    for epoch in range(run.start_epoch, section.epochs):
        set_epoch(train_loader, epoch)
        ddp.train()
        bar = progress(train_loader, total=len(train_loader), desc=f'{name} {epoch}')
        loss_sum = torch.zeros(2, device=run.device)
        for images, target in bar:
            images, target = images.to(run.device), target.to(run.device)
            loss = F.cross_entropy(ddp(images), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += torch.tensor([loss.item() * target.shape[0], target.shape[0]], device=run.device)
            update_progress(bar, loss=loss.item())
        lr = optimizer.param_groups[-1]['lr']
        scheduler.step()
        ddp.eval()
        counts = torch.zeros(3, device=run.device)
        with torch.no_grad():
            for images, target in test_loader:
                images, target = images.to(run.device), target.to(run.device)
                c1, c5 = accuracy_counts(model(images), target, (1, min(5, classes)))
                counts += torch.tensor([c1, c5, target.shape[0]], device=run.device)
        counts, loss_sum = all_reduce_sum(counts), all_reduce_sum(loss_sum)
        top1, top5 = (100.0 * counts[:2] / counts[2]).tolist()
        is_best = top1 > best
        best, best5 = max(best, top1), max(best5, top5)
        run.log_metrics({'epoch': epoch + 1, 'loss': (loss_sum[0] / loss_sum[1]).item(), 'top1': top1,
                         'top5': top5, 'best_top1': best, 'best_top5': best5, 'lr': lr})
        run.save({'model': unwrap(ddp).state_dict(), 'optimizer': optimizer.state_dict(),
                  'scheduler': scheduler.state_dict(), 'epoch': epoch + 1, 'best_top1': best, 'best_top5': best5},
                 is_best=is_best)
    run.finish(f'{name} top-1 ({cfg.data.name} {section.test_split}): {best:.2f}% (best over {section.epochs} '
               f'epochs; top-5 {best5:.2f}%)')
    return best
