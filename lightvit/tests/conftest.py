import os
import sys
from pathlib import Path

import pytest
import torch

FOLDER = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(FOLDER))
if str(FOLDER.parent) not in sys.path:  # `common` when the repo is not pip-installed
    sys.path.append(str(FOLDER.parent))
os.environ.setdefault('NO_PROGRESS', '1')
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope='session')
def tiny_model():
    """LightViT-T itself (built once per session)."""
    import model
    torch.manual_seed(0)
    return model.lightvit_tiny().eval()
