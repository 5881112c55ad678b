"""WCL: a shared backbone with two projection heads (instance discrimination and weak-label graph).

Runs on one process (CPU or GPU) and under DDP: embeddings of the other ranks are gathered without gradient
and the weak-label graph is built on the global batch, identically on every rank.
"""
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from graph import build_connected_component
from losses import nt_xent_logits, sup_contra

__all__ = ['ResNet', 'resnet18', 'resnet34', 'resnet50', 'ProjectionHead', 'LinearHead', 'WCL',
           'concat_all_gather', 'concat_other_gather', 'dim_dict']


# ------------------------------------------------------------------------------------------ backbone
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 conv."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """fc-less ResNet with torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...).

    ``small_input`` swaps the 7x7/s2 stem and max-pool for a 3x3/s1 conv (CIFAR-style); ``width`` scales the
    channel counts (64 is the standard network; smaller widths are for CPU demos).
    """

    def __init__(self, block, layers, small_input=False, width=64):
        super().__init__()
        self.inplanes = width
        if small_input:
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = width * 8 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18(**kw):
    return ResNet(BasicBlock, [2, 2, 2, 2], **kw)


def resnet34(**kw):
    return ResNet(BasicBlock, [3, 4, 6, 3], **kw)


def resnet50(**kw):
    return ResNet(Bottleneck, [3, 4, 6, 3], **kw)


backbone_dict = {'resnet18': resnet18, 'resnet34': resnet34, 'resnet50': resnet50}
dim_dict = {'resnet18': 512, 'resnet34': 512, 'resnet50': 2048}


# ------------------------------------------------------------------------------------------ heads
class ProjectionHead(nn.Module):
    """Linear -> BN -> ReLU -> Linear -> BN -> ReLU -> Linear (biases on every linear, no output BN)."""

    def __init__(self, dim_in=2048, dim_out=128, dim_hidden=2048):
        super().__init__()
        self.linear1 = nn.Linear(dim_in, dim_hidden)
        self.bn1 = nn.BatchNorm1d(dim_hidden)
        self.relu1 = nn.ReLU(True)
        self.linear2 = nn.Linear(dim_hidden, dim_hidden)
        self.bn2 = nn.BatchNorm1d(dim_hidden)
        self.relu2 = nn.ReLU(True)
        self.linear3 = nn.Linear(dim_hidden, dim_out)

    def forward(self, x):
        x = self.relu1(self.bn1(self.linear1(x)))
        x = self.relu2(self.bn2(self.linear2(x)))
        return self.linear3(x)


class LinearHead(nn.Module):
    """A frozen backbone ``net`` and a linear classifier ``fc`` (weight ~ N(0, 0.01), bias 0)."""

    def __init__(self, net, dim_in=2048, dim_out=1000):
        super().__init__()
        self.net = net
        self.fc = nn.Linear(dim_in, dim_out)
        for p in self.net.parameters():
            p.requires_grad = False
        self.fc.weight.data.normal_(0.0, 0.01)
        self.fc.bias.data.zero_()

    def forward(self, x):
        with torch.no_grad():
            feat = self.net(x)
        return self.fc(feat)


# ------------------------------------------------------------------------------------------ gathers
def _world():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(tensor, replace=True):
    """All ranks' ``tensor`` concatenated in rank order (no gradient). ``replace=True`` puts the caller's own
    tensor (with its autograd history) at its slot, so gradient reaches the local block."""
    if _world() == 1:
        return tensor
    out = [torch.zeros_like(tensor) for _ in range(_world())]
    dist.all_gather(out, tensor.contiguous())
    if replace:
        out[dist.get_rank()] = tensor
    return torch.cat(out, 0)


@torch.no_grad()
def concat_other_gather(tensor):
    """The other ranks' ``tensor`` concatenated in rank order (no gradient); empty on one process."""
    if _world() == 1:
        return tensor.new_zeros((0,) + tuple(tensor.shape[1:]))
    out = [torch.zeros_like(tensor) for _ in range(_world())]
    dist.all_gather(out, tensor.contiguous())
    rank = dist.get_rank()
    return torch.cat([o for r, o in enumerate(out) if r != rank], 0)


def _gather_with_grad(tensor):
    """All ranks' ``tensor``; the local block keeps its gradient (the others are constants)."""
    if _world() == 1:
        return tensor
    with torch.no_grad():
        out = [torch.zeros_like(tensor) for _ in range(_world())]
        dist.all_gather(out, tensor.contiguous())
    out[dist.get_rank()] = tensor
    return torch.cat(out, 0)


# ------------------------------------------------------------------------------------------ WCL
class WCL(nn.Module):
    """Weakly supervised contrastive learning (Zheng et al., ICCV 2021).

    ``forward(x1, x2, t)`` returns ``(logits, labels, graph_loss)``: NT-Xent logits/targets of head1 (the
    caller applies cross-entropy) and the swapped supervised contrastive loss of head2 on weak labels from the
    1-NN graph of the other view. ``graph_detach_keys=True`` (official) lets gradient flow through the anchors
    only; ``False`` also through the local contrast columns.
    """

    def __init__(self, backbone='resnet50', dim_hidden=4096, dim=256, dim_in=None, graph_detach_keys=True,
                 small_input=False, width=64):
        super().__init__()
        if isinstance(backbone, str):
            if backbone not in backbone_dict:
                raise ValueError(f"backbone '{backbone}' is not one of {', '.join(backbone_dict)}")
            self.net = backbone_dict[backbone](small_input=small_input, width=width)
            dim_in = dim_in or self.net.out_dim
        else:
            self.net = backbone
            if dim_in is None:
                raise ValueError('dim_in is needed with a custom backbone module')
        self.head1 = ProjectionHead(dim_in=dim_in, dim_out=dim, dim_hidden=dim_hidden)
        self.head2 = ProjectionHead(dim_in=dim_in, dim_out=dim, dim_hidden=dim_hidden)
        self.graph_detach_keys = graph_detach_keys

    @torch.no_grad()
    def build_connected_component(self, dist_matrix):
        """Weak-label mask of the symmetric 1-NN graph (see ``graph.build_connected_component``)."""
        return build_connected_component(dist_matrix)

    def sup_contra(self, logits, mask, diagnal_mask=None):
        return sup_contra(logits, mask, diagnal_mask)

    def graph_loss(self, u1, u2, t=0.1):
        """``L_graph = 1/2 [L_sup(U1, Y2) + L_sup(U2, Y1)]`` over the global batch, anchors local."""
        n = u1.shape[0]
        rank = dist.get_rank() if _world() > 1 else 0
        with torch.no_grad():
            g1, g2 = concat_all_gather(u1.detach(), replace=False), concat_all_gather(u2.detach(), replace=False)
            y1 = self.build_connected_component(g1 @ g1.t())[rank * n:(rank + 1) * n]
            y2 = self.build_connected_component(g2 @ g2.t())[rank * n:(rank + 1) * n]
            diag = torch.ones_like(y1, dtype=torch.float)
            diag[:, rank * n:(rank + 1) * n].fill_diagonal_(0)
        if self.graph_detach_keys:
            k1, k2 = g1, g2
        else:
            k1, k2 = _gather_with_grad(u1), _gather_with_grad(u2)
        loss1 = self.sup_contra(u1 @ k1.t() / t, y2, diag)   # view-1 anchors, labels from view 2
        loss2 = self.sup_contra(u2 @ k2.t() / t, y1, diag)   # view-2 anchors, labels from view 1
        return 0.5 * (loss1 + loss2), (y1, y2)

    def multicrop_loss(self, u_small, n_small, u1, u2, y1, y2, t=0.1, knn_k=5):
        """PROVISIONAL reconstruction of the paper's K-nearest-neighbour multi-crop (no code was released).

        ``u_small`` holds the head2 embeddings of ``n_small`` small crops per local image, crop-major
        (``[crop0 of all images, crop1 of all images, ...]``). A small crop s of image i is kept only if a global
        view of image i is among its ``knn_k`` nearest global views of the batch; a kept crop is an extra anchor
        whose positives are both global views of every image in i's weak-label component (either view's graph).
        Returns the summed per-anchor loss and the number of kept anchors.
        """
        n = u1.shape[0]
        rank = dist.get_rank() if _world() > 1 else 0
        with torch.no_grad():
            g = torch.cat([concat_all_gather(u1.detach(), replace=False),
                           concat_all_gather(u2.detach(), replace=False)], 0)   # 2N global views
            N = g.shape[0] // 2
            image = (torch.arange(n, device=u1.device) + rank * n).repeat(n_small)   # global image of each crop
            sim = u_small.detach() @ g.t()
            top = sim.topk(min(knn_k, 2 * N), dim=1).indices
            keep = ((top == image[:, None]) | (top == image[:, None] + N)).any(1)
            comp = (y1 | y2)[image - rank * n]                                      # crops x N: same component
            pos = torch.cat([comp, comp], 1)
        if keep.sum() == 0:
            return u_small.sum() * 0, 0
        logits = u_small[keep] @ g.t() / t
        return self.sup_contra(logits, pos[keep]) * int(keep.sum()), int(keep.sum())

    def forward(self, x1, x2, t=0.1, small=None, knn_k=5):
        """``small``: optional list of small-crop batches (multi-crop option), each the size of ``x1``."""
        h1, h2 = self.net(x1), self.net(x2)
        z1, z2 = F.normalize(self.head1(h1), dim=1), F.normalize(self.head1(h2), dim=1)
        logits, labels = nt_xent_logits(z1, z2, concat_other_gather(z1), concat_other_gather(z2), t)
        u1, u2 = F.normalize(self.head2(h1), dim=1), F.normalize(self.head2(h2), dim=1)
        graph_loss, (y1, y2) = self.graph_loss(u1, u2, t)
        if small:
            n = x1.shape[0]
            u_small = F.normalize(self.head2(self.net(torch.cat(list(small), 0))), dim=1)  # one pass per size
            extra, kept = self.multicrop_loss(u_small, len(small), u1, u2, y1, y2, t, knn_k)
            # the mean over 2n view anchors becomes the mean over 2n + kept anchors
            graph_loss = (graph_loss * 2 * n + extra) / (2 * n + kept)
        return logits, labels, graph_loss
