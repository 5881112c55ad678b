"""TopoNAS main job: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

Tasks (``task``):
  search          TopoNAS search on DARTS or PC-DARTS (``train_search.py``): joint learning of the weights, the
                  operation variables alpha and the topology variables beta (with the passive-aggressive
                  regulariser), the topology-aware derivation every epoch; then, when ``eval.epochs`` > 0, the derived
                  genotype is trained briefly from scratch and its test accuracy and parameter count reported.
  train           train a genotype (``arch``: a name such as DARTS_V2, or a Genotype(...) literal) on CIFAR with the
                  DARTS evaluation protocol (``train.py``).
  train_imagenet  the same on ImageNet (``train_imagenet.py``).
Multi-process: ``torchrun --nproc_per_node=N main.py --cfg ...`` (gloo on CPU, nccl on CUDA).
"""
from common.config import parse_cli
from common.errors import ConfigError, guard
from common.runner import setup_run

from genotypes import in_degrees, parse_genotype
from model_search import BASES, TOPO_PARAMS
from topology import PassiveAggressiveReg

DEFAULTS = {
    'output_dir': 'output/toponas',
    'seed': 2,
    'device': 'auto',
    'resume': True,
    'task': 'search',               # search | train | train_imagenet
    'data': {
        'name': 'synthetic',        # common.data: synthetic, cifar10, cifar100, imagefolder (ImageNet), ...
        'root': None,
        'image_size': 32,
        'num_classes': 10,          # synthetic only
        'train_size': 5000,         # synthetic only
        'test_size': 1000,          # synthetic only
        'seed': 0,                  # synthetic only
        'num_workers': 0,
        'test_split': 'test',       # 'val' for an ImageNet folder
        'subset': 0,                # search: > 0 keeps only the first N training images
    },
    # ---- train_search.py / train.py / train_imagenet.py flags (their meaning follows `task`)
    'batch_size': 64,
    'learning_rate': 0.025,
    'learning_rate_min': 0.001,
    'momentum': 0.9,
    'weight_decay': 3e-4,
    'epochs': 50,
    'init_channels': 16,
    'layers': 8,
    'grad_clip': 5.0,
    'train_portion': 0.5,
    'unrolled': False,              # second-order architecture gradient
    'arch_learning_rate': 3e-4,
    'arch_weight_decay': 1e-3,
    'arch_start_epoch': 0,          # PC-DARTS: 15
    'report_freq': 50,
    'cutout': False,
    'cutout_length': 16,
    'drop_path_prob': 0.2,
    'auxiliary': False,
    'auxiliary_weight': 0.4,
    'arch': 'DARTS_V2',             # task=train / train_imagenet: genotype name or Genotype(...) literal
    'label_smooth': 0.1,            # train_imagenet
    'lr_scheduler': 'step',         # train_imagenet: step (x gamma every decay_period epochs) | linear (warm-up)
    'decay_period': 1,
    'gamma': 0.97,
    'warmup_epochs': 5,
    # ---- TopoNAS (all [A]: reconstructed from the abstract, see README)
    'base': 'darts',                # darts | pcdarts
    'topo_param': 'edge',           # edge | combination | none (the plain base method)
    'topo_k': 2,                    # inputs per node; 0 = free in-degree (any non-empty input set)
    'pa_reg': 'outside_top2',       # outside_top2 | entropy | none
    'pa_weight': 0.1,
    'pa_start_epoch': 0,
    'partial_k': 4,                 # PC-DARTS: 1/K of the channels go through the mixed op
    # ---- task=search: brief from-scratch training of the derived genotype (epochs 0 = skip)
    'eval': {
        'epochs': 0, 'layers': 8, 'init_channels': 16, 'batch_size': 64, 'learning_rate': 0.025, 'momentum': 0.9,
        'weight_decay': 3e-4, 'drop_path_prob': 0.0, 'auxiliary': False, 'auxiliary_weight': 0.4, 'cutout': False,
        'cutout_length': 16, 'grad_clip': 5.0,
        'compare_darts_rule': False,  # also train the cell the DARTS top-2 rule derives from the same alphas
    },
}

TASKS = ('search', 'train', 'train_imagenet')


def _check(cond, key, msg):
    if not cond:
        raise ConfigError(f"config key '{key}' {msg}")


def _get(cfg, key):
    value = cfg
    for part in key.split('.'):
        value = value[part]
    return value


def validate(cfg):
    _check(cfg.task in TASKS, 'task', f'must be one of {", ".join(TASKS)}, got {cfg.task!r}')
    _check(cfg.base in BASES, 'base', f'must be one of {", ".join(BASES)}, got {cfg.base!r}')
    _check(cfg.topo_param in TOPO_PARAMS, 'topo_param', f'must be one of {", ".join(TOPO_PARAMS)}, got '
                                                        f'{cfg.topo_param!r}')
    _check(cfg.pa_reg in PassiveAggressiveReg.MODES, 'pa_reg',
           f'must be one of {", ".join(PassiveAggressiveReg.MODES)}, got {cfg.pa_reg!r}')
    _check(cfg.lr_scheduler in ('step', 'linear'), 'lr_scheduler', f'must be step or linear, got {cfg.lr_scheduler!r}')
    for key in ('batch_size', 'epochs', 'init_channels', 'layers', 'learning_rate', 'grad_clip', 'report_freq',
                'data.image_size', 'partial_k', 'decay_period', 'eval.layers', 'eval.init_channels',
                'eval.batch_size', 'eval.learning_rate', 'eval.grad_clip', 'cutout_length', 'eval.cutout_length'):
        _check(_get(cfg, key) > 0, key, f'must be > 0, got {_get(cfg, key)!r}')
    for key in ('learning_rate_min', 'momentum', 'weight_decay', 'arch_learning_rate', 'arch_weight_decay',
                'arch_start_epoch', 'pa_weight', 'pa_start_epoch', 'topo_k', 'auxiliary_weight', 'label_smooth',
                'warmup_epochs', 'gamma', 'eval.epochs', 'eval.momentum', 'eval.weight_decay',
                'eval.auxiliary_weight', 'data.subset'):
        _check(_get(cfg, key) >= 0, key, f'must be >= 0, got {_get(cfg, key)!r}')
    for key in ('drop_path_prob', 'eval.drop_path_prob'):
        _check(0 <= _get(cfg, key) < 1, key, f'must lie in [0, 1), got {_get(cfg, key)!r}')
    _check(0 < cfg.train_portion < 1, 'train_portion', f'must lie in (0, 1), got {cfg.train_portion!r}')
    _check(cfg.label_smooth < 1, 'label_smooth', 'must be < 1')
    # the auxiliary heads pool an 8x8 (CIFAR) / 7x7 (ImageNet) map with a 5x5 window
    need = 224 if cfg.task == 'train_imagenet' else 32
    for key in ('auxiliary', 'eval.auxiliary'):
        on = _get(cfg, key) and (cfg.task == 'search') == key.startswith('eval.')
        _check(not on or cfg.data.image_size >= need, key, f'needs data.image_size >= {need} (the auxiliary head '
                                                          f'assumes it), got {cfg.data.image_size}')
    if cfg.task == 'search':
        _check(cfg.layers >= 3, 'layers', 'must be >= 3 (two reduction cells and a normal one)')
        _check(cfg.base != 'pcdarts' or cfg.init_channels % (2 * cfg.partial_k) == 0, 'init_channels',
               f'must be a multiple of 2 * partial_k = {2 * cfg.partial_k} for base=pcdarts')
        _check(cfg.pa_reg != 'entropy' or cfg.topo_param != 'none', 'pa_reg', 'entropy needs topo_param edge or '
                                                                              'combination')
        _check(cfg.data.image_size % 4 == 0, 'data.image_size', 'must be a multiple of 4 (two reduction cells)')
    else:
        try:
            parse_genotype(cfg.arch)
        except ValueError as e:
            raise ConfigError(f"config key 'arch': {e}") from None


def headline_search(cfg, genotype, summary, result):
    deg_n, deg_r = list(in_degrees(genotype.normal).values()), list(in_degrees(genotype.reduce).values())
    text = (f'TopoNAS ({cfg.base}, topo_param={cfg.topo_param}, topo_k={cfg.topo_k}) searched genotype with node '
            f'in-degrees normal {deg_n} / reduce {deg_r}; super-net val acc '
            f'{summary.get("valid_acc", float("nan")):.2f}%')
    if result:
        text += (f'; derived network ({cfg.eval.layers} cells, C={cfg.eval.init_channels}): test top-1 '
                 f'{result["test_top1"]:.2f}% with {result["params"] / 1e6:.3f}M params after {cfg.eval.epochs} '
                 f'epochs on {cfg.data.name}')
        if 'darts_rule' in result:
            d = result['darts_rule']
            text += (f' (the DARTS top-2 rule on the same alphas: {d["test_top1"]:.2f}% with '
                     f'{d["params"] / 1e6:.3f}M params)')
    return text


def task_search(cfg, run):
    from train import cifar_train
    from train_search import describe_genotype, search
    genotype, summary, state, snapshot = search(cfg, run)
    run.log(f'final genotype = {genotype}')
    run.log(f'final {describe_genotype(genotype)}')
    result = None
    if cfg.eval.epochs > 0:
        # the evaluation resumes only when this run did not search further (else its genotype may have changed)
        done_before = (state is not None and int(state['epoch']) >= cfg.epochs
                       and state.get('genotype') == str(genotype))
        result, eval_entries = cifar_train(cfg, run, genotype, cfg.eval, resume_state=state if done_before else None,
                                           save_extra=snapshot, key='eval_model', desc='eval')
        run.log_metrics({'phase': 'result', 'genotype': str(genotype), **result})
        if cfg.eval.compare_darts_rule and summary.get('darts_rule_genotype'):
            darts_genotype = parse_genotype(summary['darts_rule_genotype'])
            run.log(f'DARTS rule on the same alphas: {darts_genotype}')
            result['darts_rule'], _ = cifar_train(cfg, run, darts_genotype, cfg.eval,
                                               resume_state=state if done_before else None,
                                               save_extra=lambda: {**snapshot(), **eval_entries()},
                                               key='eval_darts_model', desc='eval_darts_rule')
            run.log_metrics({'phase': 'result_darts_rule', 'genotype': str(darts_genotype),
                             **result['darts_rule']})
    return {'genotype': genotype, 'search': summary, 'eval': result}, headline_search(cfg, genotype, summary, result)


def task_train(cfg, run):
    from train import cifar_train
    genotype = parse_genotype(cfg.arch)
    state = run.resume()
    result, _ = cifar_train(cfg, run, genotype, cfg, resume_state=state, key='model', desc='train')
    text = (f'{cfg.arch if len(str(cfg.arch)) < 40 else "genotype"} ({cfg.layers} cells, C={cfg.init_channels}): '
            f'test top-1 {result["test_top1"]:.2f}% (error {100 - result["test_top1"]:.2f}%), '
            f'{result["params"] / 1e6:.3f}M params, {cfg.epochs} epochs on {cfg.data.name}')
    return result, text


def task_train_imagenet(cfg, run):
    from train_imagenet import imagenet_train
    result = imagenet_train(cfg, run, parse_genotype(cfg.arch))
    text = (f'ImageNet-protocol {cfg.arch if len(str(cfg.arch)) < 40 else "genotype"}: top-1 '
            f'{result["test_top1"]:.2f}% / top-5 {result["test_top5"]:.2f}%, {result["params"] / 1e6:.3f}M params')
    return result, text


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='TopoNAS: explicitly learning topology for differentiable NAS')
    validate(cfg)
    run = setup_run(cfg)
    result, headline = {'search': task_search, 'train': task_train,
                        'train_imagenet': task_train_imagenet}[cfg.task](cfg, run)
    run.finish(headline)
    return result


if __name__ == '__main__':
    guard(main)
