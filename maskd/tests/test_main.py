"""Smoke runs of main.py on tiny synthetic data: the four stages, files, resume, stage 'distill', the
segmentation path and bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch

import main
from common.errors import CheckpointError, ConfigError
from losses import MasKDLoss

FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(FOLDER, 'cfg.yaml')
TINY = ['data.train_size=16', 'data.test_size=8', 'batch_size=8', 'eval_batch_size=8', 'model.fpn_channels=16',
        'teacher.backbone=resnet18', 'teacher.epochs=1', 'max_epochs=1', 'tokens.iters=2', 'tokens.batch_size=8',
        'warmup_iters=1', 'custom_mask_warmup=1']


def run(out, *opts):
    return main.main(['--cfg', CFG, '--opts', f'output_dir={out}', *TINY, *opts])


def metrics(out):
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('default')
    return out, run(out)


def test_default_pipeline_writes_its_files(first_run):
    out, result = first_run
    assert [r['stage'] for r in result['results']] == ['teacher', 'tokens', 'student:maskd', 'student:baseline']
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'teacher.pth', 'tokens.pth'):
        assert os.path.isfile(os.path.join(out, name)), name
    rows = metrics(out)
    assert [r['stage'] for r in rows] == ['teacher', 'tokens', 'student:maskd', 'student:baseline']
    assert rows[1]['dice_sum'] > 0 and all(f'dice_{i}' in rows[1] for i in range(5))
    assert rows[2]['loss_maskd'] > 0 and any(k.startswith('loss_head_') for k in rows[2]) and 'loss_maskd' not in rows[3]
    assert all(0 <= r['mAP'] <= 100 for r in rows if 'mAP' in r)
    with open(os.path.join(out, 'log.txt')) as f:
        log = f.read()
    assert 'box mAP@[.5:.95] (COCO-style) on synthetic_det test' in log and 'MasKD' in log and 'no KD' in log
    state = torch.load(os.path.join(out, 'last.pth'), map_location='cpu', weights_only=False)
    assert state['epoch'] == 4 and state['stage_name'] == 'student:baseline'


def test_tokens_file_is_official_and_frozen_in_stage_two(first_run):
    out, _ = first_run
    tok = torch.load(os.path.join(out, 'tokens.pth'), map_location='cpu', weights_only=False)
    loss = MasKDLoss([16] * 5, num_tokens=6)
    loss.load_tokens(tok)                                             # strict, official key names
    assert set(tok['state_dict']) == set(loss.state_dict())
    # the MasKD student's checkpoint holds the student and the align convs, never the tokens
    first = torch.load(os.path.join(out, 'last.pth'), map_location='cpu', weights_only=False)
    assert not any('mask_modules' in k for k in first['model'])


def test_resume_after_a_kill_between_stages(tmp_path, monkeypatch):
    real = main.train_model_stage
    trained = []

    def dies_at_baseline(run_, cfg, idx, st, *args, **kwargs):
        if st['name'] == 'student:baseline':
            raise KeyboardInterrupt
        trained.append(st['name'])
        return real(run_, cfg, idx, st, *args, **kwargs)

    monkeypatch.setattr(main, 'train_model_stage', dies_at_baseline)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path)
    assert trained == ['teacher', 'student:maskd']
    before = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert before['epoch'] == 3 and before['stage_name'] == 'student:maskd'
    trained.clear()
    monkeypatch.setattr(main, 'tokens_stage', lambda *a, **k: pytest.fail('tokens learned again'))

    def records(run_, cfg, idx, st, *args, **kwargs):
        trained.append(st['name'])
        return real(run_, cfg, idx, st, *args, **kwargs)

    monkeypatch.setattr(main, 'train_model_stage', records)
    res = run(tmp_path)
    assert trained == ['student:baseline']                           # teacher, tokens, MasKD student kept
    assert res['results'][:3] == before['results']
    assert [r['stage'] for r in metrics(tmp_path)] == ['teacher', 'tokens', 'student:maskd', 'student:baseline']
    with open(tmp_path / 'log.txt') as f:
        assert 'resumed from' in f.read()


def test_stage_distill_resumes_inside_the_stage(first_run, tmp_path):
    out, _ = first_run
    opts = ['stage=distill', f"teacher.ckpt={out / 'teacher.pth'}", f"tokens_ckpt={out / 'tokens.pth'}",
            'baseline=false', 'teacher.epochs=0']
    res = run(tmp_path, *opts)
    assert [r['stage'] for r in res['results']] == ['student:maskd']
    assert res['teacher'] is not None and 'mAP' in res['teacher']     # the given teacher is evaluated
    run(tmp_path, *opts, 'max_epochs=2')
    rows = metrics(tmp_path)
    assert [(r['stage'], r['epoch']) for r in rows] == [('student:maskd', 0), ('student:maskd', 1)]
    with pytest.raises(CheckpointError):                              # another stage layout in the same folder
        run(tmp_path, *opts[:-2], 'baseline=true', 'teacher.epochs=0')


def test_segmentation_path(tmp_path):
    res = run(tmp_path, 'task=seg', 'model.detector=deeplabv3', 'extra_head_losses=[]', 'loss_weight=1.0',
              'num_tokens=8', 'tokens.optimizer=sgd', 'tokens.schedule=poly', 'tokens.lr=0.1', 'lr_policy=poly',
              'baseline=false')
    assert [r['stage'] for r in res['results']] == ['teacher', 'tokens', 'student:maskd']
    assert all(0 <= r['mIoU'] <= 100 for r in res['results'] if 'mIoU' in r)
    tok = torch.load(tmp_path / 'tokens.pth', map_location='cpu', weights_only=False)
    assert tok['state_dict']['mask_modules.0.mask_token'].shape == (8, 6)   # 5 classes + background
    rows = metrics(tmp_path)
    assert rows[-1]['loss_maskd'] > 0


@pytest.mark.parametrize('opts,key', [
    (['stage=bogus'], 'stage'),
    (['num_tokens=1'], 'num_tokens'),
    (['teacher.epochs=0'], 'teacher.ckpt'),
    (['extra_head_losses=[{type: l2}]'], 'extra_head_losses[0]'),
    (['stage=distill', 'teacher.ckpt=x.pth'], 'tokens_ckpt'),
    (['model.detector=yolo'], 'model.detector'),
    (['data.name=cifar10'], 'data.name'),
    (['model.anchor_sizes=[8, 16]'], 'model.anchor_sizes'),
])
def test_bad_config_names_the_key(tmp_path, opts, key):
    with pytest.raises(ConfigError, match=key.replace('[', r'\[').replace(']', r'\]')):
        run(tmp_path, *opts)


def test_bad_input_exits_2_without_traceback(tmp_path):
    missing = tmp_path / 'nope.pth'
    proc = subprocess.run([sys.executable, 'main.py', '--cfg', CFG, '--opts', f'output_dir={tmp_path}',
                           f'teacher.ckpt={missing}', 'tokens_ckpt=t.pth', 'stage=distill'],
                          cwd=FOLDER, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 2, proc.stderr
    assert 'nope.pth' in proc.stderr and 'Traceback' not in proc.stderr
