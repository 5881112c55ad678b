"""COCO-style mAP against hand-computed cases."""
import pytest
import torch

from coco_eval import coco_map


def det(boxes, scores, labels):
    return {'boxes': torch.tensor(boxes, dtype=torch.float32), 'scores': torch.tensor(scores),
            'labels': torch.tensor(labels)}


def gt(boxes, labels, crowd=None):
    t = {'boxes': torch.tensor(boxes, dtype=torch.float32), 'labels': torch.tensor(labels)}
    if crowd is not None:
        t['iscrowd'] = torch.tensor(crowd)
    return t


def test_perfect_and_partial_overlap():
    g = [gt([[0, 0, 10, 10]], [1])]
    assert coco_map([det([[0, 0, 10, 10]], [0.9], [1])], g)['mAP'] == pytest.approx(100)
    # IoU 0.8: a hit at thresholds .50 ... .80 (7 of 10)
    r = coco_map([det([[0, 0, 10, 8]], [0.9], [1])], g)
    assert r['mAP'] == pytest.approx(70) and r['AP50'] == 100 and r['AP75'] == 100
    # a higher-scored IoU-0.8 box and a lower-scored exact box: at .85-.95 precision 1/2 at recall 1
    assert coco_map([det([[0, 0, 10, 8], [0, 0, 10, 10]], [0.9, 0.5], [1, 1])], g)['mAP'] == pytest.approx(85)
    # wrong class: nothing
    assert coco_map([det([[0, 0, 10, 10]], [0.9], [2])], g)['mAP'] == 0


def test_ranking_across_images_and_classes():
    # class 1: two images, a false positive ranked first -> precision envelope 2/3 at recall 1 for all thr
    dets = [det([[50, 50, 60, 60], [0, 0, 10, 10]], [0.95, 0.9], [1, 1]), det([[0, 0, 10, 10]], [0.8], [1])]
    gts = [gt([[0, 0, 10, 10]], [1]), gt([[0, 0, 10, 10]], [1])]
    # recall 0.5 reached at precision 1/2, recall 1 at 2/3: envelope 2/3 everywhere up to recall 1
    assert coco_map(dets, gts)['mAP'] == pytest.approx(100 * 2 / 3, rel=1e-6)
    # a second class with AP 100 averages in; a class with detections but no ground truth is left out
    dets[1] = det([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.8, 0.7, 0.6], [1, 2, 3])
    gts[1] = gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2])
    assert coco_map(dets, gts)['mAP'] == pytest.approx(100 * (2 / 3 + 1) / 2, rel=1e-6)


def test_missed_ground_truth_and_crowd_ignore():
    g = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    assert coco_map([det([[0, 0, 10, 10]], [0.9], [1])], g)['mAP'] == pytest.approx(100 * 51 / 101, rel=1e-6)
    # a detection inside a crowd region is ignored (not a false positive); crowd boxes need no detection
    g = [gt([[0, 0, 10, 10], [20, 20, 60, 60]], [1, 1], crowd=[0, 1])]
    d = [det([[25, 25, 35, 35], [0, 0, 10, 10]], [0.99, 0.5], [1, 1])]
    assert coco_map(d, g)['mAP'] == pytest.approx(100)
    assert coco_map([det([], [], [])], [gt([[0, 0, 5, 5]], [1])])['mAP'] == 0
    with pytest.raises(ValueError):
        coco_map([], g)
