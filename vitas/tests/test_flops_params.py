"""Params and official-counter FLOPs of the released nets against the card; the counter itself."""
import pytest
import torch

import model
from flops import count_flops, count_flops_standard, expected_flops, official_macs
from subnet import Subnet, decode_net_id
from supernet import ViTASSuperNet

CARD = {  # params, FLOPs (official counter)
    'ViTAS-A': (3_679_478, 858_652_480),
    'ViTAS-B': (4_400_248, 990_624_768),
    'ViTAS-C': (6_048_414, 1_303_042_496),
    'ViTAS-E': (12_550_598, 2_706_797_632),
    'ViTAS-F': (22_540_277, 4_930_994_656),
    'DeiT-Ti': (5_717_416, 1_284_003_840),
    'DeiT-S': (22_050_664, 4_648_906_752),
}


@pytest.mark.parametrize('name', sorted(CARD))
def test_released_params_and_flops_equal_the_card(name):
    with torch.device('meta'):
        m = model.MODELS[name]()
    assert sum(p.numel() for p in m.parameters()) == CARD[name][0]
    assert count_flops(m) == CARD[name][1]


def test_decoded_dims_of_vitas_a_match_the_card():
    with torch.device('meta'):
        m = model.ViTAS_A()
    assert m.embed_dim == 154 and m.patch_size == 16
    assert m.describe() == ('patch 16, embed 154: (12,288,96,1008) id (16,720,240,576) id id '
                            '(6,288,96,1296) (16,1008,336,720) id (16,1152,384,1008) id id id id '
                            '(16,864,288,1152) (16,1440,480,1296) id')


def test_state_dict_keys_of_stand_alone_model():
    with torch.device('meta'):
        keys = list(model.DeiT_Ti().state_dict())
    assert keys[:4] == ['patch_embed.cls_token', 'patch_embed.pos_embed',
                        'patch_embed.proj.weight', 'patch_embed.proj.bias']
    assert 'blocks.11.attn.qkv.weight' in keys and 'blocks.0.mlp.fc2.bias' in keys
    assert keys[-4:] == ['norm.weight', 'norm.bias', 'head.weight', 'head.bias']


def test_official_counter_by_hand():
    # 32 px, patch 8 -> N = 16 (class token not counted); D = 4; one block Q = 6, M = 8; 3 classes
    n, d, q, m = 16, 4, 6, 8
    hand = 3 * d * n * 64 + (n * d * q + 2 * n * n * 2 + n * 2 * d + n * d * m + n * m * d) + n * d * 3
    assert official_macs(32, 8, 4, [(1, 6, 8), None], num_classes=3) == hand


def test_subnet_flops_equal_flops_of_its_built_model():
    space = dict(model.TINY_SPACE)
    net_id, model_len, _ = model.NET_IDS['ViTAS-B']
    sub = decode_net_id(net_id, model_len)
    assert count_flops(sub, space) == CARD['ViTAS-B'][1]
    with torch.device('meta'):
        sn = ViTASSuperNet()
    assert count_flops(sub, sn) == CARD['ViTAS-B'][1]      # a supernet instance works as cfg


def test_standard_counter_is_two_flops_per_mac_over_all_tokens():
    n, d = 197, 192
    macs = 3 * d * 196 * 256 + 12 * (n * d * 576 + 2 * n * n * 192 + n * 192 * d + 2 * n * d * 768) \
        + d * 1000
    assert count_flops_standard(model.DeiT_Ti()) == 2 * macs


def test_expected_flops_and_id_prop_interval_of_the_card():
    assert expected_flops(0.0) == pytest.approx(1.856e9, rel=1e-3)
    assert expected_flops(0.5) == pytest.approx(0.962e9, rel=1e-3)
    assert expected_flops(1.0) == pytest.approx(0.067e9, rel=1e-2)
    grid = [round(i * 0.01, 2) for i in range(101)]
    ok = [p for p in grid if 0.9e9 <= expected_flops(p) <= 1.0e9]
    assert (min(ok), max(ok)) == (0.48, 0.53)


def test_identity_block_costs_nothing():
    space = dict(model.TINY_SPACE)
    a = Subnet(1, 0.5, [(0, 0.5, 0.5)] * 16)
    b = Subnet(1, 0.5, [None] + [(0, 0.5, 0.5)] * 15)
    per_block = count_flops(a, space) - count_flops(b, space)
    n, d, q, m = 196, 192, 720, 720
    assert per_block == n * d * q + 2 * n * n * (q // 3) + n * (q // 3) * d + 2 * n * d * m
