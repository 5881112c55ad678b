"""Smoke run of main.py (outputs, resume), enhance.py on a WAV folder, config error paths."""
import glob
import json
import os

import numpy as np
import pytest

import main

TINY = ['device=cpu', 'data.train_size=8', 'data.val_size=2', 'data.test_size=2', 'data.min_seconds=0.3',
        'data.max_seconds=0.4', 'model.c=4', 'model.cd1=8', 'model.p=1', 'model.order_num=1',
        'model.dilations=[1, 2]', 'batch_size=4', 'eval.pesq_stoi=false']


def test_smoke_run_writes_outputs_resumes_and_enhances(tmp_path, capsys):
    out = str(tmp_path / 'run')
    res = main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={out}', 'epochs=1', *TINY])
    assert {'config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth', 'best.pth'} <= set(os.listdir(out))
    lines = [json.loads(x) for x in open(os.path.join(out, 'metrics.jsonl'))]
    assert [x.get('epoch') for x in lines] == [0, None] and lines[-1]['split'] == 'test'
    assert lines[0]['train_loss'] > 0 and np.isfinite(res['si_sdr']) and np.isfinite(res['si_sdr_noisy'])
    assert 'SI-SDR' in capsys.readouterr().out.strip().splitlines()[-1]
    main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={out}', 'epochs=2', *TINY])
    assert 'resumed from' in open(os.path.join(out, 'log.txt')).read()
    lines = [json.loads(x) for x in open(os.path.join(out, 'metrics.jsonl'))]
    assert [x.get('epoch') for x in lines] == [0, None, 1, None]

    import data
    import enhance
    src, dst = tmp_path / 'noisy', tmp_path / 'enh'
    src.mkdir()
    data.write_wav(src / 'a.wav', 0.1 * np.random.default_rng(0).standard_normal(4000), sr=8000)
    assert enhance.main(['--ckpt', os.path.join(out, 'last.pth'), '--input', str(src), '--output', str(dst),
                         '--device', 'cpu']) == ['a.wav']
    y = data.read_wav(dst / 'a.wav')
    assert len(y) == 8000 and np.isfinite(y).all()


@pytest.mark.parametrize('opts,match', [(['epochz=1'], 'epochz'), (['model.norm_type=GN'], 'norm_type'),
                                         (['data.name=wsj0'], 'data.name'), (['data.name=paired'], 'data.root'),
                                         (['data.noise_types=[hum]'], 'noise_types'), (['batch_size=0'], 'batch_size'),
                                         (['model.fft_num=512'], 'fft_num')])
def test_bad_config_errors(tmp_path, opts, match):
    from common.errors import ConfigError
    with pytest.raises(ConfigError, match=match):
        main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}', *opts])


def test_missing_wav_root_is_dataset_error(tmp_path):
    from common.errors import DatasetError
    with pytest.raises(DatasetError, match='noisy'):
        main.main(['--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}', 'data.name=paired',
                   f'data.root={tmp_path}/nope', 'device=cpu'])


def test_every_config_loads():
    from common.config import load_config
    for path in ['cfg.yaml'] + glob.glob('configs/*.yaml'):
        load_config(path, defaults=main.DEFAULTS)
