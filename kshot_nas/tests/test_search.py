"""Evolutionary search (legality, FLOPs limit, improvement, resume) and the path evaluator (BN recalibration)."""

import torch

from search import EvolutionSearcher, PathEvaluator, recalibrate_bn
from search_space import SearchSpace
from supernet import KShotSuperNet


def _space(tiny):
    return SearchSpace(**tiny, image_size=8, num_classes=4)


def _fitness(cand):
    arch, _ = cand
    return float(sum(1 if o == 3 else 0 for o in arch))  # best: op 3 everywhere


def test_evolution_respects_the_limit_and_improves(tiny):
    space = _space(tiny)
    limit = space.count_flops([3] * 4) + 1
    s = EvolutionSearcher(population_num=10, max_epoch=6, top_k_num=4, mutation_num=5, crossover_num=5,
                          mutation_prob=0.3, flops_limit=limit, space=space, seed=0)
    best = s.search(_fitness)
    assert all(space.count_flops(list(k[0])) <= limit for k in s.memory)
    assert all(o in space.legal_ops(i) for k in s.memory for i, o in enumerate(k[0]))
    assert s.memory[best] == max(s.memory.values()) and s.history[-1][1] >= s.history[0][1]
    assert s.history[-1][1] > s.history[0][2]  # better than the random first generation on average
    assert len(s.memory) <= 10 * 6


def test_mutation_and_crossover_take_genes_from_the_parents(tiny):
    space = _space(tiny)
    s = EvolutionSearcher(space=space, mutation_prob=0.0, seed=0, channel_search=True)
    a, b = ((1, 2, 3, 4), (0.2,) * 4), ((5, 6, 7, 8), (1.0,) * 4)
    assert s.mutate(a) == ([1, 2, 3, 4], [0.2] * 4)
    child = s.crossover(a, b)
    assert all(c in pair for c, pair in zip(child[0], zip(a[0], b[0]))) and set(child[1]) <= {0.2, 1.0}


def test_search_resumes_to_the_same_result(tiny):
    space = _space(tiny)
    kw = dict(population_num=8, max_epoch=4, top_k_num=3, mutation_num=4, crossover_num=4, flops_limit=-1,
              space=space, seed=3)
    full = EvolutionSearcher(**kw)
    full.search(_fitness)
    states = []
    part = EvolutionSearcher(**kw)
    try:
        part.search(_fitness, on_generation=lambda s: (states.append(s.state_dict()), len(states) < 2 or 1 / 0))
    except ZeroDivisionError:  # "killed" after two generations
        pass
    resumed = EvolutionSearcher(**kw)
    resumed.load_state_dict(states[-1])
    assert resumed.epoch == 2
    resumed.search(_fitness)
    assert resumed.memory == full.memory and resumed.keep_top_k == full.keep_top_k


def test_recalibrated_bn_holds_the_average_batch_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    batches = [(torch.randn(5, 3, 2, 2) + i, torch.zeros(5)) for i in range(3)]
    recalibrate_bn(net, batches, 2, 'cpu')
    with torch.no_grad():
        means = [net[0](x).mean((0, 2, 3)) for x, _ in batches[:2]]
    assert torch.allclose(net[1].running_mean, sum(means) / 2, atol=1e-5) and not net.training
    assert net[1].momentum == 0.1


def test_path_evaluator_scores_the_exported_path(tiny):
    torch.manual_seed(0)
    sup = KShotSuperNet(K=2, num_classes=4, **tiny)
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))) for _ in range(2)]
    calls = []

    def code_fn(arch, widths):
        calls.append(arch)
        return torch.tensor([0.5, 0.5])

    ev = PathEvaluator(sup, code_fn, data, data, 'cpu', recal_bn_iters=2)
    score = ev(([0, 12, 3, 1], None))
    net = sup.export_subnet([0, 12, 3, 1], torch.tensor([0.5, 0.5]))
    recalibrate_bn(net, data, 2, 'cpu')
    with torch.no_grad():
        ref = sum((net(x).argmax(1) == y).sum().item() for x, y in data) / 16 * 100
    assert calls == [[0, 12, 3, 1]] and score == ref
    assert sup.bn1.running_mean.abs().sum() == 0  # the supernet's own buffers are untouched
