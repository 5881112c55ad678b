import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from common.data import (DATASET_STATS, CachedDataset, MultiView, build_dataset, build_loader, labeled_subset,
                         num_classes, set_epoch)
from common.errors import DatasetError


def arr(img):
    return np.asarray(img, dtype=np.int16)


def test_synthetic_is_deterministic_and_splits_differ():
    a = build_dataset('synthetic', split='train', image_size=24, train_size=50, test_size=20)
    b = build_dataset('synthetic', split='train', image_size=24, train_size=50, test_size=20)
    t = build_dataset('synthetic', split='test', image_size=24, train_size=50, test_size=20)
    assert len(a) == 50 and len(t) == 20
    img, label = a[7]
    assert isinstance(img, Image.Image) and img.size == (24, 24) and img.mode == 'RGB'
    assert (arr(img) == arr(b[7][0])).all() and label == b[7][1]
    assert (arr(a[3][0]) != arr(t[3][0])).any()
    other_seed = build_dataset('synthetic', split='train', image_size=24, seed=1, train_size=50)
    assert (arr(a[3][0]) != arr(other_seed[3][0])).any()
    assert a.targets == [i % 10 for i in range(50)] and len(a.classes) == 10


def test_synthetic_any_size_many_classes_and_bad_options():
    ds = build_dataset('synthetic', image_size=96, num_classes=30, train_size=60)
    assert ds[0][0].size == (96, 96) and len(ds.classes) == 30 and max(ds.targets) == 29
    assert num_classes('synthetic', num_classes=30) == 30 and num_classes('cifar100') == 100
    with pytest.raises(DatasetError, match='unknown option'):
        build_dataset('synthetic', img_size=32)
    with pytest.raises(DatasetError, match='splits'):
        build_dataset('synthetic', split='unlabeled')
    with pytest.raises(DatasetError, match='unknown dataset'):
        build_dataset('imagenet21k', root='/x')


def test_synthetic_plain_background():
    tex = build_dataset('synthetic', image_size=32, train_size=20)
    plain = build_dataset('synthetic', image_size=32, train_size=20, background='plain')
    again = build_dataset('synthetic', image_size=32, train_size=20, background='plain')
    img = arr(plain[5][0]).astype(np.float32)
    assert (img == arr(again[5][0])).all() and plain.targets == tex.targets
    # the corners are background: flat up to the pixel noise, unlike the textures (some of which are flat too)
    corners = np.stack([img[:4, :4], img[:4, -4:], img[-4:, :4], img[-4:, -4:]]).reshape(-1, 3)
    assert corners.std(0).max() < 12
    spreads = [np.stack([arr(tex[i][0])[:4, :4], arr(tex[i][0])[-4:, -4:]]).reshape(-1, 3).std(0).max()
               for i in range(20)]
    assert max(spreads) > 20
    gray = build_dataset('synthetic', image_size=32, train_size=20, background='gray')
    g = arr(gray[5][0])
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()  # no colour at all
    assert np.ptp(g) > 50  # the object stands out from the background
    with pytest.raises(DatasetError, match='background'):
        build_dataset('synthetic', background='stripes')
    with pytest.raises(DatasetError, match='at most 10'):
        build_dataset('synthetic', background='gray', num_classes=20)


def test_transform_applies_and_stats_exist():
    tf = T.Compose([T.ToTensor(), T.Normalize(*DATASET_STATS['synthetic'])])
    ds = build_dataset('synthetic', split='test', transform=tf, test_size=200)
    x = torch.stack([ds[i][0] for i in range(200)])
    assert x.shape == (200, 3, 32, 32)
    assert abs(x.mean().item()) < 0.3 and 0.6 < x.std().item() < 1.6  # the stats roughly normalise


def test_detection_variant_targets():
    ds = build_dataset('synthetic_det', split='train', image_size=64, train_size=20, max_objects=3)
    for i in range(20):
        img, tgt = ds[i]
        n = len(tgt['labels'])
        assert img.size == (64, 64) and 1 <= n <= 3
        assert tgt['boxes'].shape == (n, 4) and tgt['boxes'].dtype == torch.float32
        assert tgt['labels'].dtype == torch.int64 and (tgt['labels'] >= 1).all() and (tgt['labels'] <= 10).all()
        assert tgt['masks'].shape == (n, 64, 64) and tgt['masks'].dtype == torch.uint8
        for box, mask in zip(tgt['boxes'], tgt['masks']):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        # objects do not overlap
        assert (tgt['masks'].sum(0) <= 1).all()


def test_missing_roots_name_path_and_layout(tmp_path):
    for name in ('cifar10', 'cifar100', 'stl10', 'imagefolder'):
        with pytest.raises(DatasetError) as e:
            build_dataset(name, root=str(tmp_path / 'missing'))
        assert 'missing' in str(e.value) and 'layout' in str(e.value)
    with pytest.raises(DatasetError, match='cifar-10-batches-py'):
        build_dataset('cifar10', root=str(tmp_path))
    with pytest.raises(DatasetError, match='data.root'):
        build_dataset('cifar10')


def test_imagefolder_and_corrupt_image(tmp_path):
    for split in ('train', 'val'):
        for c in ('a', 'b'):
            (tmp_path / split / c).mkdir(parents=True)
            for k in range(2):
                Image.new('RGB', (8, 8), (k * 50, 0, 0)).save(tmp_path / split / c / f'{c}{k}.png')
    ds = build_dataset('imagefolder', root=str(tmp_path), split='train')
    assert len(ds) == 4 and ds.classes == ['a', 'b'] and ds.targets == [0, 0, 1, 1]
    assert len(build_dataset('imagefolder', root=str(tmp_path), split='test')) == 4  # falls back to val/
    (tmp_path / 'train' / 'a' / 'a0.png').write_bytes(b'not an image')
    ds = build_dataset('imagefolder', root=str(tmp_path), split='train')
    with pytest.raises(DatasetError, match='a0.png'):
        ds[0]
    lst = tmp_path / 'list.txt'
    lst.write_text('b1.png\na1.png\n')
    assert labeled_subset(ds, file_list=str(lst)) == [3, 1]


def test_labeled_subset_by_seed_and_file_list(tmp_path):
    ds = build_dataset('synthetic', train_size=200)
    idx = labeled_subset(ds, num_per_class=4, seed=3)
    assert len(idx) == 40 and len(set(idx)) == 40
    assert np.bincount([ds.targets[i] for i in idx]).tolist() == [4] * 10
    assert idx == labeled_subset(ds, num_per_class=4, seed=3)
    assert idx != labeled_subset(ds, num_per_class=4, seed=4)
    f = tmp_path / 'idx.txt'
    f.write_text('5\n9\n12\n')
    assert labeled_subset(ds, file_list=str(f)) == [5, 9, 12]
    f.write_text('5\n999\n')
    with pytest.raises(DatasetError, match='out of range'):
        labeled_subset(ds, file_list=str(f))
    with pytest.raises(DatasetError, match='fewer'):
        labeled_subset(ds, num_per_class=50)


def test_cached_dataset_reads_each_sample_once_and_transforms_every_access():
    base = build_dataset('synthetic', image_size=16, train_size=6)
    reads = []

    class Counting(torch.utils.data.Dataset):
        targets, classes = base.targets, base.classes

        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            reads.append(i)
            return base[i]

    store = {}
    flip = CachedDataset(Counting(), T.Compose([T.RandomHorizontalFlip(p=1.0), T.ToTensor()]), cache=store)
    plain = CachedDataset(Counting(), None, cache=store)      # a second view sharing the store
    assert len(flip) == 6 and flip.targets == base.targets and flip.classes == base.classes
    x, y = flip[2]
    x2, _ = flip[2]
    img, y3 = plain[2]
    assert reads == [2] and y == y3 == base.targets[2]
    assert torch.equal(x, x2) and torch.equal(x, T.ToTensor()(img).flip(-1))
    assert arr(img).tolist() == arr(base[2][0]).tolist()


def test_multiview_and_loader_determinism():
    tf = MultiView([T.ToTensor(), T.Compose([T.Grayscale(3), T.ToTensor()])])
    ds = build_dataset('synthetic', train_size=40, image_size=8, transform=tf)
    views, _ = ds[0]
    assert len(views) == 2 and views[0].shape == views[1].shape == (3, 8, 8)
    assert not torch.equal(views[0], views[1])
    loader = build_loader(ds, batch_size=8, seed=5)

    def order(epoch):
        set_epoch(loader, epoch)
        return torch.cat([y for _, y in loader]).tolist()
    ds.targets  # labels are index % 10, so the label order reflects the shuffle
    assert order(0) == order(0) and order(0) != order(1)
    with pytest.raises(DatasetError, match='fewer than one batch'):
        build_loader(ds, batch_size=64)
