"""Make the folder's modules (``import ops``) and the repository's ``common`` importable; tiny spaces for tests."""
import os
import sys
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(FOLDER))
if str(FOLDER.parent) not in sys.path:
    sys.path.append(str(FOLDER.parent))  # common, when the repository is not pip-installed
os.environ.setdefault('NO_PROGRESS', '1')

# a small space with every kind of op (SE, identity, strides) that runs in milliseconds
TINY = dict(stages=[(8, 2, 1), (12, 2, 2)], stem_channels=4, first_channels=4, last_channels=16, stem_stride=1)


@pytest.fixture
def tiny():
    return dict(TINY)
