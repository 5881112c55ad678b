"""A minimal main job built only from `common`, used by the repo-level tests (resume, errors, torchrun).

A linear classifier on flattened synthetic images, trained with SGD. ``loss: contrastive`` adds a term that
uses ``all_gather(grad=True)`` so the two-process test also checks gradients through the gather.
"""
import sys

import torch
import torch.nn.functional as F
import torchvision.transforms as T

from common.config import parse_cli
from common.data import DATASET_STATS, build_dataset, build_loader, set_epoch
from common.dist import all_gather, unwrap, wrap_ddp
from common.errors import ConfigError, guard
from common.runner import setup_run

DEFAULTS = {
    'output_dir': 'output/toy', 'seed': 0, 'device': 'cpu', 'resume': True,
    'data': {'name': 'synthetic', 'root': None, 'image_size': 8, 'train_size': 64, 'test_size': 32},
    'batch_size': 16, 'epochs': 2, 'lr': 0.1, 'loss': 'ce', 'shuffle': False, 'stop_after': -1,
}


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='toy job for the repo tests', default_cfg=None)
    if cfg.loss not in ('ce', 'contrastive'):
        raise ConfigError(f"loss must be 'ce' or 'contrastive', got '{cfg.loss}'")
    run = setup_run(cfg)
    d = cfg.data
    opts = {} if d.name != 'synthetic' else {'image_size': d.image_size, 'train_size': d.train_size,
                                             'test_size': d.test_size}
    tf = T.Compose([T.ToTensor(), T.Normalize(*DATASET_STATS['synthetic'])])
    train = build_dataset(d.name, d.root, 'train', tf, **opts)
    loader = build_loader(train, cfg.batch_size // run.world_size, shuffle=cfg.shuffle, seed=cfg.seed)
    torch.manual_seed(0)
    model = torch.nn.Linear(3 * d.image_size ** 2, 10)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    run.resume(model=model, optimizer=opt)
    ddp = wrap_ddp(model, run.device)
    for epoch in range(run.start_epoch, cfg.epochs):
        set_epoch(loader, epoch)
        for x, y in loader:
            z = ddp(x.flatten(1))
            loss = F.cross_entropy(z, y)
            if cfg.loss == 'contrastive':
                zn = F.normalize(z, dim=1)
                keys = all_gather(zn, grad=True)
                loss = loss + torch.logsumexp(zn @ keys.t() / 0.5, dim=1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        run.log_metrics({'epoch': epoch, 'loss': loss.item()})
        run.save({'model': unwrap(ddp).state_dict(), 'optimizer': opt.state_dict(), 'epoch': epoch + 1})
        if cfg.stop_after == epoch + 1:
            sys.exit(3)  # simulates a killed run
    w = unwrap(ddp).weight.detach()
    if run.is_main:
        torch.save({'weight': w, 'bias': unwrap(ddp).bias.detach()}, f'{cfg.output_dir}/final.pt')
    run.finish(f'weight norm {w.norm().item():.6f}')


if __name__ == '__main__':
    guard(main)
