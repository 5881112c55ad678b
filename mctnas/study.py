"""Search study on NAS-Bench-Macro: MCT sampling vs random search vs evolution (CPU, table lookups).

    python study.py --bench ../../shared/data/nas-bench-macro_cifar10.json --seeds 100

For every method and seed, the best architecture after 10, 20, 50 and 100 evaluated architectures is
reported by its benchmark accuracy and rank (mean, std, median over seeds). Two protocols:

* ``oneshot`` (the paper's pipeline, simulated): a weight-sharing supernet is replaced by a proxy whose
  accuracy for architecture a is acc(a) + b_a, with b_a ~ N(0, ``bias``) fixed per seed (the supernet's
  ranking error). Supernet training iterations are free, as in the paper: MCT-NAS's tree is trained on the
  official NAS-Bench-Macro schedule (9800 iterations, warmup 4900, tree sampling from 5880, beta = gamma =
  0.96, C1 0.1, C2 0.2, tau 0.0025) with loss (100 - proxy)/10 + N(0, ``noise``), then searched with
  hierarchical node selection (n_thrd 6; its re-evaluations are one-batch losses, free, and counted apart).
  Evaluated architectures = architectures scored by the proxy accuracy; the best by proxy is reported.
* ``blackbox``: no supernet; every distinct table lookup counts as one evaluated architecture and the best
  true accuracy is reported. MCT sampling draws paths from the tree (uniform for the first ``n_build``
  distinct lookups), rewarding each with the pseudo-loss (100 - acc)/10; repeated draws are free.
"""
import argparse
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import evolution_search, random_search  # noqa: E402
from benchmark import NASBenchMacro  # noqa: E402
from sampler import MCTSampler  # noqa: E402
from searcher import MCTSearcher  # noqa: E402

CHOICES = [3] * 8
BUDGETS = (10, 20, 50, 100)
DEFAULT_BENCH = Path(__file__).resolve().parent / '../../shared/data/nas-bench-macro_cifar10.json'
MCT_CFG = dict(total_iters=9800, warmup_iters=4900, mct_start_iter=5880, beta=0.96, gamma=0.96, C1=0.1, C2=0.2,
               tau=0.0025, n_thrd=6, search_tau=0.0025)


def _key(arch):
    return ''.join(map(str, arch))


def expected_random_search(accs, n):
    """Exact expectation when n keys are drawn without replacement: (best accuracy, rank of the best with
    ties, position of the best in the sorted table)."""
    a = sorted(accs, reverse=True)
    m = len(a)
    # P(best is the i-th largest) = C(m - i, n - 1) / C(m, n), computed with logs
    log_den = math.lgamma(m + 1) - math.lgamma(n + 1) - math.lgamma(m - n + 1)
    e_acc = e_rank = e_pos = 0.0
    rank_of = {}
    for i, v in enumerate(a):
        rank_of.setdefault(v, i + 1)
    for i in range(1, m - n + 2):
        k = m - i
        lp = math.lgamma(k + 1) - math.lgamma(n) - math.lgamma(k - n + 2) - log_den
        p = math.exp(lp)
        e_acc += p * a[i - 1]
        e_rank += p * rank_of[a[i - 1]]
        e_pos += p * i
    return e_acc, e_rank, e_pos


def anytime_best(history, budgets):
    """True accuracy of the best-scored architecture among the first k evaluated, for every k in budgets."""
    out, best, best_score = {}, None, -math.inf
    for i, (arch, score) in enumerate(history, 1):
        if score > best_score:
            best, best_score = arch, score
        if i in budgets:
            out[i] = best
    for k in budgets:  # a run that stopped early keeps its last best
        out.setdefault(k, best)
    return out


class Oracle:
    """Proxy of a trained supernet on NAS-Bench-Macro: acc(a) + per-architecture bias."""

    def __init__(self, bench, rng, bias=0.0, noise=0.02):
        self.bench, self.rng, self.noise = bench, rng, noise
        self.bias = {k: (rng.gauss(0.0, bias) if bias > 0 else 0.0) for k in bench.keys()}

    def proxy_acc(self, arch):
        k = _key(arch)
        return self.bench.data[k]['mean_acc'] + self.bias[k]

    def loss(self, arch):
        return max((100.0 - self.proxy_acc(arch)) / 10.0 + self.rng.gauss(0.0, self.noise), 1e-3)


def mct_oneshot(oracle, budget, rng, cfg=MCT_CFG):
    """Train the tree on the simulated supernet with the three-phase MCT sampler, then run MCTSearcher."""
    sampler = MCTSampler(warmup_iters=cfg['warmup_iters'], mct_start_iter=cfg['mct_start_iter'], beta=cfg['beta'],
                         gamma=cfg['gamma'], C1=cfg['C1'], C2=cfg['C2'], tau=cfg['tau'], rng=rng)
    sampler.init_tree(CHOICES)
    sampler.iter = cfg['warmup_iters']  # phase 1 (uniform, no bookkeeping) changes nothing in the tree
    for _ in range(cfg['warmup_iters'], cfg['total_iters']):
        arch = sampler.gen_subnet(CHOICES)
        sampler.update_reward(arch, oracle.loss(arch))
    searcher = MCTSearcher(n_thrd=cfg['n_thrd'], tau=cfg['search_tau'], search_num=budget, C2=cfg['C2'])
    searcher.search(None, lambda m, a: oracle.loss(a), lambda m, a: oracle.proxy_acc(a),
                    tree=sampler.tree, tilde_L=sampler.tilde_L)
    return searcher.history, searcher.n_loss_evals


def mct_blackbox(bench, budget, rng, n_build=10, patience=1000, cfg=MCT_CFG):
    """MCT sampling as a black-box optimiser: every distinct lookup is an evaluation. Stops when ``patience``
    draws in a row bring no new architecture (the sampler has converged)."""
    sampler = MCTSampler(warmup_iters=0, mct_start_iter=0, beta=cfg['beta'], gamma=cfg['gamma'], C1=cfg['C1'],
                         C2=cfg['C2'], tau=cfg['tau'], rng=rng)
    sampler.init_tree(CHOICES)
    cache, history, stale = {}, [], 0
    while len(history) < budget and stale < patience:
        sampler.mct_start_iter = sampler.iter + 1 if len(history) < n_build else 0
        arch = sampler.gen_subnet(CHOICES)
        k = _key(arch)
        if k not in cache:
            cache[k] = bench.data[k]['mean_acc']
            history.append((arch, cache[k]))
            stale = 0
        else:
            stale += 1
        sampler.update_reward(arch, (100.0 - cache[k]) / 10.0)
    return history


def kendall_tau(x, y):
    """Kendall tau-a of two equal-length sequences (O(n^2) with numpy; use a sample for large n)."""
    import numpy as np
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    n = len(x)
    return float((sx * sy).sum() / (n * (n - 1)))


def summarize(bests, bench):
    accs = [bench.acc(a) for a in bests]
    ranks = [bench.rank(a) for a in bests]
    return {'acc_mean': statistics.mean(accs), 'acc_std': statistics.pstdev(accs),
            'rank_mean': statistics.mean(ranks), 'rank_std': statistics.pstdev(ranks),
            'rank_median': statistics.median(ranks), 'top1_rate': sum(r == 1 for r in ranks) / len(ranks)}


def run_study(bench, seeds=100, budgets=BUDGETS, protocols=('oneshot', 'blackbox'), bias=0.5, noise=0.02,
              log=print):
    budget = max(budgets)
    results = {}
    for protocol in protocols:
        methods = {'random': [], 'evolution': [], 'mct': []}
        reevals, reached, taus = [], [], []
        t0 = time.time()
        for seed in range(seeds):
            if protocol == 'oneshot':
                oracle = Oracle(bench, random.Random(10_000 + seed), bias=bias, noise=noise)
                score = oracle.proxy_acc
                hist, n_re = mct_oneshot(oracle, budget, random.Random(seed))
                reevals.append(n_re)
                if seed < 5:
                    sample = random.Random(seed).sample(bench.keys(), 1500)
                    taus.append(kendall_tau([bench.acc(k) for k in sample], [oracle.proxy_acc(k) for k in sample]))
            else:
                score = bench.acc
                hist = mct_blackbox(bench, budget, random.Random(seed))
                reached.append(len(hist))
            methods['mct'].append(anytime_best(hist, budgets))
            methods['random'].append(anytime_best(random_search(CHOICES, budget, score, random.Random(seed)),
                                                  budgets))
            methods['evolution'].append(anytime_best(
                evolution_search(CHOICES, budget, score, random.Random(seed)), budgets))
        res = {m: {k: summarize([run[k] for run in runs], bench) for k in budgets} for m, runs in methods.items()}
        if reevals:
            res['mct_reevals'] = statistics.mean(reevals)
            res['proxy_tau'] = statistics.mean(taus)
        if reached:
            res['mct_reached'] = statistics.mean(reached)
        results[protocol] = res
        log(f'[{protocol}] {seeds} seeds in {time.time() - t0:.1f}s')
    return results


def format_results(results, bench, budgets=BUDGETS, bias=0.5, noise=0.02):
    lines = []
    accs = [bench.data[k]['mean_acc'] for k in bench.keys()]
    best_k, best_acc = bench.best()
    lines.append(f'NAS-Bench-Macro: {len(bench)} keys, best {best_k} {best_acc:.3f}% (rank 1), '
                 f'mean {statistics.mean(accs):.2f}%')
    lines.append('random search, exact expectation (best acc / rank with ties / sorted position): ' + ', '.join(
        f'N={n}: {a:.2f}/{r:.0f}/{q:.0f}' for n, (a, r, q) in ((n, expected_random_search(accs, n))
                                                               for n in budgets)))
    for protocol, res in results.items():
        title = {'oneshot': f'one-shot protocol (simulated supernet: bias {bias}%, loss noise {noise}; '
                            'best by proxy, reported by its true benchmark accuracy)',
                 'blackbox': 'black-box protocol (every distinct lookup counts; best true accuracy)'}[protocol]
        lines.append('')
        lines.append(title)
        lines.append(f'{"method":<10} {"#archs":>6}  {"acc mean±std":>14}  {"rank mean±std":>16}  '
                     f'{"median":>6}  {"P(rank 1)":>9}')
        for m in ('random', 'evolution', 'mct'):
            for k in budgets:
                s = res[m][k]
                lines.append(f'{m:<10} {k:>6}  {s["acc_mean"]:>7.2f} ± {s["acc_std"]:<4.2f}  '
                             f'{s["rank_mean"]:>8.1f} ± {s["rank_std"]:<6.1f}  {s["rank_median"]:>6.0f}  '
                             f'{s["top1_rate"]:>9.2f}')
        if 'mct_reevals' in res:
            lines.append(f'(MCT hierarchical selection also ran {res["mct_reevals"]:.0f} one-batch loss '
                         f're-evaluations on average, not counted as evaluated architectures; Kendall tau '
                         f'of the simulated proxy vs the benchmark: {res["proxy_tau"]:.3f})')
        if 'mct_reached' in res:
            lines.append(f'(MCT sampling converged after {res["mct_reached"]:.1f} distinct architectures on average: '
                         f'beyond that, the budget rows repeat its last best)')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--bench', default=str(DEFAULT_BENCH), help='path of nas-bench-macro_cifar10.json')
    p.add_argument('--seeds', type=int, default=100)
    p.add_argument('--protocol', choices=('oneshot', 'blackbox', 'both'), default='both')
    p.add_argument('--bias', type=float, default=0.5, help='std (%% acc) of the simulated supernet ranking error')
    p.add_argument('--noise', type=float, default=0.02, help='std of the simulated per-batch loss noise')
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error('--seeds must be >= 1')
    try:
        bench = NASBenchMacro(args.bench)
    except (FileNotFoundError, ValueError) as e:
        sys.stderr.write(f'error: {e}\n')
        return 2
    protocols = ('oneshot', 'blackbox') if args.protocol == 'both' else (args.protocol,)
    res = run_study(bench, args.seeds, protocols=protocols, bias=args.bias, noise=args.noise)
    print(format_results(res, bench, bias=args.bias, noise=args.noise))
    return 0


if __name__ == '__main__':
    sys.exit(main())
