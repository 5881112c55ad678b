"""Data glue for main.py: the synthetic detection set of ``common.data`` (cached), COCO read from local files
(instances json + image folder, no pycocotools needed), semantic masks built from the synthetic detection set,
and Cityscapes (leftImg8bit + gtFine labelTrainIds) for the segmentation path.
"""
import glob
import json
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import hflip, pil_to_tensor, to_tensor

from common.data import build_dataset
from common.errors import DatasetError

__all__ = ['build_det_data', 'build_seg_data', 'det_collate', 'seg_collate']


def det_collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def seg_collate(batch):
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


def _flip_boxes(boxes, width):
    boxes = boxes.clone()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return boxes


class SyntheticDet(torch.utils.data.Dataset):
    """``synthetic_det`` as tensors, rendered once and kept in memory; horizontal flip with prob ``flip``."""

    def __init__(self, split, options, flip=0.0):
        self.ds = build_dataset('synthetic_det', None, split, None, **options)
        self.flip, self.cache = float(flip), {}
        self.classes = self.ds.classes

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        if i not in self.cache:
            img, t = self.ds[i]
            self.cache[i] = (to_tensor(img), {'boxes': t['boxes'], 'labels': t['labels'],
                                              'masks': t['masks'], 'image_id': t['image_id']})
        img, t = self.cache[i]
        t = dict(t)
        if self.flip and random.random() < self.flip:
            img, t['boxes'], t['masks'] = hflip(img), _flip_boxes(t['boxes'], img.shape[-1]), t['masks'].flip(-1)
        return img, t


class CocoDet(torch.utils.data.Dataset):
    """COCO 2017 from ``root/annotations/instances_{split}2017.json`` and ``root/{split}2017/``.

    Labels are the 80 categories mapped to 1..80 in id order; crowd boxes are dropped for training and kept
    (``iscrowd``) for evaluation; training skips images without boxes."""

    def __init__(self, root, split, ann_file='', train=True, flip=0.5):
        ann = ann_file or os.path.join(root or '', 'annotations', f'instances_{split}2017.json')
        img_dir = os.path.join(root or '', f'{split}2017')
        if not root or not os.path.isfile(ann) or not os.path.isdir(img_dir):
            raise DatasetError(f"COCO not found: expected '{ann}' and the image folder '{img_dir}' "
                               f"(layout: <root>/annotations/instances_{{train,val}}2017.json, <root>/{{train,val}}2017/)")
        with open(ann) as f:
            data = json.load(f)
        cats = sorted(c['id'] for c in data['categories'])
        self.cat_to_label = {c: i + 1 for i, c in enumerate(cats)}
        self.classes = ['background'] + [c['name'] for c in sorted(data['categories'], key=lambda c: c['id'])]
        anns = {}
        for a in data['annotations']:
            anns.setdefault(a['image_id'], []).append(a)
        self.images = sorted(data['images'], key=lambda im: im['id'])
        if train:
            self.images = [im for im in self.images if any(not a.get('iscrowd', 0) and a['bbox'][2] > 1
                                                           and a['bbox'][3] > 1 for a in anns.get(im['id'], []))]
        self.anns, self.img_dir, self.train, self.flip = anns, img_dir, train, float(flip if train else 0.0)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        im = self.images[i]
        img = to_tensor(Image.open(os.path.join(self.img_dir, im['file_name'])).convert('RGB'))
        boxes, labels, crowd = [], [], []
        for a in self.anns.get(im['id'], []):
            x, y, w, h = a['bbox']
            if w <= 1 or h <= 1 or (self.train and a.get('iscrowd', 0)):
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat_to_label[a['category_id']])
            crowd.append(int(a.get('iscrowd', 0)))
        t = {'boxes': torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
             'labels': torch.tensor(labels, dtype=torch.int64), 'iscrowd': torch.tensor(crowd, dtype=torch.int64),
             'image_id': im['id']}
        if self.flip and random.random() < self.flip:
            img, t['boxes'] = hflip(img), _flip_boxes(t['boxes'], img.shape[-1])
        return img, t


def build_det_data(d, seed):
    """(train set, test set, number of foreground classes) for ``data.name`` synthetic_det | coco."""
    if d.name == 'synthetic_det':
        opts = dict(num_classes=d.num_classes, image_size=d.image_size, train_size=d.train_size,
                    test_size=d.test_size, max_objects=d.max_objects, seed=seed)
        return SyntheticDet('train', opts, d.flip), SyntheticDet('test', opts), d.num_classes
    if d.name == 'coco':
        train = CocoDet(d.root, 'train', d.ann_train, train=True, flip=d.flip)
        val = CocoDet(d.root, 'val', d.ann_val, train=False)
        return train, val, len(train.classes) - 1
    raise DatasetError(f"detection dataset '{d.name}' is not supported; use synthetic_det or coco")


# ------------------------------------------------------------------------------------------ segmentation
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _seg_augment(img, label, crop, scale_range, flip):
    """Random scale (step 0.1), pad (ignore -1) and random crop, flip: the CIRKD training pipeline."""
    lo, hi = scale_range
    s = random.choice(np.arange(lo, hi + 1e-6, 0.1).tolist()) if hi > lo else lo
    h, w = img.shape[-2:]
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    img = F.interpolate(img[None], size=(nh, nw), mode='bilinear', align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=(nh, nw), mode='nearest')[0, 0].long()
    ch, cw = crop
    ph, pw = max(ch - nh, 0), max(cw - nw, 0)
    if ph or pw:
        img = F.pad(img, (0, pw, 0, ph))
        label = F.pad(label, (0, pw, 0, ph), value=-1)
    y, x = random.randint(0, img.shape[1] - ch), random.randint(0, img.shape[2] - cw)
    img, label = img[:, y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]
    if random.random() < flip:
        img, label = img.flip(-1), label.flip(-1)
    return img, label


class SyntheticSeg(torch.utils.data.Dataset):
    """Semantic maps from ``synthetic_det``: 0 background, 1..K the object classes (K + 1 classes)."""

    def __init__(self, split, options, train):
        self.det = SyntheticDet(split, options)
        self.train = train

    def __len__(self):
        return len(self.det)

    def __getitem__(self, i):
        img, t = self.det[i]
        label = torch.zeros(img.shape[-2:], dtype=torch.int64)
        for m, c in zip(t['masks'], t['labels']):
            label[m.bool()] = int(c)
        if self.train and random.random() < 0.5:
            img, label = img.flip(-1), label.flip(-1)
        return (img - MEAN) / STD, label


class Cityscapes(torch.utils.data.Dataset):
    """``root/leftImg8bit/{split}/<city>/*_leftImg8bit.png`` with ``root/gtFine/{split}/<city>/
    *_gtFine_labelTrainIds.png`` (19 classes, 255 -> ignore -1)."""

    def __init__(self, root, split, train, crop=(512, 1024), scale_range=(0.5, 2.0)):
        imgs = sorted(glob.glob(os.path.join(root or '', 'leftImg8bit', split, '*', '*_leftImg8bit.png')))
        if not imgs:
            raise DatasetError(f"Cityscapes not found under '{root}': expected leftImg8bit/{split}/<city>/"
                               f"*_leftImg8bit.png and gtFine/{split}/<city>/*_gtFine_labelTrainIds.png")
        self.items = [(p, p.replace('leftImg8bit', 'gtFine', 1).replace('_leftImg8bit.png',
                                                                         '_gtFine_labelTrainIds.png')) for p in imgs]
        self.train, self.crop, self.scale_range = train, crop, scale_range

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        ip, lp = self.items[i]
        img = to_tensor(Image.open(ip).convert('RGB'))
        label = pil_to_tensor(Image.open(lp))[0].long()
        label[label == 255] = -1
        if self.train:
            img, label = _seg_augment(img, label, self.crop, self.scale_range, 0.5)
        return (img - MEAN) / STD, label


def build_seg_data(d, seed):
    """(train set, test set, number of classes incl. background) for synthetic_det | cityscapes."""
    if d.name == 'synthetic_det':
        opts = dict(num_classes=d.num_classes, image_size=d.image_size, train_size=d.train_size,
                    test_size=d.test_size, max_objects=d.max_objects, seed=seed)
        return SyntheticSeg('train', opts, True), SyntheticSeg('test', opts, False), d.num_classes + 1
    if d.name == 'cityscapes':
        return (Cityscapes(d.root, 'train', True, tuple(d.crop_size)), Cityscapes(d.root, 'val', False), 19)
    raise DatasetError(f"segmentation dataset '{d.name}' is not supported; use synthetic_det or cityscapes")
