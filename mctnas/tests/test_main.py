"""The main job: smoke runs of every stage with tiny sizes, resume after a kill, and the error paths."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main as mct_main
from common.errors import ConfigError, DatasetError

FOLDER = Path(__file__).resolve().parents[1]
CFG = str(FOLDER / 'cfg.yaml')
TINY = ['data.image_size=8', 'data.train_size=128', 'data.test_size=32', 'model.init_channels=4', 'batch_size=8',
        'mct.warmup_iters=0', 'mct.mct_start_iter=8', 'search.search_num=3', 'search.n_thrd=1',
        'search.bn_batches=1', 'search.batch_size=32', 'search.random_baseline=2', 'print_freq=100']


def _metrics(out):
    return [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]


def test_supernet_stage_writes_outputs_and_resumes(tmp_path):
    out = tmp_path / 'run'
    res = mct_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'epochs=1', *TINY])
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'):
        assert (out / name).is_file()
    assert len(res['arch']) == 8 and 0.0 <= res['score'] <= 100.0 and 'random_mean' in res
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['epoch'] == 1 and len(state['searcher']['history']) == 3
    assert state['sampler_trained']['iter'] == 16  # 128 images / 8 per batch
    assert state['sampler']['tree'] is not None
    # a killed run: restart with more epochs continues from last.pth (epoch 1), then searches afresh
    res2 = mct_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'epochs=2', *TINY])
    log = (out / 'log.txt').read_text()
    assert 'resumed from' in log and 'at epoch 1' in log
    epochs = [m['epoch'] for m in _metrics(out) if 'epoch' in m]
    assert epochs == [0, 1]
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['epoch'] == 2 and state['sampler_trained']['iter'] == 32
    assert len(res2['arch']) == 8


def test_search_resumes_where_it_stopped(tmp_path):
    out = tmp_path / 'run'
    mct_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'epochs=1', *TINY])
    state = torch.load(out / 'last.pth', weights_only=False)
    first = state['searcher']['history']
    # same run, larger search budget: the 3 scored paths are kept and 2 more are added
    res = mct_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'epochs=1', *TINY, 'search.search_num=5'])
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['searcher']['history'][:3] == first and len(state['searcher']['history']) == 5
    assert len(res['top']) == 5
    # stage=search from that checkpoint into a new folder starts from the tree as trained
    out2 = tmp_path / 'search'
    res = mct_main.main(['--cfg', CFG, '--opts', f'output_dir={out2}', 'stage=search',
                         f'search.checkpoint={out / "last.pth"}', *TINY])
    assert len(res['top']) == 3 and (out2 / 'last.pth').is_file()


def test_bench_stage(tmp_path, bench):
    out = tmp_path / 'bench'
    headline = mct_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'stage=bench', 'benchmark.iters=1500',
                              'mct.warmup_iters=0', 'mct.mct_start_iter=1000', 'search.search_num=5',
                              f'benchmark.path={bench.path}'])
    assert 'NAS-Bench-Macro' in headline and 'rank' in headline
    scored = [m for m in _metrics(out) if m.get('stage') == 'search']
    assert len(scored) == 5 and all(1 <= m['rank'] <= 6561 for m in scored)


def test_benchmark_evaluator_switch(tmp_path, bench):
    res = mct_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'epochs=1', *TINY,
                         'search.evaluator=benchmark', f'benchmark.path={bench.path}'])
    assert res['score'] == pytest.approx(bench.acc(res['arch'])) and res['bench_rank'] >= 1


def test_retrain_stage(tmp_path):
    headline = mct_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'stage=retrain',
                              'retrain.arch=12012000', 'retrain.epochs=1', 'retrain.batch_size=32',
                              'data.image_size=8', 'data.train_size=64', 'data.test_size=32', 'model.init_channels=4'])
    assert 'best-epoch top-1' in headline and (tmp_path / 'best.pth').is_file()


@pytest.mark.parametrize('opts,key', [
    (['stage=train'], 'stage'),
    (['mct.warmup_iters=10', 'mct.mct_start_iter=5'], 'mct.mct_start_iter'),
    (['mct.beta=1.5'], 'mct.beta'),
    (['search.evaluator=oracle'], 'search.evaluator'),
    (['stage=retrain'], 'retrain.arch'),
    (['stage=retrain', 'retrain.arch=1234'], 'retrain.arch'),
    (['space=imagenet', 'stage=retrain', 'retrain.model=MCT-NAS-Z'], 'retrain.model'),
    (['batch_size=0'], 'batch_size'),
])
def test_config_errors_name_the_key(tmp_path, opts, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        mct_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', *opts])


def test_missing_benchmark_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match='benchmark.path'):
        mct_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'stage=bench',
                       f'benchmark.path={tmp_path / "nope.json"}'])


def test_bad_input_exits_2_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FOLDER.parent), os.environ.get('PYTHONPATH', '')]))
    p = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}',
                        'mct.tau=-1'], cwd=FOLDER, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and 'mct.tau' in p.stderr and 'Traceback' not in p.stderr
