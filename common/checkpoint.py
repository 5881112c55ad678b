"""Checkpoints: atomic save, loading with clear errors, state_dict loading that names the mismatch, RNG state."""
import os
import random
import tempfile

import numpy as np
import torch

from .dist import is_main_process
from .errors import CheckpointError

__all__ = ['save_checkpoint', 'load_checkpoint', 'load_state_dict', 'rng_state', 'set_rng_state']


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename.

    If anything fails, the existing ``path`` is untouched and the temporary file removed. Only rank 0 writes.
    """
    if not is_main_process():
        return None
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_checkpoint(path, map_location='cpu', weights_only=False):
    """Load a checkpoint; a missing, truncated or foreign file raises :class:`CheckpointError`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # truncated zip, pickle garbage, wrong format
        cause = ' '.join(str(e).split())[:160]
        raise CheckpointError(f"checkpoint '{path}' cannot be read (truncated, corrupt or not a torch "
                              f"checkpoint): {type(e).__name__}: {cause}") from None


def load_state_dict(module, state_dict, strict=True, what='model'):
    """``module.load_state_dict`` that strips a DDP ``module.`` prefix and reports mismatches clearly."""
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{what} state is not a state_dict (got {type(state_dict).__name__})")
    keys = list(state_dict)
    own = module.state_dict()
    if keys and all(k.startswith('module.') for k in keys) and not any(k.startswith('module.') for k in own):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    shape_errors = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                    for k, v in state_dict.items()
                    if k in own and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if shape_errors or (strict and (missing or unexpected)):
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing keys (e.g. {", ".join(missing[:5])})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys (e.g. {", ".join(unexpected[:5])})')
        if shape_errors:
            parts.append(f'{len(shape_errors)} shape mismatches (e.g. {"; ".join(shape_errors[:3])})')
        raise CheckpointError(f"{what} checkpoint does not fit the {type(module).__name__}: " + ', '.join(parts))
    return module.load_state_dict(state_dict, strict=strict)


def rng_state():
    """Python, numpy, torch (and CUDA) RNG states, for exact resumption."""
    state = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    if not state:
        return
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'].cpu() if hasattr(state['torch'], 'cpu') else state['torch'])
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])
