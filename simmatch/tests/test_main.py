"""The main job end to end on a tiny synthetic setting: files written, resume, the supervised-only twin, errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import main as main_mod
from common.errors import ConfigError, DatasetError

FOLDER = Path(__file__).resolve().parents[1]
TINY = ['data.train_size=60', 'data.test_size=30', 'data.num_labels=20', 'batch_size=4', 'mu=2',
        'iters_per_epoch=2', 'epochs=2', 'eval_freq=1', 'device=cpu', 'dim=16']


def _run(tmp_path, *opts, cfg=FOLDER / 'cfg.yaml'):
    return main_mod.main(['--cfg', str(cfg), '--opts', f'output_dir={tmp_path}', *TINY, *opts])


def _metrics(path):
    return [json.loads(line) for line in open(path)]


def test_smoke_run_writes_outputs_and_resumes(tmp_path):
    result = _run(tmp_path)
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'):
        assert (tmp_path / name).is_file(), name
        assert (tmp_path / 'supervised_only' / name).is_file(), name
    assert 0.0 <= result['top1'] <= 100.0 and 0.0 <= result['supervised_only']['top1'] <= 100.0
    rows = _metrics(tmp_path / 'metrics.jsonl')
    assert [r['epoch'] for r in rows] == [0, 1] and 'top1' in rows[-1]
    assert rows[0]['loss_in'] == 0.0 and rows[1]['loss_in'] > 0.0  # L_in starts at epoch 1
    sup = _metrics(tmp_path / 'supervised_only' / 'metrics.jsonl')
    assert all(abs(r['loss'] - r['loss_x']) < 1e-6 for r in sup)   # unlabeled losses weighted by zero
    assert sup[0]['loss_x'] == pytest.approx(rows[0]['loss_x'])      # same init, labels and order in epoch 0
    ckpt = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert ckpt['epoch'] == 2 and ckpt['model']['bank'].shape == (16, 20)
    assert set(ckpt['model']['labels'].tolist()) <= set(range(10))

    # a restart with more epochs continues from last.pth (both runs)
    _run(tmp_path, 'epochs=3')
    rows = _metrics(tmp_path / 'metrics.jsonl')
    assert [r['epoch'] for r in rows] == [0, 1, 2]
    assert 'resumed from' in (tmp_path / 'log.txt').read_text()
    assert [r['epoch'] for r in _metrics(tmp_path / 'supervised_only' / 'metrics.jsonl')] == [0, 1, 2]
    ckpt3 = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert ckpt3['epoch'] == 3

    # the official checkpoint format ('state_dict' with DDP's 'module.' prefix) evaluates to the same top-1
    official = {'epoch': 3, 'arch': 'SimMatch', 'state_dict': {'module.' + k: v for k, v in ckpt3['model'].items()}}
    torch.save(official, tmp_path / 'official.pth')
    ev = _run(tmp_path / 'eval', 'evaluate=true', f'checkpoint={tmp_path / "official.pth"}')
    assert ev['top1'] == pytest.approx(_metrics(tmp_path / 'metrics.jsonl')[-1]['top1'])


def test_imagenet_style_step_with_ema_teacher(tmp_path):
    cfg = yaml.safe_load(open(FOLDER / 'cfg.yaml'))
    cfg['bank_m'] = None  # overwrite the bank slots (ImageNet); null cannot be given through --opts
    (tmp_path / 'in.yaml').write_text(yaml.safe_dump(cfg))
    result = _run(tmp_path / 'out', 'compare_supervised=false', 'use_ema_teacher=true', 'data.style=imagenet',
                  'lr_schedule=cos', 'warmup_epoch=1', 'eval_model=student', 'threshold=0.7', 'lambda_u=10',
                  'lambda_in=5', 'aggregation=product', 'randaug=true', 'epochs=2', 'lr=0.03', cfg=tmp_path / 'in.yaml')
    tmp_path = tmp_path / 'out'
    assert 'supervised_only' not in result
    assert not (tmp_path / 'supervised_only').exists()
    rows = _metrics(tmp_path / 'metrics.jsonl')
    assert rows[0]['lr'] < 0.03 and rows[1]['lr'] == pytest.approx(0.03)  # warm-up, then cosine at epoch 1


@pytest.mark.parametrize('opt, key', [
    ('threshold=1.5', 'threshold'), ('aggregation=sum', 'aggregation'), ('bank_m=1.2', 'bank_m'),
    ('bank_norm_dim=2', 'bank_norm_dim'), ('eval_model=teacher', 'eval_model'), ('lr_schedule=poly', 'lr_schedule'),
    ('backbone=vgg', 'backbone'), ('mu=0', 'mu'), ('K=7', 'K'), ('data.num_labels=25', 'num_labels'),
    ('tt=0', 'tt'), ('nope=1', 'nope'),
])
def test_bad_config_is_a_config_error_naming_the_key(tmp_path, opt, key):
    with pytest.raises(ConfigError, match=key):
        _run(tmp_path, opt)


def test_missing_split_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match='split file'):
        _run(tmp_path, f'data.split_file={tmp_path / "split_1p_index.txt"}')


def test_labeled_subset_from_file_list(tmp_path):
    split = tmp_path / 'labels.txt'
    split.write_text('\n'.join(str(i) for i in range(20)) + '\n')  # indices 0..19: two per class
    _run(tmp_path / 'out', f'data.split_file={split}', 'compare_supervised=false', 'epochs=1')
    ckpt = torch.load(tmp_path / 'out' / 'last.pth', map_location='cpu', weights_only=False)
    assert ckpt['model']['bank'].shape[1] == 20


def test_load_moco_maps_encoder_q_and_mlp(tiny_encoder, tmp_path):
    from models import ResNet, SimMatch
    src = ResNet(tiny_encoder, 3, dim=4)
    moco = {'module.encoder_q.' + k[len('backbone.'):]: v for k, v in src.state_dict().items()
            if k.startswith('backbone.')}
    moco.update({'module.encoder_q.fc.0.weight': src.head[0].weight, 'module.encoder_q.fc.0.bias': src.head[0].bias,
                 'module.encoder_q.fc.2.weight': src.head[2].weight, 'module.encoder_q.fc.2.bias': src.head[2].bias,
                 'module.encoder_k.conv.weight': torch.zeros(6, 3, 3, 3), 'module.queue': torch.zeros(4, 8)})
    net = SimMatch(tiny_encoder, num_classes=3, K=4, dim=4)
    torch.save({'state_dict': moco}, tmp_path / 'moco.pth')
    missing = main_mod.load_moco(net, tmp_path / 'moco.pth')
    assert set(missing) == {'fc.weight', 'fc.bias'}  # the classifier starts from scratch
    for k, v in src.state_dict().items():
        if not k.startswith('fc.'):
            assert torch.equal(net.main.state_dict()[k], v) and torch.equal(net.ema.state_dict()[k], v), k


def test_cli_error_exit_code_2_without_traceback(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, 'main.py', '--opts', 'threshold=2', f'output_dir={tmp_path}'],
                          cwd=FOLDER, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert 'threshold' in proc.stderr and 'Traceback' not in proc.stderr
