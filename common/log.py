"""Rank-0 logging to console and log.txt, metrics.jsonl, tqdm progress, meters and throughput."""
import json
import logging
import math
import os
import sys
import time

from .dist import is_main_process

__all__ = ['setup_logger', 'MetricsWriter', 'progress', 'update_progress', 'AverageMeter', 'Throughput']


def setup_logger(output_dir=None, name='main'):
    """A logger that prints on rank 0 and appends to ``output_dir/log.txt``; silent on other ranks."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    if not is_main_process():
        logger.addHandler(logging.NullHandler())
        return logger
    fmt = logging.Formatter('[%(asctime)s] %(message)s', datefmt='%Y-%m-%d %H:%M:%S')
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, 'log.txt'), mode='a')
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


def _jsonable(v):
    if hasattr(v, 'item') and getattr(v, 'numel', lambda: 1)() == 1:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


class MetricsWriter:
    """Appends one JSON object per call to ``output_dir/metrics.jsonl`` (rank 0 only)."""

    def __init__(self, output_dir, name='metrics.jsonl'):
        self.path = os.path.join(output_dir, name) if output_dir is not None else None

    def write(self, metrics):
        if self.path is None or not is_main_process():
            return
        with open(self.path, 'a') as f:
            f.write(json.dumps(_jsonable(dict(metrics))) + '\n')
            f.flush()


def progress(iterable, total=None, desc=None, leave=False, **kwargs):
    """A tqdm bar on rank 0 when stderr is a terminal; the plain iterable otherwise."""
    if not is_main_process() or not sys.stderr.isatty() or os.environ.get('NO_PROGRESS'):
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=leave, dynamic_ncols=True, **kwargs)


def update_progress(bar, **values):
    """Show ``values`` (loss, lr, throughput, ...) on ``bar`` if it is a tqdm bar."""
    if hasattr(bar, 'set_postfix'):
        bar.set_postfix({k: (f'{v:.4g}' if isinstance(v, float) else v) for k, v in values.items()}, refresh=False)


class AverageMeter:
    """Running average of a scalar (``update(val, n)``, ``avg``, ``sum``, ``count``)."""

    def __init__(self, name='', fmt=':.4f'):
        self.name, self.fmt = name, fmt
        self.reset()

    def reset(self):
        self.val = self.avg = self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        val = float(val)
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / max(self.count, 1)

    def __str__(self):
        return ('{name} {val' + self.fmt + '} ({avg' + self.fmt + '})').format(**self.__dict__)


class Throughput:
    """Samples per second since the last ``reset()``."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.start = time.perf_counter()
        self.samples = 0

    def update(self, num_samples):
        self.samples += int(num_samples)

    @property
    def rate(self):
        elapsed = time.perf_counter() - self.start
        return self.samples / elapsed if elapsed > 0 else 0.0
