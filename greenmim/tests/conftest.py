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
def tiny_card_mae():
    """The card's smoke-test model: Swin embed 32, depths 2/2/2/2, heads 1/2/4/8, ws 7, 224 input,
    decoder 64 dims / 4 heads."""
    import model_factory
    torch.manual_seed(0)
    return model_factory.green_mim_swin(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                                        decoder_embed_dim=64, decoder_num_heads=4).eval()
