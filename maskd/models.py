"""Builders for the torchvision models MasKD is applied to: Faster R-CNN / RetinaNet with a ResNet-FPN
backbone (5 levels), and DeepLabV3 with an output-stride-8 ResNet (segmentation). Imports only torch/torchvision.

The paper's settings use 256 FPN channels, ImageNet backbones with frozen BN, 1333x800 images and anchor
base sizes 32..512; the CPU default uses a narrower FPN, BN trained from scratch, 64 px images and smaller
anchors (all options below).
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torchvision
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

__all__ = ['DETECTORS', 'BACKBONES', 'build_detector', 'build_segmenter', 'load_backbone_weights',
           'neck_head_state']

DETECTORS = ('fasterrcnn', 'retinanet')
BACKBONES = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnext101_32x8d', 'resnext101_64x4d')
NORMS = ('frozen_bn', 'bn')


def _resnet(name, norm, **kw):
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
    norm_layer = misc_ops.FrozenBatchNorm2d if norm == 'frozen_bn' else nn.BatchNorm2d
    return getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer, **kw)


def load_backbone_weights(resnet, path):
    """ImageNet weights for the ResNet trunk from a local torchvision state-dict file (fc is ignored)."""
    sd = torch.load(path, map_location='cpu', weights_only=False)
    if isinstance(sd, dict) and isinstance(sd.get('state_dict'), dict):
        sd = sd['state_dict']
    sd = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith('fc.')}
    missing, unexpected = resnet.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith('fc.') and not k.endswith('num_batches_tracked')]
    if missing or unexpected:
        raise ValueError(f"backbone weights '{path}' do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _fpn_backbone(name, arch, fpn_channels, norm, trainable_layers, weights_path=None):
    """ResNet + FPN with 5 outputs: P2-P6 ('0','1','2','3','pool') for Faster R-CNN, P3-P7 ('0','1','2','p6',
    'p7', P6 from C5 like mmdet's ``add_extra_convs='on_input'``) for RetinaNet."""
    body = _resnet(name, norm)
    if weights_path:
        load_backbone_weights(body, weights_path)
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f'trainable_layers must be in 0..5, got {trainable_layers}')
    train = ['layer4', 'layer3', 'layer2', 'layer1', 'conv1'][:trainable_layers]
    if trainable_layers == 5:
        train.append('bn1')
    for pname, p in body.named_parameters():
        if not any(pname.startswith(t) for t in train):
            p.requires_grad_(False)
    c2 = body.inplanes // 8                              # 64 (basic blocks) or 256 (bottlenecks)
    if arch == 'fasterrcnn':
        returned, extra = [1, 2, 3, 4], LastLevelMaxPool()
    else:
        returned, extra = [2, 3, 4], LastLevelP6P7(c2 * 8, fpn_channels)
    return_layers = {f'layer{k}': str(v) for v, k in enumerate(returned)}
    in_list = [c2 * 2 ** (i - 1) for i in returned]
    return BackboneWithFPN(body, return_layers, in_list, fpn_channels, extra_blocks=extra)


def build_detector(arch='retinanet', backbone='resnet50', num_classes=91, fpn_channels=256, norm='frozen_bn',
                   trainable_layers=3, min_size=800, max_size=1333, anchor_sizes=(32, 64, 128, 256, 512),
                   backbone_weights=None, class_agnostic_reg=False, roi_batch_size=512, representation_size=1024,
                   rpn_batch_size=256, rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000,
                   detections_per_img=100):
    """A torchvision detector (``num_classes`` includes background for Faster R-CNN; RetinaNet gets
    ``num_classes`` logits and labels 1..num_classes-1 as in torchvision's COCO models)."""
    if arch not in DETECTORS:
        raise ValueError(f"unknown detector '{arch}'; known: {', '.join(DETECTORS)}")
    if norm not in NORMS:
        raise ValueError(f"unknown norm '{norm}'; known: {', '.join(NORMS)}")
    if len(anchor_sizes) != 5:
        raise ValueError(f'anchor_sizes needs one base size per FPN level (5), got {list(anchor_sizes)}')
    bb = _fpn_backbone(backbone, arch, fpn_channels, norm, trainable_layers, backbone_weights)
    if arch == 'retinanet':
        sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in anchor_sizes)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
        head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes)
        return RetinaNet(bb, num_classes, min_size=min_size, max_size=max_size, anchor_generator=anchors, head=head,
                         detections_per_img=detections_per_img)
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    predictor = FastRCNNPredictor(representation_size, num_classes)
    if class_agnostic_reg:     # 4 box outputs (the student of the Cascade teacher in the official config)
        predictor.bbox_pred = nn.Linear(representation_size, 4)
    return FasterRCNN(bb, None, min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors,
                      box_head=box_head, box_predictor=predictor, box_batch_size_per_image=roi_batch_size,
                      rpn_batch_size_per_image=rpn_batch_size, rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
                      rpn_post_nms_top_n_train=rpn_post_nms_top_n_train, box_detections_per_img=detections_per_img)


def neck_head_state(model):
    """The FPN neck and head parameters of a detector (RetinaNet's ``init_neck_head_from_teacher``)."""
    keep = ('backbone.fpn.', 'head.', 'rpn.', 'roi_heads.')
    return OrderedDict((k, v) for k, v in model.state_dict().items() if k.startswith(keep))


def build_segmenter(backbone='resnet18', num_classes=19, aux=True, norm='bn', backbone_weights=None):
    """DeepLabV3 on an output-stride-8 ResNet (``replace_stride_with_dilation=[False, True, True]``), with the
    auxiliary FCN head on layer3 (as the CIRKD models). Basic-block ResNets (18/34) are supported."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCNHead
    if backbone in ('resnet18', 'resnet34'):
        # torchvision's BasicBlock refuses dilation > 1: dilate layer3/4 by hand (stride 1, dilation 2/4)
        body = _resnet(backbone, norm)
        for layer, d in ((body.layer3, 2), (body.layer4, 4)):
            for i, blk in enumerate(layer):
                for conv in (blk.conv1, blk.conv2):
                    if conv.stride == (2, 2):
                        conv.stride = (1, 1)
                    conv.dilation, conv.padding = (d, d), (d, d)
                if blk.downsample is not None:
                    blk.downsample[0].stride = (1, 1)
        c4, c3 = 512, 256
    else:
        body = _resnet(backbone, norm, replace_stride_with_dilation=[False, True, True])
        c4, c3 = 2048, 1024
    if backbone_weights:
        load_backbone_weights(body, backbone_weights)
    layers = {'layer4': 'out', 'layer3': 'aux'} if aux else {'layer4': 'out'}
    body = IntermediateLayerGetter(body, return_layers=layers)
    return DeepLabV3(body, DeepLabHead(c4, num_classes), FCNHead(c3, num_classes) if aux else None)
