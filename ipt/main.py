"""IPT: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

``mode: pretrain``  multi-task pre-training on clean images corrupted on the fly (one task per batch),
                    L1 + lambda * contrastive loss on the body's patch features, then evaluation;
``mode: finetune``  start from ``pretrain`` (a checkpoint) and train on ``task`` only, then evaluate;
``mode: test``      evaluate ``pretrain`` (ours or an official release checkpoint) with the tiled protocol.

Evaluation: every test image goes through ``chop.forward_chop`` (optionally ``forward_x8``), the output is
clamped and rounded, and PSNR is computed on Y (and on RGB, labelled). On the synthetic test images the run
prints the model next to the trivial baselines (bicubic upsampling for SR, the corrupted input otherwise).
"""
import math
import os

import torch

from common.checkpoint import load_checkpoint, load_state_dict
from common.config import ConfigError, parse_cli
from common.data import build_dataset, build_loader, set_epoch
from common.dist import unwrap, wrap_ddp
from common.errors import DatasetError, guard
from common.log import AverageMeter, Throughput, progress, update_progress
from common.runner import setup_run
from common.schedule import set_lr

import chop
import data as ipt_data
from losses import IPTLoss
from metrics import calc_psnr, calc_ssim, quantize
from model import IPT

DEFAULTS = {
    'output_dir': 'output/ipt', 'seed': 0, 'device': 'auto', 'resume': True, 'amp': False,
    'mode': 'pretrain',                      # pretrain | finetune | test
    'data': {'name': 'synthetic',            # any common.data name, or 'folder' (every image under root)
             'root': None, 'split': 'train', 'image_size': 64, 'num_classes': 10,
             'train_size': 2000, 'test_size': 8, 'num_workers': 0,
             'rain_dir': None,               # folder of grayscale streak images (RainTrainL); None: synthetic
             'test': {'name': 'synthetic',   # 'synthetic' (test split of data.name) or 'benchmark'
                      'root': None,          # dir_data of the benchmark layout
                      'sets': [],            # e.g. [Set5, Set14, B100, Urban100] / [CBSD68] / [Rain100L]
                      'max_images': 0}},
    'model': {'n_feats': 64, 'patch_size': 48, 'patch_dim': 3, 'num_heads': 12, 'num_layers': 12,
              'dropout_rate': 0.0, 'rgb_range': 255, 'no_mlp': False, 'pos_every': False, 'no_pos': False,
              'no_norm': False},
    'tasks': list(ipt_data.TASK_NAMES),      # the model's heads / tails / task embeddings, in this order
    'train_tasks': [],                       # tasks drawn in pre-training ([]: all of `tasks`)
    'task': 'sr2',                           # the task of finetune / test
    'pretrain': '',                          # checkpoint to fine-tune from or to test
    'batch_size': 256, 'epochs': 300, 'lr': 5e-5, 'milestones': [200], 'gamma': 0.4,
    'betas': [0.9, 0.999], 'eps': 1e-8, 'weight_decay': 0.0,
    'clip_grad': 0.0,                        # > 0: per-tensor gradient-norm clipping (MindSpore uses 1.0)
    'loss': {'con': 'supcon', 'lambda_con': 0.1, 'temperature': 0.07},  # con: supcon | paper | none
    'eval': {'every': 0, 'tasks': [], 'self_ensemble': False, 'crop_batch_size': 64, 'noise_seed': 1},
}


# ---------------------------------------------------------------------------------------------- config
def validate(cfg, world_size):
    if cfg.mode not in ('pretrain', 'finetune', 'test'):
        raise ConfigError(f"mode must be pretrain, finetune or test, got {cfg.mode!r}")
    if not cfg.tasks:
        raise ConfigError('tasks must name at least one task')
    for key, names in (('tasks', cfg.tasks), ('train_tasks', cfg.train_tasks), ('eval.tasks', cfg.eval.tasks),
                       ('task', [cfg.task])):
        for n in names:
            try:
                ipt_data.parse_task(n)
            except ValueError as e:
                raise ConfigError(f'{key}: {e}') from None
            if key != 'tasks' and n not in cfg.tasks:
                raise ConfigError(f'{key}: task {n!r} is not one of the model tasks {list(cfg.tasks)}')
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise ConfigError(f'tasks has duplicates: {list(cfg.tasks)}')
    m = cfg.model
    if m.patch_size % m.patch_dim or m.patch_size % 4:
        raise ConfigError(f'model.patch_size {m.patch_size} must be divisible by model.patch_dim {m.patch_dim} '
                          'and by 4 (the tiling stride is patch_size / 4)')
    if (m.n_feats * m.patch_dim ** 2) % m.num_heads:
        raise ConfigError(f'model.num_heads {m.num_heads} must divide n_feats * patch_dim^2 = '
                          f'{m.n_feats * m.patch_dim ** 2}')
    if cfg.mode != 'test':
        if cfg.batch_size % world_size:
            raise ConfigError(f'batch_size {cfg.batch_size} is not divisible by the {world_size} processes')
        if cfg.loss.con not in ('supcon', 'paper', 'none'):
            raise ConfigError(f"loss.con must be supcon, paper or none, got {cfg.loss.con!r}")
        if cfg.loss.con != 'none' and cfg.batch_size // world_size < 2:
            raise ConfigError('batch_size must give each process at least 2 images (contrastive negatives)')
        if cfg.lr <= 0 or cfg.epochs < 1:
            raise ConfigError('lr must be positive and epochs at least 1')
    if cfg.mode in ('finetune', 'test') and not cfg.pretrain:
        raise ConfigError(f'mode {cfg.mode} needs `pretrain`: the checkpoint to start from / to test')
    if cfg.data.name == 'folder' and not cfg.data.root:
        raise ConfigError('data.name=folder needs data.root: a folder of clean images (searched recursively)')
    if cfg.data.test.name not in ('synthetic', 'benchmark'):
        raise ConfigError("data.test.name must be 'synthetic' or 'benchmark'")
    if cfg.data.test.name == 'benchmark' and (not cfg.data.test.root or not cfg.data.test.sets):
        raise ConfigError('data.test.name=benchmark needs data.test.root (dir_data) and data.test.sets')


def build_model(cfg):
    m = cfg.model
    scales = [ipt_data.parse_task(t)[1] for t in cfg.tasks]
    return IPT(n_feats=m.n_feats, patch_size=m.patch_size, patch_dim=m.patch_dim, num_heads=m.num_heads,
               num_layers=m.num_layers, scales=scales, num_queries=len(scales), dropout_rate=m.dropout_rate,
               rgb_range=m.rgb_range, no_mlp=m.no_mlp, pos_every=m.pos_every, no_pos=m.no_pos, no_norm=m.no_norm)


def load_weights(model, path):
    """Our ``last.pth`` (its ``model`` entry) or a bare official ``state_dict`` (``IPT_sr2.pt`` ...)."""
    state = load_checkpoint(path)
    state = state.get('model', state) if isinstance(state, dict) else state
    load_state_dict(model, state, strict=True, what=f'IPT weights from {path}')


# ------------------------------------------------------------------------------------------------ data
def _dataset(cfg, split):
    d = cfg.data
    opts = ({'image_size': d.image_size, 'num_classes': d.num_classes, 'train_size': d.train_size,
             'test_size': d.test_size, 'seed': cfg.seed} if d.name in ('synthetic',) else {})
    if d.name == 'folder':
        return d.root  # a plain folder of images, read by ImageNetIPT
    return build_dataset(d.name, d.root, split, **opts)


def load_streaks(rain_dir):
    if not rain_dir:
        return None
    try:
        return [ipt_data.load_image(p).mean(0) for p in ipt_data.list_images(rain_dir)]
    except ipt_data.BenchmarkError as e:
        raise DatasetError(f'data.rain_dir: {e}') from None


def check_test_data(cfg, tasks):
    """Fail at start (not after training) when a benchmark folder is missing or malformed."""
    if cfg.data.test.name != 'benchmark':
        return
    for task in tasks:
        test_items(cfg, task, load=False)


def test_items(cfg, task, load=True):
    """``(set name, [(input or None, hr, name)])`` for one task; ``input None`` means 'corrupt the hr here'."""
    kind, scale, _ = ipt_data.parse_task(task)
    t = cfg.data.test
    if t.name == 'synthetic':
        ds = _dataset(cfg, 'test')
        n = len(ds) if not t.max_images else min(t.max_images, len(ds))
        return [(f'{cfg.data.name} test', [(None, ipt_data.pil_to_tensor(ds[i][0]) if not torch.is_tensor(ds[i][0])
                                            else ds[i][0].float(), str(i)) for i in range(n)])]
    out = []
    for name in t.sets:
        if (kind == 'derain') != (name == 'Rain100L') or kind == 'sr' and name == 'CBSD68':
            continue  # SR: sets with LR_bicubic; denoising: any clean set; deraining: Rain100L
        try:
            bench = ipt_data.Benchmark(name, t.root, scale if kind == 'sr' else 1)
            n = len(bench) if not t.max_images else min(t.max_images, len(bench))
            out.append((name, [bench[i] for i in range(n)] if load else []))
        except ipt_data.BenchmarkError as e:
            raise DatasetError(str(e)) from None
    if not out:
        raise DatasetError(f'data.test.sets {list(t.sets)} holds no set for task {task}')
    return out


# ------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(cfg, model, device, tasks, log=print):
    """Tiled evaluation; returns ``{task: {set: {'psnr_y', 'psnr_rgb', 'base_y', 'base_rgb', ...}}}``."""
    model.eval()
    results = {}
    for task in tasks:
        idx = list(cfg.tasks).index(task)
        kind, scale, sigma = ipt_data.parse_task(task)
        fn = lambda z: model(z, idx)  # noqa: E731
        g = torch.Generator().manual_seed(cfg.eval.noise_seed)  # seeded once per task (official: seed 1)
        results[task] = {}
        for set_name, items in test_items(cfg, task):
            sums = {'psnr_y': 0.0, 'psnr_rgb': 0.0, 'base_y': 0.0, 'base_rgb': 0.0, 'ssim': 0.0}
            for inp, hr, _ in items:
                if kind == 'sr':
                    if inp is None:  # synthetic: HR cropped to a multiple of s, MATLAB-bicubic LR
                        hh, ww = hr.shape[-2] // scale * scale, hr.shape[-1] // scale * scale
                        hr = hr[:, :hh, :ww]
                        inp = ipt_data.imresize_matlab(hr, 1 / scale)
                    base = ipt_data.imresize_matlab(inp, scale)
                elif kind == 'denoise':
                    inp = ipt_data.add_gaussian_noise(hr, sigma, g)
                    base = inp
                else:
                    if inp is None:
                        inp = ipt_data.add_rain(hr, ipt_data.synth_rain_streaks(hr.shape[-2:], g))
                    base = inp
                if min(inp.shape[-2:]) < cfg.model.patch_size:
                    raise DatasetError(f'{set_name}: a test input is {tuple(inp.shape[-2:])}, smaller than the '
                                       f'{cfg.model.patch_size}px window of the tiled test')
                x = inp[None].to(device)
                run_chop = lambda z: chop.forward_chop(fn, z, scale, cfg.model.patch_size,  # noqa: E731
                                                       cfg.eval.crop_batch_size)
                sr = chop.forward_x8(run_chop, x) if cfg.eval.self_ensemble else run_chop(x)
                sr = quantize(sr.cpu(), cfg.model.rgb_range)
                hr_b, base_b = hr[None], quantize(base[None], cfg.model.rgb_range)
                shave = scale if kind == 'sr' else 1
                sums['psnr_y'] += calc_psnr(sr, hr_b, shave, cfg.model.rgb_range, 'y')
                sums['psnr_rgb'] += calc_psnr(sr, hr_b, shave, cfg.model.rgb_range, 'rgb')
                sums['base_y'] += calc_psnr(base_b, hr_b, shave, cfg.model.rgb_range, 'y')
                sums['base_rgb'] += calc_psnr(base_b, hr_b, shave, cfg.model.rgb_range, 'rgb')
                if kind == 'derain':
                    sums['ssim'] += calc_ssim(sr, hr_b, cfg.model.rgb_range)
            res = {k: v / len(items) for k, v in sums.items() if k != 'ssim' or kind == 'derain'}
            res['images'] = len(items)
            results[task][set_name] = res
            log(f'{task} on {set_name} ({len(items)} images): PSNR-Y {res["psnr_y"]:.2f} dB, PSNR-RGB '
                f'{res["psnr_rgb"]:.2f} dB; {baseline_name(kind)} PSNR-Y {res["base_y"]:.2f} dB'
                + (f', SSIM-Y {res["ssim"]:.4f}' if kind == 'derain' else ''))
    model.train()
    return results


def baseline_name(kind):
    return {'sr': 'bicubic', 'denoise': 'noisy input', 'derain': 'rainy input'}[kind]


def headline(cfg, results):
    parts = []
    for task, sets in results.items():
        kind = ipt_data.parse_task(task)[0]
        for set_name, r in sets.items():
            parts.append(f'{task} on {set_name}: IPT {r["psnr_y"]:.2f} vs {baseline_name(kind)} {r["base_y"]:.2f}'
                         f' (RGB-PSNR IPT {r["psnr_rgb"]:.2f})')
    return 'Y-PSNR (dB, tiled test): ' + '; '.join(parts)


# -------------------------------------------------------------------------------------------- training
def lr_at(cfg, epoch):
    """Multi-step decay: ``lr * gamma ** (number of milestones <= epoch)``."""
    return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='IPT pre-training / fine-tuning / testing')
    validate(cfg, int(os.environ.get('WORLD_SIZE', 1)))
    run = setup_run(cfg)
    device = run.device
    model = build_model(cfg).to(device)
    run.log(f'IPT with tasks {list(cfg.tasks)}: {sum(p.numel() for p in model.parameters() if p.requires_grad):,} '
            f'trainable params')
    eval_tasks = list(cfg.eval.tasks) or ([cfg.task] if cfg.mode != 'pretrain' else
                                          list(cfg.train_tasks) or list(cfg.tasks))

    check_test_data(cfg, eval_tasks)
    if cfg.mode == 'test':
        load_weights(model, cfg.pretrain)
        results = evaluate(cfg, model, device, eval_tasks, run.log)
        run.log_metrics({'epoch': 0, 'results': results})
        run.finish(headline(cfg, results))
        return results

    pool_names = list(cfg.train_tasks) or list(cfg.tasks) if cfg.mode == 'pretrain' else [cfg.task]
    pool = [list(cfg.tasks).index(t) for t in pool_names]
    crop_scales = sorted({ipt_data.parse_task(cfg.tasks[t])[1] for t in pool})
    try:
        train_set = ipt_data.ImageNetIPT(_dataset(cfg, cfg.data.split), cfg.model.patch_size, crop_scales)
    except ipt_data.BenchmarkError as e:
        raise DatasetError(f'data.root: {e}') from None
    corruptor = ipt_data.TaskBatchCorruptor(list(cfg.tasks), cfg.seed, pool, crop_scales,
                                            load_streaks(cfg.data.rain_dir), cfg.model.patch_size)
    local_bs = cfg.batch_size // run.world_size
    if len(train_set) < local_bs:
        raise ConfigError(f'batch_size per process ({local_bs}) exceeds the {len(train_set)} training images')
    loader = build_loader(train_set, local_bs, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
                          seed=cfg.seed)
    criterion = IPTLoss(cfg.loss.lambda_con, cfg.loss.con, cfg.loss.temperature)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                 betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler('cuda', enabled=run.amp)
    state = run.resume(model=model, optimizer=optimizer, scaler=scaler)
    if state is None and cfg.mode == 'finetune':
        load_weights(model, cfg.pretrain)
        run.log(f'fine-tuning {cfg.task} from {cfg.pretrain}')
    ddp = wrap_ddp(model, device, find_unused_parameters=len(cfg.tasks) > 1)
    use_con = criterion.con is not None
    results = state.get('results') if state else None

    for epoch in range(run.start_epoch, cfg.epochs):
        set_epoch(loader, epoch)
        lr = lr_at(cfg, epoch)
        set_lr(optimizer, lr)
        meters = {k: AverageMeter(k) for k in ('loss', 'l1', 'con')}
        task_steps = [0] * len(cfg.tasks)
        task_l1 = [AverageMeter(t) for t in cfg.tasks]
        speed = Throughput()
        bar = progress(loader, total=len(loader), desc=f'epoch {epoch}')
        for i, crops in enumerate(bar):
            step = epoch * len(loader) + i
            task = corruptor.draw(step)
            task_steps[task] += 1
            inp, hr = corruptor(crops, task, step * run.world_size + run.rank)
            inp, hr = inp.to(device, non_blocking=True), hr.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=run.amp):
                out = ddp(inp, task, return_tokens=use_con)
                sr, tokens = out if use_con else (out, None)
                loss = criterion(sr.float(), hr, None if tokens is None else tokens.float())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad > 0:
                scaler.unscale_(optimizer)
                for p in model.parameters():
                    if p.grad is not None:
                        torch.nn.utils.clip_grad_norm_([p], cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch} step {i}')
            n = inp.size(0)
            meters['loss'].update(loss.item(), n)
            meters['l1'].update(criterion.last['l1'].item(), n)
            task_l1[task].update(criterion.last['l1'].item(), n)
            if use_con:
                meters['con'].update(criterion.last['con'].item(), n)
            speed.update(n * run.world_size)
            update_progress(bar, loss=meters['loss'].avg, lr=lr, img_s=speed.rate)
        metrics = {'epoch': epoch, 'lr': lr, 'loss': meters['loss'].avg, 'l1': meters['l1'].avg,
                   'steps_per_task': dict(zip(cfg.tasks, task_steps)),
                   'l1_per_task': {m.name: m.avg for m in task_l1 if m.count}, 'img_per_s': speed.rate}
        if use_con:
            metrics['con'] = meters['con'].avg
        last = epoch + 1 == cfg.epochs
        if last or (cfg.eval.every and (epoch + 1) % cfg.eval.every == 0):
            results = evaluate(cfg, unwrap(model), device, eval_tasks, run.log)
            metrics['results'] = results
        run.log_metrics(metrics)
        run.save({'model': unwrap(model).state_dict(), 'optimizer': optimizer.state_dict(),
                  'scaler': scaler.state_dict(), 'epoch': epoch + 1, 'results': results})
    if results is None:  # resumed after the last epoch had already finished
        results = evaluate(cfg, unwrap(model), device, eval_tasks, run.log)
    run.finish(headline(cfg, results))
    return results


if __name__ == '__main__':
    guard(main)
