"""net_id encoding, decoding, random sampling and identity shifting."""
import random

import pytest

from model import NET_IDS
from subnet import (CHANNEL_PERCENT, Subnet, decode_net_id, encode_net_id, generate_subnet,
                    shift_identity, subnet_dims)


@pytest.mark.parametrize('name', sorted(NET_IDS))
def test_net_id_round_trip(name):
    net_id, model_len, _ = NET_IDS[name]
    sub = decode_net_id(net_id, model_len)
    assert encode_net_id(sub) == net_id
    assert len(net_id.split()) == model_len + 1 + 2 * (model_len - 3)


def test_decode_vitas_a_by_hand():
    sub = decode_net_id(NET_IDS['ViTAS-A'][0], 19)
    assert sub.patch_idx == 1 and sub.embed_ratio == 0.4          # patch 16, 384 * 0.4 -> 154
    assert sub.blocks[0] == (2, 0.2, 0.7)                          # 12 heads, qkv 288, MLP 1008
    assert sub.blocks[1] is None and sub.id_channels[1] == (0.8, 1.0)   # channels '7 9'
    patch, d, blocks = subnet_dims(sub)
    assert (patch, d, blocks[0]) == (16, 154, (12, 288, 1008))
    assert sum(b is not None for b in blocks) == 7


def test_widths_use_python_round():
    sub = Subnet(1, 0.6, [(0, 0.1, 0.6)] + [None] * 15)
    patch, d, blocks = subnet_dims(sub)
    assert d == 230 and blocks[0] == (3, 144, 864)
    _, d, _ = subnet_dims(Subnet(1, 0.6, [(3, 1.0, 1.0)] * 13), dict(embed_dim=768, depth=13))
    assert d == 461


def test_bad_net_ids_are_rejected():
    with pytest.raises(ValueError, match='channel entries'):
        decode_net_id('1 0 0 0 0', 5)
    with pytest.raises(ValueError, match='op id'):
        decode_net_id('1 7 0 0 0 0 0', 4)
    with pytest.raises(ValueError, match='Norm and FC'):
        decode_net_id('1 0 1 0 0 0 0', 4)


def test_generate_subnet_statistics():
    rng = random.Random(0)
    subs = [generate_subnet(16, 0.3, CHANNEL_PERCENT, rng) for _ in range(2000)]
    ids = sum(b is None for s in subs for b in s.blocks) / (2000 * 16)
    assert abs(ids - 0.3) < 0.02
    assert {s.patch_idx for s in subs} == {0, 1, 2}
    assert {b[0] for s in subs for b in s.blocks if b is not None} == {0, 1, 2, 3}
    assert all(len(s.id_channels) == sum(b is None for b in s.blocks) for s in subs)


def test_identity_shift_moves_identities_to_the_end():
    sub = Subnet(0, 0.5, [None, (1, 0.2, 0.3), None, (2, 0.4, 0.5)],
                 id_channels={0: (0.1, 0.1), 2: (0.9, 0.9)})
    out = shift_identity(sub)
    assert out.blocks == [(1, 0.2, 0.3), (2, 0.4, 0.5), None, None]
    assert out.id_channels == {2: (0.1, 0.1), 3: (0.9, 0.9)}
    assert shift_identity(out) == out
