"""Genotypes: DARTS pairs ``(op, src)`` (two per node) and EnTranNAS-DST triples ``(op, src, dst)``.

A ``Genotype`` lists two ``(op, src)`` pairs per intermediate node, node j = 2 + index // 2 (quark0/darts).
A ``FlexGenotype`` lists ``(op, src, dst)`` triples: a node may have any number (>= 1) of inputs and an edge
may carry several ops (the topology-free EnTranNAS-DST space).
"""
import ast
from collections import namedtuple

from operations import PRIMITIVES, PRIMITIVES_NO_NONE  # noqa: F401  (re-exported, as in quark0/darts)

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')
FlexGenotype = namedtuple('FlexGenotype', 'normal normal_concat reduce reduce_concat')

DARTS_V1 = Genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)],
    reduce_concat=[2, 3, 4, 5])

DARTS_V2 = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1),
            ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)],
    reduce_concat=[2, 3, 4, 5])

DARTS = DARTS_V2


def pairs_to_triples(pairs):
    """DARTS pairs -> ``(op, src, dst)``: pairs 2t and 2t+1 feed node t + 2."""
    return [(op, src, 2 + idx // 2) for idx, (op, src) in enumerate(pairs)]


def to_flex(genotype):
    """``Genotype`` -> ``FlexGenotype`` (a ``FlexGenotype`` is returned unchanged)."""
    if isinstance(genotype, FlexGenotype):
        return genotype
    return FlexGenotype(normal=pairs_to_triples(genotype.normal), normal_concat=list(genotype.normal_concat),
                        reduce=pairs_to_triples(genotype.reduce), reduce_concat=list(genotype.reduce_concat))


def check_genotype(genotype, steps=4):
    """Raise ``ValueError`` unless every (op, src, dst) is valid and every intermediate node has an input."""
    from operations import OPS
    flex = to_flex(genotype)
    for kind in ('normal', 'reduce'):
        triples = getattr(flex, kind)
        for t in triples:
            if len(t) != 3:
                raise ValueError(f'{kind}: {t!r} is not an (op, src, dst) triple')
            op, src, dst = t
            if op not in OPS:
                raise ValueError(f'{kind}: unknown op {op!r} (known: {", ".join(OPS)})')
            if not (2 <= dst < 2 + steps) or not (0 <= src < dst):
                raise ValueError(f'{kind}: edge {src} -> {dst} is not an edge of a {steps}-node cell')
        for j in range(2, 2 + steps):
            if not any(d == j for _, _, d in triples):
                raise ValueError(f'{kind}: node {j} has no input')
        for c in getattr(flex, kind + '_concat'):
            if not 0 <= c < 2 + steps:
                raise ValueError(f'{kind}_concat: node {c} does not exist')
    return genotype


def parse_genotype(text):
    """A genotype from its name (``DARTS_V2``) or its ``repr`` (``Genotype(...)`` / ``FlexGenotype(...)``)."""
    text = str(text).strip()
    if text in ('DARTS_V1', 'DARTS_V2', 'DARTS'):
        return globals()[text]
    for cls in (Genotype, FlexGenotype):
        prefix = cls.__name__ + '('
        if text.startswith(prefix) and text.endswith(')'):
            try:
                call = ast.parse(text, mode='eval').body
                kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
                args = [ast.literal_eval(a) for a in call.args]
                g = cls(*args, **kwargs)
                g = cls(*[[tuple(x) if isinstance(x, (list, tuple)) else x for x in field] for field in g])
            except (SyntaxError, TypeError, ValueError, AttributeError) as e:
                raise ValueError(f'cannot read {text[:80]!r} as a {cls.__name__}: {e}') from None
            return check_genotype(g)
    raise ValueError(f'{text[:80]!r} is neither a genotype name (DARTS_V1, DARTS_V2) nor a Genotype(...) / '
                     f'FlexGenotype(...) expression')
