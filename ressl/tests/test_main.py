"""The main job end to end on tiny synthetic data: files written, resume, options, errors, eval entry points."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import main

FOLDER = Path(__file__).resolve().parents[1]
TINY = ['data.image_size=16', 'data.train_size=64', 'data.test_size=32', 'batch_size=16', 'K=64', 'width=4',
        'hidden_dim=16', 'dim=8', 'bn_splits=2', 'warm_up=1', 'eval.knn.k=5', 'eval.knn.every=1', 'device=cpu']


def run_main(tmp_path, *opts, name='run'):
    out = tmp_path / name
    result = main.main(['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={out}', *TINY, *opts])
    return out, result


def metrics(out):
    return [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]


def test_smoke_run_writes_its_outputs_and_resumes_exactly(tmp_path, capsys):
    out, result = run_main(tmp_path, 'epochs=2', name='straight')
    for name in ('config.yaml', 'log.txt', 'metrics.jsonl', 'last.pth'):
        assert (out / name).is_file(), name
    rows = metrics(out)
    assert [r['epoch'] for r in rows] == [0, 1, 2] and rows[0]['stage'] == 'init'
    assert all(r['loss'] > 0 and 'teacher_entropy' in r and 'knn_top1' in r for r in rows[1:])
    ckpt = torch.load(out / 'last.pth', weights_only=False)
    assert ckpt['epoch'] == 2 and {'model', 'optimizer', 'knn_init'} <= set(ckpt)
    assert ckpt['model']['queue'].shape == (8, 64)
    assert ckpt['model']['queue_ptr'].item() == (2 * 4 * 16) % 64  # 4 iterations of 16 per epoch
    assert 0 <= result['knn_top1'] <= 100 and result['knn_init'] == rows[0]['knn_top1']
    assert 'trained encoder vs' in capsys.readouterr().out.strip().splitlines()[-1]

    # a run killed after epoch 1 and restarted continues from last.pth and ends where the straight run ends
    resumed, _ = run_main(tmp_path, 'epochs=1', name='resumed')
    assert torch.load(resumed / 'last.pth', weights_only=False)['epoch'] == 1
    run_main(tmp_path, 'epochs=2', name='resumed')
    assert 'resumed from' in (resumed / 'log.txt').read_text()
    assert [r['epoch'] for r in metrics(resumed)] == [0, 1, 2]
    final = torch.load(resumed / 'last.pth', weights_only=False)
    assert final['epoch'] == 2 and final['knn_init'] == ckpt['knn_init']
    for key, value in ckpt['model'].items():
        assert torch.allclose(value.float(), final['model'][key].float(), atol=1e-6), key


def test_train_loop_keeps_the_teacher_in_train_mode_and_views_in_place(tmp_path):
    """Pitfalls: teacher in eval() mode; weak view to the student; symmetrised (two-pass) loss."""
    from common.config import load_config
    cfg = load_config(FOLDER / 'cfg.yaml', [f'output_dir={tmp_path}', *TINY, 'epochs=1'], main.DEFAULTS)
    model = main.build_model(cfg)
    seen = {'teacher_training': [], 'student_inputs': [], 'teacher_inputs': []}
    model.encoder_k.net.bn1.register_forward_pre_hook(
        lambda m, inp: seen['teacher_training'].append(m.training))
    model.encoder_q.register_forward_pre_hook(lambda m, inp: seen['student_inputs'].append(inp[0]))
    model.encoder_k.register_forward_pre_hook(lambda m, inp: seen['teacher_inputs'].append(inp[0]))
    strong, weak = torch.randn(16, 3, 16, 16), torch.randn(16, 3, 16, 16)
    loader = [([strong, weak], torch.zeros(16))] * 3

    class FakeRun:
        device, world_size, amp = torch.device('cpu'), 1, False

        def log(self, msg):
            pass

    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.eval()  # the loop must switch everything back to train mode
    stats = main.train_one_epoch(model, loader, opt, 0, cfg, FakeRun())
    assert seen['teacher_training'] == [True] * 3
    assert len(seen['student_inputs']) == 3 and len(seen['teacher_inputs']) == 3  # one pass each per step
    assert all(x is strong for x in seen['student_inputs'])
    for x in seen['teacher_inputs']:  # the teacher sees the weak batch (shuffled for BN)
        assert sorted(x[:, 0, 0, 0].tolist()) == sorted(weak[:, 0, 0, 0].tolist())
    assert stats['loss'] > 0 and stats['lr'] == pytest.approx(cfg.base_lr * 2 / 3)  # warm-up: iteration 2 of 3


def test_multi_crop_predictor_and_infonce_warm_up_run(tmp_path):
    out, result = run_main(tmp_path, 'epochs=2', 'multi_crop.enabled=true', 'multi_crop.size_crops=[16,12]',
                           'multi_crop.nmb_crops=[1,1]', 'multi_crop.min_scale_crops=[0.2,0.1]',
                           'multi_crop.max_scale_crops=[1.0,0.5]', 'multi_crop.init_size=16',
                           'predictor_hidden=16', 'infonce_warmup_epochs=1', 'eval.knn.at_init=false')
    ckpt = torch.load(out / 'last.pth', weights_only=False)
    assert ckpt['model']['queue_ptr'].item() == (2 * 4 * 16) % 64  # only the weak crops are enqueued
    assert 'predictor.linear1.weight' in ckpt['model'] and result['knn_init'] is None
    assert [r['epoch'] for r in metrics(out)] == [1, 2] and all(r['loss'] > 0 for r in metrics(out))


def test_infonce_warm_up_switches_to_the_relation_loss():
    import copy
    import losses
    from common.config import load_config
    cfg = load_config(FOLDER / 'cfg.yaml', [*TINY, 'infonce_warmup_epochs=1', 'epochs=2'], main.DEFAULTS)
    model = main.build_model(cfg)
    im_q, im_k = torch.randn(16, 3, 16, 16), torch.randn(16, 3, 16, 16)
    for epoch in (0, 1):
        ours, ref = copy.deepcopy(model), copy.deepcopy(model)
        torch.manual_seed(epoch)
        loss, _ = main.ressl_loss(ours, im_q, im_k, epoch, cfg)
        old_queue = ref.queue.clone()
        torch.manual_seed(epoch)
        logits_q, logits_k, q, k = ref(im_q, im_k, return_embeddings=True)
        expected = (losses.infonce_loss(q, k, old_queue, cfg.tau_s) if epoch == 0
                    else losses.relation_loss(logits_q, logits_k, cfg.tau_s, cfg.tau_t))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize('opts,key', [
    (['K=100'], "'K'"),
    (['bn_splits=3'], "'bn_splits'"),
    (['tau_t=0'], "'tau_t'"),
    (['m=1.5'], "'m'"),
    (['dataset=mnist'], "'dataset'"),
    (['backbone=vgg'], "'backbone'"),
    (['warm_up=50'], "'warm_up'"),
    (['predictor_hidden=-4'], "'predictor_hidden'"),
    (['eval.linear.schedule=poly'], "'eval.linear.schedule'"),
    (['multi_crop.enabled=true', 'multi_crop.nmb_crops=[1]'], 'multi_crop'),
    (['bogus=1'], "'bogus'"),
    (['epochs=two'], "'epochs'"),
])
def test_bad_config_names_the_key(tmp_path, opts, key):
    from common.errors import ConfigError
    with pytest.raises(ConfigError, match=key):
        run_main(tmp_path, *opts)


def test_user_error_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, 'main.py', '--cfg', 'cfg.yaml', '--opts', f'output_dir={tmp_path}',
                           'K=1000'], cwd=FOLDER, capture_output=True, text=True, timeout=120,
                          env={'PYTHONPATH': str(FOLDER.parent), 'PATH': '/usr/bin:/bin', 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 2
    assert proc.stderr.startswith('error:') and "'K'" in proc.stderr and 'Traceback' not in proc.stderr


def test_eval_entry_points(tmp_path):
    import eval as ressl_eval
    from common.errors import CheckpointError, ConfigError
    out, result = run_main(tmp_path, 'epochs=1', 'eval.knn.at_init=false')
    base = ['--cfg', str(FOLDER / 'cfg.yaml'), '--opts', f'output_dir={out}', *TINY]
    top1 = ressl_eval.main(['knn', *base])
    assert top1 == pytest.approx(result['knn_top1'])  # same backbone, same protocol as the monitor
    best = ressl_eval.main(['linear', *base, 'eval.linear.epochs=2', 'eval.linear.batch_size=16',
                            'eval.linear.lr=1.0', 'eval.linear.milestones=[1]'])
    rows = metrics(out / 'eval_linear')
    assert [r['epoch'] for r in rows] == [1, 2] and best == max(r['top1'] for r in rows)
    assert rows[1]['lr'] == pytest.approx(0.1)  # step decay x0.1 after epoch 1
    assert (out / 'eval_linear' / 'last.pth').is_file()
    with pytest.raises(ConfigError, match='usage'):
        ressl_eval.main(['probe'])
    with pytest.raises(CheckpointError, match='does not exist'):
        ressl_eval.main(['knn', *base, f'eval.checkpoint={tmp_path}/none.pth'])


@pytest.mark.parametrize('name,published', [
    ('cifar10', dict(K=4096, m=0.99, dim=128, base_lr=0.06, weight_decay=5e-4, image_size=32, world=1)),
    ('cifar100', dict(K=4096, m=0.99, dim=128, base_lr=0.06, weight_decay=5e-4, image_size=32, world=1)),
    ('stl10', dict(K=16384, m=0.996, dim=128, base_lr=0.06, weight_decay=5e-4, image_size=64, world=1)),
    ('tinyimagenet', dict(K=16384, m=0.996, dim=128, base_lr=0.06, weight_decay=5e-4, image_size=64, world=1)),
    ('imagenet', dict(K=131072, m=0.999, dim=512, base_lr=0.05, weight_decay=1e-4, image_size=224, world=8)),
    ('imagenet_multicrop', dict(K=131072, m=0.999, dim=512, base_lr=0.05, weight_decay=1e-4, image_size=224,
                                world=8)),
])
def test_paper_configs_hold_the_published_hyperparameters(name, published):
    from common.config import load_config
    cfg = load_config(FOLDER / 'configs' / f'{name}.yaml', (), main.DEFAULTS)
    main.validate(cfg, world_size=published['world'])
    assert (cfg.tau_s, cfg.tau_t) == (0.1, 0.04)
    assert (cfg.K, cfg.m, cfg.dim, cfg.base_lr, cfg.weight_decay) == tuple(
        published[k] for k in ('K', 'm', 'dim', 'base_lr', 'weight_decay'))
    assert cfg.data.image_size == published['image_size'] and cfg.momentum == 0.9 and cfg.warm_up == 5
    assert cfg.batch_size * published['world'] == 256 and cfg.epochs == 200 and cfg.width == 64
    assert cfg.predictor_hidden is None and cfg.infonce_warmup_epochs == 0  # extended options off
    if name.startswith('imagenet'):
        assert (cfg.backbone, cfg.small_input, cfg.bn_splits, cfg.hidden_dim) == ('resnet50', False, 1, 4096)
        assert cfg.no_decay_keys == ['bn', 'bias']
        assert (cfg.eval.linear.lr, cfg.eval.linear.schedule) == (0.3, 'cosine')
        assert cfg.multi_crop.enabled == (name == 'imagenet_multicrop')
    else:
        assert (cfg.backbone, cfg.small_input, cfg.bn_splits, cfg.hidden_dim) == ('resnet18', True, 8, 2048)
        assert cfg.no_decay_keys == [] and (cfg.eval.linear.lr, cfg.eval.linear.schedule) == (30.0, 'step')
    if name == 'stl10':
        assert cfg.data.train_split == 'train+unlabeled' and cfg.data.test_resize is True


def test_embedded_default_keeps_the_method_hyperparameters():
    from common.config import load_config
    cfg = load_config(FOLDER / 'cfg.yaml', (), main.DEFAULTS)
    main.validate(cfg)
    assert (cfg.tau_s, cfg.tau_t, cfg.data.name, cfg.dataset) == (0.1, 0.04, 'synthetic', 'synthetic')
    assert cfg.predictor_hidden is None and cfg.infonce_warmup_epochs == 0 and not cfg.multi_crop.enabled
