"""Supernet invariants: full width = plain model, extraction = supernet logits, gradient paths."""
import random

import pytest
import torch

from conftest import CP4, tiny_supernet
from model import ViTASNet
from subnet import Subnet, generate_subnet
from supernet import ViTASSuperNet


def plain_copy(sn, patch_idx, head_idx):
    """A ViTASNet loaded by hand from the supernet's full tensors (no slicing code involved)."""
    e, q3 = sn.embed_dim, sn.at_temp
    net = ViTASNet(e, sn.patch_sizes[patch_idx], [(sn.heads[head_idx], q3, sn.mlp_dim)] * sn.depth,
                   sn.num_classes, drop_path_rate=0., qk_scale=sn.qk_scale, img_size=sn.img_size)
    src = sn.state_dict()
    sd = {'patch_embed.' + k: src[f'embeds.{patch_idx}.{k}']
          for k in ('proj.weight', 'proj.bias', 'cls_token', 'pos_embed')}
    for i in range(sn.depth):
        p = f'blocks.{i}.'
        for k in ('norm1.weight', 'norm1.bias', 'norm2.weight', 'norm2.bias', 'attn.proj.weight',
                  'attn.proj.bias', 'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight',
                  'mlp.fc2.bias'):
            sd[p + k] = src[p + k]
        for k in ('weight', 'bias'):
            sd[p + 'attn.qkv.' + k] = torch.cat([src[p + f'attn.qk{head_idx}.{k}'],
                                                src[p + f'attn.v.{k}']])
    for k in ('norm.weight', 'norm.bias', 'head.weight', 'head.bias'):
        sd[k] = src[k]
    net.load_state_dict(sd, strict=True)
    return net


def full_subnet(sn, patch_idx=0, head_idx=1):
    return Subnet(patch_idx, 1.0, [(head_idx, 1.0, 1.0)] * sn.depth)


def test_state_dict_keys_follow_the_card(supernet):
    keys = set(supernet.state_dict())
    for k in ('embeds.1.proj.weight', 'embeds.1.cls_token', 'embeds.1.pos_embed',
              'blocks.3.norm1.weight', 'blocks.3.attn.qk2.weight', 'blocks.3.attn.v.bias',
              'blocks.3.attn.proj.weight', 'blocks.3.mlp.fc2.bias', 'norm.weight', 'head.weight'):
        assert k in keys
    assert not any('qk3' in k for k in keys)                 # one qk per head choice (3 here)


def test_supernet_param_count_384_space():
    with torch.device('meta'):
        sn = ViTASSuperNet()
    assert sum(p.numel() for p in sn.parameters()) == 49_596_904


@pytest.mark.parametrize('patch_idx,head_idx', [(0, 0), (1, 2)])
def test_full_width_left_forward_equals_plain_model(supernet, patch_idx, head_idx):
    x = torch.randn(3, 3, 32, 32)
    plain = plain_copy(supernet, patch_idx, head_idx).eval()
    sub = full_subnet(supernet, patch_idx, head_idx)
    ref = plain(x)
    assert torch.allclose(supernet(x, sub, 'left'), ref, atol=1e-5)
    assert torch.allclose(supernet(x, sub, 'right'), ref, atol=1e-5)   # both sides = everything


@pytest.mark.parametrize('side', ['left', 'right', 'cyclic'])
def test_extracted_subnet_gives_supernet_logits(supernet, side):
    rng = random.Random(side)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(4):
        sub = generate_subnet(supernet.depth, 0.3, CP4, rng, n_heads=3, n_patch=2)
        net = supernet.extract(sub, side).eval()
        assert torch.allclose(net(x), supernet(x, sub, side), atol=1e-5)
        n_active = sum(b is not None for b in sub.blocks)
        assert len(net.blocks) == n_active


def test_left_and_right_differ_below_full_width(supernet):
    x = torch.randn(2, 3, 32, 32)
    sub = Subnet(0, 0.5, [(1, 0.5, 0.5)] * supernet.depth)
    assert not torch.allclose(supernet(x, sub, 'left'), supernet(x, sub, 'right'))


def test_bcnet_trains_on_sum_of_left_and_right(supernet):
    x = torch.randn(2, 3, 32, 32)
    sub = Subnet(1, 0.75, [(0, 0.5, 0.25), None, (2, 1.0, 0.5), (1, 0.25, 1.0)])
    both = supernet(x, sub, 'left') + supernet(x, sub, 'right')
    assert torch.allclose(supernet.forward_train(x, sub), both)
    auto = tiny_supernet(side_scheme='AutoSlim')
    assert torch.allclose(auto.forward_train(x, sub), auto(x, sub, 'left'))


def test_parameters_off_the_path_get_no_gradient(supernet):
    sub = Subnet(1, 0.5, [(0, 0.5, 0.25), None, (2, 1.0, 0.5), None],
                 id_channels={1: (0.25, 0.25), 3: (1.0, 1.0)})
    supernet.zero_grad(set_to_none=True)
    supernet.forward_train(torch.randn(2, 3, 32, 32), sub).sum().backward()
    on = {n for n, p in supernet.named_parameters() if p.grad is not None}
    for n, p in supernet.named_parameters():
        off = (n.startswith('embeds.0.') or n.startswith(('blocks.1.', 'blocks.3.'))
               or any(n.startswith(f'blocks.{i}.attn.qk{h}.') for i, h in ((0, 1), (0, 2), (2, 0),
                                                                              (2, 1))))
        assert (n not in on) == off, n
    # BCNet: left (rows 0..15) and right (16..31) of a half-width embedding cover the conv
    g = supernet.embeds[1].proj.weight.grad
    assert g[:16].abs().sum() > 0 and g[16:].abs().sum() > 0
    # but only the used slices of a width-0.25 MLP: rows 0..15 (left) and 48..63 (right)
    g = supernet.blocks[0].mlp.fc1.weight.grad
    assert g[16:48].abs().sum() == 0 and g[:16].abs().sum() > 0 and g[48:].abs().sum() > 0


def test_adamw_with_set_to_none_leaves_off_path_params_still(supernet):
    opt = torch.optim.AdamW(supernet.parameters(), lr=1e-2)
    x = torch.randn(2, 3, 32, 32)
    a = Subnet(0, 1.0, [(0, 1.0, 1.0)] * 4)
    b = Subnet(1, 1.0, [(1, 1.0, 1.0)] * 4)
    for sub in (a, b):
        opt.zero_grad(set_to_none=True)
        before = supernet.blocks[0].attn.qk0.weight.detach().clone()
        supernet.forward_train(x, sub).pow(2).mean().backward()
        opt.step()
    assert torch.equal(supernet.blocks[0].attn.qk0.weight, before)   # qk0 not on b's path


def test_official_compat_reproduces_the_three_bugs():
    x = torch.randn(2, 3, 32, 32)
    fixed, compat = tiny_supernet(), tiny_supernet(official_compat=True)
    full = full_subnet(fixed)
    # Pitfall 1: the last position row only -> no positional information
    assert not torch.allclose(compat(x, full, 'left'), fixed(x, full, 'left'))
    with torch.no_grad():
        for e in fixed.embeds:
            e.pos_embed.copy_(e.pos_embed[:, -1:].expand_as(e.pos_embed))
    assert torch.allclose(compat(x, full, 'left'), fixed(x, full, 'left'), atol=1e-5)
    # Pitfall 2: identity blocks do not consume their channel entries
    sub = Subnet(0, 0.5, [None, (0, 0.5, 0.25), (1, 1.0, 0.75), None],
                 id_channels={0: (0.25, 1.0), 3: (0.75, 0.75)})
    shifted = Subnet(0, 0.5, [None, (0, 0.25, 1.0), (1, 0.5, 0.25), None], id_channels={})
    assert torch.allclose(compat(x, sub, 'right'), fixed(x, shifted, 'right'), atol=1e-5)
    # Pitfall 3: patch embeddings other than candidate 0 are never trained
    compat.forward_train(x, Subnet(1, 0.5, [(0, 0.5, 0.5)] * 4)).sum().backward()
    assert all(p.grad is None for p in compat.embeds[1].parameters())
    fixed.forward_train(x, Subnet(1, 0.5, [(0, 0.5, 0.5)] * 4)).sum().backward()
    assert all(p.grad is not None for p in fixed.embeds[1].parameters())


def test_cyclic_offsets_cover_channels_evenly(supernet):
    # widths 8, 16, 24, 32 of a 32-wide ring start at 0, 8, 24, 48 % 32 = 16
    assert supernet._cyclic_start == {8: 0, 16: 8, 24: 24, 32: 16}
    counts = torch.zeros(32)
    for w, s in supernet._cyclic_start.items():
        counts[(s + torch.arange(w)) % 32] += 1
    assert counts.tolist() == [3.] * 16 + [2.] * 16


def test_bad_subnet_is_rejected(supernet):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match='blocks'):
        supernet(x, Subnet(0, 1.0, [(0, 1.0, 1.0)] * 3))
    with pytest.raises(ValueError, match='head index'):
        supernet(x, Subnet(0, 1.0, [(3, 1.0, 1.0)] * 4))
    no_id = tiny_supernet(id_op=False)
    with pytest.raises(ValueError, match='identity'):
        no_id(x, Subnet(0, 1.0, [None] + [(0, 1.0, 1.0)] * 3))
