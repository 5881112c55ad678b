"""Genotypes of the DARTS search space (``quark0/darts/cnn/genotypes.py`` names).

A genotype lists, per cell type, the kept edges as ``(op, src)`` pairs, two per intermediate node in node order
(the DARTS format). TopoNAS with a free in-degree (``topo_k: 0``, see ``topology.py``) keeps a variable number of
inputs per node; its genotypes list ``(op, src, node)`` triples instead. ``cell_edges`` reads both formats.
"""
import ast
from collections import namedtuple

Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')

PRIMITIVES = [
    'none',
    'max_pool_3x3',
    'avg_pool_3x3',
    'skip_connect',
    'sep_conv_3x3',
    'sep_conv_5x5',
    'dil_conv_3x3',
    'dil_conv_5x5',
]

DARTS_V1 = Genotype(
    normal=[('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), ('sep_conv_3x3', 1), ('skip_connect', 0),
            ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('skip_connect', 2)], normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 0), ('max_pool_3x3', 0),
            ('skip_connect', 2), ('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3, 4, 5])

DARTS_V2 = Genotype(
    normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 1),
            ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5],
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0),
            ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])

DARTS = DARTS_V2

NAMED = {'DARTS_V1': DARTS_V1, 'DARTS_V2': DARTS_V2, 'DARTS': DARTS}


def cell_edges(pairs, steps=None):
    """``[(op, src, node)]`` for a genotype's edge list: triples as given, DARTS pairs two per node from node 2."""
    pairs = [tuple(p) for p in pairs]
    if pairs and all(len(p) == 3 for p in pairs):
        return [(op, int(src), int(node)) for op, src, node in pairs]
    if any(len(p) != 2 for p in pairs) or len(pairs) % 2:
        raise ValueError('a genotype lists (op, src) pairs, two per node, or (op, src, node) triples')
    return [(op, int(src), 2 + k // 2) for k, (op, src) in enumerate(pairs)]


def in_degrees(pairs):
    """{node: number of inputs} of one cell type."""
    deg = {}
    for _, _, node in cell_edges(pairs):
        deg[node] = deg.get(node, 0) + 1
    return dict(sorted(deg.items()))


def check_genotype(genotype, primitives=PRIMITIVES):
    """Raise ``ValueError`` naming the problem when a genotype is not a valid cell description."""
    for kind in ('normal', 'reduce'):
        edges = cell_edges(getattr(genotype, kind))
        nodes = sorted({n for _, _, n in edges})
        if nodes != list(range(2, 2 + len(nodes))):
            raise ValueError(f'{kind}: intermediate nodes must be 2, 3, ... without gaps, got {nodes}')
        for op, src, node in edges:
            if op not in primitives or op == 'none':
                raise ValueError(f'{kind}: unknown operation {op!r} (valid: {", ".join(primitives[1:])})')
            if not 0 <= src < node:
                raise ValueError(f'{kind}: node {node} cannot take input {src} (only earlier nodes)')
        concat = list(getattr(genotype, kind + '_concat'))
        if not concat or any(not 0 <= c < 2 + len(nodes) for c in concat):
            raise ValueError(f'{kind}_concat {concat} names nodes that do not exist')
    return genotype


def parse_genotype(text):
    """A genotype from a name (``DARTS_V2``) or from its repr (``Genotype(normal=[...], ...)``), without eval."""
    if isinstance(text, Genotype):
        return text
    text = str(text).strip()
    if text in NAMED:
        return NAMED[text]
    try:
        node = ast.parse(text, mode='eval').body
        if not (isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'Genotype'):
            raise ValueError
        kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        args = [ast.literal_eval(a) for a in node.args]
        genotype = Genotype(*args, **kw)
    except (SyntaxError, ValueError, TypeError):
        raise ValueError(f'not a genotype name ({", ".join(NAMED)}) nor a Genotype(normal=..., normal_concat=..., '
                         f'reduce=..., reduce_concat=...) literal: {text[:80]!r}') from None
    return check_genotype(genotype)
