"""kNN monitor of the official ``engine.ss_validate``: L2-normalised pooled features of ``online_net.backbone``,
20 nearest neighbours by L2 distance, majority vote (ties go to the smaller label, as ``np.bincount().argmax()``).

ImageNet protocol: the memory bank is the first 10 % of every val class, the queries the first 50 % of every val
class (``data.keep_index``; the official script overlaps the two sets, and so do we on ImageNet).  The embedded
default uses the train split as the bank and the test split as queries.  ``vote: weighted`` switches to the
weighted kNN of ``common.knn`` (MoCo demo).

    python main.py --cfg cfg.yaml --opts mode=knn            # kNN of <output_dir>/last.pth
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PooledBackbone(nn.Module):
    """``backbone`` (feature map) followed by global average pooling: images -> [b, C]."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)


def knn_majority(query, bank, bank_labels, k=20, num_classes=None):
    """Predicted labels [B]: majority vote of the ``k`` bank rows nearest (L2) to each query row.

    ``query`` [B, D], ``bank`` [N, D] (L2-normalised, so L2 order = cosine order), ``bank_labels`` [N].
    """
    num_classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    dist = torch.cdist(query.float(), bank.float())
    idx = dist.topk(min(k, bank.shape[0]), dim=1, largest=False).indices           # [B, k]
    votes = F.one_hot(bank_labels[idx], num_classes).sum(dim=1)                      # [B, classes]
    return votes.argmax(dim=1)   # first maximum = smallest label among ties


# ---------------------------------------------------------------------------------------------- glue (common)
def knn_loaders(cfg):
    """(memory loader, query loader, number of classes) of the configured protocol."""
    import main
    import data
    from common.data import build_loader
    kc = cfg.eval.knn
    t = main.eval_transform(cfg)
    memory = main.make_dataset(cfg, kc.memory_split, t)
    query = main.make_dataset(cfg, kc.query_split, t)
    classes = len(memory.classes)
    subsets = []
    for ds, pct in ((memory, kc.memory_percent), (query, kc.query_percent)):
        subsets.append(ds if pct >= 1 else torch.utils.data.Subset(ds, data.keep_index(ds.targets, pct, classes)))
    kw = dict(shuffle=False, drop_last=False, num_workers=cfg.data.num_workers, seed=cfg.seed)
    return build_loader(subsets[0], kc.batch_size, **kw), build_loader(subsets[1], kc.batch_size, **kw), classes


def knn_top1(backbone, cfg, run, loaders):
    """kNN top-1 (%) of ``backbone`` (a feature-map network, e.g. ``online_net.backbone``); eval mode inside."""
    from common.knn import extract_features, knn_predict
    memory_loader, query_loader, classes = loaders
    kc = cfg.eval.knn
    net = PooledBackbone(backbone)
    bank, bank_labels = extract_features(net, memory_loader, run.device)
    feats, labels = extract_features(net, query_loader, run.device)
    correct = 0
    for i in range(0, feats.shape[0], 1024):
        q = feats[i:i + 1024]
        if kc.vote == 'majority':
            pred = knn_majority(q, bank, bank_labels, kc.k, classes)
        else:
            pred = knn_predict(q, bank.t().contiguous(), bank_labels, classes, kc.k, kc.t).argmax(1)
        correct += (pred == labels[i:i + 1024]).sum().item()
    return 100.0 * correct / max(feats.shape[0], 1)


def run_knn(cfg):
    """``mode: knn``: kNN top-1 of a checkpoint's online backbone."""
    from eval import utils
    cfg, run = utils.sub_run(cfg, 'eval_knn')
    backbone = utils.load_backbone(cfg, run, with_avgpool=False)
    top1 = knn_top1(backbone, cfg, run, knn_loaders(cfg))
    run.log_metrics({'knn_top1': top1, 'k': cfg.eval.knn.k, 'vote': cfg.eval.knn.vote})
    run.finish(f'kNN top-1 ({cfg.data.name} {cfg.eval.knn.query_split}, {cfg.eval.knn.k}-NN '
               f'{cfg.eval.knn.vote}): {top1:.2f}%')
    return top1
