"""The main job end to end on tiny synthetic data: files, resume, the EMAN target's mode, options, errors, the
evaluation modes and the paper configs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main

FOLDER = Path(__file__).resolve().parents[1]
TINY = ['data.image_size=16', 'data.train_size=64', 'data.test_size=32', 'batch_size=16', 'width=4',
        'hid_dim=16', 'proj_dim=8', 'warmup_epochs=1', 'eval.knn.k=5', 'eval.knn.every=1', 'device=cpu',
        # the official LEWEL_B with LARS (cfg.yaml's CPU demo is LEWEL_M; tests of LEWEL_M name it)
        'arch=LEWELB', 'optimizer=lars', 'lr=1.0', 'weight_decay=1.0e-6']


def run_main(tmp_path, *opts, name='run'):
    out = tmp_path / name
    result = main.main(['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={out}', *TINY, *opts])
    return out, result


def metrics(out):
    return [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]


def test_smoke_run_writes_its_outputs_and_resumes_exactly(tmp_path, capsys, monkeypatch):
    out, result = run_main(tmp_path, 'epochs=2', name='straight')
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'):
        assert (out / name).is_file(), name
    rows = metrics(out)
    assert [r['epoch'] for r in rows] == [0, 1, 2] and rows[0]['stage'] == 'init'
    assert all(r['loss'] > 0 and 'knn_top1' in r and 0.99 <= r['m'] <= 1.0 for r in rows[1:])
    assert rows[2]['m'] == pytest.approx(1 - 0.01 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item()) / 2)
    ckpt = torch.load(out / 'last.pth', weights_only=False)
    assert ckpt['epoch'] == 2 and {'model', 'optimizer', 'knn_init'} <= set(ckpt)
    assert 'online_net.neck.proj_obj.mlp.3.weight' in ckpt['model']
    assert 0 <= result['knn_top1'] <= 100 and result['knn_init'] == rows[0]['knn_top1']
    assert 'trained encoder vs' in capsys.readouterr().out.strip().splitlines()[-1]

    # a run killed during epoch 2 and restarted continues from last.pth and ends where the straight run ends
    train_one_epoch = main.train_one_epoch

    def killed_in_epoch_2(model, loader, optimizer, epoch, *args, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return train_one_epoch(model, loader, optimizer, epoch, *args, **kwargs)

    monkeypatch.setattr(main, 'train_one_epoch', killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_main(tmp_path, 'epochs=2', name='resumed')
    monkeypatch.undo()
    resumed = tmp_path / 'resumed'
    assert torch.load(resumed / 'last.pth', weights_only=False)['epoch'] == 1
    run_main(tmp_path, 'epochs=2', name='resumed')
    assert 'resumed from' in (resumed / 'log.txt').read_text()
    assert [r['epoch'] for r in metrics(resumed)] == [0, 1, 2]
    final = torch.load(resumed / 'last.pth', weights_only=False)
    assert final['epoch'] == 2 and final['knn_init'] == ckpt['knn_init']
    for key, value in ckpt['model'].items():
        assert torch.allclose(value.float(), final['model'][key].float(), atol=1e-5), key


class FakeRun:
    device, world_size, amp = torch.device('cpu'), 1, False

    def log(self, msg):
        pass


@pytest.mark.parametrize('arch,target_training', [('LEWELB_EMAN', False), ('LEWELB', True)])
def test_train_loop_sets_the_target_mode_and_updates_the_ema_after_the_step(tmp_path, arch, target_training):
    from common.config import load_config
    cfg = load_config(FOLDER / 'cfg.yaml', [f'output_dir={tmp_path}', *TINY, 'epochs=2', f'arch={arch}'],
                      main.DEFAULTS)
    model = main.build_model(cfg)
    seen = []
    model.target_net.backbone.bn1.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    online_bn = []
    model.online_net.backbone.bn1.register_forward_pre_hook(lambda m, inp: online_bn.append(m.training))
    x = torch.randn(16, 3, 16, 16)
    loader = [([x, x.flip(3)], torch.zeros(16))] * 3
    opt = main.build_optimizer(cfg, model)
    model.eval()  # the loop must switch the online network back to train mode
    stats = main.train_one_epoch(model, loader, opt, 1, cfg, FakeRun())
    assert seen == [target_training] * 6 and online_bn == [True] * 6   # two target / online passes per step
    assert stats['m'] == pytest.approx(model.momentum_at(1 * 3 + 2, 3 * 2))  # k of the last step, K = 6
    assert stats['lr'] == pytest.approx(cfg.lr)  # first epoch after the 1-epoch warm-up: cosine progress 0


def test_lewel_m_runs_end_to_end(tmp_path):
    out, result = run_main(tmp_path, 'epochs=1', 'arch=LEWELM', 'optimizer=sgd', 'lr=0.03', 'moco.queue_size=64',
                           'enc_m=0.99', 'eval.knn.at_init=false')
    ckpt = torch.load(out / 'last.pth', weights_only=False)
    assert ckpt['model']['queue'].shape == (8, 64) and ckpt['model']['queue_ptr'].item() == (4 * 2 * 16) % 64
    assert result['knn_init'] is None and result['loss'] > 0


@pytest.mark.parametrize('opts,key', [
    (['arch=SimSiam'], "'arch'"),
    (['mode=train'], "'mode'"),
    (['lewel.num_heads=3'], "'lewel.num_heads'"),
    (['lewel.l2_norm=false'], "'lewel.l2_norm'"),
    (['lewel.loss_weight=1.5'], "'lewel.loss_weight'"),
    (['enc_m=1.5'], "'enc_m'"),
    (['norm=gn'], "'norm'"),
    (['warmup_epochs=50'], "'warmup_epochs'"),
    (['aug.crop_scale=[0.5, 0.2]'], "'aug.crop_scale'"),
    (['eval.knn.vote=mean'], "'eval.knn.vote'"),
    (['eval.knn.memory_percent=0'], "'eval.knn.memory_percent'"),
    (['arch=LEWELM', 'moco.queue_size=100'], "'moco.queue_size'"),
    (['backbone=vgg16'], "'backbone'"),
    (['bogus=1'], "'bogus'"),
    (['epochs=two'], "'epochs'"),
])
def test_bad_config_names_the_key(tmp_path, opts, key):
    from common.errors import ConfigError
    with pytest.raises(ConfigError, match=key):
        run_main(tmp_path, *opts)


def test_user_error_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}',
                           'lewel.num_heads=3'], cwd=FOLDER, capture_output=True, text=True, timeout=120,
                          env={'PYTHONPATH': str(FOLDER.parent), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 2
    assert proc.stderr.startswith('error:') and 'num_heads' in proc.stderr and 'Traceback' not in proc.stderr


def test_evaluation_modes(tmp_path):
    from common.errors import CheckpointError
    out, result = run_main(tmp_path, 'epochs=1', 'eval.knn.at_init=false')
    base = ['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={out}', *TINY]
    assert main.main(base + ['mode=knn']) == pytest.approx(result['knn_top1'])  # same backbone and protocol
    best = main.main(base + ['mode=linear', 'eval.linear.epochs=2', 'eval.linear.batch_size=16',
                             'eval.linear.milestones=[1]'])
    rows = metrics(out / 'eval_linear')
    assert [r['epoch'] for r in rows] == [1, 2] and best == max(r['top1'] for r in rows)
    assert rows[0]['lr'] == pytest.approx(0.4) and rows[1]['lr'] == pytest.approx(0.04)
    lin = torch.load(out / 'eval_linear' / 'last.pth', weights_only=False)['model']
    pre = torch.load(out / 'last.pth', weights_only=False)['model']
    assert torch.equal(lin['backbone.layer1.0.conv1.weight'], pre['online_net.backbone.layer1.0.conv1.weight'])
    assert torch.equal(lin['backbone.bn1.running_mean'], pre['online_net.backbone.bn1.running_mean'])  # frozen BN
    semi = main.main(base + ['mode=semi', 'eval.semi.epochs=1', 'eval.semi.batch_size=8', 'eval.semi.percent=25'])
    assert 0 <= semi <= 100 and 'subset: 20 of 64' in (out / 'eval_semi' / 'log.txt').read_text()
    with pytest.raises(CheckpointError):
        main.main(base + ['mode=knn', f'eval.checkpoint={tmp_path}/none.pth'])


@pytest.mark.parametrize('name,published', [
    ('lewelb_eman_100ep', dict(arch='LEWELB_EMAN', epochs=100, lr=3.6, m=0.98, world=8, norm='none')),
    ('lewelb_eman_200ep', dict(arch='LEWELB_EMAN', epochs=200, lr=3.6, m=0.98, world=8, norm='none')),
    ('lewelb_syncbn_400ep', dict(arch='LEWELB', epochs=400, lr=7.2, m=0.996, world=32, norm='syncbn')),
])
def test_paper_configs_hold_the_published_hyperparameters(name, published):
    from common.config import load_config
    cfg = load_config(FOLDER / 'configs' / f'{name}.yaml', (), main.DEFAULTS)
    main.validate(cfg, world_size=published['world'])
    assert (cfg.arch, cfg.epochs, cfg.lr, cfg.enc_m, cfg.norm) == tuple(
        published[k] for k in ('arch', 'epochs', 'lr', 'm', 'norm'))
    assert cfg.batch_size * published['world'] == (4096 if published['world'] == 32 else 1024)
    assert (cfg.weight_decay, cfg.eta, cfg.momentum, cfg.warmup_epochs, cfg.optimizer) == (1e-6, 0.001, 0.9, 10, 'lars')
    assert (cfg.proj_dim, cfg.hid_dim, cfg.backbone, cfg.data.image_size) == (256, 4096, 'resnet50_encoder', 224)
    assert dict(cfg.lewel) == {'l2_norm': True, 'scale': 1.0, 'num_heads': 4, 'loss_weight': 0.5}
    assert cfg.aug.crop_scale == [0.2, 1.0] and cfg.aug.eval_resize == 256
    kc, lc = cfg.eval.knn, cfg.eval.linear
    assert (kc.k, kc.vote, kc.memory_percent, kc.query_percent, kc.every) == (20, 'majority', 0.1, 0.5, 5)
    assert (lc.lr, lc.epochs, lc.milestones, lc.weight_decay, lc.batch_size * 8) == (0.4, 50, [30, 40], 0.0, 256)


def test_lewel_m_config_is_the_cards_reconstruction():
    from common.config import load_config
    cfg = load_config(FOLDER / 'configs' / 'lewel_m_200ep.yaml', (), main.DEFAULTS)
    main.validate(cfg, world_size=8)
    assert (cfg.arch, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.enc_m, cfg.epochs) == (
        'LEWELM', 'sgd', 0.03, 1e-4, 0.999, 200)
    assert (cfg.proj_dim, cfg.hid_dim, cfg.moco.T, cfg.moco.queue_size, cfg.aug.recipe) == (
        128, 2048, 0.2, 65536, 'mocov2')
