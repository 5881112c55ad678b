"""The masked autoencoder: parameter counts, masking, patchify, the loss, the decoder order, initialisation."""
import math

import pytest
import torch

import model_factory
from base_green_models import MaskedAutoencoder, get_2d_sincos_pos_embed

CARD = {  # encoder params, MAE total, trainable
    'green_mim_swin_base_patch4_dec512b1': (86_743_224, 92_022_968, 91_997_880),
    'green_mim_swin_base_patch4_win14_dec512b1': (86_917_944, 92_197_688, 92_172_600),
    'green_mim_swin_large_patch4_win14_dec512b1': (195_257_556, 200_799_444, 200_774_356),
}


def test_parameter_counts_match_card():
    for name, (enc, total, trainable) in CARD.items():
        with torch.device('meta'):
            m = model_factory.get_pretrain_model(name)
        assert sum(p.numel() for p in m.encoder.parameters()) == enc, name
        assert sum(p.numel() for p in m.parameters()) == total, name
        assert sum(p.numel() for p in m.parameters() if p.requires_grad) == trainable, name
        dec = total - enc
        assert dec == (5_279_744 if 'base' in name else 5_541_888)
        assert m.decoder_pos_embed.shape == (1, 49, 512) and not m.decoder_pos_embed.requires_grad
    keys = set(m.state_dict())
    for k in ('encoder.patch_embed.proj.weight', 'encoder.layers.2.blocks.17.attn.relative_position_bias_table',
              'encoder.layers.2.downsample.reduction.weight', 'encoder.norm.weight', 'decoder_embed.weight',
              'mask_token', 'decoder_pos_embed', 'decoder_blocks.0.attn.qkv.weight', 'decoder_blocks.0.mlp.fc2.bias',
              'decoder_norm.weight', 'decoder_pred.weight', 'encoder.layers.0.blocks.0.attn.relative_position_index'):
        assert k in keys, k
    with pytest.raises(NotImplementedError, match='spconv'):
        model_factory.get_pretrain_model('green_mim_twins_large_patch4_dec512b1')
    with pytest.raises(ValueError, match='unknown model'):
        model_factory.get_pretrain_model('green_mim_swin_base_patch4_dec5121b1')


def test_sincos_position_embedding_by_hand():
    pe = get_2d_sincos_pos_embed(512, 7)
    assert pe.shape == (49, 512) and pe.dtype.name == 'float64'
    r, c = 1, 2
    row = pe[r * 7 + c]
    w1 = 10000 ** (-1 / 128)
    assert math.isclose(row[0], math.sin(c)) and math.isclose(row[128], math.cos(c))     # column first
    assert math.isclose(row[1], math.sin(c * w1)) and math.isclose(row[256], math.sin(r))  # then the row
    assert math.isclose(row[384 + 1], math.cos(r * w1))


def test_random_masking_keeps_int_L_quarter(tiny_card_mae):
    m = tiny_card_mae
    x = torch.zeros(3, 3, 224, 224)
    noise = torch.rand(1, 49, generator=torch.Generator().manual_seed(3))
    mask, ids_restore = m.random_masking(x, 0.75, noise)
    keep = noise.argsort(1)[0, :12]
    assert mask.shape == (3, 49) and torch.equal(mask[0], mask[2])
    assert mask.sum(1).tolist() == [37.] * 3  # int(49 * 0.25) = 12 visible
    assert (mask[0, keep] == 0).all()
    assert torch.equal(ids_restore[0], noise.argsort(1).argsort(1)[0])


def test_patchify_order_and_inverse(tiny_card_mae):
    m = tiny_card_mae
    img = torch.randn(2, 3, 224, 224)
    p = m.patchify(img)
    assert p.shape == (2, 49, 3072)
    # unit (row 1, col 3), pixel (p_row 5, p_col 7), channel 2
    assert p[1, 1 * 7 + 3, (5 * 32 + 7) * 3 + 2] == img[1, 2, 32 + 5, 96 + 7]
    assert torch.equal(m.unpatchify(p), img)


def test_norm_pix_loss_by_hand(tiny_card_mae):
    m = tiny_card_mae
    img = torch.randn(1, 3, 224, 224)
    pred = torch.randn(1, 49, 3072)
    mask = torch.zeros(1, 49)
    mask[0, [2, 40]] = 1
    t = m.patchify(img)
    total = 0.
    for u in (2, 40):
        v = t[0, u]
        mu = v.sum() / v.numel()
        var = ((v - mu) ** 2).sum() / (v.numel() - 1)  # unbiased
        total += (((pred[0, u] - (v - mu) / (var + 1e-6).sqrt()) ** 2).mean())
    assert torch.allclose(m.forward_loss(img, pred, mask), total / 2, atol=1e-5)
    m.norm_pix_loss = False
    raw = ((pred[0, [2, 40]] - t[0, [2, 40]]) ** 2).mean()
    assert torch.allclose(m.forward_loss(img, pred, mask), raw, atol=1e-5)
    m.norm_pix_loss = True


class _Echo(torch.nn.Module):
    """An encoder that returns, for every visible unit in row-major order, a one-hot of its unit index."""

    def forward(self, x, mask):
        vis = torch.nonzero(~mask[0]).squeeze(1)
        return torch.nn.functional.one_hot(vis, 49).float()[None].expand(x.shape[0], -1, -1)


@pytest.mark.parametrize('official', [False, True])
def test_decoder_order_fix_and_official_switch(official):
    torch.manual_seed(0)
    m = MaskedAutoencoder(_Echo(), embed_dim=49, patch_size=32, decoder_embed_dim=16, decoder_depth=0,
                          decoder_num_heads=2, official_decoder_order=official)
    with torch.no_grad():
        m.decoder_embed.weight.copy_(torch.randn(16, 49))
    noise = torch.rand(1, 49, generator=torch.Generator().manual_seed(5))
    x = torch.zeros(1, 3, 224, 224)
    latent, mask, ids_restore = m.forward_encoder(x, 0.75, noise)
    pred = m.forward_decoder(latent, ids_restore)
    ids_keep = noise.argsort(1)[0, :12]
    assert not torch.equal(ids_keep, ids_keep.sort().values)  # noise order differs from row-major
    for slot, u in enumerate(ids_keep.tolist()):
        # which unit's feature landed on unit u: ours -> u itself; official -> the slot-th row-major visible unit
        src = u if not official else ids_keep.sort().values[slot].item()
        tok = m.decoder_embed(torch.nn.functional.one_hot(torch.tensor(src), 49).float()) + m.decoder_pos_embed[0, u]
        assert torch.allclose(pred[0, u], m.decoder_pred(m.decoder_norm(tok)), atol=1e-5)
    masked = torch.nonzero(mask[0]).squeeze(1)
    tok = m.mask_token[0, 0] + m.decoder_pos_embed[0, masked]
    assert torch.allclose(pred[0, masked], m.decoder_pred(m.decoder_norm(tok)), atol=1e-5)


def test_initialisation(tiny_card_mae):
    m = tiny_card_mae
    enc_lin = m.encoder.layers[0].blocks[0].attn.qkv
    bound = math.sqrt(6 / (enc_lin.in_features + enc_lin.out_features))  # xavier-uniform, encoder included
    assert enc_lin.weight.abs().max() <= bound and enc_lin.weight.abs().max() > 0.9 * bound
    assert (enc_lin.bias == 0).all()
    assert m.encoder.norm.eps == 1e-6 and m.decoder_norm.eps == 1e-6
    assert m.encoder.layers[0].downsample.norm.eps == 1e-6
    assert torch.allclose(m.decoder_pos_embed[0], torch.from_numpy(get_2d_sincos_pos_embed(64, 7)).float())


def test_forward_backward_tiny(tiny_card_mae):
    m = tiny_card_mae
    m.train()
    loss, pred, mask = m(torch.randn(2, 3, 224, 224), 0.75)
    loss.backward()
    assert pred.shape == (2, 49, 3072) and mask.sum() == 74 and torch.isfinite(loss)
    assert m.mask_token.grad is not None and m.encoder.patch_embed.proj.weight.grad.abs().sum() > 0
    assert m.decoder_pos_embed.grad is None
    m.zero_grad(set_to_none=True)
    m.eval()
