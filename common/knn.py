"""Weighted kNN monitor (the MoCo CIFAR demo recipe), with features gathered across ranks."""
import torch
import torch.nn.functional as F

from .dist import all_gather, get_world_size

__all__ = ['knn_predict', 'extract_features', 'knn_eval']


def knn_predict(feature, feature_bank, feature_labels, classes, knn_k=200, knn_t=0.1):
    """Class scores of a weighted kNN classifier.

    ``feature`` [B, D] and ``feature_bank`` [D, N] are L2-normalised; ``feature_labels`` [N]. Each of the
    ``knn_k`` nearest bank entries (cosine similarity ``s``) votes for its class with weight ``exp(s / knn_t)``.
    Returns scores [B, classes]; ``scores.argmax(1)`` is the prediction.
    """
    sim = feature @ feature_bank                                   # [B, N]
    k = min(knn_k, feature_bank.shape[1])
    sim_weight, sim_indices = sim.topk(k=k, dim=-1)                # [B, K]
    sim_labels = torch.gather(feature_labels.expand(feature.size(0), -1), dim=-1, index=sim_indices)
    sim_weight = (sim_weight / knn_t).exp()
    one_hot = torch.zeros(feature.size(0) * k, classes, device=feature.device)
    one_hot.scatter_(dim=-1, index=sim_labels.reshape(-1, 1), value=1.0)
    return torch.sum(one_hot.view(feature.size(0), -1, classes) * sim_weight.unsqueeze(-1), dim=1)


@torch.no_grad()
def extract_features(model, loader, device):
    """L2-normalised features [N, D] and labels [N] of a whole loader, gathered over ranks.

    Under torchrun the loader's DistributedSampler pads to equal shards; padded duplicates are harmless for a
    bank. The model is put in eval mode and restored afterwards.
    """
    was_training = model.training
    model.eval()
    feats, labels = [], []
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        f = F.normalize(model(images).flatten(1).float(), dim=1)
        feats.append(f)
        labels.append(target.to(device))
    model.train(was_training)
    feats, labels = torch.cat(feats), torch.cat(labels)
    if get_world_size() > 1:
        feats, labels = all_gather(feats), all_gather(labels)
    return feats, labels


@torch.no_grad()
def knn_eval(model, train_loader, test_loader, classes, device, k=200, t=0.1):
    """Top-1 accuracy (%) of the weighted kNN classifier on ``test_loader`` with ``train_loader`` as the bank.

    Use loaders with ``shuffle=False, drop_last=False`` and the test transform.
    """
    bank, bank_labels = extract_features(model, train_loader, device)
    test, test_labels = extract_features(model, test_loader, device)
    correct = 0
    for i in range(0, test.shape[0], 256):
        scores = knn_predict(test[i:i + 256], bank.t().contiguous(), bank_labels, classes, k, t)
        correct += (scores.argmax(1) == test_labels[i:i + 256]).sum().item()
    return 100.0 * correct / max(test.shape[0], 1)
