"""Smoke runs of main.py on tiny synthetic data: files, the three students, resume, checkpoints, bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch

import main
import models
from common.errors import CheckpointError, ConfigError

FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(FOLDER, 'cfg.yaml')
TINY = ['data.train_size=64', 'data.test_size=32', 'batch_size=16', 'teacher_epochs=1', 'epochs=1']


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
    stages = [r['stage'] for r in result['results']]
    assert stages == ['teacher', 'student:dist_t4', 'student:kd', 'student:none']
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'best.pth', 'teacher.pth'):
        assert os.path.isfile(os.path.join(out, name)), name
    rows = metrics(out)
    assert [r['stage'] for r in rows] == stages
    assert all(0 <= r['top1'] <= 100 and r['train_loss'] > 0 for r in rows)
    assert rows[1]['kd_loss'] > 0 and rows[3]['kd_loss'] == 0        # DIST student vs student alone
    state = torch.load(os.path.join(out, 'last.pth'), map_location='cpu', weights_only=False)
    assert state['epoch'] == 4 and len(state['results']) == 4
    with open(os.path.join(out, 'log.txt')) as f:
        log = f.read()
    assert 'top-1 on synthetic test' in log and 'DIST (T=4)' in log and 'KD (T=4)' in log and 'alone' in log
    assert result['teacher_top1'] == pytest.approx(result['results'][0]['top1'])


def test_teacher_checkpoint_and_one_code_path(first_run, tmp_path):
    """teacher.pth (official {'model': ...} format) loads as teacher_ckpt; with kd_loss_weight = 0 the DIST
    student is exactly the student trained alone: same initialisation, same batches, same steps."""
    out, first = first_run
    res = run(tmp_path, f"teacher_ckpt={out / 'teacher.pth'}", 'teacher_epochs=0', 'kd=dist_t4', 'kd_loss_weight=0',
              'kd_chunk_size=8', 'compare=[{kd: ""}]')
    assert [r['stage'] for r in res['results']] == ['student:dist_t4', 'student:none']
    assert res['teacher_top1'] == pytest.approx(first['results'][0]['top1'])
    a, b = metrics(tmp_path)
    assert a['train_loss'] == pytest.approx(b['train_loss'], rel=1e-6) and a['top1'] == b['top1']
    assert a['kd_loss'] > 0 and b['kd_loss'] == 0


def test_resume_after_a_kill_between_stages(tmp_path, monkeypatch):
    real = main.train_stage
    trained = []

    def dies_at_stage_2(run_, cfg, idx, *args, **kwargs):
        if idx == 2:
            raise KeyboardInterrupt
        trained.append(idx)
        return real(run_, cfg, idx, *args, **kwargs)

    monkeypatch.setattr(main, 'train_stage', dies_at_stage_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path)
    assert trained == [0, 1]
    before = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert before['epoch'] == 2 and [r['stage'] for r in before['results']] == ['teacher', 'student:dist_t4']

    trained.clear()

    def records(run_, cfg, idx, *args, **kwargs):
        trained.append(idx)
        return real(run_, cfg, idx, *args, **kwargs)

    monkeypatch.setattr(main, 'train_stage', records)
    res = run(tmp_path)
    assert trained == [2, 3]                                           # teacher and DIST student not retrained
    assert res['results'][:2] == before['results']
    assert res['teacher_top1'] == pytest.approx(before['results'][0]['top1'])   # teacher restored from last.pth
    assert [r['stage'] for r in metrics(tmp_path)] == ['teacher', 'student:dist_t4', 'student:kd', 'student:none']
    with open(tmp_path / 'log.txt') as f:
        assert 'resumed from' in f.read()


B2_STYLE = ['kd=', 'compare=[]', 'teacher_epochs=0', 'data.transform=imagenet', 'aa=rand-m9-mstd0.5', 'reprob=0.2',
            'opt=rmsproptf', 'opt_eps=0.001', 'lr=0.01', 'weight_decay=1e-5', 'opt_no_filter=false', 'smoothing=0.1',
            'sched=step', 'warmup_epochs=1', 'warmup_lr=1e-6', 'decay_epochs=2.4', 'decay_rate=0.97',
            'model_ema=true', 'model_ema_decay=0.9']


def test_resume_inside_a_stage(tmp_path):
    """The B2 machinery (RandAugment, erasing, RMSpropTF, staircase warm-up, EMA) in a plain CE run, resumed."""
    run(tmp_path, *B2_STYLE)
    first = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert first['ema'] is not None and first['optimizer']['state']
    res = run(tmp_path, *B2_STYLE, 'epochs=2')
    rows = metrics(tmp_path)
    assert [r['epoch'] for r in rows] == [0, 1]                      # only the second epoch was trained
    assert all('top1_raw' in r for r in rows)                        # EMA metrics replace the raw model's
    assert rows[0]['lr'] == pytest.approx(1e-6) and rows[1]['lr'] == pytest.approx(0.01)   # staircase warm-up
    assert res['teacher_top1'] is None and res['results'][0]['stage'] == 'student:none'
    state = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert state['epoch'] == 2
    assert any(not torch.equal(first['model'][k], state['model'][k]) for k in state['model'])
    assert any(not torch.equal(first['ema'][k], state['ema'][k]) for k in state['ema'])
    with pytest.raises(CheckpointError, match='other stages'):      # another stage plan in the same folder
        run(tmp_path)


@pytest.mark.parametrize('opts,match', [
    (['kd=dist_x'], "'kd'"),
    (['compare=[{kd: kd, lr: 1}]'], 'compare'),
    (['compare=[{kd: foo}]'], 'compare'),
    (['kd_chunk_size=5'], 'kd_chunk_size'),
    (['model=cifar_resnet9'], "'model'"),
    (['teacher_model=tv_nope'], 'teacher_model'),
    (['teacher_epochs=0'], 'teacher'),
    (['sched=poly'], 'sched'),
    (['smoothing=1.5'], 'smoothing'),
    (['aa=rand-x9'], "'aa'"),
    (['lr_typo=1'], 'lr_typo'),
])
def test_config_errors(tmp_path, opts, match):
    with pytest.raises(ConfigError, match=match):
        run(tmp_path, *opts)


def test_teacher_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match='does not exist'):
        run(tmp_path, f"teacher_ckpt={tmp_path / 'missing.pth'}", 'teacher_epochs=0')
    wrong = tmp_path / 'resnet8.pth'
    torch.save({'model': models.build_model('cifar_resnet8', 10).state_dict()}, wrong)   # not a ResNet-20
    with pytest.raises(CheckpointError, match='teacher'):
        run(tmp_path, f'teacher_ckpt={wrong}', 'teacher_epochs=0')
    junk = tmp_path / 'junk.pth'
    torch.save({'epoch': 3}, junk)
    with pytest.raises(CheckpointError, match='no model state dict'):
        run(tmp_path, f'teacher_ckpt={junk}', 'teacher_epochs=0')


def test_bad_input_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}',
                           'kd=nonsense'], cwd=FOLDER, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert 'error:' in proc.stderr and "'kd'" in proc.stderr and 'Traceback' not in proc.stderr
