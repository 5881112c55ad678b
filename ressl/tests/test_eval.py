"""Evaluation pieces: the weighted kNN vote, the frozen linear head, backbone extraction from checkpoints."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import eval as ressl_eval
import models


def test_knn_predict_matches_hand_computation():
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]).T  # D x N
    labels = torch.tensor([0, 1, 1, 0])
    feature = torch.tensor([[0.6, 0.8]])
    scores = ressl_eval.knn_predict(feature, bank, labels, classes=2, knn_k=3, knn_t=0.5)
    # similarities: 0.6, 0.96, 0.8, -0.6 -> top 3 are entries 1 (class 1), 2 (class 1), 0 (class 0)
    expected = [math.exp(0.6 / 0.5), math.exp(0.96 / 0.5) + math.exp(0.8 / 0.5)]
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert scores.argmax(1).item() == 1


def test_knn_predict_agrees_with_common():
    from common.knn import knn_predict
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(50, 8), dim=1)
    feature = F.normalize(torch.randn(6, 8), dim=1)
    labels = torch.randint(0, 5, (50,))
    ours = ressl_eval.knn_predict(feature, bank.T, labels, 5, knn_k=10, knn_t=0.1)
    assert torch.allclose(ours, knn_predict(feature, bank.T, labels, 5, knn_k=10, knn_t=0.1), rtol=1e-5)


def test_linear_head_freezes_the_backbone_in_eval_mode():
    torch.manual_seed(0)
    net = models.resnet18(small_input=True, width=4)
    head = ressl_eval.LinearHead(net, dim_in=32, dim_out=3).train()
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training and head.fc.training  # BN statistics stay frozen while fc trains
    assert head.fc.bias.abs().sum() == 0 and abs(head.fc.weight.std().item() - 0.01) < 0.005
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(head(x), y).backward()
    assert head.fc.weight.grad is not None and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # running stats untouched


def test_backbone_state_dict_from_official_and_our_checkpoints():
    model = models.ReSSL(models.resnet18(small_input=True, width=4), dim=8, K=16, hidden_dim=8)
    ours = {'model': model.state_dict(), 'epoch': 3}
    official = {'model': {'module.' + k: v for k, v in model.state_dict().items()}, 'epoch': 200}
    for ckpt in (ours, official):
        net_state = ressl_eval.backbone_state_dict(ckpt)
        assert set(net_state) == set(model.encoder_q.net.state_dict())
        fresh = models.resnet18(small_input=True, width=4)
        fresh.load_state_dict(net_state, strict=True)
        assert torch.equal(fresh.conv1.weight, model.encoder_q.net.conv1.weight)


def test_accuracy():
    out = torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    top1, top2 = ressl_eval.accuracy(out, torch.tensor([2, 0, 1]), topk=(1, 2))
    assert top1 == pytest.approx(100 / 3) and top2 == pytest.approx(100.0)


def test_eval_module_imports_nothing_from_common_at_import_time():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(ressl_eval))
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top_level for a in n.names] + [n.module or '' for n in top_level
                                                              if isinstance(n, ast.ImportFrom)]
    assert not any(name.split('.')[0] in ('common', 'main') for name in names)
    assert isinstance(ressl_eval.LinearHead(nn.Identity(), 2, 2), nn.Module)
