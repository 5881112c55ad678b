"""main.py: a smoke run that checks its files, resumption, the other modes and bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main
import model as M
from common.errors import ConfigError

FOLDER = Path(__file__).resolve().parents[1]
TINY = ['data.train_size=48', 'data.test_size=20', 'batch_size=16', 'input_size=32', 'model.arch=custom',
        'model.embed_dims=[16,32]', 'model.num_layers=[1,1]', 'model.num_heads=[1,2]', 'model.mlp_ratios=[8,4]',
        'model.num_tokens=2', 'model.window_size=2', 'model.neck_dim=32', 'warmup_epochs=1',
        'aug.test_crop_ratio=1.0',
        # the paper's full recipe, which the embedded default switches off
        'aug.aa=rand-m9-mstd0.5', 'aug.reprob=0.25', 'mixup.mixup=0.2', 'mixup.cutmix=1.0', 'mixup.prob=1.0']


def _run(tmp_path, *opts):
    return main.main(['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={tmp_path}', *TINY, *opts])


def _epochs(tmp_path):
    with open(tmp_path / 'metrics.jsonl') as f:
        return [json.loads(line) for line in f]


def test_train_writes_outputs_and_resumes(tmp_path):
    headline = _run(tmp_path, 'epochs=1')
    assert 'top-1 on synthetic test' in headline
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'best.pth'):
        assert (tmp_path / name).is_file(), name
    rows = _epochs(tmp_path)
    assert [r['epoch'] for r in rows] == [1] and 0 <= rows[0]['top1'] <= 100 and rows[0]['train_loss'] > 0
    state = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert state['epoch'] == 1 and 'optimizer' in state and 'stages.0.0.attn.qkv.weight' in state['model']
    first_weights = state['model']['head.weight'].clone()

    _run(tmp_path, 'epochs=2')  # restarted with a longer schedule: continues at epoch 2
    rows = _epochs(tmp_path)
    assert [r['epoch'] for r in rows] == [1, 2]
    assert 'resumed from' in (tmp_path / 'log.txt').read_text()
    state = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert state['epoch'] == 2 and not torch.equal(state['model']['head.weight'], first_weights)

    # eval mode on our own checkpoint through model.pretrained (strict load)
    headline = _run(tmp_path / 'ev', 'mode=eval', f'model.pretrained={tmp_path / "last.pth"}')
    assert 'top-1' in headline


def test_flops_mode_reports_both_counts(tmp_path):
    headline = _run(tmp_path, 'mode=flops')
    row = _epochs(tmp_path)[0]
    net = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                     num_tokens=2, window_size=2, neck_dim=32, num_classes=10)
    assert row['params'] == sum(p.numel() for p in net.parameters())
    assert row['analytic_macs'] == net.flops((3, 32, 32))
    assert row['torch_flops'] > row['analytic_macs']
    assert 'FLOPs' in headline


def test_pretrained_official_layout_loads_strictly(tmp_path):
    net = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                     num_tokens=2, window_size=2, neck_dim=32, num_classes=10)
    torch.save({'state_dict': net.state_dict(), 'epoch': 300}, tmp_path / 'ckpt.pth')
    other = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                       num_tokens=2, window_size=2, neck_dim=32, num_classes=10)
    main.load_pretrained(other, str(tmp_path / 'ckpt.pth'))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    wrong = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 2], num_heads=[1, 2], mlp_ratios=[8, 4],
                       num_tokens=2, window_size=2, neck_dim=32, num_classes=10)
    from common.errors import CheckpointError
    with pytest.raises(CheckpointError, match='missing keys'):
        main.load_pretrained(wrong, str(tmp_path / 'ckpt.pth'))


@pytest.mark.parametrize('opt, key', [
    ('input_size=40', 'input_size'),              # 5x5 tokens do not split into 2x2 windows
    ('model.arch=lightvit_huge', 'model.arch'),
    ('mode=search', 'mode'),
    ('model.num_heads=[3,2]', 'model.embed_dims'),
    ('model.num_layers=[1]', 'model.num_layers'),
    ('aug.aa=rand-q9', 'aug.aa'),
    ('mixup.mode=elem', 'mixup.mode'),
    ('lr_scaling=sqrt', 'lr_scaling'),
    ('aug.reprob=1.5', 'aug.reprob'),
    ('batch_size=0', 'batch_size'),
])
def test_bad_options_name_their_key(tmp_path, opt, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        _run(tmp_path, opt)


def test_unknown_key_and_cli_exit_code(tmp_path):
    with pytest.raises(ConfigError, match='unknown config key'):
        _run(tmp_path, 'model.depth=3')
    env = dict(os.environ, PYTHONPATH=str(FOLDER.parent), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--local_rank=0', '--opts',
                           f'output_dir={tmp_path}', 'input_size=36'], cwd=FOLDER, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error:') and 'input_size' in proc.stderr and 'Traceback' not in proc.stderr


def test_launcher_rank_flags_are_accepted():
    assert main._strip_launcher_args(['--local_rank=1', '--cfg', 'a.yaml']) == ['--cfg', 'a.yaml']
    assert main._strip_launcher_args(['--local-rank', '0', '--opts', 'x=1']) == ['--opts', 'x=1']


def test_table_and_bench_scripts(capsys):
    import bench
    import tables
    net = M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                     num_tokens=2, window_size=2, neck_dim=32, num_classes=10)
    assert net.flops((3, 32, 32)) < tables.torch_macs(net, 32) < 1.2 * net.flops((3, 32, 32))
    assert sum(p.numel() for p in tables.deit_tiny().parameters()) == 5_717_416
    assert set(bench.models()) == {'LightViT-T', 'ResNet-18', 'DeiT-Tiny-sized ViT'}
