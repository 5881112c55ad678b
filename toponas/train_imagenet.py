"""Training a genotype on ImageNet (``quark0/darts/cnn/train_imagenet.py``): NetworkImageNet (14 cells, C=48),
label smoothing 0.1, auxiliary 0.4, lr x0.97 per epoch (DARTS) or 5-epoch warm-up + linear decay (PC-DARTS era).
Glue: imports common."""
import torch
import torch.nn as nn

from common.errors import ConfigError

from data import imagenet_transform, make_dataset, num_classes
from model import NetworkImageNet
from train import train_network
from utils import count_parameters


def imagenet_lr(cfg):
    if cfg.lr_scheduler == 'linear':
        def lr_fn(epoch):
            if epoch < cfg.warmup_epochs:
                return cfg.learning_rate * (epoch + 1) / cfg.warmup_epochs
            return cfg.learning_rate * (1 - (epoch - cfg.warmup_epochs) / max(1, cfg.epochs - cfg.warmup_epochs))
        return lr_fn
    if cfg.lr_scheduler != 'step':
        raise ConfigError(f"config key 'lr_scheduler' must be step or linear, got {cfg.lr_scheduler!r}")
    return lambda epoch: cfg.learning_rate * cfg.gamma ** (epoch // cfg.decay_period)


def imagenet_train(cfg, run, genotype):
    train_set = make_dataset(cfg, 'train', imagenet_transform(cfg, True))
    test_set = make_dataset(cfg, cfg.data.test_split, imagenet_transform(cfg, False))
    model = NetworkImageNet(cfg.init_channels, num_classes(train_set), cfg.layers, cfg.auxiliary,
                            genotype).to(run.device)
    params = count_parameters(model)
    run.log(f'NetworkImageNet C={cfg.init_channels} layers={cfg.layers}: {params:,} params (auxiliary excluded)')
    optimizer = torch.optim.SGD(model.parameters(), cfg.learning_rate, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    state = run.resume(model=model, optimizer=optimizer)
    best = float(state.get('best_top1', 0.0)) if state else 0.0

    def save_fn(epoch, best_now, is_best):
        run.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': epoch,
                  'best_top1': best_now, 'genotype': str(genotype)}, is_best=is_best)

    top1, top5, best = train_network(
        run, model, train_set, test_set, epochs=cfg.epochs, batch_size=cfg.batch_size, lr_fn=imagenet_lr(cfg),
        optimizer=optimizer, criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smooth),
        auxiliary_weight=cfg.auxiliary_weight, drop_path_prob=cfg.drop_path_prob, grad_clip=cfg.grad_clip,
        num_workers=cfg.data.num_workers, seed=cfg.seed, start_epoch=run.start_epoch, best=best, save_fn=save_fn,
        desc='train_imagenet', report_freq=cfg.report_freq)
    return {'params': params, 'test_top1': top1, 'test_top5': top5, 'best_top1': best}
