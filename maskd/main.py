"""MasKD: masked distillation with receptive tokens (Huang et al., ICLR 2023) -- the training job.

    python main.py --cfg cfg.yaml [--opts key=value ...]

A run is a list of stages, chosen by ``stage``:

- ``teacher``  (only when no ``teacher.ckpt`` is given and ``teacher.epochs > 0``): train the teacher detector
  (or segmenter) with its own task loss; saved to ``<output_dir>/teacher.pth``;
- ``tokens``   stage 1: learn the receptive tokens on the frozen teacher (task loss on the masked features +
  Dice); saved to ``<output_dir>/tokens.pth`` in the official format (``mask_modules.*`` keys);
- ``student:maskd``     stage 2: train the student with its task loss + ``L_MasKD`` (+ head distillation);
- ``student:baseline``  (``baseline: true``): the same student, same initialisation, same batches and steps,
  without any distillation term.

``stage: all`` runs them all; ``stage: tokens`` stops after stage 1; ``stage: distill`` needs ``teacher.ckpt``
and ``tokens_ckpt``. ``last.pth`` records the global epoch across stages (stage 1 counts as one epoch), so a
killed run resumes inside the stage it was in. The run ends by printing the students' box mAP (COCO-style,
computed by ``coco_eval.py``) or mIoU for segmentation.
"""
import os

import torch
import torch.nn as nn

from common.checkpoint import load_checkpoint, load_state_dict, save_checkpoint
from common.config import parse_cli
from common.data import build_loader, set_epoch
from common.dist import all_reduce_mean, barrier, seed_everything, wrap_ddp
from common.errors import CheckpointError, ConfigError, guard
from common.log import AverageMeter, progress, update_progress
from common.runner import setup_run

import models
from adapters import TorchvisionDetectorAdapter, TorchvisionSegAdapter
from align import AlignModules
from coco_eval import coco_map
from datasets import build_det_data, build_seg_data, det_collate, seg_collate
from distiller import DetDistiller, SegDistiller, seg_task_loss
from losses import HeadDistillLoss, MasKDLoss, SegMasKDLoss, extract_mask_state
from mask_learning import MaskLearner, TOKEN_DEFAULTS

DEFAULTS = {
    'output_dir': 'output/maskd',
    'seed': 0,
    'device': 'auto',
    'resume': True,
    'task': 'det',                  # det | seg
    'stage': 'all',                 # all | tokens | distill
    'data': {
        'name': 'synthetic_det',    # synthetic_det | coco (det) | cityscapes (seg)
        'root': None,
        'image_size': 64,           # synthetic only
        'num_classes': 5,           # synthetic only
        'train_size': 512,          # synthetic only
        'test_size': 128,           # synthetic only
        'max_objects': 3,           # synthetic only
        'flip': 0.5,                # horizontal flip probability (training)
        'ann_train': '',            # coco: override <root>/annotations/instances_train2017.json
        'ann_val': '',
        'crop_size': [512, 1024],   # cityscapes training crop
        'num_workers': 0,
    },
    'model': {                      # detector / segmenter shared by teacher and student
        'detector': 'retinanet',    # retinanet | fasterrcnn (det); deeplabv3 (seg)
        'fpn_channels': 256,
        'norm': 'frozen_bn',        # frozen_bn (ImageNet backbones) | bn (trained from scratch)
        'trainable_layers': 3,
        'min_size': 800,
        'max_size': 1333,
        'anchor_sizes': [32, 64, 128, 256, 512],
        'roi_batch_size': 512,
        'representation_size': 1024,
        'rpn_batch_size': 256,
        'rpn_pre_nms_top_n_train': 2000,
        'rpn_post_nms_top_n_train': 2000,
        'class_agnostic_reg': False,    # student box head with 4 outputs (Cascade-teacher config)
        'aux': True,                    # seg: auxiliary FCN head on layer3
    },
    'teacher': {
        'backbone': 'resnet101',
        'ckpt': '',                 # detector state dict ({'model': ...} or raw); empty: train it (epochs > 0)
        'backbone_weights': '',     # ImageNet ResNet state dict (local file) when training the teacher here
        'epochs': 0,
        'lr': 0.02,
        'step': [16, 22],
    },
    'student': {
        'backbone': 'resnet50',
        'backbone_weights': '',     # ImageNet ResNet state dict (local file)
    },
    # stage 1 (official: det Adam 0.01 / wd 1e-3 / cosine to 1e-6 / 2000 iters; seg SGD 0.1 / poly / 10k)
    'tokens': {
        'iters': 2000,
        'optimizer': 'adam',        # adam | sgd
        'lr': 0.01,
        'weight_decay': 1e-3,
        'momentum': 0.9,
        'schedule': 'cosine',       # cosine | poly
        'min_lr': 1e-6,
        'power': 0.9,
        'batch_size': 0,            # 0: batch_size
    },
    # stage 2 (official MasKDLoss arguments)
    'num_tokens': 6,
    'weight_mask': True,
    'custom_mask': True,
    'custom_mask_warmup': 7000,
    'loss_weight': 7.0,
    'tokens_ckpt': '',
    'init_neck_head_from_teacher': False,
    'extra_head_losses': [],        # [{type: l1 | smooth_l1, beta: 1.0, weight: 1.0}]
    'baseline': True,               # also train the student without distillation (same init, batches, steps)
    # optimisation (mmdet names)
    'batch_size': 2,                # per process
    'lr': 0.02,
    'momentum': 0.9,
    'weight_decay': 1e-4,
    'warmup_iters': 500,
    'warmup_ratio': 0.001,
    'step': [16, 22],               # lr x0.1 at these epochs (det); seg uses poly decay
    'lr_policy': 'step',            # step | poly (seg)
    'max_epochs': 24,
    'grad_clip': 0.0,               # max grad norm, 0 = off (RetinaNet / FCOS configs: 35)
    'eval_batch_size': 8,
    'eval_every': 1,
}

STAGES = ('all', 'tokens', 'distill')
HEAD_KEYS = ('type', 'beta', 'weight')


# ------------------------------------------------------------------------------------------------ config
def validate(cfg):
    def need(ok, key, msg):
        if not ok:
            node = cfg
            for part in key.split('.'):
                node = node[part]
            raise ConfigError(f"config key '{key}' {msg}, got {node!r}")

    need(cfg.task in ('det', 'seg'), 'task', 'must be det or seg')
    need(cfg.stage in STAGES, 'stage', f"must be one of {', '.join(STAGES)}")
    det = cfg.task == 'det'
    need(cfg.data.name in (('synthetic_det', 'coco') if det else ('synthetic_det', 'cityscapes')), 'data.name',
         'must be synthetic_det or coco (task det) / synthetic_det or cityscapes (task seg)')
    need(cfg.model.detector in (models.DETECTORS if det else ('deeplabv3',)), 'model.detector',
         f"must be one of {', '.join(models.DETECTORS)} (task det) or deeplabv3 (task seg)")
    need(cfg.model.norm in models.NORMS, 'model.norm', f"must be one of {', '.join(models.NORMS)}")
    need(0 <= cfg.model.trainable_layers <= 5, 'model.trainable_layers', 'must be in 0..5')
    need(cfg.model.fpn_channels >= 1, 'model.fpn_channels', 'must be >= 1')
    need(len(cfg.model.anchor_sizes) == 5, 'model.anchor_sizes', 'must list 5 base sizes (one per FPN level)')
    need(cfg.model.min_size >= 16 and cfg.model.max_size >= cfg.model.min_size, 'model.min_size',
         'must be >= 16 and <= model.max_size')
    need(cfg.teacher.backbone in models.BACKBONES, 'teacher.backbone', f"must be one of {', '.join(models.BACKBONES)}")
    need(cfg.student.backbone in models.BACKBONES, 'student.backbone', f"must be one of {', '.join(models.BACKBONES)}")
    need(cfg.teacher.epochs >= 0, 'teacher.epochs', 'must be >= 0')
    need(cfg.teacher.lr > 0, 'teacher.lr', 'must be > 0')
    need(cfg.tokens.iters >= 1, 'tokens.iters', 'must be >= 1')
    need(cfg.tokens.optimizer in ('adam', 'sgd'), 'tokens.optimizer', 'must be adam or sgd')
    need(cfg.tokens.schedule in ('cosine', 'poly'), 'tokens.schedule', 'must be cosine or poly')
    need(cfg.tokens.lr > 0, 'tokens.lr', 'must be > 0')
    need(cfg.tokens.batch_size >= 0, 'tokens.batch_size', 'must be >= 0')
    need(cfg.num_tokens >= 2, 'num_tokens', 'must be >= 2 (the Dice term compares pairs of masks)')
    need(cfg.custom_mask_warmup >= 0, 'custom_mask_warmup', 'must be >= 0')
    need(cfg.loss_weight >= 0, 'loss_weight', 'must be >= 0')
    need(cfg.batch_size >= 1, 'batch_size', 'must be >= 1')
    need(cfg.eval_batch_size >= 1, 'eval_batch_size', 'must be >= 1')
    need(cfg.eval_every >= 1, 'eval_every', 'must be >= 1')
    need(cfg.lr > 0, 'lr', 'must be > 0')
    need(cfg.max_epochs >= 1, 'max_epochs', 'must be >= 1')
    need(cfg.warmup_iters >= 0, 'warmup_iters', 'must be >= 0')
    need(0 < cfg.warmup_ratio <= 1, 'warmup_ratio', 'must be in (0, 1]')
    need(cfg.lr_policy in ('step', 'poly'), 'lr_policy', 'must be step or poly')
    need(cfg.grad_clip >= 0, 'grad_clip', 'must be >= 0')
    need(cfg.weight_decay >= 0, 'weight_decay', 'must be >= 0')
    need(cfg.data.num_workers >= 0, 'data.num_workers', 'must be >= 0')
    need(0 <= cfg.data.flip <= 1, 'data.flip', 'must be in [0, 1]')
    need(len(cfg.data.crop_size) == 2, 'data.crop_size', 'must be [height, width]')
    if not isinstance(cfg.extra_head_losses, list):
        raise ConfigError(f"config key 'extra_head_losses' must be a list, got {cfg.extra_head_losses!r}")
    heads = []
    for i, e in enumerate(cfg.extra_head_losses):
        bad = [k for k in e] if not isinstance(e, dict) else [k for k in e if k not in HEAD_KEYS]
        if not isinstance(e, dict) or bad or e.get('type') not in ('l1', 'smooth_l1'):
            raise ConfigError(f"config key 'extra_head_losses[{i}]' must be a mapping with type l1 | smooth_l1 and "
                              f"optional beta, weight (valid keys: {', '.join(HEAD_KEYS)}), got {e!r}")
        heads.append(HeadDistillLoss(e['type'], float(e.get('beta', 1.0)), float(e.get('weight', 1.0))))
    if heads and not det:
        raise ConfigError("config key 'extra_head_losses' applies to detection only (task det)")
    if cfg.stage == 'distill' and not cfg.tokens_ckpt:
        raise ConfigError("stage 'distill' needs 'tokens_ckpt' (a stage-1 checkpoint); use stage 'all' to learn "
                          "the tokens first")
    if not cfg.teacher.ckpt and cfg.teacher.epochs == 0:
        raise ConfigError("no teacher: set 'teacher.ckpt' to a trained detector/segmenter state dict, or "
                          "'teacher.epochs' > 0 to train the teacher first")
    if cfg.stage == 'distill' and not cfg.teacher.ckpt:
        raise ConfigError("stage 'distill' needs 'teacher.ckpt'")
    return heads


# ------------------------------------------------------------------------------------------------ models
def build_model(cfg, backbone, num_classes, weights='', student=False):
    m = cfg.model
    try:
        if cfg.task == 'seg':
            return models.build_segmenter(backbone, num_classes, m.aux, m.norm, weights or None)
        return models.build_detector(
            m.detector, backbone, num_classes + 1, m.fpn_channels, m.norm,
            m.trainable_layers, m.min_size, m.max_size, tuple(m.anchor_sizes), weights or None,
            bool(m.class_agnostic_reg and student), m.roi_batch_size, m.representation_size, m.rpn_batch_size,
            m.rpn_pre_nms_top_n_train, m.rpn_post_nms_top_n_train)
    except (ValueError, OSError) as e:
        raise ConfigError(f'cannot build the {"student" if student else "teacher"} model: {e}') from None


def load_teacher(cfg, num_classes, device, path):
    teacher = build_model(cfg, cfg.teacher.backbone, num_classes)
    obj = load_checkpoint(path)
    sd = obj.get('model', obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict):
        raise CheckpointError(f"teacher checkpoint '{path}' holds no state dict")
    load_state_dict(teacher, sd, strict=True, what=f"teacher checkpoint '{path}'")
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def level_channels(cfg, num_classes):
    """Channels of the distilled levels: 5 FPN levels (det) or the class logits (seg)."""
    return [cfg.model.fpn_channels] * 5 if cfg.task == 'det' else [num_classes]


def make_maskd_loss(cfg, num_classes, tokens_sd):
    if cfg.task == 'seg':
        loss = SegMasKDLoss(num_classes, cfg.num_tokens)
    else:
        loss = MasKDLoss(level_channels(cfg, num_classes), cfg.num_tokens, cfg.weight_mask, cfg.custom_mask,
                         cfg.custom_mask_warmup, None, cfg.loss_weight)
    try:
        loss.load_tokens(tokens_sd)
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f'the tokens do not fit this configuration: {e}') from None
    return loss


# ------------------------------------------------------------------------------------------------ schedule
def lr_at(cfg, base_lr, steps, epoch, it, total_iters):
    """mmdet schedule: linear warm-up from ``warmup_ratio`` over ``warmup_iters``, then x0.1 at each epoch in
    ``steps`` (``lr_policy: step``) or poly 0.9 decay (``lr_policy: poly``)."""
    if cfg.lr_policy == 'poly':
        lr = base_lr * (1 - min(it, total_iters) / max(1, total_iters)) ** 0.9
    else:
        lr = base_lr * 0.1 ** sum(epoch >= s for s in steps)
    if it < cfg.warmup_iters:
        lr *= cfg.warmup_ratio + (1 - cfg.warmup_ratio) * it / cfg.warmup_iters
    return lr


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(cfg, model, dataset, device, num_classes):
    was = model.training
    model.eval()
    idx = list(range(len(dataset)))
    if cfg.task == 'det':
        dets, gts = [], []
        for i in range(0, len(idx), cfg.eval_batch_size):
            batch = [dataset[j] for j in idx[i:i + cfg.eval_batch_size]]
            out = model([b[0].to(device) for b in batch])
            dets += [{k: v.cpu() for k, v in o.items()} for o in out]
            gts += [b[1] for b in batch]
        res = coco_map(dets, gts)
    else:
        inter, union = torch.zeros(num_classes), torch.zeros(num_classes)
        for i in range(0, len(idx), cfg.eval_batch_size):
            batch = [dataset[j] for j in idx[i:i + cfg.eval_batch_size]]
            x = torch.stack([b[0] for b in batch]).to(device)
            y = torch.stack([b[1] for b in batch]).to(device)
            pred = model(x)['out'].argmax(1)
            ok = y >= 0
            for c in range(num_classes):
                p, g = (pred == c) & ok, (y == c) & ok
                inter[c] += (p & g).sum().cpu()
                union[c] += (p | g).sum().cpu()
        present = union > 0
        res = {'mIoU': 100 * float((inter[present] / union[present]).mean()) if present.any() else 0.0}
    model.train(was)
    return res


def headline_metric(cfg):
    return 'mAP' if cfg.task == 'det' else 'mIoU'


# ------------------------------------------------------------------------------------------------ stages
def plan_stages(cfg):
    stages = []
    if cfg.stage != 'distill' and not cfg.teacher.ckpt:
        stages.append({'name': 'teacher', 'epochs': cfg.teacher.epochs})
    if cfg.stage != 'distill' and not cfg.tokens_ckpt:
        stages.append({'name': 'tokens', 'epochs': 1})
    if cfg.stage != 'tokens':
        stages.append({'name': 'student:maskd', 'epochs': cfg.max_epochs})
        if cfg.baseline:
            stages.append({'name': 'student:baseline', 'epochs': cfg.max_epochs})
    offset = 0
    for st in stages:
        st['offset'] = offset
        offset += st['epochs']
    return stages


def train_model_stage(run, cfg, idx, st, ctx, state):
    """Train the teacher or a student (with or without MasKD) for ``st['epochs']`` epochs."""
    device, num_classes = run.device, ctx['num_classes']
    is_teacher = st['name'] == 'teacher'
    distil = st['name'] == 'student:maskd'
    if state is None:
        seed_everything(cfg.seed, run.rank)           # both students: same initialisation and batches
    if is_teacher:
        model = build_model(cfg, cfg.teacher.backbone, num_classes, cfg.teacher.backbone_weights)
    else:
        model = build_model(cfg, cfg.student.backbone, num_classes, cfg.student.backbone_weights, student=True)
        if cfg.init_neck_head_from_teacher and state is None:
            sd = models.neck_head_state(ctx['teacher'])
            try:
                model.load_state_dict(sd, strict=False)
            except RuntimeError as e:
                raise ConfigError(f"init_neck_head_from_teacher: the teacher's neck/head do not fit the student: "
                                  f"{e}") from None
    model.to(device)
    teacher = ctx['teacher'] if distil else None
    if cfg.task == 'det':
        kd_loss = make_maskd_loss(cfg, num_classes, ctx['tokens']).to(device) \
            if distil and cfg.loss_weight > 0 else None
        align = AlignModules(cfg.model.fpn_channels, cfg.model.fpn_channels, 5).to(device) if kd_loss else None
        try:
            wrapper = DetDistiller(model, teacher, kd_loss, align, ctx['heads'] if distil else ())
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        kd_loss = make_maskd_loss(cfg, num_classes, ctx['tokens']).to(device) \
            if distil and cfg.loss_weight > 0 else None
        wrapper = SegDistiller(model, teacher if kd_loss else None, kd_loss, cfg.loss_weight)
    ddp = wrap_ddp(wrapper, device)
    params = [p for p in wrapper.parameters() if p.requires_grad]
    base_lr = cfg.teacher.lr if is_teacher else cfg.lr
    steps = list(cfg.teacher.step) if is_teacher else list(cfg.step)
    optimizer = torch.optim.SGD(params, lr=base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    loader = ctx['loader']
    spe = len(loader)
    total_iters = spe * st['epochs']
    start, results = 0, None
    if state is not None:
        load_state_dict(wrapper, state['model'], strict=True, what=f"{st['name']} in last.pth")
        optimizer.load_state_dict(state['optimizer'])
        start = state['epoch'] - st['offset']
    if kd_loss is not None:
        kd_loss.set_iter(start * spe)                 # the warm-up counter follows the global step on resume
    run.log(f"stage {idx} {st['name']}: {type(model).__name__} "
            f"{cfg.teacher.backbone if is_teacher else cfg.student.backbone} "
            f"({sum(p.numel() for p in model.parameters()):,} params), epochs {start}..{st['epochs']}"
            + (f", MasKD loss_weight={cfg.loss_weight} head losses={len(ctx['heads'])}" if distil else ''))
    res = None
    for epoch in range(start, st['epochs']):
        set_epoch(loader, epoch)
        wrapper.train()
        meters = {}
        bar = progress(loader, total=spe, desc=f"{st['name']} {epoch + 1}/{st['epochs']}")
        for i, (images, targets) in enumerate(bar):
            it = epoch * spe + i
            lr = lr_at(cfg, base_lr, steps, epoch, it, total_iters)
            for g in optimizer.param_groups:
                g['lr'] = lr
            if cfg.task == 'det':
                images = [im.to(device) for im in images]
                targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
            else:
                images, targets = images.to(device), targets.to(device)
            losses = ddp(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{st['name']}: non-finite loss {loss.item()} at iteration {it} "
                                         f"({ {k: float(v.detach()) for k, v in losses.items()} })")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            for k, v in {'loss': loss, **losses}.items():
                meters.setdefault(k, AverageMeter(k)).update(float(v.detach()), len(images))
            update_progress(bar, loss=meters['loss'].avg, lr=lr)
        stats = {k: float(all_reduce_mean(torch.tensor(m.avg))) for k, m in meters.items()}
        last = epoch == st['epochs'] - 1
        row = {'stage': st['name'], 'epoch': epoch, 'global_epoch': st['offset'] + epoch + 1, 'lr': lr, **stats}
        if last or (epoch + 1) % cfg.eval_every == 0:
            res = evaluate(cfg, model, ctx['test_set'], device, num_classes)
            row.update(res)
        run.log_metrics(row)
        entry = {'stage': st['name'], **(res or {})} if last else None
        run.save({'epoch': st['offset'] + epoch + 1, 'stage': idx, 'stage_name': st['name'],
                  'model': wrapper.state_dict(), 'optimizer': optimizer.state_dict(),
                  'results': ctx['results'] + ([entry] if entry else [])})
        if last:
            results = entry
    if results is None:
        results = state['results'][-1]
    return model, results


class _DeviceBatches:
    """Re-iterable: one pass over ``loader`` per iteration (a new sampler epoch each time), moved to ``device``;
    detection batches are transformed by the teacher (``(ImageList, targets)``)."""

    def __init__(self, loader, device, transform=None):
        self.loader, self.device, self.transform, self.epoch = loader, device, transform, 0

    def __iter__(self):
        set_epoch(self.loader, self.epoch)
        self.epoch += 1
        for images, targets in self.loader:
            if self.transform is None:
                yield images.to(self.device), targets.to(self.device)
            else:
                images = [im.to(self.device) for im in images]
                targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()}
                           for t in targets]
                with torch.no_grad():
                    batch = self.transform(images, targets)
                yield batch


def tokens_stage(run, cfg, idx, st, ctx):
    """Stage 1: learn the tokens on the frozen teacher; writes tokens.pth (official key names)."""
    device, teacher, num_classes = run.device, ctx['teacher'], ctx['num_classes']
    seed_everything(cfg.seed + 1, run.rank)
    if cfg.task == 'det':
        t = TorchvisionDetectorAdapter(teacher)

        def feature_fn(batch):                         # batch = (ImageList, targets)
            return t.features(batch[0].tensors)

        def loss_fn(batch, feats):
            return t.losses_from_features(batch[0], feats, batch[1])
        levels, transform = None, t.transform
    else:
        s = TorchvisionSegAdapter(teacher)

        def feature_fn(batch):
            main, aux = s.logits(batch[0])
            return {'out': main, 'aux': aux}

        def loss_fn(batch, feats):
            return {'loss_ce': seg_task_loss(feats['out'], feats['aux'], batch[1])}
        levels, transform = ['out'], None
    learner = MaskLearner(teacher, feature_fn, loss_fn, level_channels(cfg, num_classes), cfg.num_tokens,
                          cfg.weight_mask if cfg.task == 'det' else False, levels).to(device)
    tcfg = dict(TOKEN_DEFAULTS[cfg.task])
    tcfg.update({k: cfg.tokens[k] for k in ('iters', 'optimizer', 'lr', 'weight_decay', 'momentum', 'schedule',
                                            'min_lr', 'power')})
    loader = build_loader(ctx['train_set'], cfg.tokens.batch_size or cfg.batch_size, shuffle=True, drop_last=True,
                          num_workers=cfg.data.num_workers, seed=cfg.seed + 1,
                          collate_fn=det_collate if cfg.task == 'det' else seg_collate)
    meters = {}
    bar = progress(range(tcfg['iters']), total=tcfg['iters'], desc='tokens')
    ticks = iter(bar)

    def on_iter(it, loss, parts):
        next(ticks, None)
        if it == 1:
            run.log(f"tokens: iteration 1 loss {float(loss):.4f} "
                    f"(Dice sum {sum(float(v) for k, v in parts.items() if k.startswith('dice')):.4f})")
        if it > tcfg['iters'] // 2:                    # report the second half (the converged value)
            for k, v in {'loss': loss, **parts}.items():
                meters.setdefault(k, AverageMeter(k)).update(float(v))
        update_progress(bar, loss=float(loss))

    learner.train_tokens(_DeviceBatches(loader, device, transform), tcfg, on_iter=on_iter,
                         forward=wrap_ddp(learner, device))
    next(ticks, None)
    stats = {k: m.avg for k, m in meters.items()}
    dice = sum(v for k, v in stats.items() if k.startswith('dice'))
    tokens_sd = {k: v.detach().cpu() for k, v in learner.state_dict().items()}
    save_checkpoint({'state_dict': tokens_sd, 'num_tokens': cfg.num_tokens},
                    os.path.join(run.output_dir, 'tokens.pth'))
    barrier()
    run.log_metrics({'stage': 'tokens', 'epoch': 0, 'global_epoch': st['offset'] + 1, 'iters': tcfg['iters'],
                     **stats, 'dice_sum': dice})
    entry = {'stage': 'tokens', 'dice_sum': dice, 'task_loss': stats.get('loss', 0.0) - dice}
    run.save({'epoch': st['offset'] + 1, 'stage': idx, 'stage_name': 'tokens', 'results': ctx['results'] + [entry]})
    return tokens_sd, entry


# ------------------------------------------------------------------------------------------------ main
def headline(cfg, results, teacher_res):
    key = headline_metric(cfg)
    what = 'box mAP@[.5:.95] (COCO-style)' if cfg.task == 'det' else 'mIoU'
    data = f"{cfg.data.name} {'test' if cfg.data.name == 'synthetic_det' else 'val'}"
    parts = []
    if teacher_res is not None:
        parts.append(f'teacher {cfg.teacher.backbone} {teacher_res[key]:.2f}')
    labels = {'student:maskd': 'MasKD', 'student:baseline': 'no KD'}
    students = [r for r in results if r['stage'] in labels]
    if students:
        parts.append(f'student {cfg.student.backbone}: ' + ' | '.join(f"{labels[r['stage']]} {r[key]:.2f}"
                                                                      for r in students))
    tok = next((r for r in results if r['stage'] == 'tokens'), None)
    if tok is not None and not students:
        parts.append(f"tokens learned (final Dice sum {tok['dice_sum']:.4f})")
    return f'{what} on {data}: ' + ' | '.join(parts)


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='MasKD: masked distillation with receptive tokens')
    heads = validate(cfg)
    stages = plan_stages(cfg)
    run = setup_run(cfg)
    # num_classes: foreground classes (det) / classes including background (seg)
    train_set, test_set, num_classes = (build_det_data if cfg.task == 'det' else build_seg_data)(cfg.data, cfg.seed)
    loader = build_loader(train_set, cfg.batch_size, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
                          seed=cfg.seed, collate_fn=det_collate if cfg.task == 'det' else seg_collate)
    state = run.resume()
    done = state['epoch'] if state else 0
    results = list(state['results']) if state else []
    if state is not None:
        k = state.get('stage')
        if not isinstance(k, int) or k >= len(stages) or state.get('stage_name') != stages[k]['name'] \
                or done > stages[k]['offset'] + stages[k]['epochs']:
            raise CheckpointError(f"'{run.last_path}' was written by a run with other stages or epochs; use another "
                                  f"output_dir or resume=false to start afresh")
    ctx = {'num_classes': num_classes, 'loader': loader, 'train_set': train_set, 'test_set': test_set,
           'heads': heads, 'results': results, 'teacher': None, 'tokens': None}
    teacher_path = cfg.teacher.ckpt or os.path.join(run.output_dir, 'teacher.pth')
    tokens_path = cfg.tokens_ckpt or os.path.join(run.output_dir, 'tokens.pth')
    teacher_res = None
    if cfg.teacher.ckpt:
        ctx['teacher'] = load_teacher(cfg, num_classes, run.device, teacher_path)
    if cfg.tokens_ckpt:
        ctx['tokens'] = load_checkpoint(tokens_path)
        if not extract_mask_state(ctx['tokens']):
            raise CheckpointError(f"'{tokens_path}' holds no mask_modules.* / mask_token entries")
    for idx, st in enumerate(stages):
        end = st['offset'] + st['epochs']
        if done >= end:                                 # finished before a restart: reload its product
            if st['name'] == 'teacher':
                ctx['teacher'] = load_teacher(cfg, num_classes, run.device, teacher_path)
            elif st['name'] == 'tokens':
                ctx['tokens'] = load_checkpoint(tokens_path)
            continue
        stage_state = state if (state is not None and state.get('stage') == idx and done > st['offset']) else None
        if st['name'] == 'tokens':
            ctx['tokens'], entry = tokens_stage(run, cfg, idx, st, ctx)
        else:
            model, entry = train_model_stage(run, cfg, idx, st, ctx, stage_state)
            if st['name'] == 'teacher':
                save_checkpoint({'model': model.state_dict(), 'backbone': cfg.teacher.backbone, **entry},
                                teacher_path)
                barrier()                               # rank 0 wrote it; every rank reads it
                ctx['teacher'] = load_teacher(cfg, num_classes, run.device, teacher_path)
                run.log(f"teacher trained: {headline_metric(cfg)} {entry[headline_metric(cfg)]:.2f}, saved to "
                        f"{teacher_path}")
        results.append(entry)
    teacher_res = next((r for r in results if r['stage'] == 'teacher'), None)
    if teacher_res is None and ctx['teacher'] is not None and any(st['name'].startswith('student') for st in stages):
        teacher_res = evaluate(cfg, ctx['teacher'], test_set, run.device, num_classes)
    for r in results:
        run.log('  ' + '  '.join(f'{k}={v:.3f}' if isinstance(v, float) else f'{k}={v}' for k, v in r.items()))
    run.finish(headline(cfg, results, teacher_res))
    return {'results': results, 'teacher': teacher_res}


if __name__ == '__main__':
    guard(main)
