import math

import torch
import torch.nn.functional as F

from common.dist import all_gather, get_rank, get_world_size, init_distributed, wrap_ddp
from common.knn import knn_predict
from common.schedule import cosine_lr, set_lr


def test_cosine_lr_values():
    assert cosine_lr(0, 100, 1.0, warmup_steps=10) == 0.0
    assert cosine_lr(5, 100, 1.0, warmup_steps=10) == 0.5
    assert cosine_lr(10, 100, 1.0, warmup_steps=10) == 1.0
    assert math.isclose(cosine_lr(55, 100, 1.0, warmup_steps=10), 0.5)
    assert math.isclose(cosine_lr(100, 100, 1.0, warmup_steps=10, min_lr=0.1), 0.1)
    opt = torch.optim.SGD([{'params': [torch.zeros(1)]}, {'params': [torch.zeros(1)], 'lr_scale': 0.1}], lr=1)
    set_lr(opt, 0.5)
    assert [g['lr'] for g in opt.param_groups] == [0.5, 0.05]


def test_knn_predict_hand_computed():
    # bank of 4 unit vectors in 2-D with labels; query close to the first two
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 2])
    q = F.normalize(torch.tensor([[1.0, 0.2]]), dim=1)
    scores = knn_predict(q, bank.t(), labels, classes=3, knn_k=2, knn_t=0.5)
    s = (q @ bank.t())[0]
    expected = torch.tensor([math.exp(s[0] / 0.5), math.exp(s[1] / 0.5), 0.0])
    assert torch.allclose(scores[0], expected, atol=1e-5)
    assert scores.argmax(1).item() == 0


def test_single_process_helpers_are_identities():
    assert init_distributed() == (0, 1, 0) and get_rank() == 0 and get_world_size() == 1
    x = torch.randn(3, 2, requires_grad=True)
    assert torch.equal(all_gather(x), x.detach()) and not all_gather(x).requires_grad
    assert all_gather(x, grad=True).requires_grad
    m = torch.nn.Linear(2, 2)
    assert wrap_ddp(m) is m
