"""Base models against the card's parameter/FLOP counts; DBB baseline conversion; deployment to the base
architecture (card "Architecture" table, Sec. 3 and "Official layout")."""
import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import models
from conftest import randomize
from convert import AbsorbedBN, convert_to_dbb, deploy
from dbb import DiverseBranchBlock
from dyrep import DyRep

# (model, classes, base params, all-3x3 -> DBB[1,1,1,1,0,0,0] params): the card's table
CARD_PARAMS = [('resnet18', 1000, 11_689_512, 26_292_136), ('resnet50', 1000, 25_557_032, 40_688_232),
               ('mobilenet_v1', 1000, 4_231_976, 4_332_535), ('vgg16_cifar', 10, 14_986_698, 34_559_897),
               ('vgg16_cifar', 100, 15_032_868, None)]
REPVGG = [('repvgg_a2', 28_210_600, 25_499_944), ('repvgg_b2g4', 61_758_376, 55_777_512),
          ('repvgg_b3', 123_085_288, 110_960_872)]


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('name,classes,base,dbb', CARD_PARAMS)
def test_param_counts_match_the_card(name, classes, base, dbb):
    with torch.device('meta'):
        model = models.build_model(name, classes)
    assert count(model) == base
    if dbb is not None:
        convert_to_dbb(model)
        assert count(model) == dbb


@pytest.mark.parametrize('name,train,deployed', REPVGG)
def test_repvgg_counts_match_the_card(name, train, deployed):
    with torch.device('meta'):
        model = models.build_model(name, 1000)
    assert count(model) == train
    if name == 'repvgg_a2':  # (the other two are checked by tables.py: slow on the meta device)
        model.reparameterize()
        assert count(model) == deployed


def test_flops_match_the_card():
    with torch.device('meta'):
        model = models.build_model('vgg16_cifar', 10).eval()
        x = torch.zeros(1, 3, 32, 32)
    with FlopCounterMode(display=False) as fc:
        model(x)
    assert round(fc.get_total_flops() / 1e9, 3) == 0.627
    convert_to_dbb(model)
    with FlopCounterMode(display=False) as fc:
        model(x)
    assert round(fc.get_total_flops() / 1e9, 3) == 1.455


def test_repvgg_reparameterize_is_exact():
    torch.manual_seed(0)
    model = models.repvgg.RepVGG((1, 2, 2, 1), (8, 16, 16, 32), groups=4, num_classes=5)
    randomize(model).eval()
    dy = DyRep(model, None)
    dy.grow('stages.1.1.conv_kxk.conv')               # a grouped conv grown into a DBB first
    randomize(model, seed=2)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    model.reparameterize()
    assert not any(isinstance(m, DiverseBranchBlock) for m in model.modules())
    assert torch.allclose(model(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_deploy_gives_the_base_architecture():
    torch.manual_seed(0)
    base = models.resnet20(10)
    model = models.resnet20(10)
    model.load_state_dict(base.state_dict())
    dy = DyRep(model, None)
    for name in ('conv1', 'layer1.0.conv1', 'layer2.0.conv1', 'layer2.0.conv1.dbb_kxk.conv',
                 'layer3.2.conv2', 'layer3.2.conv2.dbb_1x1_kxk.conv2'):
        dy.grow(name)
    randomize(model).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    deployed = deploy(model)
    assert not any(isinstance(m, DiverseBranchBlock) for m in deployed.modules())
    assert count(deployed) == count(base)
    assert sorted(deployed.deploy_report['bias_folded']) == sorted(deployed.deploy_report['fused'])
    base.load_state_dict(deployed.state_dict(), strict=True)
    base.eval()
    assert torch.allclose(base(x), ref, atol=1e-5 * ref.abs().max().item())


def test_dbb_baseline_converts_and_deploys_back():
    torch.manual_seed(0)
    model = models.mobilenet_v1(10)
    n_base = count(model)
    paths = convert_to_dbb(model)
    assert len(paths) == 14                                   # stem + 13 depthwise 3x3
    assert isinstance(model.features[0][1], AbsorbedBN)      # the BN after the stem conv was absorbed
    assert model.features[1].dw[0].branches == [1, 1, 1, 1, 0, 0, 0]
    randomize(model).eval()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    deploy(model)
    assert count(model) == n_base and isinstance(model.features[0][1], nn.BatchNorm2d)
    models.mobilenet_v1(10).load_state_dict(model.state_dict(), strict=True)
    assert torch.allclose(model(x), ref, atol=1e-5 * ref.abs().max().item())
