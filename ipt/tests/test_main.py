"""Smoke runs of the main job: pre-train -> outputs -> resume -> fine-tune -> test, and the error paths."""
import glob
import json
import os

import pytest

import main

TINY = ['device=cpu', 'data.image_size=32', 'data.train_size=8', 'data.test_size=2', 'model.n_feats=8',
        'model.patch_size=12', 'model.num_heads=2', 'batch_size=4', 'eval.tasks=[sr2,denoise30]']
TINY_ONE = TINY[:-1] + ['eval.tasks=[]']  # evaluate `task` only


def test_pretrain_writes_outputs_resumes_finetunes_and_tests(tmp_path, capsys):
    out = str(tmp_path / 'pre')
    res = main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={out}', 'epochs=1', *TINY])
    assert {'config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'} <= set(os.listdir(out))
    lines = [json.loads(x) for x in open(os.path.join(out, 'metrics.jsonl'))]
    assert [x['epoch'] for x in lines] == [0] and lines[0]['loss'] > lines[0]['l1'] > 0  # L1 + contrastive
    assert sum(lines[0]['steps_per_task'].values()) == 2
    assert set(k for k, v in lines[0]['steps_per_task'].items() if v) <= {'sr2', 'denoise30'}
    for task in ('sr2', 'denoise30'):
        r = res[task]['synthetic test']
        assert r['images'] == 2 and 0 < r['psnr_y'] < 100 and 0 < r['base_y'] < 100
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert 'Y-PSNR' in last and 'bicubic' in last and 'noisy input' in last

    main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={out}', 'epochs=2', *TINY])
    assert 'resumed from' in open(os.path.join(out, 'log.txt')).read()
    assert [json.loads(x)['epoch'] for x in open(os.path.join(out, 'metrics.jsonl'))] == [0, 1]

    ft = str(tmp_path / 'ft')
    res = main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={ft}', 'mode=finetune', 'task=denoise30',
                     f'pretrain={out}/last.pth', 'epochs=1', 'loss.con=none', *TINY_ONE])
    lines = [json.loads(x) for x in open(os.path.join(ft, 'metrics.jsonl'))]
    assert lines[0]['steps_per_task']['denoise30'] == 2 and 'con' not in lines[0]
    assert list(res) == ['denoise30']
    assert 'fine-tuning denoise30' in open(os.path.join(ft, 'log.txt')).read()

    te = str(tmp_path / 'te')
    res = main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={te}', 'mode=test', 'task=sr2',
                     f'pretrain={ft}/last.pth', 'eval.self_ensemble=true', *TINY_ONE])
    assert list(res) == ['sr2'] and res['sr2']['synthetic test']['psnr_y'] > 0


def test_paper_contrastive_switch(tmp_path):
    out = str(tmp_path / 'paper')
    main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={out}', 'epochs=1', 'loss.con=paper', *TINY])
    line = json.loads(open(os.path.join(out, 'metrics.jsonl')).readline())
    assert line['con'] != 0 and line['loss'] == pytest.approx(line['l1'] + 0.1 * line['con'], rel=1e-4)


def test_benchmark_test_mode_reads_layout(tmp_path):
    import numpy as np
    from PIL import Image
    root = tmp_path / 'data'
    rng = np.random.default_rng(0)
    (root / 'benchmark/Set5/HR').mkdir(parents=True)
    (root / 'benchmark/Set5/LR_bicubic/X2').mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (32, 30, 3), dtype=np.uint8)).save(root / 'benchmark/Set5/HR/a.png')
    Image.fromarray(rng.integers(0, 255, (16, 15, 3), dtype=np.uint8)).save(
        root / 'benchmark/Set5/LR_bicubic/X2/ax2.png')
    pre = str(tmp_path / 'pre')
    main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={pre}', 'epochs=1', *TINY])
    res = main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}/t', 'mode=test', 'task=sr2',
                     f'pretrain={pre}/last.pth', 'data.test.name=benchmark', f'data.test.root={root}',
                     'data.test.sets=[Set5]', *TINY_ONE])
    assert res['sr2']['Set5']['images'] == 1


@pytest.mark.parametrize('opts,match', [
    (['epochz=1'], 'epochz'), (['mode=train'], 'mode'), (['tasks=[sr2,deblur]'], 'deblur'),
    (['train_tasks=[sr5]'], 'sr5'), (['mode=finetune'], 'pretrain'), (['loss.con=infonce'], 'loss.con'),
    (['model.num_heads=5'], 'num_heads'), (['batch_size=1'], 'batch_size'),
    (['data.test.name=benchmark'], 'data.test.root')])
def test_bad_config_errors(tmp_path, opts, match):
    from common.errors import ConfigError
    with pytest.raises(ConfigError, match=match):
        main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}', *opts])


def test_missing_data_errors(tmp_path):
    from common.errors import CheckpointError, DatasetError
    with pytest.raises(DatasetError, match='benchmark/Set14/HR'):
        main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}/a', 'mode=test', 'pretrain=x.pth',
                   'data.test.name=benchmark', f'data.test.root={tmp_path}', 'data.test.sets=[Set14]', *TINY_ONE])
    with pytest.raises(CheckpointError):
        main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}/b', 'mode=test',
                   f'pretrain={tmp_path}/missing.pth', *TINY_ONE])


def test_every_config_loads():
    from common.config import load_config
    for path in ['cfg.yaml'] + glob.glob('configs/*.yaml'):
        load_config(path, defaults=main.DEFAULTS)
