"""The main job: smoke runs of every stage with tiny sizes, resume after a kill, and the error paths."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main as ks_main
from common.errors import CheckpointError, ConfigError

FOLDER = Path(__file__).resolve().parents[1]
CFG = str(FOLDER / 'cfg.yaml')
TINY = ['data.image_size=8', 'data.train_size=64', 'data.test_size=32', 'model.stages=[[8,1,1],[12,2,2]]',
        'model.stem_channels=4', 'model.first_channels=4', 'model.last_channels=16',
        'supernet.batch_size=16', 'supernet.warmup_epochs=1', 'simplex.num_paths=2',
        'search.population_num=4', 'search.max_epoch=2', 'search.top_k_num=2', 'search.mutation_num=2',
        'search.crossover_num=2', 'search.flops_limit=-1', 'search.recal_bn_iters=1', 'search.batch_size=32',
        'search.show_top=3']


def _metrics(out):
    return [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]


def test_supernet_stage_writes_outputs_resumes_and_searches(tmp_path):
    out = tmp_path / 'run'
    res = ks_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'supernet.epochs=1', *TINY])
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'):
        assert (out / name).is_file()
    assert len(res['arch'].split('-')) == 3 and 0 <= res['score'] <= 100 and res['macs'] > 0
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['epoch'] == 1 and state['trainer']['iter'] == 4 and state['searcher']['epoch'] == 2
    # a killed run restarted with a longer budget continues from last.pth (epoch 1), then searches again
    res2 = ks_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'supernet.epochs=2', *TINY])
    log = (out / 'log.txt').read_text()
    assert 'resumed from' in log and 'at epoch 1' in log and 'top-2 paths' in log
    epochs = [m['epoch'] for m in _metrics(out) if m.get('stage') == 'supernet']
    assert epochs == [0, 1]
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['epoch'] == 2 and state['trainer']['iter'] == 8
    assert 'resuming the search' not in log  # the supernet changed: the search starts afresh
    assert len(state['searcher']['memory']) == 8 and res2['uniform_code_score'] >= 0


def test_search_stage_and_its_resume(tmp_path):
    out = tmp_path / 'run'
    ks_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'supernet.epochs=1', *TINY])
    out2 = tmp_path / 'search'
    res = ks_main.main(['--cfg', CFG, '--opts', f'output_dir={out2}', 'stage=search',
                        f'search.checkpoint={out / "last.pth"}', *TINY])
    first = torch.load(out2 / 'last.pth', weights_only=False)['searcher']
    assert first['epoch'] == 2 and len(res['top']) >= 1
    # same folder, more generations: the scored paths are kept and the evolution goes on
    ks_main.main(['--cfg', CFG, '--opts', f'output_dir={out2}', 'stage=search', f'search.checkpoint={out / "last.pth"}',
                  *TINY, 'search.max_epoch=3'])
    second = torch.load(out2 / 'last.pth', weights_only=False)['searcher']
    assert second['epoch'] == 3 and second['memory'][:len(first['memory'])] == first['memory']


def test_channel_search_run(tmp_path):
    res = ks_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'supernet.epochs=2', *TINY,
                        'model.channel_search=true', 'simplex.num_paths=4'])
    assert ' w' in res['arch']  # widths are part of the searched path
    rows = [m for m in _metrics(tmp_path) if m.get('stage') == 'supernet']
    assert 'simplex_loss' in rows[-1]


def test_k1_run_is_spos(tmp_path):
    res = ks_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'supernet.epochs=2', *TINY, 'model.K=1'])
    rows = [m for m in _metrics(tmp_path) if m.get('stage') == 'supernet']
    assert 'simplex_loss' not in rows[-1] and rows[-1]['mean_code'] == [1.0] and res['score'] >= 0


def test_per_layer_codes_and_shared_bn_run(tmp_path):
    res = ks_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'supernet.epochs=2', *TINY,
                        'model.per_layer_code=true', 'model.bn_K=1'])
    state = torch.load(tmp_path / 'last.pth', weights_only=False)
    assert state['simplex']['fc2.weight'].shape[0] == 3 * (3 + 1)  # K codes for the fixed parts + 3 layers
    assert state['supernet']['bn1.weight'].shape[0] == 1 and res['score'] >= 0


def test_retrain_and_test_stages(tmp_path):
    opts = ['data.image_size=8', 'data.train_size=32', 'data.test_size=16', 'model.stages=[[8,1,1],[12,2,2]]',
            'model.stem_channels=4', 'model.first_channels=4', 'model.last_channels=16', 'retrain.arch=1-3-6',
            'retrain.epochs=1', 'retrain.batch_size=16', 'retrain.warmup_epochs=0', 'retrain.ema_decay=0.9']
    headline = ks_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'stage=retrain', *opts])
    assert 'best top-1' in headline and (tmp_path / 'best.pth').is_file()
    headline = ks_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'stage=test', *opts])
    assert headline.startswith('test 1-3-6: top-1')
    with pytest.raises(CheckpointError):
        ks_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'stage=test', *opts,
                      f'retrain.checkpoint={tmp_path / "config.yaml"}'])


@pytest.mark.parametrize('opts,key', [
    (['stage=train'], 'stage'),
    (['model.K=0'], 'model.K'),
    (['model.bn_K=2'], 'model.bn_K'),
    (['model.ops=[ir_3x3_se_t9x]'], 'model.ops'),
    (['model.stages=[[8,1]]'], 'model.stages'),
    (['simplex.code=random'], 'simplex.code'),
    (['search.mutation_prob=1.5'], 'search.mutation_prob'),
    (['supernet.warmup_epochs=200'], 'supernet.warmup_epochs'),
    (['stage=retrain'], 'retrain.arch'),
    (['stage=retrain', 'retrain.arch=6-0-0'], 'retrain.arch'),
])
def test_config_errors_name_the_key(tmp_path, opts, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        ks_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', *opts])


def test_bad_input_exits_2_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FOLDER.parent), os.environ.get('PYTHONPATH', '')]))
    p = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}',
                        'simplex.num_paths=0'], cwd=FOLDER, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and 'simplex.num_paths' in p.stderr and 'Traceback' not in p.stderr


def test_every_config_passes_validation():
    from common.config import load_config
    paths = [FOLDER / 'cfg.yaml', *sorted((FOLDER / 'configs').glob('*.yaml'))]
    assert len(paths) >= 6
    for p in paths:
        cfg = load_config(str(p), defaults=ks_main.DEFAULTS)
        if cfg.stage == 'retrain':  # the searched path is passed on the command line
            cfg.retrain.arch = '-'.join(['0'] * ks_main.build_space_only(cfg).num_layers)
        ks_main.validate(cfg)
