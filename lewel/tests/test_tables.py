"""The card's parameter counts and FLOPs are reproduced exactly by ``tables.py``."""
import tables


def test_parameter_rows_match_the_card():
    rows = tables.param_rows()
    assert len(rows) == 8
    for what, card, ours in rows:
        assert ours == card, what


def test_flop_rows_match_the_card():
    for what, card, ours in tables.flop_rows():
        assert round(ours, 2) == card, (what, ours)


def test_extract_backbone_gives_torchvision_keys(tmp_path):
    import torch
    import torchvision
    from functools import partial
    import backbones
    import models
    from tools import extract_backbone
    model = models.LEWELB_EMAN(partial(backbones.resnet18_encoder), dim=8, hid_dim=16)
    torch.save({'state_dict': {f'module.{k}': v for k, v in model.state_dict().items()}}, tmp_path / 'ckpt.pth')
    state = extract_backbone.extract(tmp_path / 'ckpt.pth', tmp_path / 'bb.pth')
    missing, unexpected = torchvision.models.resnet18().load_state_dict(
        torch.load(tmp_path / 'bb.pth')['state_dict'], strict=False)
    assert set(missing) == {'fc.weight', 'fc.bias'} and not unexpected
    assert torch.equal(state['conv1.weight'], model.online_net.backbone.conv1.weight)
