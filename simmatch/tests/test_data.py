"""Augmentations and the labeled / unlabeled streams."""
import numpy as np
import pytest
import torch
from PIL import Image

from common.config import load_config
from main import DEFAULTS
from randaugment import RandAugmentImageNet, RandAugmentMC, cutout_abs


def test_cutout_is_a_grey_square():
    np.random.seed(0)
    img = cutout_abs(Image.new('RGB', (32, 32)), 8)
    arr = np.asarray(img)
    grey = (arr == 127).all(axis=2)
    ys, xs = np.nonzero(grey)
    assert grey.sum() > 0 and ys.max() - ys.min() <= 8 and xs.max() - xs.min() <= 8
    assert (arr[~grey] == 0).all()


@pytest.mark.parametrize('aug', [RandAugmentMC(3, 5), RandAugmentImageNet(2, 10)])
def test_randaugment_keeps_size_and_mode(aug):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    for _ in range(20):
        out = aug(img)
        assert out.size == (32, 32) and out.mode == 'RGB'


def test_streams_labeled_index_and_two_views():
    from data import build_ssl_datasets
    cfg = load_config(None, ['data.train_size=50', 'data.test_size=20', 'data.num_labels=20'], defaults=DEFAULTS)
    labeled, unlabeled, test, classes = build_ssl_datasets(cfg)
    assert classes == 10 and len(labeled) == 20 and len(unlabeled) == 50 and len(test) == 20  # labeled in ulb
    assert sorted(labeled.targets) == sorted(list(range(10)) * 2)  # class-balanced
    img, label, slot = labeled[3]
    assert img.shape == (3, 32, 32) and slot == 3 and label == labeled.targets[3]
    (weak, strong), _ = unlabeled[0]
    assert weak.shape == strong.shape == (3, 32, 32) and not torch.equal(weak, strong)
    cfg.data.include_lb_to_ulb = False
    _, unlabeled, _, _ = build_ssl_datasets(cfg)
    assert len(unlabeled) == 30 and not set(unlabeled.indices) & set(labeled.indices)


def test_imagenet_percent_split_file_and_complement(tmp_path):
    from data import ImageNetPercent
    for cls in ('n01', 'n02'):
        (tmp_path / 'train' / cls).mkdir(parents=True)
        for i in range(3):
            Image.new('RGB', (8, 8), (i * 40, 0, 0)).save(tmp_path / 'train' / cls / f'{cls}_{i}.JPEG')
    split = tmp_path / 'split_1p_index.txt'
    split.write_text('n02_1.JPEG\nn01_0.JPEG\n')
    lab = ImageNetPercent(str(split), labeled=True, root=str(tmp_path), return_index=True)
    ulb = ImageNetPercent(str(split), labeled=False, root=str(tmp_path))
    assert len(lab) == 2 and lab.targets == [1, 0] and lab[1][2] == 1  # file order = bank slots
    assert len(ulb) == 4 and not set(ulb.indices) & set(lab.indices)
    assert len(ImageNetPercent(str(split), labeled=False, root=str(tmp_path), include_labeled=True)) == 6
    from common.errors import DatasetError
    with pytest.raises(DatasetError, match='curl'):
        ImageNetPercent(str(tmp_path / 'missing.txt'), root=str(tmp_path))
