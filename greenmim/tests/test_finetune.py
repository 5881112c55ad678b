"""Fine-tuning: layer-wise LR decay, weight-decay rule, loading a pre-trained encoder, Mixup, extraction."""
import numpy as np
import pytest
import torch

import augment
from extract_backbone import extract_backbone
from finetune import SwinClassifier, build_finetune_optimizer, get_layer_id, load_pretrained_encoder


def test_layer_ids_swin_base_by_hand():
    d = [2, 2, 18, 2]
    assert get_layer_id('patch_embed.proj.weight', d) == 0
    assert get_layer_id('layers.0.blocks.0.norm1.weight', d) == 1
    assert get_layer_id('layers.0.blocks.1.attn.qkv.weight', d) == 2
    assert get_layer_id('layers.0.downsample.reduction.weight', d) == 2
    assert get_layer_id('layers.1.downsample.norm.bias', d) == 4
    assert get_layer_id('layers.2.blocks.17.mlp.fc1.weight', d) == 22
    assert get_layer_id('layers.3.blocks.1.norm2.weight', d) == 24
    assert get_layer_id('norm.weight', d) == 25 and get_layer_id('head.weight', d) == 25


def _tiny(num_classes=5):
    return SwinClassifier(num_classes=num_classes, img_size=32, patch_size=2, embed_dim=8, depths=[1, 2, 1],
                          num_heads=[1, 2, 2], window_size=4, drop_path_rate=0.)


def test_param_groups_scale_and_decay():
    net = _tiny()
    opt = build_finetune_optimizer(net, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    by_name = {}
    for g in opt.param_groups:
        for p in g['params']:
            by_name[id(p)] = g
    named = dict(net.named_parameters())
    top = sum([1, 2, 1]) + 1  # 5
    g = by_name[id(named['layers.1.blocks.1.attn.qkv.weight'])]  # id sum(depths[:1]) + 1 + 1 = 3
    assert g['lr_scale'] == 0.5 ** (top - 3) and g['weight_decay'] == 0.05 and g['lr'] == 1e-3 * 0.25
    assert by_name[id(named['layers.1.downsample.reduction.weight'])]['lr_scale'] == 0.5 ** (top - 3)
    assert by_name[id(named['patch_embed.proj.weight'])]['lr_scale'] == 0.5 ** 5
    assert by_name[id(named['head.weight'])]['lr_scale'] == 1.0
    for n in ('layers.0.blocks.0.attn.relative_position_bias_table', 'layers.0.blocks.0.attn.qkv.bias',
              'norm.weight', 'layers.0.downsample.norm.weight'):
        assert by_name[id(named[n])]['weight_decay'] == 0., n
    assert sum(len(g['params']) for g in opt.param_groups) == len(named)


def test_load_pretrained_encoder_and_features_match():
    import model_factory
    torch.manual_seed(0)
    mae = model_factory.green_mim_swin(img_size=32, patch_size=2, embed_dim=8, depths=[1, 2, 1], num_heads=[1, 2, 2],
                                       window_size=4, decoder_embed_dim=16, decoder_num_heads=2).eval()
    net = _tiny().eval()
    missing = load_pretrained_encoder(net, mae.state_dict())
    assert set(missing) == {'head.weight', 'head.bias'}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        full = mae.encoder(x, torch.zeros(1, 16, dtype=torch.bool)).mean(1)
        assert torch.allclose(net.forward_features(x), full, atol=1e-5)
    backbone = extract_backbone(mae.state_dict())
    assert not any(k.startswith(('decoder', 'mask_token', 'encoder.')) or k.endswith('relative_position_index')
                   for k in backbone)
    missing = load_pretrained_encoder(_tiny(), backbone)
    assert set(missing) == {'head.weight', 'head.bias'}
    wrong = SwinClassifier(num_classes=5, img_size=32, patch_size=2, embed_dim=16, depths=[1, 2, 1],
                           num_heads=[1, 2, 2], window_size=4)
    with pytest.raises(KeyError, match='shape mismatch'):
        load_pretrained_encoder(wrong, backbone)


def test_mixup_targets_and_smoothing():
    np.random.seed(0)
    y = torch.tensor([0, 1, 2, 3])
    x = torch.randn(4, 3, 8, 8)
    plain = augment.Mixup(0., 0., smoothing=0.1, num_classes=10)
    xo, t = plain(x, y)
    assert torch.equal(xo, x) and torch.allclose(t[0, 0], torch.tensor(0.91)) and torch.allclose(t[0, 1],
                                                                                               torch.tensor(0.01))
    mix = augment.Mixup(0.8, 0., prob=1.0, smoothing=0., num_classes=10)
    xo, t = mix(x, y)
    lam = t[0, 0].item()
    assert 0 < lam < 1 and torch.allclose(xo, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.allclose(t[0, 3], torch.tensor(1 - lam)) and torch.allclose(t.sum(1), torch.ones(4))
    cut = augment.Mixup(0., 1.0, prob=1.0, smoothing=0., num_classes=10)
    xo, t = cut(x, y)
    changed = (xo != x).any(1).float().mean(dim=(1, 2))  # area taken from the flipped batch
    assert torch.allclose(t[0, 0], 1 - changed[0], atol=1e-6)
    logits = torch.randn(4, 10)
    assert torch.allclose(augment.soft_target_cross_entropy(logits, torch.nn.functional.one_hot(y, 10).float()),
                          torch.nn.functional.cross_entropy(logits, y))
