"""VGG-16 for CIFAR, as the official ``nas_model`` config ``configs/models/VGG/vgg16_cifar10.yaml`` (card).

13 x [Conv3x3 (no bias) -> BN -> ReLU] with 2x2 max-pools (stride 2) after the first four groups and a 2x2
max-pool with stride 1 after the last (32 -> 16 -> 8 -> 4 -> 2 -> 1), then Linear 512-512 + ReLU and
Linear 512-classes. TF-style init: conv N(0, 2 / (k^2 C_out)), linear U(+-1/sqrt(out)), biases 0.
14,986,698 parameters for 10 classes, 15,032,868 for 100; 0.627 GFLOPs at 32x32.
"""
import math

import torch.nn as nn

VGG16_CFG = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGGCifar(nn.Module):
    def __init__(self, num_classes=10, cfg=VGG16_CFG):
        super().__init__()
        layers, c_in = [], 3
        for gi, group in enumerate(cfg):
            for c_out in group:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                           nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2, stride=2 if gi < len(cfg) - 1 else 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(c_in, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def vgg16_cifar(num_classes=10):
    return VGGCifar(num_classes)
