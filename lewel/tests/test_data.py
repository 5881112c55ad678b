"""Augmentations of LEWEL_B / LEWEL_M, the per-class subsets and the majority-vote kNN."""
import torch
from PIL import Image
from torchvision import transforms

import data
from eval.knn import knn_majority


def _ops(compose):
    return list(compose.transforms)


def _find(ops, cls):
    found = []
    for op in ops:
        inner = op.transforms if isinstance(op, transforms.RandomApply) else [op]
        found += [(op, t) for t in inner if isinstance(t, cls)]
    return found


def test_byol_views_are_asymmetric_in_blur_and_solarize():
    v1, v2 = data.get_byol_tranforms()
    for view in (v1, v2):
        rrc = _find(_ops(view), transforms.RandomResizedCrop)[0][1]
        assert rrc.size == (224, 224) and rrc.scale == (0.2, 1.0)
        (apply, jitter), = _find(_ops(view), transforms.ColorJitter)
        assert apply.p == 0.8 and jitter.brightness == (0.6, 1.4) and jitter.contrast == (0.6, 1.4)
        assert jitter.saturation == (0.8, 1.2) and jitter.hue == (-0.1, 0.1)
        assert _find(_ops(view), transforms.RandomGrayscale)[0][1].p == 0.2
        assert _find(_ops(view), data.GaussianBlur)[0][1].sigma == (0.1, 2.0)
    assert _find(_ops(v1), data.GaussianBlur)[0][0].p == 1.0 and not _find(_ops(v1), transforms.RandomSolarize)
    assert _find(_ops(v2), data.GaussianBlur)[0][0].p == 0.1
    sol = _find(_ops(v2), transforms.RandomSolarize)[0][1]
    assert sol.p == 0.2 and sol.threshold == 128
    m = data.moco_v2_transform()
    assert _find(_ops(m), transforms.ColorJitter)[0][1].saturation == (0.6, 1.4)
    assert _find(_ops(m), data.GaussianBlur)[0][0].p == 0.5
    views = data.TwoCropsTransform(*data.get_byol_tranforms(16))(Image.new('RGB', (20, 20), (200, 30, 40)))
    assert len(views) == 2 and views[0].shape == (3, 16, 16)


def test_keep_index_takes_the_first_rounded_share_of_each_class():
    labels = [0, 1, 0, 1, 0, 2, 0, 1]          # class 0: 4, class 1: 3, class 2: 1
    assert data.keep_index(labels, 0.5) == [0, 2, 1, 3, 5]      # round(2)=2, round(1.5)=2, max(1, 0)=1
    assert data.keep_index(labels, 0.1) == [0, 1, 5]
    assert data.keep_index(labels, 1.0) == list(range(8))


def test_knn_majority_vote_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    bank = torch.nn.functional.normalize(bank, dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2])
    query = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.8]]), dim=1)
    assert knn_majority(query, bank, labels, k=1).tolist() == [0, 1, 2]
    assert knn_majority(query, bank, labels, k=3).tolist() == [0, 1, 1]
    # a tie (one vote each for 2 and 1 with k=2) goes to the smaller label, as np.bincount().argmax()
    assert knn_majority(query[2:], bank, labels, k=2).tolist() == [1]
