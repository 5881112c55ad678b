"""The main job: a tiny search + brief evaluation that writes its files and resumes, the train task, and the error
paths."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main as topo_main
from common.errors import ConfigError
from genotypes import in_degrees, parse_genotype

FOLDER = Path(__file__).resolve().parents[1]
CFG = str(FOLDER / 'cfg.yaml')
TINY = ['layers=3', 'init_channels=4', 'batch_size=8', 'data.image_size=8', 'data.train_size=32',
        'data.test_size=16', 'eval.layers=3', 'eval.init_channels=4', 'eval.batch_size=16', 'report_freq=100']


def _metrics(out):
    return [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]


def test_search_then_eval_writes_outputs_and_resumes(tmp_path):
    out = tmp_path / 'run'
    res = topo_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'epochs=1', 'eval.epochs=1', *TINY])
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'):
        assert (out / name).is_file()
    g = res['genotype']
    assert list(in_degrees(g.normal)) == [2, 3, 4, 5]
    assert res['eval']['params'] > 0 and 0 <= res['eval']['test_top1'] <= 100
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['epoch'] == 1 and state['eval_model_epoch'] == 1
    assert parse_genotype(state['genotype']) == g
    assert 'betas_normal' in state['model'] and 'architect_optimizer' in state
    log = (out / 'log.txt').read_text()
    assert 'DARTS rule on the same alphas' in log and 'edge marginals' in log
    # a killed run restarted with more epochs: the search goes on from epoch 1, then the evaluation
    topo_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'epochs=2', 'eval.epochs=1', *TINY])
    log = (out / 'log.txt').read_text()
    assert 'resumed from' in log and 'at epoch 1' in log
    search_epochs = [m['epoch'] for m in _metrics(out) if 'valid_acc' in m]
    assert search_epochs == [0, 1]
    state = torch.load(out / 'last.pth', weights_only=False)
    assert state['epoch'] == 2


def test_eval_phase_resumes_after_the_search(tmp_path):
    out = tmp_path / 'run'
    cmp = 'eval.compare_darts_rule=true'
    topo_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'epochs=1', 'eval.epochs=1', cmp, *TINY])
    res = topo_main.main(['--cfg', CFG, '--opts', f'output_dir={out}', 'epochs=1', 'eval.epochs=2', cmp, *TINY])
    evals = [m['epoch'] for m in _metrics(out) if m.get('phase') == 'eval']
    assert evals == [0, 1]  # the search was not repeated; the evaluation went on from its epoch 1
    assert [m['epoch'] for m in _metrics(out) if m.get('phase') == 'eval_darts_rule'] == [0, 1]
    assert len([m for m in _metrics(out) if 'valid_acc' in m]) == 1
    # the DARTS-rule cell of the same alphas has two inputs per node
    darts_rule = [m for m in _metrics(out) if m.get('phase') == 'result_darts_rule'][-1]
    assert set(in_degrees(parse_genotype(darts_rule['genotype']).normal).values()) == {2}
    assert res['eval']['darts_rule']['params'] == darts_rule['params']


@pytest.mark.parametrize('opts', [['topo_param=combination', 'topo_k=2'], ['base=pcdarts', 'topo_param=none',
                                                                          'init_channels=8', 'arch_start_epoch=1'],
                                  ['unrolled=true', 'topo_k=2']])
def test_search_variants(tmp_path, opts):
    res = topo_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'epochs=1', 'eval.epochs=0', *TINY,
                          *opts])
    assert set(in_degrees(res['genotype'].normal).values()) == {2} and res['eval'] is None


def test_train_task(tmp_path):
    res = topo_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', 'task=train', 'arch=DARTS_V1',
                          'epochs=1', 'auxiliary=true', 'cutout=true', 'cutout_length=4', *TINY,
                          'data.image_size=32'])
    assert res['params'] > 0 and (tmp_path / 'best.pth').is_file()
    state = torch.load(tmp_path / 'last.pth', weights_only=False)
    assert state['epoch'] == 1 and any(k.startswith('auxiliary_head') for k in state['model'])


@pytest.mark.parametrize('opts,key', [
    (['task=evaluate'], 'task'),
    (['topo_param=vertex'], 'topo_param'),
    (['base=gdas'], 'base'),
    (['pa_reg=l1'], 'pa_reg'),
    (['pa_weight=-1'], 'pa_weight'),
    (['topo_k=-2'], 'topo_k'),
    (['train_portion=1.5'], 'train_portion'),
    (['drop_path_prob=1.0'], 'drop_path_prob'),
    (['layers=2'], 'layers'),
    (['data.image_size=18'], 'data.image_size'),
    (['task=train', 'arch=NOPE'], 'arch'),
    (['base=pcdarts', 'init_channels=12'], 'init_channels'),
    (['eval.batch_size=0'], 'eval.batch_size'),
    (['task=train', 'auxiliary=true', 'data.image_size=16'], 'auxiliary'),
])
def test_config_errors_name_the_key(tmp_path, opts, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        topo_main.main(['--cfg', CFG, '--opts', f'output_dir={tmp_path}', *opts])


def test_bad_input_exits_2_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FOLDER.parent), os.environ.get('PYTHONPATH', '')]))
    p = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}',
                        'topo_param=vertex'], cwd=FOLDER, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and 'topo_param' in p.stderr and 'Traceback' not in p.stderr


def test_train_imagenet_task_on_a_tiny_image_folder(tmp_path):
    from PIL import Image
    root = tmp_path / 'imnet'
    g = torch.Generator().manual_seed(0)
    for split in ('train', 'val'):
        for c in ('a', 'b'):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                arr = (torch.rand(72, 72, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / split / c / f'{i}.png')
    res = topo_main.main(['--cfg', str(FOLDER / 'configs' / 'train_imagenet.yaml'), '--opts',
                          f'output_dir={tmp_path / "out"}', f'data.root={root}', 'data.image_size=64',
                          'data.num_workers=0', 'epochs=1', 'batch_size=4', 'layers=3', 'init_channels=8',
                          'auxiliary=false', 'device=cpu'])
    assert res['params'] > 0 and 0 <= res['test_top1'] <= 100
    assert (tmp_path / 'out' / 'last.pth').is_file()
