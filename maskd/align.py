"""Per-level 1x1 align convs (student channels -> teacher channels, with bias), one per distilled level.

They exist even when the channel counts are equal (as in the official mmrazor distiller) and are trained
with the student. Imports only torch.
"""
import torch.nn as nn

__all__ = ['AlignModules']


class AlignModules(nn.ModuleList):
    """``AlignModules(student_channels, teacher_channels, num_levels)``: ``num_levels`` 1x1 convs with bias.

    Channel arguments are an int (the same for every level) or a list with one entry per level. Calling the
    module on a list/tuple/dict of student features returns the aligned features in the same container type.
    """

    def __init__(self, student_channels, teacher_channels, num_levels):
        s = [student_channels] * num_levels if isinstance(student_channels, int) else list(student_channels)
        t = [teacher_channels] * num_levels if isinstance(teacher_channels, int) else list(teacher_channels)
        if len(s) != num_levels or len(t) != num_levels:
            raise ValueError(f'need {num_levels} channel entries, got {len(s)} student / {len(t)} teacher')
        super().__init__(nn.Conv2d(cs, ct, 1, bias=True) for cs, ct in zip(s, t))

    def forward(self, feats):
        if isinstance(feats, dict):
            if len(feats) != len(self):
                raise ValueError(f'{len(self)} align convs, {len(feats)} feature levels')
            return type(feats)((k, conv(v)) for conv, (k, v) in zip(self, feats.items()))
        feats = list(feats)
        if len(feats) != len(self):
            raise ValueError(f'{len(self)} align convs, {len(feats)} feature levels')
        return [conv(f) for conv, f in zip(self, feats)]
