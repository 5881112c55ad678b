"""Smoke run of main.py (all four stages, resume) and its error paths."""
import json
import os
import subprocess
import sys

import pytest
import torch

import main
from common.errors import ConfigError
from flops import expected_flops

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(HERE, 'cfg.yaml')
SPACE = dict(patch_sizes=(4, 8), embed_dim=16, depth=2, heads=(1, 2), at_temp=48, mlp_dim=32,
             num_classes=4, id_op=True, img_size=16)
CP = (0.25, 0.5, 0.75, 1.0)


def tiny_opts(out, **extra):
    e = expected_flops(0.5, SPACE, CP)
    opts = {'output_dir': out, 'data.image_size': 16, 'data.num_classes': 4, 'data.train_size': 48,
            'data.test_size': 24, 'supernet.patch_sizes': '[4, 8]', 'supernet.embed_dim': 16,
            'supernet.depth': 2, 'supernet.heads': '[1, 2]', 'supernet.at_temp': 48,
            'supernet.mlp_dim': 32, 'flops_min': 0.8 * e, 'flops_constraint': 1.2 * e,
            'search.batch_size': 16, 'search.epochs': 1, 'search.ps_num': 100,
            'sample.pop_size': 3, 'sample.n_gens': 2, 'sample.batch_size': 12,
            'retrain.batch_size': 16, 'retrain.epochs': 1, 'test.batch_size': 12}
    opts.update(extra)
    return ['--cfg', CFG, '--opts'] + [f'{k}={v}' for k, v in opts.items()]


def metrics(out):
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_main_runs_every_stage_and_resumes(tmp_path):
    out = str(tmp_path / 'run')
    main.main(tiny_opts(out, stages='[search]'))
    assert [m['epoch'] for m in metrics(out) if m['stage'] == 'search'] == [1]
    state = torch.load(os.path.join(out, 'last.pth'), weights_only=False)
    assert state['progress']['search'] == 1 and 0 < state['id_prop'] < 1

    headline = main.main(tiny_opts(out, **{'search.epochs': 2}))        # resumes at epoch 1
    for f in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'best.pth'):
        assert os.path.isfile(os.path.join(out, f)), f
    log = open(os.path.join(out, 'log.txt')).read()
    assert 'resumed from' in log and 'searched net_id' in log
    ms = metrics(out)
    assert [m['epoch'] for m in ms if m['stage'] == 'search'] == [1, 2]
    assert [m['generation'] for m in ms if m['stage'] == 'sample'] == [1, 2]
    assert [m['epoch'] for m in ms if m['stage'] == 'retrain'] == [1]
    test = [m for m in ms if m['stage'] == 'test'][-1]
    state = torch.load(os.path.join(out, 'last.pth'), weights_only=False)
    assert state['progress'] == {'search': 2, 'sample': 2, 'retrain': 1, 'test': 1}
    assert state['best']['model_len'] == 5 and len(state['best']['net_id'].split()) == 10
    assert f"top-1 {test['top1']:.2f}%" in headline and 'FLOPs' in headline and 'params' in headline
    assert state['results']['flops'] == test['flops'] == state['best']['flops']


@pytest.mark.parametrize('opt,msg', [
    ('search.side_scheme=Left', 'side_scheme'),
    ('supernet.heads=[1, 2, 3]', 'do not divide'),
    ('flops_min=5.0', 'flops_min'),
    ('stages=[train]', 'stages'),
    ('retrain.arch=ViTAS-Z', 'retrain.arch'),
    ('retrain.net_id=1 2 3', 'retrain.net_id'),
])
def test_bad_config_is_a_config_error(tmp_path, opt, msg):
    argv = tiny_opts(str(tmp_path)) + [opt]
    if opt.startswith('flops_min'):
        argv.append('flops_constraint=1.0')
    with pytest.raises(ConfigError, match=msg):
        main.main(argv)


def test_sample_without_supernet_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match='supernet_ckpt'):
        main.main(tiny_opts(str(tmp_path / 'x'), stages='[sample]'))


def test_user_error_exits_2_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--opts',
                        f'output_dir={tmp_path}', 'search.side_scheme=Left'], cwd=HERE, text=True,
                       capture_output=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 2 and r.stderr.startswith('error:') and 'Traceback' not in r.stderr
