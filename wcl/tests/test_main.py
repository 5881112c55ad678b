"""Smoke run of the main job: outputs, resume, error paths."""
import json
import os

import pytest

import main

TINY = ['data.image_size=16', 'data.train_size=64', 'data.test_size=40', 'width=4', 'dim_hidden=32', 'dim=16',
        'batch_size=16', 'warm_up=1', 'eval.knn.k=10', 'device=cpu']


def test_smoke_run_writes_outputs_and_resumes(tmp_path, capsys):
    out = str(tmp_path / 'run')
    res = main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={out}', 'epochs=2', *TINY])
    assert {'config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'} <= set(os.listdir(out))
    lines = [json.loads(x) for x in open(os.path.join(out, 'metrics.jsonl'))]
    assert [x['epoch'] for x in lines] == [-1, 0, 1]
    assert lines[1]['aug'] == 'moco' and lines[2]['aug'] == 'simclr'  # augmentation warm-up switch
    assert all(x['loss'] > 0 for x in lines[1:])
    assert 0 <= res['knn_top1'] <= 100
    assert 'kNN top-1' in capsys.readouterr().out.strip().splitlines()[-1]
    res2 = main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={out}', 'epochs=3', *TINY])
    assert 'resumed from' in open(os.path.join(out, 'log.txt')).read()
    lines = [json.loads(x) for x in open(os.path.join(out, 'metrics.jsonl'))]
    assert [x['epoch'] for x in lines] == [-1, 0, 1, 2] and res2['knn_init'] == res['knn_init']


def test_linear_probe_and_finetune_options(tmp_path):
    out = str(tmp_path / 'eval')
    res = main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={out}', 'epochs=2', *TINY,
                     'eval.linear.enabled=true', 'eval.linear.epochs=1', 'eval.linear.batch_size=16',
                     'eval.finetune.enabled=true', 'eval.finetune.num_per_class=2', 'eval.finetune.epochs=1',
                     'eval.finetune.batch_size=10'])
    assert 0 <= res['linear_top1'] <= 100 and 0 <= res['finetune_top1'] <= 100


@pytest.mark.parametrize('opts,match', [(['epochz=1'], 'epochz'), (['warm_up=5', 'epochs=3'], 'warm_up'),
                                         (['backbone=vgg'], 'backbone'), (['batch_size=1'], 'batch_size')])
def test_bad_config_errors(tmp_path, opts, match):
    from common.errors import ConfigError
    with pytest.raises(ConfigError, match=match):
        main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}', *opts])


def test_every_config_loads():
    import glob
    from common.config import load_config
    for path in ['cfg.yaml'] + glob.glob('configs/*.yaml'):
        load_config(path, defaults=main.DEFAULTS)
