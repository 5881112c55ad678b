"""The search space (legality, the card's params/FLOPs), the K-shot supernet and its exported paths."""
import random

import pytest
import torch

import search_space as ss
from model import StandaloneNet, count_macs, count_parameters
from supernet import KShotSuperNet

FIRST = [0, 4, 8, 12, 16, 20]


@pytest.mark.parametrize('name,arch,params,macs', [
    # the card's reference paths (our convention); paper-level rounding: 2.16M/108.9M, 3.20M/291.1M, 9.12M/697.5M
    ('smallest legal path', [0 if i in FIRST else 12 for i in range(21)], 2_158_000, 108_869_888),
    ('all k3e3 no SE', [0] * 21, 3_203_992, 291_084_032),
    ('all k7e6 SE', [11] * 21, 9_120_496, 697_455_104),
])
def test_card_reference_paths(name, arch, params, macs):
    assert ss.count_params(arch) == params and ss.count_flops(arch) == macs
    assert round(params / 1e6, 2) == {'smallest legal path': 2.16, 'all k3e3 no SE': 3.20, 'all k7e6 SE': 9.12}[name]
    net = StandaloneNet(arch)  # independent count: the built network, parameters and conv/linear hooks
    assert count_parameters(net) == params and count_macs(net, (3, 224, 224)) == macs


def test_closed_form_matches_built_networks_with_widths(tiny):
    space = ss.SearchSpace(**tiny, image_size=16, num_classes=10)
    rng = random.Random(0)
    for _ in range(6):
        arch, widths = space.sample_arch(rng), space.sample_widths(rng)
        net = StandaloneNet(arch, widths, num_classes=10, **tiny)
        assert space.cost(arch, widths) == (count_parameters(net), count_macs(net, (3, 16, 16)))
    full = [1] * space.num_layers
    assert space.count_flops(full, [0.2] * 4) < space.count_flops(full, [1.0] * 4) == space.count_flops(full)


def test_op_index_convention_and_legality():
    assert len(ss.OPS) == 13 and ss.OPS[12] == 'id'
    for se in (0, 1):
        for ki, k in enumerate((3, 5, 7)):
            for ei, t in enumerate((3, 6)):
                assert ss.parse_op(ss.OPS[6 * se + 2 * ki + ei]) == (k, t, bool(se))
    assert ss.IMAGENET.num_layers == 21 and ss.IMAGENET.num_layers * ss.IMAGENET.num_ops == 273
    for i in range(21):
        assert (12 in ss.legal_ops(i)) == (i not in FIRST)
    rng = random.Random(0)
    for _ in range(50):
        arch = ss.sample_arch(rng)
        assert all(arch[i] != 12 for i in FIRST)
    with pytest.raises(ValueError, match='not legal'):
        ss.count_flops([12] * 21)
    with pytest.raises(ValueError, match='unknown op'):
        ss.parse_op('ir_3x5_se_t3')


def _tiny_supernet(tiny, K, **kw):
    torch.manual_seed(0)
    return KShotSuperNet(K=K, num_classes=10, **tiny, **kw)


def test_export_equals_supernet_and_one_hot_is_a_single_copy(tiny):
    net = _tiny_supernet(tiny, 3, channel_search=True).eval()
    x = torch.randn(3, 3, 8, 8)
    rng = random.Random(1)
    for _ in range(3):
        arch, widths = net.space.sample_arch(rng), net.space.sample_widths(rng)
        lam = torch.softmax(torch.randn(3), 0)
        sub = net.export_subnet(arch, lam, widths).eval()
        assert torch.allclose(sub(x), net(x, arch, lam, widths), atol=1e-5)
    # one-hot code e_2: the network of copy 2 alone (compare with a K = 1 supernet holding copy 2)
    single = _tiny_supernet(tiny, 1).eval()
    sd = {k: (v[2:3] if v.dim() and k not in ('classifier.weight', 'classifier.bias') and
              not k.endswith(('running_mean', 'running_var', 'num_batches_tracked')) else v)
          for k, v in net.state_dict().items()}
    single.load_state_dict(sd)
    arch = net.space.sample_arch(rng)
    assert torch.allclose(net(x, arch, torch.tensor([0.0, 0.0, 1.0])), single(x, arch, torch.ones(1)), atol=1e-6)


def test_k1_is_an_ordinary_one_shot_supernet(tiny):
    """K = 1: the path's network is the plain single-weight network holding the shared weights (train mode,
    batch statistics), and identical copies with any code give the same network."""
    net = _tiny_supernet(tiny, 1).train()
    x = torch.randn(4, 3, 8, 8)
    arch = [1, 12, 8, 6]
    sub = net.export_subnet(arch, torch.ones(1)).train()
    assert torch.allclose(sub(x), net(x, arch, torch.ones(1)), atol=1e-5)
    same = _tiny_supernet(tiny, 3).train()
    same.load_state_dict({k: (v.expand(3, *v.shape[1:]).clone() if k in dict(same.named_parameters()) and
                              not k.startswith('classifier') else v) for k, v in net.state_dict().items()})
    assert torch.allclose(same(x, arch, torch.tensor([0.7, 0.2, 0.1])), net(x, arch, torch.ones(1)), atol=1e-5)


def test_combined_weights_have_rank_at_most_k(tiny):
    for K in (1, 2, 3):
        net = _tiny_supernet(tiny, K)
        conv = net.blocks[1].ops[3].conv_pw  # one op, its weights for many paths (codes) as columns
        codes = torch.distributions.Dirichlet(torch.ones(K)).sample((40,))
        M = torch.stack([conv.combined(c)[0].flatten() for c in codes], 1)
        assert M.shape[1] == 40 and torch.linalg.matrix_rank(M) == K


def test_state_dict_keys_and_copy_shapes(tiny):
    net = _tiny_supernet(tiny, 3, bn_K=1)
    sd = net.state_dict()
    assert sd['blocks.0.ops.7.conv_pw.weight'].shape[0] == 3  # convs: K copies
    assert sd['blocks.0.ops.7.se.conv_reduce.weight'].shape[0] == 1  # BN and SE: bn_weight_num copies
    assert sd['blocks.0.ops.7.bn2.weight'].shape == (1, 24) and sd['conv_stem.weight'].shape == (3, 4, 3, 3, 3)
    assert sd['classifier.weight'].shape == (10, 16)  # a single shared classifier
    with pytest.raises(ValueError, match='bn_K'):
        KShotSuperNet(K=3, bn_K=2, **tiny)


def test_supernet_parameter_count_of_tables_matches_a_built_supernet(tiny):
    from tables import supernet_params
    for K in (1, 3):
        net = KShotSuperNet(K=K, num_classes=10, **tiny)
        space = ss.SearchSpace(**tiny, num_classes=10)
        assert sum(p.numel() for p in net.parameters()) == supernet_params(K, space)
