"""Sub-network encoding of the ViTAS search space.

A :class:`Subnet` is the decoded architecture: patch-size index, embedding ratio ``r_e`` and per
block either ``None`` (identity) or ``(head_index, r_q, r_m)``.  The official ``net_id`` is the
flat integer genome::

    [patch op] [block ops x depth: head index 0..3, identity = n_heads] [Norm 0] [FC 0]
    [embed channel] [(r_q, r_m) channel indices x depth]

``model_len = depth + 3`` (19 for the 16-block space); channel entries are indices into
``channel_percent``.  Identity blocks still carry two channel entries; they are kept in
``Subnet.id_channels`` so that the genome round-trips (and so that ``official_compat`` can
reproduce the official mis-consumption of those entries, Pitfall 2).
"""
from dataclasses import dataclass, field
import random

CHANNEL_PERCENT = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# Constructor arguments of ViTASSuperNet that describe the search space, with their defaults.
SPACE_DEFAULTS = dict(patch_sizes=(14, 16, 32), embed_dim=384, depth=16, heads=(3, 6, 12, 16),
                      at_temp=1440, mlp_dim=1440, num_classes=1000, id_op=True, img_size=224)


def resolve_space(supernet_cfg=None):
    """Search-space dict from a ``ViTASSuperNet`` instance or a dict of its constructor args."""
    if supernet_cfg is None:
        return dict(SPACE_DEFAULTS)
    if hasattr(supernet_cfg, 'space_config'):
        return supernet_cfg.space_config()
    unknown = set(supernet_cfg) - set(SPACE_DEFAULTS) - {'qkv', 'side_scheme', 'official_compat',
                                                        'in_chans', 'channel_percent',
                                                        'drop_path_rate'}
    if unknown:
        raise ValueError(f'unknown supernet_cfg keys {sorted(unknown)}')
    space = dict(SPACE_DEFAULTS)
    space.update({k: v for k, v in supernet_cfg.items() if k in SPACE_DEFAULTS})
    space['patch_sizes'] = tuple(space['patch_sizes'])
    space['heads'] = tuple(space['heads'])
    return space


@dataclass
class Subnet:
    patch_idx: int
    embed_ratio: float
    blocks: list            # per block: None (identity) or (head_index, r_q, r_m)
    id_channels: dict = field(default_factory=dict)   # block index -> (r_q, r_m) of identities

    @property
    def depth(self):
        return len(self.blocks)

    def channel_pairs(self):
        """(r_q, r_m) of every block in order, identity entries included (None if unknown)."""
        return [b[1:] if b is not None else self.id_channels.get(i)
                for i, b in enumerate(self.blocks)]

    def key(self):
        return (self.patch_idx, self.embed_ratio, tuple(self.blocks))


def _index(value, channel_percent):
    for i, c in enumerate(channel_percent):
        if abs(c - value) < 1e-9:
            return i
    raise ValueError(f'ratio {value} is not in channel_percent {list(channel_percent)}')


def decode_genome(genome, depth, channel_percent=CHANNEL_PERCENT, n_heads=4, model_len=None):
    """Subnet from the flat integer genome (``net_id`` as a list)."""
    genome = [int(g) for g in genome]
    model_len = depth + 3 if model_len is None else model_len
    if model_len != depth + 3:
        raise ValueError(f'model_len {model_len} does not match depth {depth} (expected {depth + 3})')
    ops, ch = genome[:model_len], genome[model_len:]
    if len(ch) != 1 + 2 * depth:
        raise ValueError(f'net_id has {len(ch)} channel entries, expected {1 + 2 * depth} '
                         f'(1 embedding + 2 per block)')
    if ops[-2:] != [0, 0]:
        raise ValueError(f'the Norm and FC op ids must be 0, got {ops[-2:]}')
    if any(not 0 <= c < len(channel_percent) for c in ch):
        raise ValueError(f'channel index out of range 0..{len(channel_percent) - 1}: {ch}')
    blocks, id_channels = [], {}
    for i, op in enumerate(ops[1:1 + depth]):
        pair = (channel_percent[ch[1 + 2 * i]], channel_percent[ch[2 + 2 * i]])
        if op == n_heads:
            blocks.append(None)
            id_channels[i] = pair
        elif 0 <= op < n_heads:
            blocks.append((op,) + pair)
        else:
            raise ValueError(f'block op id {op} outside 0..{n_heads} (n_heads = identity)')
    return Subnet(ops[0], channel_percent[ch[0]], blocks, id_channels)


def encode_genome(subnet, channel_percent=CHANNEL_PERCENT, n_heads=4):
    """Flat integer genome of ``subnet`` (inverse of :func:`decode_genome`)."""
    ops = [subnet.patch_idx]
    ch = [_index(subnet.embed_ratio, channel_percent)]
    for i, b in enumerate(subnet.blocks):
        if b is None:
            ops.append(n_heads)
            pair = subnet.id_channels.get(i, (channel_percent[0], channel_percent[0]))
        else:
            ops.append(int(b[0]))
            pair = b[1:]
        ch += [_index(pair[0], channel_percent), _index(pair[1], channel_percent)]
    return ops + [0, 0] + ch


def decode_net_id(net_id, model_len, channel_percent=CHANNEL_PERCENT, n_heads=4):
    """Subnet from the official space-separated ``net_id`` string."""
    genome = [int(t) for t in str(net_id).split()]
    depth = model_len - 3
    if depth < 1:
        raise ValueError(f'model_len must be at least 4, got {model_len}')
    return decode_genome(genome, depth, channel_percent, n_heads, model_len)


def encode_net_id(subnet, channel_percent=CHANNEL_PERCENT, n_heads=4):
    """Official ``net_id`` string (``model_len = depth + 3``)."""
    return ' '.join(str(g) for g in encode_genome(subnet, channel_percent, n_heads))


def generate_subnet(num_blocks, id_prop, channel_percent=CHANNEL_PERCENT, rng=None, n_heads=4,
                    n_patch=3):
    """Uniform random subnet (official ``generate_subnet``): patch ~ U, each block identity with
    probability ``id_prop`` else head ~ U; then r_e and, for every block (identities too),
    r_q and r_m ~ U(channel_percent)."""
    rng = rng if rng is not None else random
    patch = rng.randint(0, n_patch - 1)
    ops = [None if rng.random() < id_prop else rng.randint(0, n_heads - 1)
           for _ in range(num_blocks)]
    n = len(channel_percent) - 1
    embed = channel_percent[rng.randint(0, n)]
    blocks, id_channels = [], {}
    for i, op in enumerate(ops):
        pair = (channel_percent[rng.randint(0, n)], channel_percent[rng.randint(0, n)])
        if op is None:
            blocks.append(None)
            id_channels[i] = pair
        else:
            blocks.append((op,) + pair)
    return Subnet(patch, embed, blocks, id_channels)


def shift_identity(subnet):
    """v2 "identity shifting" (provisional reconstruction): move the identity blocks to the end
    of the network, keeping the order of the active blocks, so that every architecture has one
    encoding (the many-to-one problem)."""
    active = [b for b in subnet.blocks if b is not None]
    id_pairs = [subnet.id_channels.get(i) for i, b in enumerate(subnet.blocks) if b is None]
    blocks = active + [None] * len(id_pairs)
    id_channels = {len(active) + j: p for j, p in enumerate(id_pairs) if p is not None}
    return Subnet(subnet.patch_idx, subnet.embed_ratio, blocks, id_channels)


def subnet_dims(subnet, supernet_cfg=None):
    """Stand-alone dims as the official retrain builder derives them:
    ``(patch_size, D, [(heads, qkv_width, mlp_hidden) or None])`` with ``D = round(E r_e)``,
    ``qkv_width = round(at_temp r_q)``, ``mlp_hidden = round(MLP r_m)``."""
    space = resolve_space(supernet_cfg)
    validate_subnet(subnet, space)
    d = int(round(space['embed_dim'] * subnet.embed_ratio))
    blocks = [None if b is None else
              (space['heads'][b[0]], int(round(space['at_temp'] * b[1])),
               int(round(space['mlp_dim'] * b[2])))
              for b in subnet.blocks]
    return space['patch_sizes'][subnet.patch_idx], d, blocks


def validate_subnet(subnet, space):
    """Raise ``ValueError`` when ``subnet`` does not fit the search space."""
    if len(subnet.blocks) != space['depth']:
        raise ValueError(f'subnet has {len(subnet.blocks)} blocks, the space has {space["depth"]}')
    if not 0 <= subnet.patch_idx < len(space['patch_sizes']):
        raise ValueError(f'patch index {subnet.patch_idx} outside 0..{len(space["patch_sizes"]) - 1}')
    if not 0 < subnet.embed_ratio <= 1:
        raise ValueError(f'embedding ratio {subnet.embed_ratio} outside (0, 1]')
    for i, b in enumerate(subnet.blocks):
        if b is None:
            if not space['id_op']:
                raise ValueError(f'block {i} is identity but the space has no identity op')
            continue
        h, rq, rm = b
        if not 0 <= h < len(space['heads']):
            raise ValueError(f'block {i}: head index {h} outside 0..{len(space["heads"]) - 1}')
        if not (0 < rq <= 1 and 0 < rm <= 1):
            raise ValueError(f'block {i}: ratios ({rq}, {rm}) outside (0, 1]')
