import pytest
import torch

from flops import count_macs, count_params
from models.imagenet import mobilenetv2_channels, mobilenetv2_from_channels, resnet50_channels, \
    resnet50_from_channels
from supernet import BCNetSupernet


def test_full_width_counts_match_the_card():
    mb = mobilenetv2_from_channels(mobilenetv2_channels())
    sn = BCNetSupernet(mb, 20, 1, (3, 224, 224))
    assert len(mobilenetv2_channels()) == 52 and sn.num_slots == 25      # the 25 choices of the V2 configs
    assert sn.flops() == count_macs(mb, (3, 224, 224))
    assert round(sn.flops() / 1e6, 1) == 300.8 and round(count_params(mb) / 1e6, 2) == 3.50
    rn = resnet50_from_channels(resnet50_channels())
    assert len(resnet50_channels()) == 53 and round(count_params(rn) / 1e6, 2) == 25.56


def test_resnet50_slots_and_macs():
    rn = resnet50_from_channels(resnet50_channels())
    sn = BCNetSupernet(rn, 20, 1, (3, 224, 224))
    assert sn.num_slots == 1 + 16 * 2 + 4             # stem, conv1/conv2 of each block, 4 stage outputs
    assert round(sn.flops() / 1e9, 3) == 4.089


def test_torchvision_state_dict_layout():
    tv = pytest.importorskip('torchvision.models')
    for ours, theirs in ((mobilenetv2_from_channels(mobilenetv2_channels()), tv.mobilenet_v2()),
                         (resnet50_from_channels(resnet50_channels()), tv.resnet50())):
        a, b = ours.state_dict(), theirs.state_dict()
        assert list(a) == list(b)
        assert all(a[k].shape == b[k].shape for k in a)
        ours.load_state_dict(b, strict=True)


def test_channel_lists_are_validated():
    ch = mobilenetv2_channels()
    bad = list(ch)
    bad[4] = 50            # dw conv of block 1 must keep its expand width (entry 3)
    with pytest.raises(ValueError):
        mobilenetv2_from_channels(bad)
    bad = list(ch)
    bad[8] = 20            # block 2 of stage 1 adds its input (24 channels)
    with pytest.raises(ValueError):
        mobilenetv2_from_channels(bad)
    with pytest.raises(ValueError):
        mobilenetv2_from_channels(ch[:-1])
    rch = resnet50_channels()
    bad = list(rch)
    bad[4] = 128           # the downsample conv of layer1.0 must equal its conv3
    with pytest.raises(ValueError):
        resnet50_from_channels(bad)


def test_a_thin_mobilenetv2_from_a_supernet_slice_runs():
    torch.manual_seed(0)
    sn = BCNetSupernet(mobilenetv2_from_channels(mobilenetv2_channels(), num_classes=5), 20, 1, (3, 64, 64))
    widths = [3 + (i % 17) for i in range(sn.num_slots)]
    net = mobilenetv2_from_channels(sn.channels(widths), num_classes=5)
    sn.set_channel_choices(widths)
    net.load_state_dict(sn.export().state_dict(), strict=True)
    sn.eval()
    net.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(sn(x), net(x), atol=1e-4)
