"""Metrics: SI-SNR (official, no mean removal), SI-SDR (zero-mean), and PESQ / STOI through the optional packages
``pesq`` and ``pystoi`` (imported lazily; ``OptionalMetricMissing`` when absent). Imports numpy/torch only."""
import math

import numpy as np


class OptionalMetricMissing(ImportError):
    """An optional metric package (pesq, pystoi) is not installed."""


def _np(x):
    return x.detach().cpu().double().numpy() if hasattr(x, 'detach') else np.asarray(x, dtype=np.float64)


def sisnr(est, ref, eps=1e-8) -> float:
    """Official SI-SNR (dB): alpha = <est, ref> / (|ref|^2 + eps), no mean removal."""
    est, ref = _np(est).ravel(), _np(ref).ravel()
    target = np.dot(est, ref) / (np.dot(ref, ref) + eps) * ref
    resid = est - target
    return float(10 * np.log10(np.dot(target, target) + eps) - 10 * np.log10(np.dot(resid, resid) + eps))


def si_sdr(est, ref, eps=1e-8) -> float:
    """SI-SDR (dB) with both signals made zero-mean first."""
    est, ref = _np(est).ravel(), _np(ref).ravel()
    return sisnr(est - est.mean(), ref - ref.mean(), eps)


def _pesq_module():
    try:
        from pesq import pesq
    except ImportError as e:
        raise OptionalMetricMissing('PESQ needs the optional package "pesq" (pip install pesq)') from e
    return pesq


def pesq_wb(ref, deg, fs=16000) -> float:
    """Wide-band PESQ (ITU-T P.862.2 MOS-LQO)."""
    return float(_pesq_module()(fs, _np(ref), _np(deg), 'wb'))


def mos_lqo_to_raw(mos: float) -> float:
    """Inverse of the P.862.1 mapping: raw P.862 score from the narrow-band MOS-LQO."""
    return (4.6607 - math.log(4.0 / (mos - 0.999) - 1.0)) / 1.4945


def pesq_nb(ref, deg, fs=16000, raw=True) -> float:
    """Narrow-band PESQ; ``raw=True`` gives the raw P.862 score the paper reports (pypesq), else P.862.1 MOS-LQO."""
    mos = float(_pesq_module()(fs, _np(ref), _np(deg), 'nb'))
    return mos_lqo_to_raw(mos) if raw else mos


def stoi(ref, deg, fs=16000, extended=False) -> float:
    """STOI (or ESTOI with ``extended=True``) in %."""
    try:
        from pystoi import stoi as _stoi
    except ImportError as e:
        raise OptionalMetricMissing('STOI needs the optional package "pystoi" (pip install pystoi)') from e
    return 100.0 * float(_stoi(_np(ref), _np(deg), fs, extended=extended))
