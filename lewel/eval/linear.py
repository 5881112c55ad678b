"""Linear evaluation (official ``main_lincls.py``): the online backbone frozen and in eval mode, ``fc``
N(0, 0.01) / 0, SGD lr 0.4, momentum 0.9, wd 0, batch 256, 50 epochs, x0.1 at epochs 30 and 40; train
RandomResizedCrop(224) + flip, val Resize(256) + CenterCrop(224); the best top-1 over epochs.

    python main.py --cfg configs/lewelb_eman_100ep.yaml --opts mode=linear data.root=/data/imagenet
"""
import torch


def run_linear(cfg):
    import data
    import main
    from eval import utils
    cfg, run = utils.sub_run(cfg, 'eval_linear')
    lc = cfg.eval.linear
    mean, std = main.norm_stats(cfg)
    train_set = main.make_dataset(cfg, lc.split, data.linear_train_transform(cfg.data.image_size, mean, std))
    test_set = main.make_dataset(cfg, lc.test_split, main.eval_transform(cfg))
    model = utils.Classifier(utils.load_backbone(cfg, run), len(train_set.classes), frozen=True).to(run.device)
    optimizer = torch.optim.SGD(model.fc.parameters(), lr=lc.lr, momentum=lc.momentum, weight_decay=lc.weight_decay)
    return utils.train_classifier(cfg, run, model, optimizer, lc, train_set, test_set, 'linear')
