"""Architectures: NAS-Bench-Macro network and supernet, ImageNet space, FLOPs/params counting."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from flops import SubnetCost, count_macs, count_params
from models import imagenet
from models.nas_bench_macro import (MacroSupernet, Network, analytic_params_macs, candidate_OP, parse_arch,
                                    real_arch)

# spec card check values: arch -> (params, JSON MACs)
CARD = {'00000000': (387882, 7713280), '11111111': (1588874, 53246464), '22222222': (2932586, 105660928),
        '22212220': (1985514, 85164544), '02012100': (890666, 47327744), '10000000': (396298, 12128768),
        '00000001': (791594, 14115328), '12121212': (2330186, 80617984)}


@pytest.mark.parametrize('arch', sorted(CARD))
def test_network_params_macs_match_card(arch):
    net = Network(arch)
    assert (count_params(net), count_macs(net, (1, 3, 32, 32))) == CARD[arch]
    assert analytic_params_macs(arch) == CARD[arch]


def test_macs_are_half_of_flop_counter_mode():
    for arch in ('22212220', '02012100'):
        net = Network(arch).eval()
        with FlopCounterMode(display=False) as fc:
            net(torch.zeros(1, 3, 32, 32))
        assert fc.get_total_flops() == 2 * CARD[arch][1]


def test_identity_is_projection_only_at_stage_start():
    net = Network('00000000')
    firsts = [0, 2, 5]
    for i, layer in enumerate(net.features):
        assert (layer.downsample is not None) == (i in firsts)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_inverted_residual_shortcut_rule():
    net = Network('11111111')
    assert [m.use_shortcut for m in net.features] == [False, True, False, True, True, False, True, True]


def test_supernet_path_equals_network():
    torch.manual_seed(0)
    sup = MacroSupernet(init_channels=8)
    arch = [2, 0, 1, 2, 0, 1, 1, 2]
    sup.set_subnet(arch)
    net = Network(arch, init_channels=8)
    # the path's weights, renamed to the stand-alone network's state_dict keys
    sd = {}
    for k, v in sup.state_dict().items():
        parts = k.split('.')
        if parts[0] == 'features':
            if int(parts[3]) != arch[int(parts[1])]:
                continue
            k = '.'.join(parts[:2] + parts[4:])
        sd[k] = v
    net.load_state_dict(sd, strict=True)
    sup.eval(), net.eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(sup(x), net(x), atol=1e-5)
    cost = SubnetCost(sup, (1, 3, 32, 32))
    assert cost.params(arch) == count_params(net)
    assert cost.macs(arch) == count_macs(net, (1, 3, 32, 32))


def test_supernet_interface_and_tf_init():
    sup = MacroSupernet()
    assert len(sup.choice_modules) == 8 and sup.choices == [3] * 8
    sup.set_subnet('22212220')
    assert sup.get_subnet() == [2, 2, 2, 1, 2, 2, 2, 0]
    conv = sup.features[0].ops[2].conv[0]  # expansion 1x1, 32 -> 192
    std = (2.0 / (1 * 1 * conv.out_channels)) ** 0.5
    assert abs(conv.weight.std().item() - std) < 0.1 * std
    assert float(sup.classifier.bias.detach().abs().sum()) == 0.0
    with pytest.raises(ValueError):
        sup.set_subnet([3] * 8)


def test_parse_and_real_arch():
    assert parse_arch('22212220') == [2, 2, 2, 1, 2, 2, 2, 0]
    assert real_arch('22212202') == '22212220'
    # stages 10 | 201 | 020: a stage's non-first identities move to its end
    assert real_arch('10201020') == '10210020'
    for bad in ('2221222', '22212223', 'abcdefgh', [0] * 9):
        with pytest.raises(ValueError):
            parse_arch(bad)
    assert candidate_OP == ['id', 'ir_3x3_t3', 'ir_5x5_t6']


@pytest.mark.parametrize('name,params,macs_m', [('MCT-NAS-A', 8448814, 441.6), ('MCT-NAS-B', 6408250, 327.2),
                                                ('MCT-NAS-C', 4952528, 280.3)])
def test_mctnas_imagenet_models(name, params, macs_m):
    model = imagenet.build_mctnas(name)
    assert count_params(model) == params
    assert round(count_macs(model, (1, 3, 224, 224)) / 1e6, 1) == macs_m


def test_mctnas_a_matches_paper():
    model = imagenet.build_mctnas('MCT-NAS-A')
    assert round(count_params(model) / 1e6, 1) == 8.4
    assert round(count_macs(model, (1, 3, 224, 224)) / 1e6) == 442


def test_se_reduces_from_expanded_width():
    block = imagenet.MBBlock(40, 40, 1, 3, 6, act='hswish', se=True)
    se = [m for m in block.modules() if isinstance(m, imagenet.SqueezeExcite)][0]
    assert se.conv_reduce.in_channels == 240 and se.conv_reduce.out_channels == 60


def test_imagenet_supernet_space():
    sup = imagenet.build_supernet_mbv2(num_classes=10)
    assert len(sup.choice_modules) == 21 and sup.choices == [7] * 21
    assert imagenet.CHOICES[6] == 'id' and imagenet.CHOICES[:3] == [(3, 3), (5, 3), (7, 3)]
    # id at a stride-2 layer is a 1x1 conv + BN, at a shape-keeping layer a true identity
    assert sup.features[0].ops[6].downsample is not None and sup.features[1].ops[6].downsample is None
    assert [i for i, m in enumerate(sup.features) if m.ops[6].downsample is not None] == [0, 4, 8, 12, 16, 20]
    sup.set_subnet([6] * 21)
    assert sup.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError):
        sup.set_subnet([7] * 21)
    with pytest.raises(ValueError):
        imagenet.build_mctnas('MCT-NAS-D')


def test_subnet_cost_imagenet_matches_built_network():
    sup = imagenet.build_supernet_mbv2()
    cost = SubnetCost(sup, (1, 3, 224, 224))
    arch = [0, 6, 3, 5, 1, 2, 4, 6, 0, 1, 6, 3, 5, 2, 4, 0, 1, 6, 2, 3, 5]
    net = imagenet.build_from_layers(imagenet.subnet_to_layers(arch), se=False, act='relu')
    assert cost.macs(arch) == count_macs(net, (1, 3, 224, 224))
    assert cost.params(arch) == count_params(net)
