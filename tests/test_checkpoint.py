import os

import pytest
import torch

from common.checkpoint import load_checkpoint, load_state_dict, rng_state, save_checkpoint, set_rng_state
from common.errors import CheckpointError


def test_round_trip(tmp_path):
    m = torch.nn.Linear(3, 2)
    path = str(tmp_path / 'c.pth')
    save_checkpoint({'model': m.state_dict(), 'epoch': 4}, path)
    state = load_checkpoint(path)
    m2 = torch.nn.Linear(3, 2)
    load_state_dict(m2, state['model'])
    assert state['epoch'] == 4 and torch.equal(m2.weight, m.weight)
    assert [f for f in os.listdir(tmp_path)] == ['c.pth']  # no temporary left behind


def test_failed_save_keeps_existing_file(tmp_path):
    path = str(tmp_path / 'c.pth')
    save_checkpoint({'epoch': 1}, path)
    before = open(path, 'rb').read()
    with pytest.raises(Exception):
        save_checkpoint({'epoch': 2, 'bad': lambda x: x}, path)  # a lambda cannot be pickled
    assert open(path, 'rb').read() == before
    assert os.listdir(tmp_path) == ['c.pth']


def test_truncated_missing_and_foreign_files(tmp_path):
    path = str(tmp_path / 'c.pth')
    save_checkpoint({'w': torch.randn(100, 100)}, path)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='cannot be read'):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint(str(tmp_path / 'none.pth'))
    (tmp_path / 'text.pth').write_text('hello')
    with pytest.raises(CheckpointError):
        load_checkpoint(str(tmp_path / 'text.pth'))


def test_state_dict_mismatch_and_ddp_prefix():
    m = torch.nn.Sequential(torch.nn.Linear(3, 2))
    sd = {'module.' + k: v for k, v in m.state_dict().items()}
    load_state_dict(torch.nn.Sequential(torch.nn.Linear(3, 2)), sd)  # prefix stripped
    with pytest.raises(CheckpointError, match='shape'):
        load_state_dict(torch.nn.Sequential(torch.nn.Linear(4, 2)), m.state_dict())
    with pytest.raises(CheckpointError, match='missing'):
        load_state_dict(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2)), m.state_dict())


def test_rng_state_round_trip():
    s = rng_state()
    a = torch.rand(3)
    set_rng_state(s)
    assert torch.equal(torch.rand(3), a)
