"""ReSSL pre-training: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

Trains the student on the strong view to match the teacher's sharpened relation (over a queue of past weak-view
embeddings), monitors the backbone with a weighted kNN classifier, and ends by printing the kNN top-1 of the
trained encoder next to that of the same encoder at initialisation.  ``eval.py`` holds the linear probe.
Multi-GPU / multi-process: ``torchrun --nproc_per_node=N main.py --cfg ...`` (gloo on CPU, nccl on CUDA).
"""
import math
import time

import torch

from common.config import parse_cli
from common.data import DATASET_STATS, CachedDataset, MultiView, build_dataset, build_loader, num_classes, set_epoch
from common.dist import unwrap, wrap_ddp
from common.errors import ConfigError, guard
from common.knn import knn_eval
from common.log import AverageMeter, Throughput, progress, update_progress
from common.runner import setup_run

import augment
import losses
import models
import optim
import schedule

# The schema: every valid key with its default.  Method hyper-parameters are the small-dataset (CIFAR) recipe;
# cfg.yaml shrinks the sizes for a CPU run, configs/*.yaml hold the published settings.
DEFAULTS = {
    'output_dir': 'output/ressl',
    'seed': 0,
    'device': 'auto',
    'resume': True,
    'amp': False,                 # mixed precision (CUDA only)
    'channels_last': False,       # NHWC memory format (CUDA only)
    'data': {
        'name': 'synthetic',      # loader of common.data: synthetic, cifar10, cifar100, stl10, imagefolder
        'root': None,
        'image_size': 32,         # training crop size (and the size of the synthetic images)
        'num_classes': 10,        # synthetic only
        'train_size': 5000,       # synthetic only
        'test_size': 1000,        # synthetic only
        'background': 'texture',  # synthetic only: texture or plain
        'num_workers': 0,
        'train_split': 'train',   # pre-training split (STL-10: train+unlabeled)
        'memory_split': 'train',  # labelled split for the kNN bank and the linear probe
        'test_split': 'test',
        'test_resize': None,      # resize test images to image_size first (default: on for STL-10 only)
        'cache': False,           # keep decoded/rendered images in memory (for small datasets: synthetic)
    },
    'dataset': 'synthetic',       # augmentation recipe / statistics: synthetic, cifar10, cifar100, stl10,
                                  # tinyimagenet, imagenet
    'backbone': 'resnet18',
    'small_input': True,          # 3x3/1 stem (CIFAR recipe)
    'keep_maxpool': None,         # None: keep with the ImageNet stem, drop with the small stem
    'bn_splits': 8,               # SplitBatchNorm sub-batches (1 = plain BN)
    'width': 64,                  # channels of the first ResNet stage (64 in every published model)
    'dim': 128,                   # embedding dimension D
    'hidden_dim': 2048,           # projection head hidden width
    'K': 4096,                    # queue length
    'm': 0.99,                    # EMA momentum of the teacher
    'tau_s': 0.1,                 # student temperature
    'tau_t': 0.04,                # teacher temperature (sharper)
    'multi_crop': {
        'enabled': False,
        'size_crops': [224, 192, 160, 128, 96],
        'nmb_crops': [1, 1, 1, 1, 1],
        'min_scale_crops': [0.2, 0.172, 0.143, 0.114, 0.086],
        'max_scale_crops': [1.0, 0.86, 0.715, 0.571, 0.429],
        'init_size': 224,         # the teacher's weak crop
        'strong': False,
    },
    'batch_size': 256,            # per process
    'epochs': 200,
    'base_lr': 0.06,
    'momentum': 0.9,
    'weight_decay': 5e-4,
    'no_decay_keys': [],          # ImageNet recipe: [bn, bias]
    'warm_up': 5,                 # warm-up epochs of the lr schedule
    'predictor_hidden': None,     # extended version: student predictor hidden width (None = off)
    'infonce_warmup_epochs': 0,   # extended version: InfoNCE epochs before the relation loss (0 = off)
    'print_freq': 20,
    'eval': {
        'checkpoint': None,       # eval.py: checkpoint to evaluate (default <output_dir>/last.pth)
        'knn': {'k': 200, 't': 0.1, 'every': 10, 'at_init': True, 'batch_size': 256},
        'linear': {'epochs': 100, 'batch_size': 256, 'lr': 30.0, 'momentum': 0.9, 'weight_decay': 0.0,
                   'schedule': 'step', 'milestones': [60, 80], 'gamma': 0.1},
    },
}

RECIPES = ('synthetic',) + tuple(augment.DATASETS)


def _positive(cfg, *keys):
    for key in keys:
        value = cfg
        for part in key.split('.'):
            value = value[part]
        if not value > 0:
            raise ConfigError(f"config key '{key}' must be > 0, got {value!r}")


def validate(cfg, world_size=1):
    """Range checks that the schema's type checks cannot express; each error names its key."""
    if cfg.dataset not in RECIPES:
        raise ConfigError(f"config key 'dataset' must be one of {', '.join(RECIPES)}, got {cfg.dataset!r}")
    if cfg.backbone not in models.backbone_dict:
        raise ConfigError(f"config key 'backbone' must be one of {', '.join(models.backbone_dict)}, "
                          f"got {cfg.backbone!r}")
    _positive(cfg, 'batch_size', 'epochs', 'K', 'dim', 'hidden_dim', 'width', 'bn_splits', 'tau_s', 'tau_t',
              'data.image_size', 'eval.knn.k', 'eval.knn.t', 'eval.knn.batch_size', 'eval.linear.batch_size',
              'print_freq')
    if not 0.0 <= cfg.m <= 1.0:
        raise ConfigError(f"config key 'm' (EMA momentum) must be in [0, 1], got {cfg.m}")
    if cfg.base_lr < 0 or cfg.weight_decay < 0 or cfg.momentum < 0:
        raise ConfigError('config keys base_lr, weight_decay and momentum must be >= 0')
    if not 0 <= cfg.warm_up <= cfg.epochs:
        raise ConfigError(f"config key 'warm_up' must be in [0, epochs={cfg.epochs}], got {cfg.warm_up}")
    global_batch = cfg.batch_size * world_size
    if cfg.K % global_batch:
        raise ConfigError(f"config key 'K' (queue length {cfg.K}) must be a multiple of the global batch size "
                          f"{global_batch} (batch_size {cfg.batch_size} x {world_size} processes)")
    if cfg.batch_size % cfg.bn_splits:
        raise ConfigError(f"config key 'bn_splits' ({cfg.bn_splits}) must divide batch_size ({cfg.batch_size})")
    if cfg.keep_maxpool not in (None, True, False):
        raise ConfigError(f"config key 'keep_maxpool' must be null, true or false, got {cfg.keep_maxpool!r}")
    if cfg.predictor_hidden is not None and (not isinstance(cfg.predictor_hidden, int) or cfg.predictor_hidden <= 0):
        raise ConfigError(f"config key 'predictor_hidden' must be null (off) or a positive integer, "
                          f"got {cfg.predictor_hidden!r}")
    if not 0 <= cfg.infonce_warmup_epochs <= cfg.epochs:
        raise ConfigError(f"config key 'infonce_warmup_epochs' must be in [0, epochs], got {cfg.infonce_warmup_epochs}")
    mc = cfg.multi_crop
    lists = ('size_crops', 'nmb_crops', 'min_scale_crops', 'max_scale_crops')
    if mc.enabled:
        if len({len(mc[k]) for k in lists}) != 1 or not mc.size_crops:
            raise ConfigError(f"config keys multi_crop.{{{', '.join(lists)}}} must be non-empty lists of one length")
        if any(int(n) < 0 for n in mc.nmb_crops) or sum(mc.nmb_crops) < 1:
            raise ConfigError("config key 'multi_crop.nmb_crops' must be non-negative with at least one crop")
        if any(not 0 < lo <= hi <= 1 for lo, hi in zip(mc.min_scale_crops, mc.max_scale_crops)):
            raise ConfigError("config keys 'multi_crop.min_scale_crops/max_scale_crops' need 0 < min <= max <= 1")
    if cfg.eval.linear.schedule not in ('step', 'cosine'):
        raise ConfigError(f"config key 'eval.linear.schedule' must be step or cosine, got {cfg.eval.linear.schedule!r}")
    if cfg.eval.linear.epochs < 0 or cfg.eval.knn.every < 0 or cfg.data.num_workers < 0:
        raise ConfigError('config keys eval.linear.epochs, eval.knn.every and data.num_workers must be >= 0')


# ---------------------------------------------------------------------------------------------- building
def data_stats(cfg):
    """(size, mean, std) of the augmentation recipe."""
    if cfg.dataset == 'synthetic':
        mean, std = DATASET_STATS['synthetic']
    else:
        _, mean, std = augment.DATASETS[cfg.dataset]
    return cfg.data.image_size, mean, std


def train_transform(cfg):
    """[strong, weak] for one crop; [weak, crop_1, ..., crop_n] (official order) for multi-crop."""
    size, mean, std = data_stats(cfg)
    if cfg.multi_crop.enabled:
        mc = cfg.multi_crop
        return augment.Multi_Transform(mc.size_crops, mc.nmb_crops, mc.min_scale_crops, mc.max_scale_crops,
                                       init_size=mc.init_size, strong=mc.strong, mean=mean, std=std)
    return MultiView([augment.get_contrastive_augment(cfg.dataset, size, mean, std),
                      augment.get_weak_augment(cfg.dataset, size, mean, std)])


def make_dataset(cfg, split, transform):
    options = {}
    if cfg.data.name == 'synthetic':
        options = dict(num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
                       train_size=cfg.data.train_size, test_size=cfg.data.test_size, seed=cfg.seed,
                       background=cfg.data.background)
    if cfg.data.cache:
        return CachedDataset(build_dataset(cfg.data.name, cfg.data.root, split=split, **options), transform)
    return build_dataset(cfg.data.name, cfg.data.root, split=split, transform=transform, **options)


def eval_loaders(cfg, batch_size, train_transform=None):
    """Labelled (memory/train) and test loaders for the kNN monitor and the linear probe."""
    size, mean, std = data_stats(cfg)
    test_t = augment.get_test_augment(cfg.dataset, size, mean, std, resize=cfg.data.test_resize)
    memory = make_dataset(cfg, cfg.data.memory_split, train_transform or test_t)
    test = make_dataset(cfg, cfg.data.test_split, test_t)
    kw = dict(num_workers=cfg.data.num_workers, seed=cfg.seed)
    shuffle = train_transform is not None
    return (build_loader(memory, batch_size, shuffle=shuffle, drop_last=False, **kw),
            build_loader(test, batch_size, shuffle=False, drop_last=False, **kw),
            len(memory.classes) if hasattr(memory, 'classes') else num_classes(cfg.data.name))


def build_model(cfg):
    net = models.backbone_dict[cfg.backbone](small_input=cfg.small_input, keep_maxpool=cfg.keep_maxpool,
                                             bn_splits=cfg.bn_splits, width=cfg.width)
    dim_in = getattr(net, 'num_features', models.dim_dict[cfg.backbone])
    return models.ReSSL(net, dim=cfg.dim, K=cfg.K, m=cfg.m, hidden_dim=cfg.hidden_dim, dim_in=dim_in,
                        predictor_hidden=cfg.predictor_hidden)


# ---------------------------------------------------------------------------------------------- training
def split_views(views, multi_crop):
    """(student input, teacher input): strong -> student, weak -> teacher."""
    if multi_crop:
        return views[1:], views[0]
    return views[0], views[1]


def ressl_loss(model, im_q, im_k, epoch, cfg):
    """Loss of one step: the relation loss, or InfoNCE during the (optional) warm-up epochs."""
    if epoch < cfg.infonce_warmup_epochs:
        logits_q, logits_k, q, k = model(im_q, im_k, return_embeddings=True)
        loss = losses.infonce_from_logits((q * k).sum(dim=1), logits_q, cfg.tau_s)
    else:
        logits_q, logits_k = model(im_q, im_k)
        loss = losses.relation_loss(logits_q, logits_k, tau_s=cfg.tau_s, tau_t=cfg.tau_t)
    return loss, logits_k


def train_one_epoch(model, loader, optimizer, epoch, cfg, run, scaler=None):
    """One epoch of ReSSL in the official order; the model stays in train mode throughout (teacher too)."""
    model.train()
    meters = {k: AverageMeter(k) for k in ('loss', 'teacher_entropy')}
    speed = Throughput()
    iters = len(loader)
    nhwc = cfg.channels_last and run.device.type == 'cuda'
    memory_format = torch.channels_last if nhwc else torch.contiguous_format
    bar = progress(loader, total=iters, desc=f'epoch {epoch}')
    for i, (views, _) in enumerate(bar):
        lr = schedule.adjust_learning_rate(optimizer, epoch, cfg.base_lr, i, iters, cfg.epochs, cfg.warm_up)
        views = [v.to(run.device, non_blocking=True, memory_format=memory_format) for v in views]
        im_q, im_k = split_views(views, cfg.multi_crop.enabled)
        with torch.autocast(run.device.type, enabled=run.amp):
            loss, logits_k = ressl_loss(model, im_q, im_k, epoch, cfg)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch}, iteration {i}')
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = im_k.shape[0]
        meters['loss'].update(loss.item(), n)
        meters['teacher_entropy'].update(losses.teacher_entropy(logits_k.float(), cfg.tau_t).item(), n)
        speed.update(n * run.world_size)
        update_progress(bar, loss=meters['loss'].avg, lr=lr, img_s=round(speed.rate))
        if (i % cfg.print_freq == 0 or i == iters - 1) and not hasattr(bar, 'set_postfix'):
            run.log(f'epoch {epoch} [{i + 1}/{iters}] loss {meters["loss"].avg:.4f} lr {lr:.5f} '
                    f'{speed.rate:.0f} img/s')
    return {'loss': meters['loss'].avg, 'teacher_entropy': meters['teacher_entropy'].avg, 'lr': lr,
            'img_per_s': speed.rate}


def knn_top1(model, cfg, run, loaders):
    """kNN top-1 (%) of the student backbone ``encoder_q.net`` (features L2-normalised, eval mode)."""
    memory_loader, test_loader, classes = loaders
    net = unwrap(model).encoder_q.net
    return knn_eval(net, memory_loader, test_loader, classes, run.device, k=cfg.eval.knn.k, t=cfg.eval.knn.t)


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='ReSSL pre-training')
    validate(cfg)
    run = setup_run(cfg)
    validate(cfg, run.world_size)

    train_set = make_dataset(cfg, cfg.data.train_split, train_transform(cfg))
    loader = build_loader(train_set, cfg.batch_size, shuffle=True, drop_last=True,
                          num_workers=cfg.data.num_workers, seed=cfg.seed)
    knn_loaders = eval_loaders(cfg, cfg.eval.knn.batch_size)

    model = build_model(cfg).to(run.device)
    if cfg.channels_last and run.device.type == 'cuda':
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(optim.param_groups(model, cfg.weight_decay, tuple(cfg.no_decay_keys)),
                                lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler('cuda') if run.amp else None
    run.log(f'ReSSL {cfg.backbone} (width {cfg.width}): '
            f'{sum(p.numel() for p in model.encoder_q.parameters()):,} student parameters, queue {cfg.dim}x{cfg.K}, '
            f'{len(loader)} iterations/epoch of {cfg.batch_size}x{run.world_size}')

    state = run.resume(model=model, optimizer=optimizer, scaler=scaler)
    knn_init = state.get('knn_init') if state else None
    if knn_init is None and cfg.eval.knn.at_init and run.start_epoch == 0:
        knn_init = knn_top1(model, cfg, run, knn_loaders)
        run.log_metrics({'epoch': 0, 'knn_top1': knn_init, 'stage': 'init'})
    ddp_model = wrap_ddp(model, run.device)

    knn, epoch_stats = None, {}
    for epoch in range(run.start_epoch, cfg.epochs):
        set_epoch(loader, epoch)
        start = time.time()
        epoch_stats = train_one_epoch(ddp_model, loader, optimizer, epoch, cfg, run, scaler)
        metrics = {'epoch': epoch + 1, **epoch_stats, 'time_s': time.time() - start}
        last = epoch + 1 == cfg.epochs
        if last or (cfg.eval.knn.every and (epoch + 1) % cfg.eval.knn.every == 0):
            knn = metrics['knn_top1'] = knn_top1(model, cfg, run, knn_loaders)
        run.log_metrics(metrics)
        run.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': epoch + 1,
                  'knn_init': knn_init, 'knn_top1': knn,
                  **({'scaler': scaler.state_dict()} if scaler is not None else {})})

    if knn is None:  # resumed a finished run: evaluate the final encoder again
        knn = knn_top1(model, cfg, run, knn_loaders)
    data = cfg.data.name
    headline = f'kNN top-1 ({data} {cfg.data.test_split}, k={cfg.eval.knn.k}): {knn:.2f}% trained encoder'
    if knn_init is not None:
        headline += f' vs {knn_init:.2f}% at initialisation'
    run.finish(headline)
    return {'knn_top1': knn, 'knn_init': knn_init, **epoch_stats}


if __name__ == '__main__':
    guard(main)
