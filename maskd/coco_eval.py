"""COCO-style box mAP (AP@[.50:.05:.95], 101-point interpolated precision, up to 100 detections per image and
class, area range 'all'), written after the pycocotools ``COCOeval`` algorithm: greedy matching of
score-sorted detections to the best unmatched ground truth; detections matched to crowd boxes (IoU = overlap
over the detection's area) are ignored; classes without ground truth are left out of the mean.
Imports only torch and numpy.
"""
import numpy as np
import torch

__all__ = ['coco_map', 'box_iou_np']

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)


def box_iou_np(dt, gt, crowd):
    """IoU [D, G] of xyxy boxes; for crowd ground truth the union is the detection's area."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    lt = np.maximum(dt[:, None, :2], gt[None, :, :2])
    rb = np.minimum(dt[:, None, 2:], gt[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    a_dt = (dt[:, 2:] - dt[:, :2]).prod(-1)
    a_gt = (gt[:, 2:] - gt[:, :2]).prod(-1)
    union = np.where(crowd[None, :], a_dt[:, None], a_dt[:, None] + a_gt[None, :] - inter)
    return inter / np.maximum(union, 1e-12)


def _np(x, dtype=np.float64):
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _match(dt_boxes, gt_boxes, gt_crowd):
    """Per IoU threshold: (det matched [T, D] bool, det ignored [T, D] bool)."""
    order = np.argsort(gt_crowd, kind='mergesort')      # non-crowd first, as COCOeval
    gt_boxes, gt_crowd = gt_boxes[order], gt_crowd[order]
    ious = box_iou_np(dt_boxes, gt_boxes, gt_crowd)
    T, D, G = len(IOU_THRS), len(dt_boxes), len(gt_boxes)
    dtm, dt_ig = np.zeros((T, D), bool), np.zeros((T, D), bool)
    for ti, thr in enumerate(IOU_THRS):
        gtm = np.zeros(G, bool)
        for d in range(D):
            best, m = min(thr, 1 - 1e-10), -1
            for g in range(G):
                if gtm[g] and not gt_crowd[g]:
                    continue
                if m > -1 and not gt_crowd[m] and gt_crowd[g]:
                    break                               # a real match beats any crowd match
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m == -1:
                continue
            dt_ig[ti, d] = gt_crowd[m]
            dtm[ti, d] = True
            gtm[m] = True
    return dtm, dt_ig


def coco_map(detections, targets, num_classes=None, max_dets=100):
    """``detections``: per image ``{'boxes' [D,4] xyxy, 'scores' [D], 'labels' [D]}``; ``targets``: per image
    ``{'boxes' [G,4], 'labels' [G], optional 'iscrowd' [G]}``. Returns ``{'mAP', 'AP50', 'AP75'}`` in percent
    (0 when no class has ground truth)."""
    if len(detections) != len(targets):
        raise ValueError(f'{len(detections)} detection lists for {len(targets)} images')
    per_class = {}   # label -> [scores list, matched [T] lists, ignored lists, num non-crowd gt]
    for det, tgt in zip(detections, targets):
        d_boxes, d_scores = _np(det['boxes']).reshape(-1, 4), _np(det['scores']).reshape(-1)
        d_labels = _np(det['labels'], np.int64).reshape(-1)
        g_boxes, g_labels = _np(tgt['boxes']).reshape(-1, 4), _np(tgt['labels'], np.int64).reshape(-1)
        g_crowd = _np(tgt['iscrowd'], bool).reshape(-1) if 'iscrowd' in tgt else np.zeros(len(g_labels), bool)
        for c in set(d_labels.tolist()) | set(g_labels.tolist()):
            dsel, gsel = d_labels == c, g_labels == c
            order = np.argsort(-d_scores[dsel], kind='mergesort')[:max_dets]
            db, ds = d_boxes[dsel][order], d_scores[dsel][order]
            dtm, dt_ig = _match(db, g_boxes[gsel], g_crowd[gsel])
            entry = per_class.setdefault(c, [[], [], [], 0])
            entry[0].append(ds)
            entry[1].append(dtm)
            entry[2].append(dt_ig)
            entry[3] += int((~g_crowd[gsel]).sum())
    aps = []                                             # [classes with gt, T]
    for c, (scores, dtms, igs, npig) in sorted(per_class.items()):
        if num_classes is not None and not 0 <= c < num_classes + 1:
            continue
        if npig == 0:
            continue
        scores = np.concatenate(scores)
        order = np.argsort(-scores, kind='mergesort')
        dtm = np.concatenate(dtms, axis=1)[:, order]
        ig = np.concatenate(igs, axis=1)[:, order]
        tps = np.cumsum(dtm & ~ig, axis=1).astype(float)
        fps = np.cumsum(~dtm & ~ig, axis=1).astype(float)
        ap_t = []
        for tp, fp in zip(tps, fps):
            rc = tp / npig
            pr = tp / np.maximum(tp + fp, np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr    # precision envelope
            q = np.zeros(len(REC_THRS))
            idx = np.searchsorted(rc, REC_THRS, side='left')
            ok = idx < len(pr)
            q[ok] = pr[idx[ok]]
            ap_t.append(q.mean())
        aps.append(ap_t)
    if not aps:
        return {'mAP': 0.0, 'AP50': 0.0, 'AP75': 0.0}
    aps = np.asarray(aps)
    return {'mAP': 100 * float(aps.mean()), 'AP50': 100 * float(aps[:, 0].mean()),
            'AP75': 100 * float(aps[:, 5].mean())}
