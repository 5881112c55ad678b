"""Commands that print the paper's / the card's numbers next to ours (CPU only).

    python tables.py bins        # FLOPs-sensitive bins: the card's worked examples, and the bin table of
                                 # the standard backbones (CBM spaces at 32x32, MobileNetV2 1.0x/1.5x, ResNet-50)
    python tables.py sets        # the candidate sets S(c) of the card's examples, and |S(c)| = C(2r, r)
    python tables.py check       # params/FLOPs: all 16384 archs of each CBM space at nominal widths, and real
                                 # exported networks of random free placements (same counts as contiguous)
    python tables.py search      # CafeNet's searcher with the benchmark as the width oracle, 20 seeds
    python tables.py imagenet    # full-width FLOPs/params of the ImageNet backbones (card values)
    python tables.py corr --scores FILE --space mobilenet   # ranking quality of a supernet score file
    python tables.py             # bins + sets + check + imagenet

The benchmark files are read from ``--data-dir`` (default ``../../shared/data`` from this folder, or
``$SHARED_DATA_DIR``); they are never copied here.
"""
import argparse
import itertools
import math
import os
import sys
import time

import numpy as np

from benchmark import ChannelBenchMacro, expected_best, load_supernet_scores
from bins import fix_divisibility, flops_sensitive_bins
from evaluator import BenchmarkEvaluator
from flops import count_macs, count_params
from metrics import kendall_tau_b, pearson, spearman
from models.cbm import SPACES as CBM_SPACES
from models.cbm import build_cbm, cbm_counts
from models.imagenet import mobilenetv2_channels, mobilenetv2_from_channels, resnet50_channels, resnet50_from_channels
from searcher import CafeNetSearcher
from sharing import candidate_sets
from supernet import CafeSupernet

FOLDER = os.path.dirname(os.path.abspath(__file__))
SPACES = ('mobilenet', 'resnet')
ALL_ARCHS = list(itertools.product(range(1, 5), repeat=7))

CARD_BINS = [  # (F, (min_bin, max_bin), card's result of the authors' helper)
    ([1, 2, 3, 4, 8, 9, 100], (1, 32), [32, 32, 32, 32, 16, 16, 1]),
    ([1, 2, 3, 4, 8, 9, 100], (2, 64), [64, 64, 64, 32, 16, 16, 2]),
    ([5e5, 1.2e6, 3e6, 2.4e7, 9.9e6], (1, 32), [32, 32, 8, 1, 4]),
]
CARD_SETS = [  # (n, r, c, card's S(c))
    (6, 1, 3, [(0, 1, 2), (0, 1, 3)]), (6, 1, 1, [(0,), (1,)]), (6, 1, 6, [(0, 1, 2, 3, 4, 5)]),
    (8, 2, 3, 'base {0}, zone {1,2,3,4}, 6 candidates'),
]
CARD_ROWS = {  # bcnet card check rows: (arch, params, MACs)
    'mobilenet': [('1111111', 125418, 14285312), ('4444444', 1804170, 211281920), ('1234123', 325610, 37928448),
                  ('4444342', 1388170, 185062400)],
    'resnet': [('1111111', 963658, 90096896), ('4444444', 15356170, 1436226560), ('1234123', 2735050, 245810432),
               ('4344424', 12701322, 1209734144)],
}
IMAGENET_FULL = {'MobileNetV2 1.0x': (300.8e6, 3.50e6), 'ResNet-50': (4.089e9, 25.56e6)}
SEARCH_BUDGETS = {'mobilenet': (50e6, 100e6, 150e6), 'resnet': (300e6, 600e6, 1000e6)}
CARD_CORR = {  # (Pearson, Spearman, Kendall tau-b) of the official BCNetV2 json_results (bcnet card), all archs
    'mobilenet': {'AutoSlim': (0.854, 0.850, 0.661), 'BCNet run 3': (0.717, 0.719, 0.539)},
    'resnet': {'AutoSlim': (0.841, 0.846, 0.656), 'BCNet run 3': (0.767, 0.743, 0.552)},
}


def data_path(data_dir, space):
    return os.path.join(data_dir, f'channel-bench-macro_{space}_cifar10.json')


def default_data_dir():
    env = os.environ.get('SHARED_DATA_DIR')
    return env if env else os.path.normpath(os.path.join(FOLDER, '..', '..', 'shared', 'data'))


def load_bench(data_dir, space):
    path = data_path(data_dir, space)
    if not os.path.isfile(path):
        sys.exit(f"error: benchmark file '{path}' not found (set --data-dir or SHARED_DATA_DIR)")
    return ChannelBenchMacro(path, space)


def cbm_supernet(space, width_mult=1.0, r=1):
    widths = [round(C * width_mult) for C in CBM_SPACES[space]]
    return CafeSupernet(build_cbm(space, width_mult=width_mult), [C // 4 for C in widths], r, (3, 32, 32))


def backbones():
    return [('CBM MobileNet (32x32)', build_cbm('mobilenet'), 32),
            ('CBM ResNet (32x32)', build_cbm('resnet'), 32),
            ('MobileNetV2 1.0x (224)', mobilenetv2_from_channels(mobilenetv2_channels(1.0)), 224),
            ('MobileNetV2 1.5x (224)', mobilenetv2_from_channels(mobilenetv2_channels(1.5)), 224),
            ('ResNet-50 (224)', resnet50_from_channels(resnet50_channels()), 224)]


# ------------------------------------------------------------------------------------------------ bins
def cmd_bins(args):
    ok = True
    print('FLOPs-sensitive bins, the card\'s examples (authors\' helper -> ours):')
    for F, (lo, hi), card in CARD_BINS:
        ours = flops_sensitive_bins(F, lo, hi)
        ok &= ours == card
        print(f'  F={F} ({lo}, {hi}): card {card} -> ours {ours} {"OK" if ours == card else "DIFFERENT"}')
    print(f'\nFLOPs-sensitive bin table of standard backbones ((min_bin, max_bin) = ({args.min_bin}, {args.max_bin}); '
          f'F_l = MACs of one channel at full width; a bin is never larger than its layer):')
    for name, net, size in backbones():
        sn = CafeSupernet(net, 1, 1, (3, size, size))
        raw = [min(b, C) for b, C in zip(flops_sensitive_bins(sn.get_layer_flops(), args.min_bin, args.max_bin),
                                          sn.slot_channels)]
        try:
            fixed, note = fix_divisibility(raw, sn.slot_channels), ''
        except ValueError as e:
            fixed, note = fix_divisibility(raw, sn.slot_channels, 'halve'), f' (needs bin_fallback=halve: {e})'
        units = [C // b for C, b in zip(sn.slot_channels, fixed)]
        space = math.prod(units)
        print(f'  {name}: {sn.num_slots} slots, full width {sn.flops(sn.full_widths()) / 1e6:.1f}M MACs{note}')
        print(f'    channels  {sn.slot_channels}')
        print(f'    bin sizes {fixed}' + (f'  (before the fix-ups: {raw})' if fixed != raw else ''))
        print(f'    units     {units}  -> {space:.3g} width vectors (1 channel per bin: '
              f'{math.prod(sn.slot_channels):.3g})')
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------ sets
def cmd_sets(args):
    ok = True
    print('Candidate sets S(c) (0-based units; base [0, c-r), free zone [c-r, min(c+r, n))):')
    for n, r, c, card in CARD_SETS:
        ours = candidate_sets(n, c, r)
        if isinstance(card, str):
            good = len(ours) == 6 and all(u[0] == 0 and set(u[1:]) <= {1, 2, 3, 4} for u in ours)
        else:
            good = ours == card
        ok &= good
        print(f'  n={n} r={r} c={c}: card {card} -> ours {ours} {"OK" if good else "DIFFERENT"}')
    print('  |S(c)| for n = 8 (rows r = 0..3, columns c = 1..8; interior widths have C(2r, r) = 1, 2, 6, 20):')
    for r in range(4):
        print(f'    r={r}: {[len(candidate_sets(8, c, r)) for c in range(1, 9)]}')
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------ check
def cmd_check(args):
    ok = True
    rng = np.random.default_rng(0)
    for space in SPACES:
        t0 = time.time()
        sn = cbm_supernet(space)
        bench = load_bench(args.data_dir, space) if os.path.isfile(data_path(args.data_dir, space)) else None
        n = len(ALL_ARCHS)
        m_closed = m_table = 0
        for a in ALL_ARCHS:
            counts = (sn.params(list(a)), sn.flops(list(a)))
            m_closed += counts == cbm_counts(a, space)
            if bench is not None:
                row = bench.query(a)
                m_table += counts == (row['params'], row['flops'])
        ok &= m_closed == n and (bench is None or m_table == n)
        print(f'[{space}] nominal counts of the 4-bin supernet equal the closed form for {m_closed}/{n} archs'
              + (f', the benchmark table for {m_table}/{n}' if bench is not None else ' (benchmark file absent)'))
        # real networks of random free placements (exported, counted with hooks)
        small = cbm_supernet(space, 0.25)
        same, total = 0, 0
        for i in rng.choice(n, size=args.samples, replace=False):
            a = list(ALL_ARCHS[i])
            ref = cbm_counts(a, space, width_mult=0.25)
            for pl in small.eval_placements(a, 3, rng):
                net = small.export(a, pl)
                total += 1
                same += (count_params(net), count_macs(net, (3, 32, 32))) == ref
        small.reset()
        ok &= same == total
        print(f'  exported networks of random placements (x0.25 widths): {same}/{total} have the params/MACs of '
              f'the contiguous network  ({time.time() - t0:.1f}s)')
        print(f'  {"arch":8s} {"card params":>12s} {"ours":>12s} {"card MACs":>14s} {"ours":>14s}')
        for arch, cp, cf in CARD_ROWS[space]:
            w = [int(x) for x in arch]
            print(f'  {arch:8s} {cp:12,d} {sn.params(w):12,d} {cf:14,d} {sn.flops(w):14,d}')
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------ search
def cmd_search(args):
    print(f'CafeNet searcher with the Channel-Bench-Macro table as the width oracle: {args.seeds} seeds, '
          f'population {args.population}, top 10, {args.population // 2} mutations (p 0.1) + '
          f'{args.population // 2} crossovers, {args.max_epoch} generations, FLOPs window [0.8 L, L].')
    print('(The paper reports no Channel-Bench-Macro numbers; this checks the searcher and gives the lookup of '
          'the searched widths: benchmark accuracy and rank.)')
    t_all = time.time()
    for space in args.spaces:
        bench = load_bench(args.data_dir, space)
        sn = cbm_supernet(space)
        ev = BenchmarkEvaluator(bench)
        print(f'\n[{space}]\n{"budget":>7s} {"archs":>6s} {"best in window":>18s} | {"found acc":>14s} '
              f'{"rank mean/med":>14s} {"hit":>5s} {"evals":>5s} {"random@evals":>12s}')
        for L in SEARCH_BUDGETS[space]:
            win = [k for k in bench.keys if 0.8 * L <= bench.table[k]['flops'] <= L]
            accs = np.array([bench.table[k]['mean'] for k in win])
            wbest = win[int(np.argmax(accs))]
            rows = []
            for seed in range(args.seeds):
                s = CafeNetSearcher(max_epoch=args.max_epoch, population_num=args.population, top_k_num=10,
                                    mutation_num=args.population // 2, crossover_num=args.population // 2,
                                    flops_limit=L, seed=seed)
                r = s.search(sn.num_units, ev, sn.flops)
                rows.append((r['score'], bench.rank(r['best']), ''.join(map(str, r['best'])) == wbest, r['evaluated']))
            a = np.array(rows, dtype=np.float64)
            print(f'{L / 1e6:6.0f}M {len(win):6d} {bench.table[wbest]["mean"]:7.3f} (#{bench.rank(wbest):>6d}) | '
                  f'{a[:, 0].mean():7.3f}±{a[:, 0].std():5.3f} {a[:, 1].mean():7.0f}/{np.median(a[:, 1]):<6.0f} '
                  f'{100 * a[:, 2].mean():4.0f}% {a[:, 3].mean():5.0f} '
                  f'{expected_best(accs, max(1, round(a[:, 3].mean()))):12.3f}')
    print(f'\n(found acc: benchmark mean accuracy of the found widths, mean±std over seeds; rank: among all 16384; '
          f'hit: found the window\'s best; random@evals: expected best of as many uniform draws from the window)'
          f'  [{time.time() - t_all:.0f}s]')
    return 0


# ------------------------------------------------------------------------------------------------ imagenet
def cmd_imagenet(args):
    print('Full-width ImageNet backbones at 224x224 (card -> ours, conv + FC MACs):')
    for name, net in (('MobileNetV2 1.0x', mobilenetv2_from_channels(mobilenetv2_channels())),
                      ('ResNet-50', resnet50_from_channels(resnet50_channels()))):
        sn = CafeSupernet(net, 'flops', 1, (3, 224, 224))
        cm, cp = IMAGENET_FULL[name]
        full = sn.full_widths()
        print(f'  {name:18s} {cm / 1e6:9.1f}M MACs {cp / 1e6:6.2f}M params -> {sn.flops(full) / 1e6:9.1f}M MACs '
              f'{sn.params(full) / 1e6:6.2f}M params ({sn.num_slots} slots)')
    return 0


# ------------------------------------------------------------------------------------------------ corr
def cmd_corr(args):
    bench = load_bench(args.data_dir, args.space)
    scores = load_supernet_scores(args.scores)
    keys = [k for k in bench.keys if k != '4444444' and k in scores]
    if args.exclude_width1:
        keys = [k for k in keys if '1' not in k]
    if len(keys) < 2:
        sys.exit('error: fewer than 2 archs in common between the scores and the benchmark')
    x = np.array([scores[k] for k in keys])
    y = np.array([bench.mean(k) for k in keys])
    print(f'[{args.space}] {os.path.basename(args.scores)}: {len(keys)} archs: Pearson {pearson(x, y):.3f}  '
          f'Spearman {spearman(x, y):.3f}  Kendall tau-b {kendall_tau_b(x, y):.3f}')
    print('same protocol, official BCNetV2 score files (bcnet card), all archs:')
    for name, (p, s, k) in CARD_CORR[args.space].items():
        print(f'  {name:12s} {p:6.3f} {s:6.3f} {k:6.3f}')
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('command', nargs='?', default='all',
                   choices=['all', 'bins', 'sets', 'check', 'search', 'imagenet', 'corr'])
    p.add_argument('--data-dir', default=default_data_dir())
    p.add_argument('--min-bin', type=int, default=1)
    p.add_argument('--max-bin', type=int, default=32)
    p.add_argument('--samples', type=int, default=20, help='archs per space for the exported-network check')
    p.add_argument('--seeds', type=int, default=20)
    p.add_argument('--max-epoch', type=int, default=4, help='generations of the search (card: 40)')
    p.add_argument('--population', type=int, default=50)
    p.add_argument('--spaces', nargs='+', default=list(SPACES), choices=SPACES)
    p.add_argument('--scores')
    p.add_argument('--space', choices=SPACES, default='mobilenet')
    p.add_argument('--exclude-width1', action='store_true')
    args = p.parse_args(argv)
    if args.command == 'corr':
        if not args.scores:
            p.error('corr needs --scores FILE')
        return cmd_corr(args)
    if args.command == 'all':
        return max(cmd_bins(args), cmd_sets(args), cmd_check(args), cmd_imagenet(args))
    return {'bins': cmd_bins, 'sets': cmd_sets, 'check': cmd_check, 'search': cmd_search,
            'imagenet': cmd_imagenet}[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
