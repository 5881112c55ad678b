"""The official GreenMIM pre-training models (encoder + MAE decoder), by their official names.

Imports only torch and sibling algorithm modules.
"""
from functools import partial

import torch.nn as nn

from base_green_models import MaskedAutoencoder
from green_swin_models import SwinTransformer

SWIN_ARCHS = {
    'green_mim_swin_base_patch4_dec512b1':
        dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=7),
    'green_mim_swin_base_patch4_win14_dec512b1':
        dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=14),
    'green_mim_swin_large_patch4_win14_dec512b1':
        dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=14),
}
# needs sparse convolutions (spconv / MinkowskiEngine): not implemented in this folder
UNSUPPORTED = {'green_mim_twins_large_patch4_dec512b1'}


def green_mim_swin(img_size=224, patch_size=4, in_chans=3, embed_dim=128, depths=(2, 2, 18, 2),
                   num_heads=(4, 8, 16, 32), window_size=7, decoder_embed_dim=512, decoder_depth=1,
                   decoder_num_heads=16, norm_pix_loss=True, official_decoder_order=False, drop_path_rate=0.,
                   search_group_size=False, use_checkpoint=False):
    """A GreenMIM Swin (any size): LN eps 1e-6 everywhere, no APE, patch norm, drop-path 0 by default.
    The mask unit is a last-stage token (``patch_size * 2^(stages-1)`` pixels)."""
    norm = partial(nn.LayerNorm, eps=1e-6)
    encoder = SwinTransformer(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
                              depths=list(depths), num_heads=list(num_heads), window_size=window_size,
                              mlp_ratio=4., qkv_bias=True, drop_path_rate=drop_path_rate, norm_layer=norm,
                              ape=False, patch_norm=True, use_checkpoint=use_checkpoint,
                              search_group_size=search_group_size)
    unit = patch_size * 2 ** (len(depths) - 1)
    return MaskedAutoencoder(encoder, embed_dim=encoder.num_features, patch_size=unit, in_chans=in_chans,
                             decoder_num_patches=(img_size // unit) ** 2, decoder_embed_dim=decoder_embed_dim,
                             decoder_depth=decoder_depth, decoder_num_heads=decoder_num_heads, norm_layer=norm,
                             norm_pix_loss=norm_pix_loss, mlp_ratio=4,
                             official_decoder_order=official_decoder_order)


def get_pretrain_model(model_str, norm_pix_loss=True, **kwargs):
    """``get_pretrain_model('green_mim_swin_base_patch4_dec512b1')``; ``kwargs`` go to ``green_mim_swin``
    (e.g. ``official_decoder_order=True``)."""
    if model_str in UNSUPPORTED:
        raise NotImplementedError(f"'{model_str}' needs sparse convolutions (spconv); only the Swin models are "
                                  f"implemented here")
    if model_str not in SWIN_ARCHS:
        raise ValueError(f"unknown model '{model_str}'; choose one of {', '.join(SWIN_ARCHS)}")
    return green_mim_swin(norm_pix_loss=norm_pix_loss, **SWIN_ARCHS[model_str], **kwargs)
