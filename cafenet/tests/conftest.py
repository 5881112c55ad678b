import os
import sys
from pathlib import Path

import pytest
import torch

FOLDER = Path(__file__).resolve().parents[1]
if str(FOLDER) not in sys.path:
    sys.path.insert(0, str(FOLDER))

torch.set_num_threads(min(2, torch.get_num_threads()))


def shared_data_dir():
    env = os.environ.get('SHARED_DATA_DIR')
    return Path(env) if env else Path(__file__).resolve().parents[3] / 'shared' / 'data'


def bench_path(space):
    return shared_data_dir() / f'channel-bench-macro_{space}_cifar10.json'


@pytest.fixture(scope='session')
def bench_mobilenet():
    p = bench_path('mobilenet')
    if not p.is_file():
        pytest.skip(f'Channel-Bench-Macro file {p} not available (set SHARED_DATA_DIR)')
    from benchmark import ChannelBenchMacro
    return ChannelBenchMacro(str(p), 'mobilenet')


@pytest.fixture(scope='session')
def bench_resnet():
    p = bench_path('resnet')
    if not p.is_file():
        pytest.skip(f'Channel-Bench-Macro file {p} not available (set SHARED_DATA_DIR)')
    from benchmark import ChannelBenchMacro
    return ChannelBenchMacro(str(p), 'resnet')
