"""Semi-supervised fine-tuning (official ``main_semi.py``): the whole network is trained on the SimCLR 1 % / 10 %
ImageNet subsets (``eval.semi.file_list``: ``1percent.txt`` / ``10percent.txt`` of the official repository, one
file name per line) with SGD momentum 0.9, wd 1e-4, batch 256, 50 epochs, x0.1 at epochs 30 and 40; backbone lr
1e-4 and classifier lr 1.0 for 1 %, 0.01 / 0.1 for 10 %.  Without a file list, ``eval.semi.percent`` % of every
class is drawn with ``seed`` (synthetic data and other datasets).

    python main.py --cfg configs/lewelb_eman_100ep.yaml --opts mode=semi eval.semi.file_list=1percent.txt ...
"""
import torch


def run_semi(cfg):
    import data
    import main
    from common.data import labeled_subset
    from eval import utils
    cfg, run = utils.sub_run(cfg, 'eval_semi')
    sc = cfg.eval.semi
    mean, std = main.norm_stats(cfg)
    full = main.make_dataset(cfg, sc.split, data.linear_train_transform(cfg.data.image_size, mean, std))
    classes = len(full.classes)
    if sc.file_list:
        idx = labeled_subset(full, file_list=sc.file_list)
    else:
        per_class = max(1, round(sc.percent / 100.0 * len(full) / classes))
        idx = labeled_subset(full, num_per_class=per_class, seed=cfg.seed)
    run.log(f'semi-supervised subset: {len(idx)} of {len(full)} labelled images')
    train_set = torch.utils.data.Subset(full, idx)
    test_set = main.make_dataset(cfg, sc.test_split, main.eval_transform(cfg))
    model = utils.Classifier(utils.load_backbone(cfg, run), classes, frozen=False).to(run.device)
    optimizer = torch.optim.SGD([{'params': model.backbone.parameters(), 'lr': sc.lr_backbone},
                                 {'params': model.fc.parameters(), 'lr': sc.lr_classifier}],
                                momentum=sc.momentum, weight_decay=sc.weight_decay)
    return utils.train_classifier(cfg, run, model, optimizer, sc, train_set, test_set, 'semi')
