import itertools

import numpy as np
import pytest
import torch

from flops import count_macs, count_params
from models.cbm import MOBILENET_WIDTHS, RESNET_WIDTHS, build_cbm, cbm_counts
from models.imagenet import mobilenetv2_channels, mobilenetv2_from_channels
from supernet import CafeSupernet

CARD = {  # bcnet card check values: (params, MACs)
    ('mobilenet', '1111111'): (125418, 14285312), ('mobilenet', '4444444'): (1804170, 211281920),
    ('mobilenet', '1234123'): (325610, 37928448), ('mobilenet', '4444342'): (1388170, 185062400),
    ('resnet', '1111111'): (963658, 90096896), ('resnet', '4444444'): (15356170, 1436226560),
    ('resnet', '1234123'): (2735050, 245810432), ('resnet', '4344424'): (12701322, 1209734144),
}
FULL = {'mobilenet': MOBILENET_WIDTHS, 'resnet': RESNET_WIDTHS}


def cbm_supernet(space, width_mult=1.0, r=1):
    return CafeSupernet(build_cbm(space, width_mult=width_mult), [round(C * width_mult) // 4 for C in FULL[space]],
                        r, (3, 32, 32))


@pytest.fixture(scope='module')
def supernets():
    return {s: cbm_supernet(s) for s in ('mobilenet', 'resnet')}


def test_slots_follow_the_benchmark_digits(supernets):
    mb, rs = supernets['mobilenet'], supernets['resnet']
    assert mb.slot_channels == list(MOBILENET_WIDTHS) and rs.slot_channels == list(RESNET_WIDTHS)
    assert mb.num_units == rs.num_units == [4] * 7
    assert mb.slot_convs[0] == ['stem.0', 'features.0.conv.6', 'features.1.conv.6']
    assert rs.slot_convs[4] == ['block3.3', 'block4.3', 'block5.3']


def test_card_counts_at_nominal_widths(supernets):
    for (space, arch), (p, f) in CARD.items():
        w = [int(a) for a in arch]
        assert supernets[space].params(w) == p and supernets[space].flops(w) == f


def test_layer_flops_are_the_macs_of_one_channel(supernets):
    mb = supernets['mobilenet']
    F = mb.get_layer_flops()
    # slot 6 (head conv 256 -> 1024 at 8x8, then FC 1024 -> 10): one output channel adds 256*64 + 10 MACs
    assert F[6] == 256 * 64 + 10
    # slot 1 (B1 expansion, 128 -> 768 at 16x16, dw 3x3, projection 768 -> 128): 128*256 + 9*256 + 128*256
    assert F[1] == 128 * 256 + 9 * 256 + 128 * 256
    # every slot: full MACs minus the MACs with one unit-channel less, divided out exactly
    full = mb.flops(mb.full_widths())
    sn = CafeSupernet(build_cbm('mobilenet'), 1, 1, (3, 32, 32))
    for l in range(7):
        w = list(sn.full_widths())
        w[l] -= 1
        assert full - sn.flops(w) == F[l]


@pytest.mark.parametrize('space', ['mobilenet', 'resnet'])
def test_every_placement_has_the_counts_of_the_contiguous_network(space):
    torch.manual_seed(0)
    sn = cbm_supernet(space, 0.125)
    x = torch.randn(2, 3, 32, 32)
    for widths in ([1, 2, 3, 4, 2, 1, 3], [2, 2, 2, 2, 2, 2, 2]):
        p_ref, f_ref = cbm_counts(''.join(map(str, widths)), space, width_mult=0.125)
        placements = sn.all_placements(widths)
        assert len(placements) == sn.num_placements(widths) == 2 ** sum(w < 4 for w in widths)
        for pl in placements[::5]:
            sn.set_width(widths, pl)
            net = sn.export()
            assert sn.flops() == f_ref and count_macs(sn, (3, 32, 32)) == f_ref
            assert count_params(net) == p_ref and count_macs(net, (3, 32, 32)) == f_ref
    sn.reset()
    assert sn(x).shape == (2, 10)


@pytest.mark.parametrize('space', ['mobilenet', 'resnet'])
def test_a_free_placement_exports_to_the_benchmark_network_with_gathered_weights(space):
    torch.manual_seed(0)
    sn = cbm_supernet(space, 0.25)
    for m in sn.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    sn.eval()
    arch = [1, 2, 3, 4, 2, 1, 3]
    pl = ((1,), (0, 2), (0, 1, 3), (0, 1, 2, 3), (0, 2), (1,), (0, 1, 3))
    sn.set_width(arch, pl)
    ref = build_cbm(space, ''.join(map(str, arch)), width_mult=0.25).eval()
    ref.load_state_dict(sn.export().state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(sn(x), ref(x), atol=1e-5)
    sn.set_width(arch, None)
    assert not torch.allclose(sn(x), ref(x), atol=1e-3)     # the contiguous placement is another network


def test_tied_layers_share_the_identical_channel_set():
    sn = cbm_supernet('mobilenet', 0.25)
    widths = [2, 3, 3, 3, 2, 3, 3]
    pl = ((0, 2), (0, 1, 3), (0, 1, 2), (0, 1, 3), (1, 0), (0, 1, 3), (0, 1, 2))
    sn.set_width(widths, pl)
    m = sn.model
    c0 = m.stem[0].out_indices
    assert torch.equal(c0, torch.tensor(list(range(0, 8)) + list(range(16, 24))))     # bins of 8: units 0, 2
    for conv in (m.features[0].conv[6], m.features[1].conv[6]):                        # tied by the adds
        assert torch.equal(conv.out_indices, c0)
    assert torch.equal(m.features[0].conv[0].in_indices, c0)                           # input from the slot
    dw = m.features[0].conv[3]                                                          # dw follows its expansion
    assert torch.equal(dw.in_indices, m.features[0].conv[0].out_indices)
    assert torch.equal(dw.out_indices, dw.in_indices)
    assert torch.equal(m.stem[1].indices, c0)
    assert torch.equal(m.classifier.in_indices, m.out[0].out_indices)


def test_bad_widths_and_placements():
    sn = cbm_supernet('mobilenet', 0.125)
    with pytest.raises(ValueError):
        sn.set_width([1] * 6)
    with pytest.raises(ValueError):
        sn.set_width([5] * 7)
    with pytest.raises(ValueError, match='slot 1'):
        sn.set_width([2] * 7, ((0, 1), (0, 3)) + ((0, 1),) * 5)     # unit 3 is outside the zone [1, 3)


def test_sample_and_eval_placements():
    sn = cbm_supernet('resnet', 0.125)
    rng = np.random.default_rng(0)
    w = [2, 1, 4, 3, 2, 2, 4]
    allp = set(sn.all_placements(w))
    assert len(allp) == 2 ** 5
    for _ in range(20):
        assert sn.sample_placement(w, rng) in allp
    ev = sn.eval_placements(w, 4, rng)
    assert len(ev) == len(set(ev)) == 4 and set(ev) <= allp
    assert sn.eval_placements([4] * 7, 4, rng) == [tuple(tuple(range(4)) for _ in range(7))]
    assert sorted(sn.eval_placements([4, 4, 4, 4, 4, 4, 1], 4, rng)) == sorted(sn.all_placements([4] * 6 + [1]))


def test_r_zero_is_the_fixed_pattern():
    sn = cbm_supernet('mobilenet', 0.125, r=0)
    assert sn.all_placements([1, 2, 3, 4, 1, 2, 3]) == [sn.contiguous_placement([1, 2, 3, 4, 1, 2, 3])]


def test_imagenet_mobilenetv2_full_width_flops():
    sn = CafeSupernet(mobilenetv2_from_channels(mobilenetv2_channels()), 'flops', 1, (3, 224, 224))
    assert round(sn.flops(sn.full_widths()) / 1e6, 1) == 300.8
    assert round(sn.params(sn.full_widths()) / 1e6, 2) == 3.50


def test_channel_sets_contain_the_base_channels_and_stay_in_the_zone():
    sn = CafeSupernet(build_cbm('resnet', width_mult=0.125), [2, 4, 8, 4, 16, 8, 2], r=2, input_shape=(3, 32, 32))
    rng = np.random.default_rng(0)
    for _ in range(50):
        w = [int(rng.integers(1, n + 1)) for n in sn.num_units]
        for idx, c, n, b in zip(sn.channel_indices(w, sn.sample_placement(w, rng)), w, sn.num_units, sn.bin_sizes):
            ch = set(idx.tolist())
            base = max(c - 2, 0) * b
            assert len(ch) == idx.numel() == c * b                  # exactly c units of b channels
            assert set(range(base)) <= ch                           # every base channel
            assert max(ch) < min(c + 2, n) * b                      # nothing beyond the free zone
