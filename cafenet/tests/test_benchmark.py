import numpy as np
import pytest

from benchmark import arch_key, expected_best
from metrics import kendall_tau_b, pearson, spearman
from models.cbm import cbm_counts


def test_card_facts(bench_mobilenet, bench_resnet):
    assert len(bench_mobilenet) == 16384 and bench_mobilenet.best() == ('4444342', pytest.approx(91.887, abs=5e-4))
    assert bench_resnet.best()[0] == '4344424' and bench_resnet.rank('4344424') == 1
    assert round(bench_mobilenet.mean('4444444'), 3) == 91.663


@pytest.mark.parametrize('space', ['mobilenet', 'resnet'])
def test_table_counts_equal_ours_on_a_sample(space, request):
    b = request.getfixturevalue(f'bench_{space}')
    for k in b.keys[::97]:
        assert cbm_counts(k, space) == (b.table[k]['params'], b.table[k]['flops'])


def test_arch_key_and_expected_best():
    assert arch_key([1, 2, 3, 4, 1, 2, 3]) == '1234123'
    with pytest.raises(ValueError):
        arch_key('12345')
    assert expected_best([1.0, 2.0, 3.0], 3) == 3.0
    assert expected_best([1.0, 2.0, 3.0], 1) == pytest.approx(2.0)


def test_correlations_by_hand():
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    assert pearson(x, y) == pytest.approx(0.8)
    assert spearman(x, y) == pytest.approx(0.8)
    assert kendall_tau_b(x, y) == pytest.approx(4 / 6)
    assert kendall_tau_b(np.arange(5), -np.arange(5)) == pytest.approx(-1.0)
