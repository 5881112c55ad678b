"""The main-job contract through a toy job built from `common`: outputs, resume, errors, torchrun."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TOY, run_toy


def test_outputs_and_resume_equivalence(tmp_path):
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    r = run_toy(f'output_dir={full}', 'epochs=3', 'shuffle=true')
    assert r.returncode == 0, r.stderr
    assert {'config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'} <= set(os.listdir(full))
    lines = [json.loads(x) for x in open(os.path.join(full, 'metrics.jsonl'))]
    assert [x['epoch'] for x in lines] == [0, 1, 2]
    assert 'weight norm' in r.stdout.strip().splitlines()[-1]  # the headline is the last line
    # killed after epoch 1, then restarted with the same command
    r = run_toy(f'output_dir={part}', 'epochs=3', 'shuffle=true', 'stop_after=1')
    assert r.returncode == 3
    r = run_toy(f'output_dir={part}', 'epochs=3', 'shuffle=true')
    assert r.returncode == 0 and 'resumed' in r.stdout
    a, b = torch.load(os.path.join(full, 'final.pt')), torch.load(os.path.join(part, 'final.pt'))
    assert torch.equal(a['weight'], b['weight']) and torch.equal(a['bias'], b['bias'])


def _one_paragraph_error(r):
    assert r.returncode == 2
    assert 'Traceback' not in r.stderr
    text = r.stderr.strip()
    assert text.startswith('error:') and '\n\n' not in text
    return text


def test_wrong_key_missing_root_truncated_checkpoint(tmp_path):
    out = str(tmp_path / 'o')
    assert 'epochz' in _one_paragraph_error(run_toy(f'output_dir={out}', 'epochz=3'))
    msg = _one_paragraph_error(run_toy(f'output_dir={out}', 'data.name=cifar10', f'data.root={tmp_path}/none'))
    assert f'{tmp_path}/none' in msg
    r = run_toy(f'output_dir={out}', 'epochs=1')
    assert r.returncode == 0
    last = os.path.join(out, 'last.pth')
    data = open(last, 'rb').read()
    open(last, 'wb').write(data[:len(data) // 3])
    truncated = open(last, 'rb').read()
    assert 'last.pth' in _one_paragraph_error(run_toy(f'output_dir={out}', 'epochs=2'))
    assert open(last, 'rb').read() == truncated  # nothing overwritten


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('loss', ['ce', 'contrastive'])
def test_torchrun_two_processes_equal_one_process(tmp_path, loss):
    """2 CPU processes (gloo) with 8 images each end with the weights of 1 process on the 16-image batch."""
    one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
    r = run_toy(f'output_dir={one}', f'loss={loss}', 'batch_size=16', 'epochs=2')
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, NO_PROGRESS='1', OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_addr=127.0.0.1',
           f'--master_port={_free_port()}', TOY, '--opts', f'output_dir={two}', f'loss={loss}', 'batch_size=16',
           'epochs=2']
    r = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'world_size=2' in open(os.path.join(two, 'log.txt')).read()
    a, b = torch.load(os.path.join(one, 'final.pt')), torch.load(os.path.join(two, 'final.pt'))
    assert torch.allclose(a['weight'], b['weight'], atol=1e-5), (a['weight'] - b['weight']).abs().max()
    assert torch.allclose(a['bias'], b['bias'], atol=1e-5)
