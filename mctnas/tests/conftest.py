"""Make the folder's modules (``import mct``) and the repository's ``common`` importable; find the benchmark."""
import os
import sys
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(FOLDER))
if str(FOLDER.parent) not in sys.path:
    sys.path.append(str(FOLDER.parent))  # common, when the repository is not pip-installed
os.environ.setdefault('NO_PROGRESS', '1')


def bench_path():
    root = os.environ.get('SHARED_DATA_DIR')
    base = Path(root) if root else Path(__file__).resolve().parents[3] / 'shared' / 'data'
    return base / 'nas-bench-macro_cifar10.json'


@pytest.fixture(scope='session')
def bench():
    path = bench_path()
    if not path.is_file():
        pytest.skip(f'NAS-Bench-Macro JSON not found at {path} (set SHARED_DATA_DIR to its folder)')
    from benchmark import NASBenchMacro
    return NASBenchMacro(path)
