import itertools

import pytest
import torch

from flops import count_macs, count_params
from models.cbm import MOBILENET_WIDTHS, RESNET_WIDTHS, build_cbm, cbm_counts
from supernet import BCNetSupernet

CARD = {  # spec card check values: (params, MACs)
    ('mobilenet', '1111111'): (125418, 14285312), ('mobilenet', '4444444'): (1804170, 211281920),
    ('mobilenet', '1234123'): (325610, 37928448), ('mobilenet', '4444342'): (1388170, 185062400),
    ('resnet', '1111111'): (963658, 90096896), ('resnet', '4444444'): (15356170, 1436226560),
    ('resnet', '1234123'): (2735050, 245810432), ('resnet', '4344424'): (12701322, 1209734144),
}


@pytest.fixture(scope='module')
def supernets():
    return {s: BCNetSupernet(build_cbm(s), 4, 1, (3, 32, 32)) for s in ('mobilenet', 'resnet')}


def test_slots_are_the_seven_benchmark_digits(supernets):
    mb, rs = supernets['mobilenet'], supernets['resnet']
    assert mb.slot_channels == list(MOBILENET_WIDTHS) and rs.slot_channels == list(RESNET_WIDTHS)
    # MobileNet c0: the stem tied with the pw-linear outputs of B1 and B2 (the depthwise convs follow c1..c5)
    assert mb.slot_convs[0] == ['stem.0', 'features.0.conv.6', 'features.1.conv.6']
    assert mb.slot_convs[4] == ['features.2.conv.6', 'features.3.conv.6']
    assert mb.slot_convs[1] == ['features.0.conv.0', 'features.0.conv.3']
    # ResNet c0: stem + second convs of B1, B2; c4: B3's second conv + those of B4, B5 (B3 has no shortcut)
    assert rs.slot_convs[0] == ['stem.0', 'block1.3', 'block2.3']
    assert rs.slot_convs[3] == ['block3.0'] and rs.slot_convs[4] == ['block3.3', 'block4.3', 'block5.3']
    assert rs.slot_convs[6] == ['block5.0']


def test_layer_flops_are_full_width_macs_of_each_slots_first_conv(supernets):
    mb = supernets['mobilenet'].get_layer_flops()
    assert mb[0] == 3 * 128 * 9 * 16 * 16                      # stem
    assert mb[1] == 128 * 768 * 16 * 16                        # B1 pw
    assert mb[4] == 768 * 256 * 8 * 8                          # B3 pw-linear, after the stride-2 dw
    assert mb[6] == 256 * 1024 * 8 * 8                         # head conv
    assert supernets['resnet'].get_layer_flops()[3] == 256 * 512 * 9 * 8 * 8


def test_card_params_and_flops_of_sliced_supernet_and_closed_form(supernets):
    for (space, arch), (p, f) in CARD.items():
        widths = [int(a) for a in arch]
        assert supernets[space].params(widths) == p and supernets[space].flops(widths) == f
        assert cbm_counts(arch, space) == (p, f)
        right = [[4 - w, 4] for w in widths]                   # the right path has the same size
        assert supernets[space].flops(right) == f


@pytest.mark.parametrize('space', ['mobilenet', 'resnet'])
def test_closed_form_matches_real_modules_on_a_sample(space):
    for arch in ('1111111', '4213142', '3424141'):
        net = build_cbm(space, arch)
        assert (count_params(net), count_macs(net, (3, 32, 32))) == cbm_counts(arch, space)


@pytest.mark.parametrize('space', ['mobilenet', 'resnet'])
def test_both_paths_equal_the_benchmark_network_with_sliced_weights(space):
    """Left [0, c) and right [B - c, B) slices export to the exact network of that arch."""
    torch.manual_seed(0)
    sn = BCNetSupernet(build_cbm(space, width_mult=0.25), 4, 1, (3, 32, 32))
    for m in sn.modules():   # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    sn.eval()
    x = torch.randn(2, 3, 32, 32)
    arch = [1, 2, 3, 4, 2, 1, 3]
    for choices in ([[0, c] for c in arch], [[4 - c, 4] for c in arch]):
        sn.set_channel_choices(choices)
        ref = build_cbm(space, ''.join(map(str, arch)), width_mult=0.25).eval()
        ref.load_state_dict(sn.export().state_dict(), strict=True)
        assert torch.allclose(sn(x), ref(x), atol=1e-5)
        assert count_macs(sn, (3, 32, 32)) == sn.flops() == count_macs(ref, (3, 32, 32))
    sn.reset()
    assert sn(x).shape == (2, 10)


def test_sliced_and_full_right_paths_differ():
    """Left and right paths of a width use different channels, so (in general) different outputs."""
    torch.manual_seed(0)
    sn = BCNetSupernet(build_cbm('resnet', width_mult=0.125), 4, 1, (3, 32, 32)).eval()
    x = torch.randn(1, 3, 32, 32)
    sn.set_channel_choices([2] * 7)
    left = sn(x)
    sn.set_channel_choices([[2, 4]] * 7)
    assert not torch.allclose(left, sn(x))


def test_bad_choices():
    sn = BCNetSupernet(build_cbm('mobilenet', width_mult=0.125), 4, 1, (3, 32, 32))
    with pytest.raises(ValueError):
        sn.set_channel_choices([1] * 6)
    with pytest.raises(ValueError):
        sn.set_channel_choices([5] * 7)
    with pytest.raises(ValueError):
        BCNetSupernet(build_cbm('mobilenet', width_mult=0.125), 4, 3)


def test_sliced_counts_equal_closed_form_on_a_sample_of_a_narrow_space():
    """(``python tables.py check`` does all 16384 archs of both full-width spaces against the table.)"""
    sn = BCNetSupernet(build_cbm('resnet', width_mult=0.5), 4, 1, (3, 32, 32))
    for a in list(itertools.product(range(1, 5), repeat=7))[::37]:
        assert (sn.params(list(a)), sn.flops(list(a))) == cbm_counts(a, 'resnet', width_mult=0.5)
