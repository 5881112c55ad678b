"""ReSSL networks: fc-less ResNets, the projection head, the student/teacher pair with its relation queue.

Names follow the official release (KyleZheng1997/ReSSL) so that its checkpoints load with ``strict=True``:
``encoder_q.net.*``, ``encoder_q.head.linear1.*``, ``encoder_q.head.linear2.*``, ``encoder_k.*``, ``queue``,
``queue_ptr``.  Imports only torch / torchvision.
"""
import copy
from functools import partial

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------------------

class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics are computed over ``num_splits`` equal sub-batches.

    Simulates the per-GPU statistics of a multi-GPU run on one device (the MoCo CIFAR demo trick the ReSSL
    authors use for the small datasets).  The running statistics are the mean over the splits.  In eval mode it
    is a plain BatchNorm2d, and its ``state_dict`` is exactly that of one.
    """

    def __init__(self, num_features, num_splits=8, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, x):
        if not (self.training and self.num_splits > 1):
            return super().forward(x)
        n, c, h, w = x.shape
        if n % self.num_splits:
            raise ValueError(f'SplitBatchNorm: batch size {n} is not divisible by num_splits={self.num_splits}')
        s = self.num_splits
        mean = self.running_mean.repeat(s)
        var = self.running_var.repeat(s)
        # Fold the splits into channels: sample i of split j becomes a sample of channel group j.
        y = F.batch_norm(x.view(-1, c * s, h, w), mean, var, self.weight.repeat(s), self.bias.repeat(s),
                         True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
            self.num_batches_tracked.add_(1)
        return y.view(n, c, h, w)


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits in the 3x3 convolution."""
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None, norm_layer=nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision's ResNet without ``fc``: returns the globally average-pooled feature.

    ``small_input`` replaces the 7x7/2 stem by a 3x3/1 convolution (the CIFAR recipe); ``keep_maxpool=None``
    keeps the max-pool with the ImageNet stem and drops it with the small stem.  ``width`` is the channel count
    of the first stage (64 in every published model; smaller only for the CPU demo).  A dropped max-pool is an
    ``nn.Identity``, so parameter names are those of torchvision whatever the options.
    """

    def __init__(self, block, layers, small_input=False, keep_maxpool=None, bn_splits=1, width=64,
                 zero_init_residual=False):
        super().__init__()
        norm_layer = partial(SplitBatchNorm, num_splits=bn_splits) if bn_splits > 1 else nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.inplanes = width
        if small_input:
            self.conv1 = conv3x3(3, width)
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        if keep_maxpool is None:
            keep_maxpool = not small_input
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if keep_maxpool else nn.Identity()
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = width * 8 * block.expansion

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       self._norm_layer(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self._norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm_layer=self._norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18(small_input=False, keep_maxpool=None, bn_splits=1, width=64, **kw):
    return ResNet(BasicBlock, [2, 2, 2, 2], small_input, keep_maxpool, bn_splits, width, **kw)


def resnet34(small_input=False, keep_maxpool=None, bn_splits=1, width=64, **kw):
    return ResNet(BasicBlock, [3, 4, 6, 3], small_input, keep_maxpool, bn_splits, width, **kw)


def resnet50(small_input=False, keep_maxpool=None, bn_splits=1, width=64, **kw):
    return ResNet(Bottleneck, [3, 4, 6, 3], small_input, keep_maxpool, bn_splits, width, **kw)


def _torchvision_features(name):
    """A torchvision classifier with its classifier removed (extended version's lightweight backbones)."""
    def build(small_input=False, keep_maxpool=None, bn_splits=1, width=64):
        import torchvision
        if small_input or bn_splits > 1 or width != 64:
            raise ValueError(f'{name}: small_input, bn_splits and width are options of the ResNets only')
        net = getattr(torchvision.models, name)(weights=None)
        net.classifier = nn.Identity()
        return net
    return build


backbone_dict = {
    'resnet18': resnet18,
    'resnet34': resnet34,
    'resnet50': resnet50,
    'efficientnet_b0': _torchvision_features('efficientnet_b0'),
    'mobilenet_v3_large': _torchvision_features('mobilenet_v3_large'),
}

dim_dict = {'resnet18': 512, 'resnet34': 512, 'resnet50': 2048, 'efficientnet_b0': 1280, 'mobilenet_v3_large': 960}


# ----------------------------------------------------------------------------------------------------------
# Heads and encoder
# ----------------------------------------------------------------------------------------------------------

class ProjectionHead(nn.Module):
    """g: Linear -> ReLU -> Linear, no BatchNorm (official ``network/head.py``)."""

    def __init__(self, dim_in=2048, hidden_dim=4096, dim_out=512):
        super().__init__()
        self.linear1 = nn.Linear(dim_in, hidden_dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(hidden_dim, dim_out)

    def forward(self, x):
        return self.linear2(self.relu1(self.linear1(x)))


class Predictor(nn.Module):
    """Asymmetric student predictor of the extended version (arXiv 2203.08717).

    Reconstructed from the paper's description (no official code): Linear(D, H) -> BN -> ReLU -> Linear(H, D).
    """

    def __init__(self, dim=512, hidden_dim=4096):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.linear2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.linear2(self.relu1(self.bn1(self.linear1(x))))


class BackBone(nn.Module):
    """Encoder f + projection g; ``forward`` returns the unit-norm embedding ``normalize(g(f(x)))``.

    ``backbone`` is a name of ``backbone_dict`` (built with default options) or a ready module whose output is
    the pooled feature; then ``dim_in`` defaults to its ``num_features`` attribute.
    """

    def __init__(self, backbone='resnet50', hidden_dim=4096, dim=512, dim_in=None):
        super().__init__()
        if isinstance(backbone, str):
            if backbone not in backbone_dict:
                raise ValueError(f'unknown backbone {backbone!r}; choose from {sorted(backbone_dict)}')
            dim_in = dim_in or dim_dict[backbone]
            backbone = backbone_dict[backbone]()
        dim_in = dim_in or getattr(backbone, 'num_features', None)
        if dim_in is None:
            raise ValueError('BackBone: give dim_in for a backbone module without a num_features attribute')
        self.net = backbone
        self.head = ProjectionHead(dim_in=dim_in, hidden_dim=hidden_dim, dim_out=dim)

    def project(self, x):
        """g(f(x)) before normalisation (where the extended version's predictor plugs in)."""
        return self.head(self.net(x))

    def forward(self, x):
        return F.normalize(self.project(x), dim=1)


# ----------------------------------------------------------------------------------------------------------
# ReSSL
# ----------------------------------------------------------------------------------------------------------

def _distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def concat_all_gather(tensor):
    """Concatenate ``tensor`` over all processes along dim 0 (identity without torch.distributed); no gradient."""
    if not _distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


class ReSSL(nn.Module):
    """Student ``encoder_q``, EMA teacher ``encoder_k`` and the memory queue ``M`` of past teacher embeddings.

    ``forward(im_q, im_k)`` runs one step of the official algorithm and returns the relation logits
    ``(q @ M, k @ M)`` over the queue as it was *before* this batch was enqueued; the caller applies
    ``losses.relation_loss``.  ``im_q`` is the strong view (a list of crops for multi-crop), ``im_k`` the weak view.
    """

    def __init__(self, backbone='resnet50', dim=512, K=131072, m=0.999, hidden_dim=4096, dim_in=None,
                 predictor_hidden=None):
        super().__init__()
        self.K = K
        self.m = m
        self.encoder_q = BackBone(backbone, hidden_dim=hidden_dim, dim=dim, dim_in=dim_in)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param_k in self.encoder_k.parameters():
            param_k.requires_grad = False  # the teacher is an EMA of the student, never trained by gradient
        # Optional student-only predictor (extended version); absent from the state_dict when off.
        self.predictor = Predictor(dim, predictor_hidden) if predictor_hidden else None

        self.register_buffer('queue', F.normalize(torch.randn(dim, K), dim=0))  # columns are unit vectors
        self.register_buffer('queue_ptr', torch.zeros(1, dtype=torch.long))

    # -- teacher -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _momentum_update_key_encoder(self):
        """theta_k <- m * theta_k + (1 - m) * theta_q over parameters only (BN running stats are the teacher's)."""
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.mul_(self.m).add_(param_q.detach() * (1. - self.m))

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys):
        """Write the (globally gathered) keys into the ring buffer at ``queue_ptr``; requires K % B == 0."""
        keys = concat_all_gather(keys)
        batch_size = keys.shape[0]
        if self.K % batch_size:
            raise ValueError(f'queue size K={self.K} must be a multiple of the global batch size {batch_size}')
        ptr = int(self.queue_ptr)
        self.queue[:, ptr:ptr + batch_size] = keys.T
        self.queue_ptr[0] = (ptr + batch_size) % self.K

    @torch.no_grad()
    def _batch_shuffle(self, x):
        """Shuffle-BN: permute the global batch (permutation from rank 0) and return this process's shard.

        On one process it is a plain permutation of the batch; SplitBatchNorm then gives each sub-batch its own
        statistics, like the per-GPU BN of a multi-GPU run.
        """
        x_all = concat_all_gather(x)
        idx_shuffle = torch.randperm(x_all.shape[0], device=x.device)
        if _distributed():
            dist.broadcast(idx_shuffle, src=0)
            idx_this = idx_shuffle.view(dist.get_world_size(), -1)[dist.get_rank()]
        else:
            idx_this = idx_shuffle
        return x_all[idx_this], torch.argsort(idx_shuffle)

    @torch.no_grad()
    def _batch_unshuffle(self, x, idx_unshuffle):
        """Undo ``_batch_shuffle``: gather the shuffled outputs and pick this process's original samples."""
        x_all = concat_all_gather(x)
        if _distributed():
            idx_this = idx_unshuffle.view(dist.get_world_size(), -1)[dist.get_rank()]
        else:
            idx_this = idx_unshuffle
        return x_all[idx_this]

    # -- step ----------------------------------------------------------------------------------------------
    def _student(self, im):
        if self.predictor is None:
            return self.encoder_q(im)
        return F.normalize(self.predictor(self.encoder_q.project(im)), dim=1)

    def forward(self, im_q, im_k, return_embeddings=False):
        """One ReSSL step in the official order.

        1. student embeddings ``q`` (one pass per crop, concatenated);
        2. EMA update of the teacher, then teacher embeddings ``k`` of the weak view, with shuffle-BN, in the
           teacher's current (train) mode, without gradient;
        3. relation logits against a detached copy of the queue;
        4. enqueue ``k`` (after the logits, so the batch never relates to itself).

        Returns ``(logits_q, logits_k)`` with ``logits_k`` repeated once per crop; with
        ``return_embeddings=True`` also ``(q, k)`` with ``k`` repeated the same way (for the InfoNCE warm-up).
        """
        crops = im_q if isinstance(im_q, (list, tuple)) else [im_q]
        q = torch.cat([self._student(im) for im in crops], dim=0)

        with torch.no_grad():
            self._momentum_update_key_encoder()
            im, idx_unshuffle = self._batch_shuffle(im_k)
            k = self.encoder_k(im)
            k = self._batch_unshuffle(k, idx_unshuffle)

        queue = self.queue.clone().detach()
        logits_q = q @ queue
        logits_k = (k @ queue).repeat(len(crops), 1)

        self._dequeue_and_enqueue(k)
        if return_embeddings:
            return logits_q, logits_k, q, k.repeat(len(crops), 1)
        return logits_q, logits_k
