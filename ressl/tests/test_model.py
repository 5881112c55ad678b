"""ReSSL model: queue, EMA, shuffle-BN, step order, multi-crop, checkpoint keys, SplitBatchNorm.

Each pitfall of the spec card has a test that fails if the pitfall is introduced.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import losses
import models

D, K, B = 16, 32, 8


def tiny(bn_splits=1, K=K, predictor_hidden=None, seed=0):
    torch.manual_seed(seed)
    net = models.resnet18(small_input=True, bn_splits=bn_splits, width=4)
    return models.ReSSL(net, dim=D, K=K, m=0.9, hidden_dim=24, predictor_hidden=predictor_hidden)


def images(n=B, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


# ---------------------------------------------------------------------------------------------- construction
def test_initial_state():
    model = tiny()
    for (nq, pq), (nk, pk) in zip(model.encoder_q.named_parameters(), model.encoder_k.named_parameters()):
        assert nq == nk and torch.equal(pq, pk)
        assert pq.requires_grad and not pk.requires_grad
    assert model.queue.shape == (D, K)
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(K), atol=1e-6)  # columns are unit vectors
    assert model.queue_ptr.tolist() == [0] and model.queue_ptr.dtype == torch.long
    assert 'queue' in dict(model.named_buffers()) and 'queue_ptr' in dict(model.named_buffers())


def test_embeddings_are_unit_norm():
    model = tiny()
    _, _, q, k = model(images(), images(seed=2), return_embeddings=True)
    assert torch.allclose(q.norm(dim=1), torch.ones(B), atol=1e-5)
    assert torch.allclose(k.norm(dim=1), torch.ones(B), atol=1e-5)
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(K), atol=1e-5)


# ---------------------------------------------------------------------------------------------- EMA
def test_ema_averages_parameters_and_not_buffers():
    model = tiny()
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(torch.randn_like(p))
        for name, b in model.encoder_q.named_buffers():
            if b.is_floating_point():
                b.add_(1.0)  # student BN running statistics now differ from the teacher's
    q_params = [p.clone() for p in model.encoder_q.parameters()]
    k_params = [p.clone() for p in model.encoder_k.parameters()]
    k_buffers = {n: b.clone() for n, b in model.encoder_k.named_buffers()}
    model._momentum_update_key_encoder()
    for pq, pk_old, pk in zip(q_params, k_params, model.encoder_k.parameters()):
        assert torch.allclose(pk, 0.9 * pk_old + 0.1 * pq, atol=1e-6)
        assert not pk.requires_grad
    for n, b in model.encoder_k.named_buffers():
        assert torch.equal(b, k_buffers[n]), f'EMA touched the teacher buffer {n}'


# ---------------------------------------------------------------------------------------------- step order
def test_logits_use_the_queue_before_the_batch_is_enqueued():
    model = tiny()
    old_queue = model.queue.clone()
    logits_q, logits_k, q, k = model(images(), images(seed=2), return_embeddings=True)
    assert torch.allclose(logits_q, q.detach() @ old_queue, atol=1e-6)
    assert torch.allclose(logits_k, k @ old_queue, atol=1e-6)
    assert not torch.allclose(logits_k, k @ model.queue, atol=1e-3)
    # after the step the batch *is* in the queue (columns [0, B)), so enqueuing first would give self-similarity 1
    assert torch.allclose(model.queue[:, :B], k.T, atol=1e-6)
    assert torch.allclose(model.queue[:, B:], old_queue[:, B:])
    assert (k @ model.queue).diagonal().min() > 0.999
    assert logits_k.max() < 0.999


def test_teacher_runs_in_train_mode_with_batch_statistics():
    model = tiny()  # plain BN: the shuffle does not change per-sample outputs
    im_k = images(seed=2)
    reference = copy.deepcopy(model)
    reference._momentum_update_key_encoder()
    teacher_train = copy.deepcopy(reference.encoder_k).train()
    teacher_eval = copy.deepcopy(reference.encoder_k).eval()
    with torch.no_grad():
        k_train, k_eval = teacher_train(im_k), teacher_eval(im_k)
    assert not torch.allclose(k_train, k_eval, atol=1e-3)
    tracked = model.encoder_k.net.bn1.num_batches_tracked.item()

    model.train()
    _, _, _, k = model(images(), im_k, return_embeddings=True)
    assert torch.allclose(k, k_train, atol=1e-5)
    assert model.encoder_k.training
    assert model.encoder_k.net.bn1.num_batches_tracked.item() == tracked + 1  # teacher's own statistics move


def test_teacher_sees_the_weak_view_and_student_the_strong_view():
    model = tiny()
    strong, weak = images(seed=3), images(seed=4)
    reference = copy.deepcopy(model)
    reference._momentum_update_key_encoder()
    with torch.no_grad():
        q_expected = reference.encoder_q(strong)
        k_expected = reference.encoder_k(weak)
    _, _, q, k = model(strong, weak, return_embeddings=True)
    assert torch.allclose(q, q_expected, atol=1e-5)
    assert torch.allclose(k, k_expected, atol=1e-5)


def test_one_student_pass_per_crop_and_one_teacher_pass():
    """Not symmetrised: no weak->student or strong->teacher pass, no second loss term."""
    model = tiny()
    calls = {'q': [], 'k': []}
    model.encoder_q.register_forward_hook(lambda m, inp, out: calls['q'].append(inp[0].shape[-1]))
    model.encoder_k.register_forward_hook(lambda m, inp, out: calls['k'].append(inp[0].shape[-1]))
    model(images(size=8), images(size=8, seed=2))
    assert calls == {'q': [8], 'k': [8]}
    calls['q'].clear(), calls['k'].clear()
    model([images(size=8), images(size=6, seed=3), images(size=4, seed=5)], images(size=8, seed=2))
    assert calls == {'q': [8, 6, 4], 'k': [8]}


# ---------------------------------------------------------------------------------------------- queue
def test_queue_is_a_ring_buffer():
    model = tiny(K=2 * B)
    keys = []
    for step in range(3):
        _, _, _, k = model(images(seed=10 + step), images(seed=20 + step), return_embeddings=True)
        keys.append(k)
        assert model.queue_ptr.item() == [B, 0, B][step]
    assert torch.allclose(model.queue[:, :B], keys[2].T, atol=1e-6)  # the third batch overwrote the first
    assert torch.allclose(model.queue[:, B:], keys[1].T, atol=1e-6)


def test_queue_length_must_be_a_multiple_of_the_batch():
    model = tiny(K=20)
    before = model.queue.clone()
    with pytest.raises(ValueError, match='multiple of the global batch'):
        model(images(n=8), images(n=8, seed=2))
    assert torch.equal(model.queue, before) and model.queue_ptr.item() == 0


# ---------------------------------------------------------------------------------------------- multi-crop
def test_multi_crop_repeats_teacher_logits_and_enqueues_the_weak_batch_once():
    model = tiny()
    crops = [images(size=8, seed=3), images(size=6, seed=4)]
    weak = images(size=8, seed=5)
    reference = copy.deepcopy(model)
    reference._momentum_update_key_encoder()
    with torch.no_grad():  # each crop size gets its own BN statistics (a separate student pass)
        q_expected = torch.cat([reference.encoder_q(c) for c in crops])
    old_queue = model.queue.clone()
    logits_q, logits_k, q, k = model(crops, weak, return_embeddings=True)
    assert logits_q.shape == (2 * B, K) and logits_k.shape == (2 * B, K)
    assert torch.allclose(q, q_expected, atol=1e-5)
    assert torch.equal(logits_k[:B], logits_k[B:])
    assert torch.allclose(logits_k[:B], k[:B] @ old_queue, atol=1e-6)
    assert model.queue_ptr.item() == B


# ---------------------------------------------------------------------------------------------- reference
def official_step(model, optimizer, im_q, im_k, tau_t=0.04):
    """The official training iteration (ressl.py / ressl_multi.py + network/ressl*.py), written out plainly."""
    crops = im_q if isinstance(im_q, list) else [im_q]
    q = torch.cat([model.encoder_q(im) for im in crops])
    with torch.no_grad():
        for pq, pk in zip(model.encoder_q.parameters(), model.encoder_k.parameters()):
            pk.data = pk.data * model.m + pq.data * (1. - model.m)
        idx_shuffle = torch.randperm(im_k.shape[0])
        idx_unshuffle = torch.argsort(idx_shuffle)
        k = model.encoder_k(im_k[idx_shuffle])[idx_unshuffle]
    logitsq = torch.einsum('nc,ck->nk', q, model.queue.clone().detach())
    logitsk = torch.einsum('nc,ck->nk', k, model.queue.clone().detach()).repeat(len(crops), 1)
    with torch.no_grad():
        ptr = int(model.queue_ptr)
        model.queue[:, ptr:ptr + k.shape[0]] = k.T
        model.queue_ptr[0] = (ptr + k.shape[0]) % model.K
    loss = -torch.sum(F.softmax(logitsk.detach() / tau_t, dim=1) * F.log_softmax(logitsq / 0.1, dim=1), dim=1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize('multi_crop', [False, True])
def test_training_steps_match_the_official_algorithm(multi_crop):
    import main
    import optim
    ours, ref = tiny(bn_splits=2), tiny(bn_splits=2)  # SplitBatchNorm: the shuffle permutation matters
    opt_ours = torch.optim.SGD(optim.param_groups(ours, 1e-4), lr=0.5, momentum=0.9, weight_decay=1e-4)
    opt_ref = torch.optim.SGD(optim.param_groups(ref, 1e-4), lr=0.5, momentum=0.9, weight_decay=1e-4)
    from common.config import load_config
    cfg = load_config(None, (), main.DEFAULTS)
    for step in range(3):
        im_k = images(seed=100 + step)
        im_q = [images(seed=200 + step), images(size=6, seed=300 + step)] if multi_crop else images(seed=200 + step)
        torch.manual_seed(step)
        loss, _ = main.ressl_loss(ours, im_q, im_k, epoch=0, cfg=cfg)
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()
        torch.manual_seed(step)
        ref_loss = official_step(ref, opt_ref, im_q, im_k)
        assert loss.item() == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


def test_training_moves_the_student_not_by_gradient_the_teacher():
    model = tiny()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = losses.relation_loss(*model(images(), images(seed=2)))
    loss.backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder_q.parameters())
    opt.step()


# ---------------------------------------------------------------------------------------------- shuffle
def test_single_process_shuffle_is_a_permutation_it_can_undo():
    model = tiny()
    x = torch.arange(12.).view(6, 2)
    torch.manual_seed(0)
    shuffled, idx_unshuffle = model._batch_shuffle(x)
    assert not torch.equal(shuffled, x) and sorted(shuffled[:, 0].tolist()) == x[:, 0].tolist()
    assert torch.equal(model._batch_unshuffle(shuffled, idx_unshuffle), x)


# ---------------------------------------------------------------------------------------------- predictor
def test_predictor_is_student_only_and_off_by_default():
    assert not any(k.startswith('predictor') for k in tiny().state_dict())
    model = tiny(predictor_hidden=12)
    keys = model.state_dict().keys()
    assert {'predictor.linear1.weight', 'predictor.bn1.running_mean', 'predictor.linear2.bias'} <= set(keys)
    assert not any('predictor' in k for k in keys if k.startswith('encoder'))
    strong = images()
    reference = copy.deepcopy(model)
    reference._momentum_update_key_encoder()
    with torch.no_grad():
        q_expected = F.normalize(reference.predictor(reference.encoder_q.project(strong)), dim=1)
    _, _, q, _ = model(strong, images(seed=2), return_embeddings=True)
    assert torch.allclose(q, q_expected, atol=1e-5)
    assert any(p.requires_grad for p in model.predictor.parameters())


# ---------------------------------------------------------------------------------------------- checkpoints
def test_official_resnet50_checkpoint_keys_load_strictly():
    """Official keys: encoder_q.net.* (torchvision ResNet-50 without fc), encoder_q.head.linear1/2, encoder_k.*,
    queue, queue_ptr, saved under DDP with a ``module.`` prefix."""
    import torchvision
    from common.checkpoint import load_state_dict

    with torch.device('meta'):  # torchvision's names and shapes only
        tv = torchvision.models.resnet50().state_dict()
    net_keys = {k: v.shape for k, v in tv.items() if not k.startswith('fc.')}
    official = {}
    for enc in ('encoder_q', 'encoder_k'):
        official.update({f'module.{enc}.net.{k}': torch.zeros(s) for k, s in net_keys.items()})
        official.update({f'module.{enc}.head.linear1.weight': torch.zeros(4096, 2048),
                         f'module.{enc}.head.linear1.bias': torch.zeros(4096),
                         f'module.{enc}.head.linear2.weight': torch.zeros(512, 4096),
                         f'module.{enc}.head.linear2.bias': torch.zeros(512)})
    official['module.queue'] = torch.zeros(512, 8)
    official['module.queue_ptr'] = torch.zeros(1, dtype=torch.long)
    model = models.ReSSL('resnet50', dim=512, K=8)  # K is the only size changed (memory)
    assert set(model.state_dict()) == {k[len('module.'):] for k in official}
    load_state_dict(model, official, strict=True)  # strips module.; raises on any mismatch
    model.load_state_dict({k[len('module.'):]: v for k, v in official.items()}, strict=True)
    assert model.queue.abs().sum() == 0


def test_checkpoint_round_trip_keeps_queue_and_pointer():
    model = tiny()
    model(images(), images(seed=2))
    clone = tiny(seed=5)
    clone.load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(clone.queue, model.queue) and clone.queue_ptr.item() == B


# ---------------------------------------------------------------------------------------------- SplitBatchNorm
def test_split_batchnorm_matches_per_split_batchnorm():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    split = models.SplitBatchNorm(3, num_splits=2)
    with torch.no_grad():
        split.weight.uniform_(0.5, 1.5), split.bias.uniform_(-0.5, 0.5)
    plain = [nn.BatchNorm2d(3) for _ in range(2)]
    for bn in plain:
        bn.load_state_dict({k: v for k, v in split.state_dict().items()})
    y = split.train()(x)
    for j, bn in enumerate(plain):  # split j holds the samples i with i % 2 == j
        assert torch.allclose(y[j::2], bn.train()(x[j::2]), atol=1e-5)
    assert torch.allclose(split.running_mean, (plain[0].running_mean + plain[1].running_mean) / 2, atol=1e-6)
    assert torch.allclose(split.running_var, (plain[0].running_var + plain[1].running_var) / 2, atol=1e-6)
    reference = nn.BatchNorm2d(3)
    assert set(split.state_dict()) == set(reference.state_dict())
    reference.load_state_dict(split.state_dict())
    assert torch.allclose(split.eval()(x), reference.eval()(x), atol=1e-6)
    with pytest.raises(ValueError, match='divisible'):
        split.train()(torch.randn(5, 3, 4, 4))


def test_resnet_options():
    x = torch.randn(2, 3, 32, 32)
    small = models.resnet18(small_input=True, width=8)
    assert isinstance(small.maxpool, nn.Identity) and small.conv1.kernel_size == (3, 3)
    assert small(x).shape == (2, 64) and small.num_features == 64
    forced = models.resnet18(small_input=True, keep_maxpool=True, width=8)
    assert isinstance(forced.maxpool, nn.MaxPool2d)
    big = models.resnet18(width=8)
    assert isinstance(big.maxpool, nn.MaxPool2d) and big.conv1.kernel_size == (7, 7)
    assert set(small.state_dict()) == set(big.state_dict())  # options never change the key names
    split = models.resnet18(small_input=True, bn_splits=2, width=8)
    assert isinstance(split.bn1, models.SplitBatchNorm) and isinstance(split.layer2[0].downsample[1],
                                                                      models.SplitBatchNorm)
    with pytest.raises(ValueError, match='unknown backbone'):
        models.BackBone('resnet7')
