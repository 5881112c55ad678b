"""main.py: smoke runs that check the files written, resumption across both phases, the modes, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main
from common.errors import CheckpointError, ConfigError

FOLDER = Path(__file__).resolve().parents[1]
TINY = ['data.train_size=32', 'data.test_size=16', 'model.arch=custom', 'model.embed_dim=8',
        'model.depths=[1,1,1]', 'model.num_heads=[1,1,2]', 'model.window_size=4', 'model.img_size=32',
        'model.patch_size=2', 'model.decoder_embed_dim=16', 'model.decoder_num_heads=2',
        'pretrain.batch_size=16', 'finetune.batch_size=16', 'pretrain.warmup_epochs=1', 'finetune.warmup_epochs=1',
        # the fine-tuning recipe that the embedded default switches off
        'finetune.aug.randaug=true', 'finetune.aug.reprob=0.25', 'finetune.mixup.mixup=0.8',
        'finetune.mixup.cutmix=1.0']


def _run(out, *opts):
    return main.main(['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={out}', *TINY, *opts])


def _rows(out):
    with open(out / 'metrics.jsonl') as f:
        return [json.loads(line) for line in f]


def test_both_phases_write_outputs_and_resume(tmp_path):
    headline = _run(tmp_path, 'pretrain.epochs=1', 'finetune.epochs=1')
    assert 'fine-tuned top-1' in headline
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'best.pth', 'pretrained.pth'):
        assert (tmp_path / name).is_file(), name
    rows = _rows(tmp_path)
    assert [(r['phase'], r['epoch']) for r in rows] == [('pretrain', 1), ('finetune', 2)]
    assert rows[0]['pretrain_loss'] > 0 and 0 <= rows[1]['top1'] <= 100
    pre = torch.load(tmp_path / 'pretrained.pth', map_location='cpu', weights_only=False)['model']
    state = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert state['phase'] == 'finetune' and state['epoch'] == 2 and 'head.weight' in state['model']
    assert 'encoder.layers.0.blocks.0.attn.qkv.weight' in pre and 'decoder_pred.weight' in pre
    head = state['model']['head.weight'].clone()

    _run(tmp_path, 'pretrain.epochs=1', 'finetune.epochs=2')  # restarted longer: continues fine-tuning
    rows = _rows(tmp_path)
    assert [(r['phase'], r['epoch']) for r in rows] == [('pretrain', 1), ('finetune', 2), ('finetune', 3)]
    assert 'resumed from' in (tmp_path / 'log.txt').read_text()
    state = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert state['epoch'] == 3 and not torch.equal(state['model']['head.weight'], head)


def test_killed_pretraining_resumes_then_finetunes(tmp_path):
    _run(tmp_path, 'mode=pretrain', 'pretrain.epochs=1')
    first = torch.load(tmp_path / 'last.pth', map_location='cpu', weights_only=False)
    assert first['phase'] == 'pretrain' and first['epoch'] == 1
    # the same folder in mode=both: pre-training continues at epoch 2, then fine-tuning starts from it
    headline = _run(tmp_path, 'pretrain.epochs=2', 'finetune.epochs=1')
    rows = _rows(tmp_path)
    assert [(r['phase'], r['epoch']) for r in rows] == [('pretrain', 1), ('pretrain', 2), ('finetune', 3)]
    assert 'pre-trained in this run' in (tmp_path / 'log.txt').read_text() and 'top-1' in headline
    with pytest.raises(ConfigError, match='mode'):
        _run(tmp_path, 'mode=pretrain', 'pretrain.epochs=3')  # a fine-tuning checkpoint is there now


def test_finetune_mode_from_checkpoint_strict(tmp_path):
    _run(tmp_path / 'pre', 'mode=pretrain', 'pretrain.epochs=1')
    ckpt = tmp_path / 'pre' / 'pretrained.pth'
    headline = _run(tmp_path / 'ft', 'mode=finetune', 'finetune.epochs=1', f'finetune.pretrained={ckpt}',
                    'finetune.legacy_merge_order=true')
    assert 'top-1' in headline and f"fine-tuning from '{ckpt}'" in (tmp_path / 'ft' / 'log.txt').read_text()
    # an encoder of another width does not fit: a clear CheckpointError
    with pytest.raises(CheckpointError, match='shape mismatch'):
        _run(tmp_path / 'ft2', 'mode=finetune', 'finetune.epochs=1', f'finetune.pretrained={ckpt}',
             'model.embed_dim=16')


def test_flops_mode(tmp_path):
    headline = _run(tmp_path, 'mode=flops')
    row = _rows(tmp_path)[0]
    assert row['dense_macs'] > row['green_macs'] > 0 and 'fewer' in headline
    assert row['ratio'] == pytest.approx(row['dense_macs'] / row['green_macs'])


@pytest.mark.parametrize('opt, key', [
    ('mode=search', 'mode'),
    ('model.arch=green_mim_twins_large_patch4_dec512b1', 'model.arch'),
    ('model.img_size=36', 'model.img_size'),
    ('model.window_size=3', 'model.window_size'),
    ('model.num_heads=[1,1,3]', 'model.num_heads'),
    ('model.depths=[1,1]', 'model.num_heads'),
    ('pretrain.mask_ratio=0.0', 'pretrain.mask_ratio'),
    ('pretrain.mask_ratio=0.99', 'pretrain.mask_ratio'),
    ('finetune.layer_decay=1.5', 'finetune.layer_decay'),
    ('finetune.mixup.prob=2', 'finetune.mixup.prob'),
    ('pretrain.betas=[0.9]', 'pretrain.betas'),
    ('finetune.batch_size=0', 'finetune.batch_size'),
    ('model.decoder_embed_dim=18', 'model.decoder_embed_dim'),
])
def test_bad_options_name_their_key(tmp_path, opt, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')):
        _run(tmp_path, opt)


def test_missing_pretrained_file_and_cli_exit_code(tmp_path):
    with pytest.raises(ConfigError, match='finetune.pretrained'):
        _run(tmp_path, 'mode=finetune', f'finetune.pretrained={tmp_path / "nope.pth"}')
    with pytest.raises(ConfigError, match='unknown config key'):
        _run(tmp_path, 'pretrain.lr=1')
    env = dict(os.environ, PYTHONPATH=str(FOLDER.parent), OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--local_rank=0', '--opts',
                           f'output_dir={tmp_path}', 'model.img_size=36'], cwd=FOLDER, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error:') and 'model.img_size' in proc.stderr and 'Traceback' not in proc.stderr


def test_bench_baseline_and_tables_script(capsys):
    import bench
    import model_factory
    import tables
    torch.manual_seed(0)
    mae = model_factory.green_mim_swin(img_size=32, patch_size=2, embed_dim=8, depths=[1, 1, 1], num_heads=[1, 1, 2],
                                       window_size=4, decoder_embed_dim=16, decoder_num_heads=2)
    dense = bench.DenseMIM(mae)
    loss, pred, mask = dense(torch.randn(2, 3, 32, 32))
    loss.backward()
    assert pred.shape == (2, 16, 192) and mask.sum() == 12 and torch.isfinite(loss)
    assert dense.mask_token.grad.abs().sum() > 0  # masked patches carry the mask token through the dense encoder
    tables.dp_example()
    assert '[7, 7, 7, 7, 4]' in capsys.readouterr().out
