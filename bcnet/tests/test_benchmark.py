import json

import numpy as np
import pytest

from benchmark import ChannelBenchMacro, arch_key, load_supernet_scores
from evaluator import BenchmarkEvaluator, benchmark_loss_records
from models.cbm import cbm_counts
from sampler import BCNetSampler


def test_card_facts_mobilenet(bench_mobilenet):
    b = bench_mobilenet
    assert len(b) == 16384 and b.space == 'mobilenet'
    best, acc = b.best()
    assert best == '4444342' and round(acc, 3) == 91.887
    assert round(b.mean('4444444'), 3) == 91.663 and b.rank('4444444') > 1   # full width is not the best
    assert b.rank('4444342') == 1
    assert round(float(b.means.mean()), 2) == 90.82 and round(float(b.means.min()), 2) == 89.17
    assert round(b.expected_best_of_random(10), 2) == 91.38
    assert round(b.expected_best_of_random(100), 2) == 91.63
    e = b.query('4444444')
    assert e['std'] == pytest.approx(np.std(e['acc'], ddof=1), rel=1e-5)   # ddof = 1


def test_card_facts_resnet(bench_resnet):
    b = bench_resnet
    best, acc = b.best()
    assert best == '4344424' and round(acc, 3) == 93.893
    assert round(b.mean('4444444'), 3) == 93.617
    assert round(b.expected_best_of_random(10), 2) == 93.52


@pytest.mark.parametrize('space', ['mobilenet', 'resnet'])
def test_table_counts_equal_ours_on_a_sample(space, request):
    b = request.getfixturevalue(f'bench_{space}')
    for k in b.keys[::97]:
        assert cbm_counts(k, space) == (b.table[k]['params'], b.table[k]['flops'])


def test_space_is_inferred_and_bad_files_rejected(bench_mobilenet, tmp_path):
    assert ChannelBenchMacro(bench_mobilenet.path).space == 'mobilenet'
    with pytest.raises(FileNotFoundError):
        ChannelBenchMacro(str(tmp_path / 'missing.json'))
    bad = tmp_path / 'bad.json'
    bad.write_text('{"a": 1}')
    with pytest.raises(ValueError):
        ChannelBenchMacro(str(bad))
    with pytest.raises(ValueError):
        arch_key('12345')


def test_evaluator_and_simulated_records(bench_mobilenet):
    ev = BenchmarkEvaluator(bench_mobilenet)
    assert ev([4, 4, 4, 4, 3, 4, 2]) == pytest.approx(bench_mobilenet.best()[1])
    recs = benchmark_loss_records(bench_mobilenet, BCNetSampler(4, 1, rng=0), 2000, rec_num=20, rng=0)
    assert len(recs) == 20
    losses = sorted(r[0] for r in recs)
    all_runs = [1 - a / 100 for k in bench_mobilenet.keys for a in bench_mobilenet.table[k]['acc']]
    assert losses[0] >= min(all_runs) - 1e-12
    for loss, (left, right) in recs:
        widths = [b - a for a, b in left]
        assert [b - a for a, b in right] == widths
        runs = bench_mobilenet.query(widths)['acc']
        assert any(abs(loss - (1 - a / 100)) < 1e-9 for a in runs)


def test_supernet_score_files(tmp_path):
    p = tmp_path / 's.json'
    p.write_text(json.dumps({'Result': [{'Num': 1, 'subnet': 1111111, 'score': 88.2},
                                        {'Num': 2, 'subnet': 1111112, 'score': 88.3}]}))
    assert load_supernet_scores(str(p)) == {'1111111': 88.2, '1111112': 88.3}
