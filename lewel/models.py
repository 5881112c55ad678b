"""LEWEL networks (Huang et al., CVPR 2022): the object neck, LEWEL_B (BYOL) and LEWEL_M (MoCo v2, reconstructed).

Names follow the official release (LayneH/LEWEL, ``models/lewel.py``) so that its checkpoints load with
``strict=True``: ``online_net.backbone.*``, ``online_net.neck.proj.mlp.{0,1,3}.*``,
``online_net.neck.proj_obj.mlp.*``, ``target_net.*``, ``predictor.mlp.*``, ``predictor_obj.mlp.*``.
Imports only torch / torchvision and the sibling modules ``align`` and ``backbones``.
"""
import copy
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import align
import backbones


def init_weights(module, init_linear='normal'):
    """Official ``utils/init.py``: kaiming-normal (fan_out, relu) convs; Linear N(0, 0.01) ('normal') or
    kaiming ('kaiming'); norm weights 1, biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if init_linear == 'normal':
                nn.init.normal_(m.weight, std=0.01)
            else:
                nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def no_norm(channels):
    """A norm layer that does nothing: MoCo v2 heads have no BatchNorm (keys ``mlp.1`` hold no parameters)."""
    return nn.Identity()


class MLP1D(nn.Module):
    """BYOL's fc-bn-relu-fc as 1x1 ``Conv1d`` layers, applied to every token of a ``[b, C, L]`` sequence.

    BatchNorm statistics pool over the batch *and* the L tokens.  ``num_mlp`` counts the Conv1d layers.
    """

    def __init__(self, in_channels, hid_channels, out_channels, norm_layer=None, bias=False, num_mlp=2):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm1d
        layers = []
        for _ in range(num_mlp - 1):
            layers += [nn.Conv1d(in_channels, hid_channels, 1, bias=bias), norm_layer(hid_channels),
                       nn.ReLU(inplace=True)]
            in_channels = hid_channels
        layers.append(nn.Conv1d(in_channels, out_channels, 1, bias=bias))
        self.mlp = nn.Sequential(*layers)

    def init_weights(self, init_linear='normal'):
        init_weights(self, init_linear)

    def forward(self, x):
        return self.mlp(x)


class ObjectNeck(nn.Module):
    """Global projection + alignment maps + aligned embeddings (official ``ObjectNeck``).

    ``forward(y [b, C, H, W]) -> (z_g [b, D, 1], obj_val [b, D, D/num_heads])`` (+ ``maps`` ``[b, num_heads,
    D/num_heads, HW]`` when ``return_maps``).  The shared head ``proj`` (g) runs once on the token sequence
    ``cat(GAP(y), flatten(y))`` so that its BatchNorm pools over the GAP token and all pixels; token 0 is the
    global embedding and tokens 1.. the per-pixel projections that become the alignment maps (``align.py``).
    ``proj_obj`` (g_a, separate weights) projects the aligned features.
    """

    def __init__(self, in_channels, out_channels, hid_channels=None, num_layers=2, scale=1., l2_norm=True,
                 num_heads=4, norm_layer=None, return_maps=False, bias=False):
        super().__init__()
        if not l2_norm:
            raise ValueError('ObjectNeck needs l2_norm=True (the official neck asserts it)')
        if out_channels % num_heads or in_channels % num_heads:
            raise ValueError(f'num_heads={num_heads} must divide both the projection dim ({out_channels}) and '
                             f'the backbone channels ({in_channels})')
        self.scale, self.l2_norm, self.num_heads, self.return_maps = scale, l2_norm, num_heads, return_maps
        hid_channels = hid_channels or in_channels
        self.proj = MLP1D(in_channels, hid_channels, out_channels, norm_layer, bias=bias, num_mlp=num_layers)
        self.proj_obj = MLP1D(in_channels, hid_channels, out_channels, norm_layer, bias=bias, num_mlp=num_layers)

    def init_weights(self, init_linear='kaiming'):
        self.proj.init_weights(init_linear)
        self.proj_obj.init_weights(init_linear)

    def forward(self, x):
        y_bar = F.adaptive_avg_pool2d(x, 1).flatten(2)                      # [b, C, 1]
        x = x.flatten(2)                                                     # [b, C, HW]
        z = self.proj(torch.cat([y_bar, x], dim=2))                          # [b, D, 1 + HW]
        z_g, s = z[:, :, :1], z[:, :, 1:]
        feats, maps = align.lewel_align(x, s, self.num_heads, self.scale, self.l2_norm)
        obj_val = self.proj_obj(feats)                                       # [b, D, D/N_h]
        return (z_g, obj_val, maps) if self.return_maps else (z_g, obj_val)

    def extra_repr(self):
        return f'scale={self.scale}, l2_norm={self.l2_norm}, num_heads={self.num_heads}'


class EncoderObj(nn.Module):
    """Backbone (feature map, no pooling) followed by ``ObjectNeck``.  ``base_encoder`` is a constructor
    ``f(norm_layer=..., with_avgpool=...)`` such as ``backbones.resnet50_encoder``."""

    def __init__(self, base_encoder, hid_dim, out_dim, norm_layer=None, num_mlp=2, scale=1., l2_norm=True,
                 num_heads=4, head_norm_layer=None, head_bias=False):
        super().__init__()
        self.backbone = base_encoder(norm_layer=norm_layer, with_avgpool=False)
        self.neck = ObjectNeck(self.backbone.out_channels, out_dim, hid_channels=hid_dim, num_layers=num_mlp,
                               scale=scale, l2_norm=l2_norm, num_heads=num_heads,
                               norm_layer=head_norm_layer or _norm1d(norm_layer), bias=head_bias)
        self.neck.init_weights(init_linear='kaiming')

    def forward(self, im):
        return self.neck(self.backbone(im))


def _norm1d(norm_layer):
    """The MLP norm matching a backbone norm: SyncBN stays SyncBN, anything else is BatchNorm1d."""
    return nn.SyncBatchNorm if norm_layer is nn.SyncBatchNorm else None


def byol_distance(pred, target):
    """Mean over rows of 2 - 2 <pred/|pred|, target/|target|> (BYOL's normalised MSE); rows are [N, C]."""
    return 2 - 2 * (F.normalize(pred, dim=1) * F.normalize(target, dim=1)).sum() / pred.size(0)


class LEWELB_EMAN(nn.Module):
    """LEWEL on BYOL with an EMAN target (official ``LEWELB_EMAN``).

    ``forward(im_v1, im_v2) -> loss``: L = l(1->2) + l(2->1) with l = lambda L_g + (1 - lambda) L_a (a *sum* over
    the two directions); ``forward(im)`` returns the pooled online backbone features.  The target network is an
    exponential moving average of the whole online ``state_dict`` (BN statistics included, ``num_batches_tracked``
    copied) and must run in eval mode: the training loop calls ``model.train()`` then ``target_net.eval()``.
    """

    ema_full_state = True      # EMAN: average the whole state_dict
    target_eval = True         # EMAN: the target uses its running statistics

    def __init__(self, base_encoder, dim=256, m=0.98, hid_dim=4096, norm_layer=None, num_neck_mlp=2, scale=1.,
                 l2_norm=True, num_heads=4, loss_weight=0.5, **kwargs):
        super().__init__()
        if not 0.0 <= loss_weight <= 1.0:
            raise ValueError(f'loss_weight must be in [0, 1], got {loss_weight}')
        self.base_m = self.curr_m = m
        self.loss_weight = loss_weight
        enc = dict(norm_layer=norm_layer, num_mlp=num_neck_mlp, scale=scale, l2_norm=l2_norm, num_heads=num_heads)
        self.online_net = EncoderObj(base_encoder, hid_dim, dim, **enc)
        self.target_net = EncoderObj(base_encoder, hid_dim, dim, **enc)
        self.predictor = MLP1D(dim, hid_dim, dim, norm_layer=_norm1d(norm_layer))
        self.predictor.init_weights()
        self.predictor_obj = MLP1D(dim, hid_dim, dim, norm_layer=_norm1d(norm_layer))
        self.predictor_obj.init_weights()
        for p_o, p_t in zip(self.online_net.parameters(), self.target_net.parameters()):
            p_t.data.copy_(p_o.data)
            p_t.requires_grad = False

    def mse_loss(self, pred, target):
        """BYOL distance averaged over the N rows of ``pred`` / ``target`` ``[N, C]`` (a scalar)."""
        return byol_distance(pred, target)

    def loss_func(self, online, target):
        """lambda * L_g + (1 - lambda) * L_a for one direction; slot k of one view is matched with slot k only."""
        z_o, obj_o = online[0], online[1]
        z_t, obj_t = target[0], target[1]
        loss_g = self.mse_loss(self.predictor(z_o).squeeze(-1), z_t.squeeze(-1))
        b, c, n = obj_o.shape
        pred = self.predictor_obj(obj_o).transpose(2, 1).reshape(b * n, c)
        loss_a = self.mse_loss(pred, obj_t.transpose(2, 1).reshape(b * n, c))
        return self.loss_weight * loss_g + (1 - self.loss_weight) * loss_a

    def momentum_at(self, cur_iter, max_iter):
        """m_k = 1 - (1 - m_0) (cos(pi k / K) + 1) / 2."""
        return 1. - (1. - self.base_m) * (math.cos(math.pi * cur_iter / float(max_iter)) + 1) / 2.0

    @torch.no_grad()
    def momentum_update(self, cur_iter, max_iter):
        """EMA of the online network into the target after an optimizer step; returns (and stores) ``curr_m``."""
        m = self.curr_m = self.momentum_at(cur_iter, max_iter)
        online, target = self.online_net.state_dict(), self.target_net.state_dict()
        for (k_o, v_o), (k_t, v_t) in zip(online.items(), target.items()):
            assert k_o == k_t and v_o.shape == v_t.shape, f'state_dict mismatch at {k_o} / {k_t}'
            if 'num_batches_tracked' in k_t:
                v_t.copy_(v_o)
            else:
                v_t.copy_(v_t * m + (1. - m) * v_o)
        return m

    def forward(self, im_v1, im_v2=None, **kwargs):
        if im_v2 is None:
            return F.adaptive_avg_pool2d(self.online_net.backbone(im_v1), 1).flatten(1)
        online_v1, online_v2 = self.online_net(im_v1), self.online_net(im_v2)  # two passes, two BN batches
        with torch.no_grad():
            target_v1 = [t.clone().detach() for t in self.target_net(im_v1)]
            target_v2 = [t.clone().detach() for t in self.target_net(im_v2)]
        return self.loss_func(online_v1, target_v2) + self.loss_func(online_v2, target_v1)

    def extra_repr(self):
        return f'loss_weight={self.loss_weight}'


class LEWELB(LEWELB_EMAN):
    """LEWEL_B of the 400-epoch SyncBN run: EMA of the parameters only, target in train mode (batch stats)."""

    ema_full_state = False
    target_eval = False

    @torch.no_grad()
    def momentum_update(self, cur_iter, max_iter):
        m = self.curr_m = self.momentum_at(cur_iter, max_iter)
        for p_o, p_t in zip(self.online_net.parameters(), self.target_net.parameters()):
            p_t.data.mul_(m).add_(p_o.data, alpha=1. - m)
        return m


# ----------------------------------------------------------------------------------------------------------
# LEWEL_M: MoCo v2 instantiation.  NOT released; every choice below is the spec card's reconstruction.
# ----------------------------------------------------------------------------------------------------------

@torch.no_grad()
def _gather(x):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def infonce(q, k, negatives, T):
    """Cross-entropy of the positive logit q.k against q.negatives; ``q``, ``k`` ``[N, D]``, ``negatives``
    ``[D, M]``, all L2-normalised.  Logits / T, the positive at index 0 (MoCo)."""
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ negatives
    logits = torch.cat([l_pos, l_neg], dim=1) / T
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class LEWELM(nn.Module):
    """LEWEL on MoCo v2 (experimental reconstruction; see README).

    Query encoder = backbone + ``ObjectNeck`` with MoCo-v2 heads (Linear-ReLU-Linear as 1x1 convs, biases, no
    BN), key encoder = its EMA with constant ``m`` in train mode, shuffle-BN across processes.  Global loss:
    InfoNCE of q_g against its key and a queue of global keys, temperature T, averaged over the two views.
    Aligned loss: for every slot k an InfoNCE whose positive is slot k of the other view's key and whose negatives
    are slot k of the other images of the global batch (``aligned_negatives='batch'``) or a per-slot queue
    (``'queue'``, length ``obj_queue_size``); averaged over slots and views.  Total lambda L_g + (1-lambda) L_a.
    """

    ema_full_state = False
    target_eval = False

    def __init__(self, base_encoder, dim=128, m=0.999, hid_dim=2048, queue_size=65536, T=0.2, num_heads=4,
                 loss_weight=0.5, aligned_negatives='batch', obj_queue_size=4096, norm_layer=None, scale=1.,
                 l2_norm=True, num_neck_mlp=2, symmetric=True, **kwargs):
        super().__init__()
        if aligned_negatives not in ('batch', 'queue'):
            raise ValueError(f"aligned_negatives must be 'batch' or 'queue', got {aligned_negatives!r}")
        if not 0.0 <= loss_weight <= 1.0:
            raise ValueError(f'loss_weight must be in [0, 1], got {loss_weight}')
        self.base_m = self.curr_m = m
        self.T, self.loss_weight, self.K = T, loss_weight, queue_size
        self.aligned_negatives, self.symmetric = aligned_negatives, symmetric
        self.encoder_q = EncoderObj(base_encoder, hid_dim, dim, norm_layer, num_neck_mlp, scale=scale,
                                    l2_norm=l2_norm, num_heads=num_heads, head_norm_layer=no_norm, head_bias=True)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.register_buffer('queue', F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer('queue_ptr', torch.zeros(1, dtype=torch.long))
        n_slots = dim // num_heads
        self.obj_K = obj_queue_size if aligned_negatives == 'queue' else 0
        self.register_buffer('queue_obj', F.normalize(torch.randn(n_slots, dim, self.obj_K), dim=1))
        self.register_buffer('queue_obj_ptr', torch.zeros(1, dtype=torch.long))

    @property
    def online_net(self):  # the encoder whose backbone is evaluated / extracted (same role as in LEWEL_B)
        return self.encoder_q

    def momentum_at(self, cur_iter, max_iter):
        return self.base_m

    @torch.no_grad()
    def momentum_update(self, cur_iter, max_iter):
        m = self.curr_m = self.base_m
        for p_q, p_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            p_k.data.mul_(m).add_(p_q.data, alpha=1. - m)
        return m

    @torch.no_grad()
    def _enqueue(self, k_g, k_obj):
        k_g = _gather(k_g)
        n, ptr = k_g.shape[0], int(self.queue_ptr)
        if self.K % n:
            raise ValueError(f'queue_size {self.K} must be a multiple of the global batch {n}')
        self.queue[:, ptr:ptr + n] = k_g.T
        self.queue_ptr[0] = (ptr + n) % self.K
        if self.obj_K:
            k_obj = _gather(k_obj)                                           # [n, slots, D]
            if self.obj_K % n:
                raise ValueError(f'obj_queue_size {self.obj_K} must be a multiple of the global batch {n}')
            ptr = int(self.queue_obj_ptr)
            self.queue_obj[:, :, ptr:ptr + n] = k_obj.permute(1, 2, 0)
            self.queue_obj_ptr[0] = (ptr + n) % self.obj_K

    @torch.no_grad()
    def _keys(self, im):
        """Key embeddings with shuffle-BN: (k_g [b, D], k_obj [b, slots, D]), L2-normalised."""
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed:
            x = _gather(im)
            perm = torch.randperm(x.shape[0], device=x.device)
            dist.broadcast(perm, src=0)
            unshuffle = torch.argsort(perm)
            b, rank = im.shape[0], dist.get_rank()
            im = x[perm[rank * b:(rank + 1) * b]]
        k_g, k_obj = self.encoder_k(im)[:2]
        k_g, k_obj = F.normalize(k_g.squeeze(-1), dim=1), F.normalize(k_obj.transpose(2, 1), dim=2)
        if distributed:
            k_g, k_obj = _gather(k_g)[unshuffle[rank * b:(rank + 1) * b]], _gather(k_obj)[unshuffle[rank * b:(rank + 1) * b]]
        return k_g, k_obj

    def _direction(self, q, k):
        """(L_g, L_a) for queries of one view against keys of the other."""
        q_g, q_obj = q
        k_g, k_obj = k
        loss_g = infonce(q_g, k_g, self.queue.clone().detach(), self.T)
        b, n_slots = q_obj.shape[:2]
        if self.aligned_negatives == 'batch':
            # slot s of every image of the global batch; the own image's key is the positive
            keys = _gather(k_obj)                                            # [N, slots, D]
            rank = dist.get_rank() if keys.shape[0] > b else 0
            labels = torch.arange(b, device=q_obj.device) + rank * b
            logits = torch.einsum('bsd,nsd->sbn', q_obj, keys) / self.T      # [slots, b, N]
            loss_a = F.cross_entropy(logits.reshape(n_slots * b, -1), labels.repeat(n_slots))
        else:
            loss_a = torch.stack([infonce(q_obj[:, s], k_obj[:, s], self.queue_obj[s].clone().detach(), self.T)
                                  for s in range(n_slots)]).mean()
        return loss_g, loss_a

    def forward(self, im_v1, im_v2=None, **kwargs):
        if im_v2 is None:
            return F.adaptive_avg_pool2d(self.encoder_q.backbone(im_v1), 1).flatten(1)
        qs = []
        for im in (im_v1, im_v2):
            z_g, obj = self.encoder_q(im)[:2]
            qs.append((F.normalize(z_g.squeeze(-1), dim=1), F.normalize(obj.transpose(2, 1), dim=2)))
        k2 = self._keys(im_v2)
        pairs = [(qs[0], k2)]
        if self.symmetric:
            k1 = self._keys(im_v1)
            pairs.append((qs[1], k1))
        terms = [self._direction(q, k) for q, k in pairs]
        loss_g = sum(t[0] for t in terms) / len(terms)
        loss_a = sum(t[1] for t in terms) / len(terms)
        for _, k in pairs:
            self._enqueue(*k)
        return self.loss_weight * loss_g + (1 - self.loss_weight) * loss_a


def get_lewel_model(name):
    """The model class for ``'LEWELB'``, ``'LEWELB_EMAN'`` or ``'LEWELM'`` (a class passes through)."""
    if not isinstance(name, str):
        return name
    table = {'LEWELB': LEWELB, 'LEWELB_EMAN': LEWELB_EMAN, 'LEWELM': LEWELM}
    if name not in table:
        raise ValueError(f"unknown LEWEL model {name!r}: choose from {', '.join(table)}")
    return table[name]
