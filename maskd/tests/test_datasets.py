"""COCO read from local files (json + images), synthetic semantic maps, clear errors for missing data."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from common.config import Config
from common.errors import DatasetError
from datasets import CocoDet, Cityscapes, SyntheticSeg, build_det_data


def make_coco(root):
    (root / 'annotations').mkdir()
    (root / 'val2017').mkdir()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / 'val2017' / 'a.jpg')
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / 'val2017' / 'b.jpg')
    data = {'images': [{'id': 7, 'file_name': 'a.jpg'}, {'id': 3, 'file_name': 'b.jpg'}],
            'categories': [{'id': 90, 'name': 'toothbrush'}, {'id': 1, 'name': 'person'}],
            'annotations': [{'image_id': 7, 'bbox': [2, 3, 10, 5], 'category_id': 90, 'iscrowd': 0},
                            {'image_id': 7, 'bbox': [0, 0, 20, 20], 'category_id': 1, 'iscrowd': 1},
                            {'image_id': 3, 'bbox': [1, 1, 0.5, 4], 'category_id': 1, 'iscrowd': 0}]}
    (root / 'annotations' / 'instances_val2017.json').write_text(json.dumps(data))


def test_coco_targets(tmp_path):
    make_coco(tmp_path)
    val = CocoDet(str(tmp_path), 'val', train=False)
    assert len(val) == 2 and val.classes == ['background', 'person', 'toothbrush']
    img, t = val[1]                                        # images sorted by id: b (3), a (7)
    assert img.shape == (3, 20, 30) and t['image_id'] == 7
    assert t['boxes'].tolist() == [[2, 3, 12, 8], [0, 0, 20, 20]]       # xywh -> xyxy
    assert t['labels'].tolist() == [2, 1] and t['iscrowd'].tolist() == [0, 1]
    assert val[0][1]['boxes'].shape == (0, 4)              # a degenerate (w <= 1) box is dropped
    train = CocoDet(str(tmp_path), 'val', train=True, flip=0.0)
    assert len(train) == 1                                 # images without a usable box are skipped
    assert train[0][1]['labels'].tolist() == [2]           # crowd boxes are not trained on


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match='instances_train2017.json'):
        CocoDet(str(tmp_path), 'train')
    with pytest.raises(DatasetError, match='leftImg8bit'):
        Cityscapes(str(tmp_path), 'train', True)
    with pytest.raises(DatasetError, match='not supported'):
        build_det_data(Config({'name': 'voc'}), 0)


def test_synthetic_semantic_maps():
    ds = SyntheticSeg('test', dict(num_classes=3, image_size=32, train_size=4, test_size=4, seed=0), train=False)
    img, label = ds[0]
    _, t = ds.det[0]
    assert img.shape == (3, 32, 32) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {0, 1, 2, 3}
    for m, c in zip(t['masks'], t['labels']):
        assert (label[m.bool()] == c).all()
