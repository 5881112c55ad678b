"""``setup_run``: the common start of every main job (distributed init, device, seeds, output folder,
logger, resolved config), and the ``Run`` object that saves, resumes and prints the headline."""
import os
import shutil

import torch

from . import dist
from .checkpoint import load_checkpoint, load_state_dict, rng_state, save_checkpoint, set_rng_state
from .config import save_config, to_dict
from .errors import CheckpointError
from .log import MetricsWriter, setup_logger

__all__ = ['Run', 'setup_run']


class Run:
    """What a main job needs once set up: device, ranks, output folder, logger, metrics, checkpoints."""

    def __init__(self, cfg, device, rank, world_size, output_dir, logger):
        self.cfg, self.device, self.rank, self.world_size = cfg, device, rank, world_size
        self.is_main = rank == 0
        self.output_dir, self.logger = output_dir, logger
        self.metrics = MetricsWriter(output_dir)
        self.start_epoch = 0
        self.amp = bool(cfg.get('amp', False)) and device.type == 'cuda'

    @property
    def last_path(self):
        return os.path.join(self.output_dir, 'last.pth')

    @property
    def best_path(self):
        return os.path.join(self.output_dir, 'best.pth')

    def log(self, msg):
        self.logger.info(msg)

    def log_metrics(self, metrics):
        self.metrics.write(metrics)
        self.logger.info('  '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                                   for k, v in metrics.items()))

    def save(self, state, is_best=False):
        """Write ``state`` (plus RNG states and the config) to ``last.pth``; also ``best.pth`` when best."""
        state = dict(state)
        state.setdefault('rng', rng_state())
        state.setdefault('config', to_dict(self.cfg))
        if self.is_main:
            save_checkpoint(state, self.last_path)
            if is_best:
                tmp = self.best_path + '.tmp'
                shutil.copyfile(self.last_path, tmp)
                os.replace(tmp, self.best_path)
        dist.barrier()

    def resume(self, **objects):
        """Restore ``objects`` (model=..., optimizer=..., each with ``load_state_dict``) from ``last.pth``.

        Returns the checkpoint dict (or ``None`` when there is nothing to resume) and sets ``start_epoch``.
        With ``resume: false`` in the config the run starts afresh (and will overwrite ``last.pth``).
        """
        if not self.cfg.get('resume', True) or not os.path.isfile(self.last_path):
            return None
        state = load_checkpoint(self.last_path, map_location='cpu')
        if not isinstance(state, dict) or 'epoch' not in state:
            raise CheckpointError(f"'{self.last_path}' is not a checkpoint of this program (no 'epoch' entry); "
                                  f"move it away or set resume=false")
        for name, obj in objects.items():
            if obj is None:
                continue
            if name not in state:
                raise CheckpointError(f"'{self.last_path}' has no '{name}' entry to resume from")
            if isinstance(obj, torch.nn.Module):
                load_state_dict(dist.unwrap(obj), state[name], strict=True, what=name)
            else:
                try:
                    obj.load_state_dict(state[name])
                except (ValueError, KeyError, RuntimeError) as e:
                    raise CheckpointError(f"'{self.last_path}': the {name} state does not fit: {e}") from None
        if self.world_size == 1:
            set_rng_state(state.get('rng'))
        else:  # rank 0's RNG state alone was saved: reseed each rank deterministically instead
            dist.seed_everything(int(self.cfg.get('seed', 0)) + 7919 * int(state['epoch']), self.rank)
        self.start_epoch = int(state['epoch'])
        self.log(f"resumed from {self.last_path} at epoch {self.start_epoch}")
        return state

    def finish(self, headline):
        """Log and print the run's headline metric (the last line), then tear down the process group."""
        self.log(headline)
        dist.cleanup()
        return headline


def setup_run(cfg):
    """Initialise distributed training, the device, seeds, the output folder, the logger and the config."""
    rank, world, _ = dist.init_distributed()
    device = dist.resolve_device(cfg.get('device', 'auto'))
    dist.seed_everything(int(cfg.get('seed', 0)), rank)
    output_dir = cfg.get('output_dir') or 'output'
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
    dist.barrier()
    logger = setup_logger(output_dir)
    if rank == 0:
        save_config(cfg, output_dir)
    run = Run(cfg, device, rank, world, output_dir, logger)
    run.log(f'output_dir={output_dir} device={device} world_size={world}')
    return run
