"""Search baselines the paper compares against: random search and SPOS-style evolution.

Both score distinct architectures with ``score_fn(arch) -> float`` (higher is better) until ``budget``
architectures are scored and return them in evaluation order as (arch, score) pairs.
"""


def random_search(choices, budget, score_fn, rng):
    """Uniform sampling without replacement."""
    total = 1
    for c in choices:
        total *= c
    budget = min(budget, total)
    seen, history = set(), []
    while len(history) < budget:
        arch = tuple(rng.randrange(c) for c in choices)
        if arch not in seen:
            seen.add(arch)
            history.append((list(arch), float(score_fn(list(arch)))))
    return history


def evolution_search(choices, budget, score_fn, rng, population_size=10, top_k=5, mutation_prob=0.1,
                     crossover_num=None, max_tries=1000):
    """Evolution of SPOS (Guo et al., 2020): random initial population; every generation keeps the ``top_k``
    scored so far and breeds ``population_size`` new, unseen children, half by mutation (each layer resampled
    with ``mutation_prob``, at least one layer changed), half by uniform crossover of two parents."""
    total = 1
    for c in choices:
        total *= c
    budget = min(budget, total)
    crossover_num = population_size // 2 if crossover_num is None else crossover_num
    seen, history = set(), []

    def add(arch):
        if arch in seen or len(history) >= budget:
            return False
        seen.add(arch)
        history.append((list(arch), float(score_fn(list(arch)))))
        return True

    while len(history) < min(population_size, budget):
        add(tuple(rng.randrange(c) for c in choices))
    while len(history) < budget:
        parents = [tuple(a) for a, _ in sorted(history, key=lambda h: -h[1])[:top_k]]
        made, tries = 0, 0
        while made < population_size and len(history) < budget and tries < max_tries:
            tries += 1
            if made < population_size - crossover_num:  # mutation
                p = parents[rng.randrange(len(parents))]
                child = list(p)
                for i, c in enumerate(choices):
                    if rng.random() < mutation_prob:
                        child[i] = rng.randrange(c)
                if tuple(child) == p:  # force at least one change
                    i = rng.randrange(len(choices))
                    child[i] = (child[i] + 1 + rng.randrange(choices[i] - 1)) % choices[i] if choices[i] > 1 \
                        else child[i]
            else:  # crossover
                p1, p2 = parents[rng.randrange(len(parents))], parents[rng.randrange(len(parents))]
                child = [a if rng.random() < 0.5 else b for a, b in zip(p1, p2)]
            made += add(tuple(child))
        if tries >= max_tries:  # the neighbourhood of the parents is exhausted: fill with random archs
            while not add(tuple(rng.randrange(c) for c in choices)) and len(history) < budget:
                pass
    return history
