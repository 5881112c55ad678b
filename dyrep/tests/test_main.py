"""Smoke runs of main.py: DyRep training writes its files, resumes with its DBB graph, deploys exactly;
the deploy command line; bad input is a clear error with exit status 2."""
import json
import os

import pytest
import torch

import main as dyrep_main
from common.errors import ConfigError, guard

FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(FOLDER, 'cfg.yaml')
TINY = ['data.train_size=64', 'data.test_size=50', 'data.image_size=16', 'image_size=16', 'batch_size=32',
        'eval_batch_size=50', 'dyrep_recal_bn_iters=2', 'dyrep_adjust_interval=1']


def run(tmp_path, *opts, extra=()):
    return dyrep_main.main(['--cfg', CFG, *extra, '--opts', f'output_dir={tmp_path}', *TINY, *opts])


def read_metrics(path):
    with open(os.path.join(path, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_smoke_run_resume_and_deploy(tmp_path):
    headline = run(tmp_path, 'epochs=2', 'dyrep_max_adjust_epochs=3')
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'deploy.pth'):
        assert os.path.isfile(tmp_path / name), name
    rows = read_metrics(tmp_path)
    assert [r['epoch'] for r in rows if 'epoch' in r] == [0, 1]
    assert all(len(r['grown']) == 1 for r in rows if 'epoch' in r)    # one conv grown per adjustment
    # growth keeps the function: the accuracy right after an adjustment equals the one just before
    assert all(abs(r['top1'] - r['top1_before_adjust']) <= 2.0 for r in rows if 'epoch' in r)
    final = rows[-1]
    assert final['final'] and final['deploy_params'] == final['base_params']
    assert final['deploy_top1'] == final['top1'] and final['deploy_max_logit_diff'] < 1e-3
    assert final['deploy_loads_into_base'] is True
    assert 'deployed' in headline
    state = torch.load(tmp_path / 'last.pth', weights_only=False)
    assert len(state['dyrep']['dbb_graph']) >= 1 and state['epoch'] == 2

    # a restart with more epochs continues from last.pth, rebuilding the grown blocks first
    run(tmp_path, 'epochs=3', 'dyrep_max_adjust_epochs=3')
    rows = read_metrics(tmp_path)
    assert [r['epoch'] for r in rows if 'epoch' in r] == [0, 1, 2]
    with open(tmp_path / 'log.txt') as f:
        assert 'resumed from' in f.read()
    state = torch.load(tmp_path / 'last.pth', weights_only=False)
    assert state['epoch'] == 3 and len(state['dyrep']['dbb_graph']) >= 2

    # the official convert command line: --deploy [--resume ckpt]
    line = run(tmp_path / 'dep', 'epochs=3', extra=('--deploy', '--resume', str(tmp_path / 'last.pth')))
    assert 'DyRep deploy' in line and os.path.isfile(tmp_path / 'dep' / 'deploy.pth')
    deployed = torch.load(tmp_path / 'dep' / 'deploy.pth', weights_only=False)['model']
    assert not any('dbb' in k for k in deployed)


def test_dbb_baseline_run(tmp_path):
    run(tmp_path, 'epochs=1', 'dyrep=false', 'dbb=true')
    final = read_metrics(tmp_path)[-1]
    assert final['deploy_params'] == final['base_params'] and final['deploy_top1'] == final['top1']
    state = torch.load(tmp_path / 'last.pth', weights_only=False)
    assert any('dbb_1x1_kxk' in k for k in state['model'])


@pytest.mark.parametrize('opts,key', [
    (['dyrep_adjust_interval=0'], 'dyrep_adjust_interval'), (['model=resnet7'], 'model'),
    (['dbb=true'], 'dbb'), (['dyrep_branches=[1,1,1,0,1,1,1]'], 'dyrep_branches'),
    (['dyrep_grow_metric=abs'], 'dyrep_grow_metric'), (['no_such_key=1'], 'no_such_key'),
])
def test_bad_config_is_a_config_error(tmp_path, opts, key):
    with pytest.raises(ConfigError, match=key):
        run(tmp_path, *opts)


def test_user_error_exits_2_without_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        guard(dyrep_main.main, ['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'epochs=-1'])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error:') and 'epochs' in err and 'Traceback' not in err
    with pytest.raises(SystemExit) as e:   # a missing checkpoint for --deploy
        guard(dyrep_main.main, ['--cfg', CFG, '--deploy', '--resume', str(tmp_path / 'none.pth'), '--opts',
                                f'output_dir={tmp_path}', *TINY])
    assert e.value.code == 2 and 'none.pth' in capsys.readouterr().err


def test_paper_configs_are_valid():
    from common.config import load_config
    folder = os.path.join(FOLDER, 'configs')
    names = sorted(os.listdir(folder))
    assert {'cifar10_vgg16.yaml', 'cifar100_vgg16.yaml', 'imagenet_resnet18.yaml', 'imagenet_resnet50.yaml',
            'imagenet_mobilenet_v1.yaml', 'imagenet_repvgg_a2.yaml'} <= set(names)
    for name in names:
        cfg = load_config(os.path.join(folder, name), defaults=dyrep_main.DEFAULTS)
        dyrep_main.validate_cfg(cfg)
        assert cfg.dyrep or cfg.dbb, name
    cfg = load_config(os.path.join(folder, 'imagenet_resnet18.yaml'), defaults=dyrep_main.DEFAULTS)
    assert (cfg.epochs, cfg.dyrep_adjust_interval, cfg.dyrep_max_adjust_epochs, cfg.lr) == (120, 5, 100, 0.1)
