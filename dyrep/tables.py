"""CPU-checkable rows of the card, ours next to the paper's / the card's numbers.

    python tables.py                 # all tables
    python tables.py --only counts   # parameter and FLOP counts only (meta device, seconds)
    python tables.py --only deploy   # DyRep -> deploy equivalence for every base model

(1) Parameters and FLOPs of the base models and of "every 3x3 conv -> DBB[1,1,1,1,0,0,0]" (the plain-DBB
    baseline), counted on the meta device (FlopCounterMode, 224x224 or 32x32 input).
(2) For every base model: a DyRep-shaped model (convs grown by the SynFlow metric on a random batch, plus the
    stem, a strided/depthwise/grouped conv and two nested blocks; branches perturbed as if trained; weak
    branches cut by the card's rule), converted to deploy. Printed: the max |logit| difference between the
    training form and the deployed model in eval mode (float32), and the deployed parameter count next to
    the base model's (they must be equal, and the deployed state dict must load into a fresh base model
    with strict=True).
"""
import argparse
import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import models
from convert import convert_to_dbb, deploy
from dbb import DiverseBranchBlock
from dyrep import DyRep
from recal_bn import recal_bn

# (name, classes, input size, card base params, card DBB params, card FLOPs base -> DBB (G))
CARD = [
    ('resnet18', 1000, 224, 11_689_512, 26_292_136, (3.63, 8.25)),
    ('resnet50', 1000, 224, 25_557_032, 40_688_232, (8.18, 13.57)),
    ('mobilenet_v1', 1000, 224, 4_231_976, 4_332_535, (1.14, 1.22)),
    ('vgg16_cifar', 10, 32, 14_986_698, 34_559_897, (0.627, 1.455)),
    ('vgg16_cifar', 100, 32, 15_032_868, None, None),
]
# RepVGG: card train-form / deploy-form params (M)
CARD_REPVGG = [('repvgg_a2', 28.21, 25.50), ('repvgg_b2g4', 61.76, 55.78), ('repvgg_b3', 123.09, 110.96)]
# convs grown explicitly in (2), besides the SynFlow-driven adjustments (stem, strided, depthwise, grouped)
EXTRA_GROWTH = {
    'resnet18': ['conv1', 'layer2.0.conv1'], 'resnet50': ['conv1', 'layer3.0.conv2'],
    'mobilenet_v1': ['features.0.0', 'features.2.dw.0', 'features.5.dw.0'],
    'vgg16_cifar': ['features.0', 'features.40'], 'repvgg_a2': ['stem.conv_kxk.conv', 'stages.1.0.conv_kxk.conv'],
    'repvgg_b2g4': ['stem.conv_kxk.conv', 'stages.1.1.conv_kxk.conv'],
    'repvgg_b3': ['stem.conv_kxk.conv', 'stages.2.3.conv_kxk.conv'],
}


def count(m):
    return sum(p.numel() for p in m.parameters())


def flops(model, size):
    with torch.device('meta'):
        x = torch.zeros(1, 3, size, size)
    with FlopCounterMode(display=False) as fc:
        model.eval()(x)
    return fc.get_total_flops() / 1e9


def table_counts():
    print('(1) Parameters and FLOPs: ours | card (official constructors; FlopCounterMode)')
    print(f"{'model':<22}{'params':>13}{'card':>13}{'DBB params':>13}{'card':>13}   {'GFLOPs base -> DBB':<22}card")
    for name, classes, size, p_card, dbb_card, fl_card in CARD:
        with torch.device('meta'):
            model = models.build_model(name, classes)
        p, f0 = count(model), flops(model, size)
        convert_to_dbb(model)
        q, f1 = count(model), flops(model, size)
        tag = f'{name}({classes})' if name == 'vgg16_cifar' else name
        card_f = f'{fl_card[0]} -> {fl_card[1]}' if fl_card else '-'
        dbb_c = f'{dbb_card:,}' if dbb_card else '-'
        print(f"{tag:<22}{p:>13,}{p_card:>13,}{q:>13,}{dbb_c:>13}   {f'{f0:.3f} -> {f1:.3f}':<22}{card_f}")
    print(f"\n{'RepVGG (timm form)':<22}{'train params':>14}{'card (M)':>10}{'deploy params':>15}{'card (M)':>10}")
    for name, train_card, dep_card in CARD_REPVGG:
        with torch.device('meta'):
            model = models.build_model(name, 1000)
        p = count(model)
        model.reparameterize()
        print(f'{name:<22}{p:>14,}{train_card:>10.2f}{count(model):>15,}{dep_card:>10.2f}')
    print()


def perturb_blocks(model, gen):
    """Give every DBB branch 'trained' values: BN gamma in [0.5, 1.5], beta / stats random; branch convs keep
    their He init. (Fresh branches have gamma 0.01 and would hide fusion errors.)"""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DiverseBranchBlock):
                for bn in m.modules():
                    if isinstance(bn, nn.BatchNorm2d):
                        bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) + 0.5)
                        bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen) * 0.1)


def weaken_some_branches(model, gen):
    """Shrink the last-BN gamma of one or two branches per block, so that the cut rule removes them."""
    last = {0: 'dbb_1x1.bn', 1: 'dbb_1x1_kxk.bn2', 2: 'dbb_1x1_avg.avgbn', 4: 'dbb_1xk.bn', 5: 'dbb_kx1.bn',
            6: 'dbb_id'}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, DiverseBranchBlock):
                active = [i for i in last if m.branches[i]]
                for j in torch.randperm(len(active), generator=gen)[:2].tolist():
                    m.get_submodule(last[active[j]]).weight.mul_(0.02)


def dyrep_shaped(name, classes, size, adjustments=4, seed=0):
    """Build ``name`` and run DyRep's grow/cut machinery on it without real training (see module docstring)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = models.build_model(name, classes)
    dy = DyRep(model, None)
    batches = [(torch.randn(4, 3, size, size), torch.randint(0, classes, (4,))) for _ in range(2)]
    grown = []
    model.train()
    for _ in range(adjustments):  # SynFlow-driven growth: the top-1 conv per adjustment
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            dy.record_metrics()
        grown += dy.adjust_model()['grown']
    for conv in EXTRA_GROWTH[name]:
        if conv not in grown:
            dy.grow(conv)
            grown.append(conv)
    for nested in (f'{grown[0]}.dbb_kxk.conv', f'{grown[0]}.dbb_1x1_kxk.conv2'):
        dy.grow(nested)
        grown.append(nested)
    perturb_blocks(model, gen)
    recal_bn(model, batches, 2)           # statistics that fit the perturbed weights
    weaken_some_branches(model, gen)
    cuts = DyRep(model, None, grow_topk=0).adjust_model()['cut']
    model.zero_grad(set_to_none=True)
    return model, grown, cuts


def table_deploy(names=None):
    print('(2) DyRep-grown model -> deploy, eval mode, random input (224-px models at 64 px, CIFAR models at '
          '32 px); max |logit difference| in float32 (absolute, relative to max |logit|) and in float64')
    print(f"{'model':<16}{'grown':>6}{'nested':>7}{'cut':>5}{'max|logit diff|':>17}{'relative':>10}{'float64':>10}"
          f"{'max|logit|':>12}{'train-form params':>19}{'deploy params':>15}{'base params':>13}  strict  time")
    rows = [(n, c, s) for n, c, s, *_ in CARD if n != 'vgg16_cifar' or c == 10]
    rows += [(n, 1000, 224) for n, *_ in CARD_REPVGG]
    for name, classes, size in rows:
        if names and name not in names:
            continue
        t0 = time.time()
        size = min(size, 64)
        model, grown, cuts = dyrep_shaped(name, classes, size)
        model.eval()
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            m64 = copy.deepcopy(model).double()  # the same model in float64: the fusion itself is exact
            ref64 = m64(x.double())
            d64 = (deploy(m64)(x.double()) - ref64).abs().max().item()
            del m64
            ref = model(x)
            n_train = count(model)
            deployed = deploy(model)
            out = deployed(x)
        base = models.build_model(name, classes)
        try:
            base.load_state_dict(deployed.state_dict(), strict=True)
            strict = 'yes'
        except RuntimeError:
            strict = 'NO'
        diff = (out - ref).abs().max().item()
        nested = sum(1 for g in grown if g.count('dbb') == 1)
        scale = ref.abs().max().item()
        print(f'{name:<16}{len(grown):>6}{nested:>7}{len(cuts):>5}{diff:>17.2e}{diff / scale:>10.1e}{d64:>10.1e}'
              f'{scale:>12.2f}{n_train:>19,}{count(deployed):>15,}{count(base):>13,}  {strict:<6}  {time.time() - t0:.0f}s')
        if name.startswith('repvgg'):
            with torch.no_grad():
                deployed.reparameterize()
                d2 = (deployed(x) - ref).abs().max().item()
            print(f"{'  + RepVGG reparam':<16}{'':>18}{d2:>17.2e}{d2 / ref.abs().max().item():>10.1e}{'':>22}"
                  f"{'':>19}{count(deployed):>15,}{'(deploy form)':>14}")
        del model, deployed, base
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', choices=['counts', 'deploy'], default=None)
    parser.add_argument('--models', nargs='*', default=None, help='restrict table (2) to these models')
    args = parser.parse_args(argv)
    torch.set_grad_enabled(True)
    if args.only in (None, 'counts'):
        table_counts()
    if args.only in (None, 'deploy'):
        table_deploy(args.models)


if __name__ == '__main__':
    main()
