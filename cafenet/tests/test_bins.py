import pytest

from bins import fix_divisibility, flops_sensitive_bins
from models.cbm import build_cbm
from models.imagenet import mobilenetv2_channels, mobilenetv2_from_channels, resnet50_channels, resnet50_from_channels
from supernet import CafeSupernet

F1 = [1, 2, 3, 4, 8, 9, 100]


@pytest.mark.parametrize('F,bounds,expected', [
    (F1, (1, 32), [32, 32, 32, 32, 16, 16, 1]),
    (F1, (2, 64), [64, 64, 64, 32, 16, 16, 2]),
    ([5e5, 1.2e6, 3e6, 2.4e7, 9.9e6], (1, 32), [32, 32, 8, 1, 4]),
])
def test_card_examples(F, bounds, expected):
    assert flops_sensitive_bins(F, *bounds) == expected


def test_rule_by_hand():
    # max/F = 1, 2 (exact power), 3 -> 4, 4, 5 -> 8
    assert flops_sensitive_bins([60, 30, 20, 15, 12]) == [1, 2, 4, 4, 8]
    assert flops_sensitive_bins([7.0]) == [1]
    assert flops_sensitive_bins([1, 1000], 4, 8) == [8, 4]


def test_bad_sensitivities():
    for bad in ([], [1, 0], [1, -2], [1, float('nan')]):
        with pytest.raises(ValueError):
            flops_sensitive_bins(bad)
    with pytest.raises(ValueError):
        flops_sensitive_bins([1, 2], 8, 4)


def test_divisibility_fixups():
    assert fix_divisibility([16, 8, 4], [64, 40, 12]) == [16, 8, 4]       # already dividing: unchanged
    assert fix_divisibility([16], [72]) == [18]                             # 9/8: 72 % 9 == 0, 16 % 8 == 0
    assert fix_divisibility([16], [40]) == [20]                             # 5/4: 40 % 5 == 0, 16 % 4 == 0
    assert fix_divisibility([8], [45]) == [9]                               # 9/8 gives 9 | 45
    assert fix_divisibility([32], [360]) == [36]                            # 9/8 first: 36 | 360
    with pytest.raises(ValueError, match='layer 1'):
        fix_divisibility([4, 16], [8, 24])                                  # 24: neither fix-up applies
    assert fix_divisibility([4, 16], [8, 24], fallback='halve') == [4, 8]
    with pytest.raises(ValueError):
        fix_divisibility([4], [8, 8])


def test_flops_bins_of_a_supernet_divide_and_follow_the_sensitivities():
    sn = CafeSupernet(mobilenetv2_from_channels(mobilenetv2_channels()), 'flops', 1, (3, 224, 224), 1, 32)
    F = sn.get_layer_flops()
    assert all(C % b == 0 for C, b in zip(sn.slot_channels, sn.bin_sizes))
    assert sn.num_units == [C // b for C, b in zip(sn.slot_channels, sn.bin_sizes)]
    # the most expensive channel gets the smallest bin, the cheapest the biggest
    assert sn.bin_sizes[F.index(max(F))] == min(sn.bin_sizes) == 1
    assert sn.bin_sizes[F.index(min(F))] == 32
    rn = CafeSupernet(resnet50_from_channels(resnet50_channels()), 'flops', 1, (3, 224, 224), 1, 32)
    assert all(C % b == 0 for C, b in zip(rn.slot_channels, rn.bin_sizes))


def test_uniform_bins_on_the_benchmark_space():
    sn = CafeSupernet(build_cbm('mobilenet'), [32, 192, 192, 192, 64, 384, 256], 1)
    assert sn.num_units == [4] * 7
    with pytest.raises(ValueError, match='slot 0'):
        CafeSupernet(build_cbm('mobilenet', width_mult=0.125), 5, 1)
