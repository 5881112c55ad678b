"""Group Window Attention (GreenMIM, Sec. 3.2-3.3): window attention over the *visible* tokens only.

After random masking the Swin windows hold different numbers of visible tokens. ``GroupingModule`` packs the
windows into equal-size groups (a 0/1-knapsack per group, ``group_windows``), and ``WindowAttention`` attends
inside each group with a mask that forbids attention between tokens of different windows. The result equals
Swin's (shifted) window attention restricted to the visible tokens; the grouping changes only the speed.

Imports only torch (a user can copy this file alone).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCKED = -100.  # additive mask value of forbidden pairs (finite, so rows of padding stay finite)


def get_coordinates(h, w, device='cpu'):
    """Integer (row, col) coordinates of an ``h x w`` grid: LongTensor[2, h, w]."""
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    return torch.stack(torch.meshgrid(rows, cols, indexing='ij'))


# ----------------------------------------------------------------------------------------- the DP
def knapsack(W, wt):
    """0/1 knapsack with value = weight (fill a group of capacity ``W`` as full as possible).

    Returns ``(best_total, taken)`` with ``taken`` the indices of the chosen items in increasing order.
    Backtracking goes from the last item to the first and leaves an item out whenever the table says the
    same total is reachable without it, so earlier items are preferred on ties (the official tie-breaking).
    """
    n = len(wt)
    K = [[0] * (W + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        wi, prev, row = wt[i - 1], K[i - 1], K[i]
        for w in range(W + 1):
            row[w] = max(wi + prev[w - wi], prev[w]) if wi <= w else prev[w]
    best = res = K[n][W]
    w, taken = W, []
    for i in range(n, 0, -1):
        if res <= 0:
            break
        if res == K[i - 1][w]:
            continue  # reachable without item i-1
        taken.append(i - 1)
        res -= wt[i - 1]
        w -= wt[i - 1]
    return best, taken[::-1]


def group_windows(group_size, num_ele_win):
    """Pack windows into groups of capacity ``group_size``: repeatedly fill one group by ``knapsack`` with
    the windows left, until every window is placed.

    Returns ``(num_ele_group, grouped_idx)``: the number of tokens of each group and, per group, the
    (original) indices of its windows.
    """
    if num_ele_win and max(num_ele_win) > group_size:
        raise ValueError(f'group size {group_size} is smaller than the largest window ({max(num_ele_win)} tokens)')
    left = list(range(len(num_ele_win)))
    num_ele_group, grouped_idx = [], []
    while left:
        total, taken = knapsack(group_size, [num_ele_win[i] for i in left])
        chosen = [left[i] for i in taken]
        num_ele_group.append(total)
        grouped_idx.append(chosen)
        chosen_set = set(chosen)
        left = [i for i in left if i not in chosen_set]
    return num_ele_group, grouped_idx


def group_cost(num_groups, group_size, dim):
    """Multiply-accumulates of Swin MSA over ``num_groups`` padded groups: ``n_g (4 g C^2 + 2 g^2 C)``."""
    return num_groups * (4 * group_size * dim ** 2 + 2 * group_size ** 2 * dim)


def optimal_group_size(num_ele_win, window_size, dim, candidates=None):
    """The paper's search for the group size: partition with every candidate ``g`` (default: from the
    largest window up to ``window_size**2``) and return the one of least attention cost (the smallest ``g``
    on ties). The official code skips this search and uses ``g = min(ws^2, max w_i)``."""
    lo = max(num_ele_win)
    if candidates is None:
        candidates = range(lo, max(lo, window_size ** 2) + 1)
    best_g, best_cost = None, None
    for g in candidates:
        if g < lo:
            continue
        cost = group_cost(len(group_windows(g, num_ele_win)[0]), g, dim)
        if best_cost is None or cost < best_cost:
            best_g, best_cost = g, cost
    if best_g is None:
        raise ValueError(f'no candidate group size holds the largest window ({lo} tokens)')
    return best_g


# ----------------------------------------------------------------------------------------- grouping
class GroupingModule:
    """Builds, for one stage and one shift, the grouping of visible tokens and the attention mask and
    relative position indices that make group attention equal to (shifted) window attention.

    ``prepare(coords, num_tokens)`` chooses the mode: with ``num_tokens <= 2 ws^2`` all tokens form one
    sequence with an ``N x N`` mask (*masking* mode), else the windows are packed into groups (*grouping*).
    ``group(x)`` / ``merge(x)`` move features between ``(B, N_vis, C)`` and ``(B * n_groups, g, C)``.
    """

    def __init__(self, window_size, shift_size, group_size=None, search_group_size=False, dim=None):
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size must be in [0, window_size), got {shift_size} (window {window_size})')
        self.window_size = window_size
        self.shift_size = shift_size
        self.fixed_group_size = group_size
        self.search_group_size = search_group_size
        self.dim = dim
        self.group_size = group_size or window_size ** 2
        self.idx_shuffle = self.idx_unshuffle = None
        self._mode = None

    # window id of each visible token: non-cyclic partition offset by the shift (partial border windows
    # become windows of their own), which gives exactly the attention sets of cyclic shift + mask
    def _get_group_id(self, coords):
        c = coords.reshape(-1, 2)
        win = torch.div(c + (self.window_size - self.shift_size) % self.window_size, self.window_size,
                        rounding_mode='floor')
        cols = int(win[:, 1].max().item()) + 1 if win.numel() else 1
        return win[:, 0] * cols + win[:, 1]

    @staticmethod
    def _get_attn_mask(group_id):
        """``group_id``: (G, n) window ids, -1 for padding -> (G, n, n) float mask, 0 or BLOCKED."""
        pad = group_id < 0
        blocked = (group_id[:, :, None] != group_id[:, None, :]) | (pad[:, :, None] & pad[:, None, :])
        return torch.zeros(blocked.shape, device=group_id.device).masked_fill_(blocked, BLOCKED)

    def _get_rel_pos_idx(self, coords, attn_mask):
        """``coords``: (G, n, 2) true coordinates -> (G, n, n) index into the (2ws-1)^2 bias table, 0 for
        blocked pairs (their offsets may fall outside the table)."""
        ws = self.window_size
        d = coords[:, :, None, :] - coords[:, None, :, :] + (ws - 1)
        idx = d[..., 0] * (2 * ws - 1) + d[..., 1]
        return idx.masked_fill(attn_mask != 0, 0)

    def _choose_group_size(self, counts):
        largest = max(counts)
        if self.fixed_group_size:
            return max(self.fixed_group_size, largest)
        if self.search_group_size:
            return optimal_group_size(counts, self.window_size, self.dim or 1)
        return min(self.window_size ** 2, largest)  # the official choice

    def _prepare_masking(self, coords):
        group_id = self._get_group_id(coords)[None]
        attn_mask = self._get_attn_mask(group_id)
        rel_pos_idx = self._get_rel_pos_idx(coords.reshape(1, -1, 2), attn_mask)
        self.idx_shuffle = self.idx_unshuffle = None
        return attn_mask, rel_pos_idx

    def _prepare_grouping(self, coords):
        coords = coords.reshape(-1, 2)
        group_id = self._get_group_id(coords)
        order = torch.sort(group_id, stable=True).indices  # tokens sorted by window, row-major inside
        sorted_id = group_id[order]
        counts = torch.unique_consecutive(sorted_id, return_counts=True)[1].tolist()
        g = self.group_size = self._choose_group_size(counts)
        num_ele_group, grouped_idx = group_windows(g, counts)

        tokens_of_win, ids_of_win = order.split(counts), sorted_id.split(counts)
        shuffle, ids = [], []
        for size, members in zip(num_ele_group, grouped_idx):
            shuffle.append(F.pad(torch.cat([tokens_of_win[i] for i in members]), (0, g - size), value=-1))
            ids.append(F.pad(torch.cat([ids_of_win[i] for i in members]), (0, g - size), value=-1))
        idx_shuffle = torch.cat(shuffle)
        real = idx_shuffle >= 0
        # position of every real token in the shuffled sequence, in the original token order
        idx_unshuffle = torch.empty(coords.shape[0], dtype=torch.long, device=coords.device)
        idx_unshuffle[idx_shuffle[real]] = torch.nonzero(real).squeeze(1)
        self.idx_shuffle = idx_shuffle.clamp(min=0)  # pads read token 0; they are discarded on merge
        self.idx_unshuffle = idx_unshuffle

        attn_mask = self._get_attn_mask(torch.stack(ids))
        rel_pos_idx = self._get_rel_pos_idx(coords[self.idx_shuffle].reshape(-1, g, 2), attn_mask)
        return attn_mask, rel_pos_idx

    def prepare(self, coords, num_tokens):
        """``coords``: (1, N_vis, 2) integer coordinates of the visible tokens -> (attn_mask, rel_pos_idx)."""
        if num_tokens <= 2 * self.window_size ** 2:
            self._mode = 'masking'
            return self._prepare_masking(coords)
        self._mode = 'grouping'
        return self._prepare_grouping(coords)

    @property
    def mode(self):
        return self._mode

    def group(self, x):
        if self._mode != 'grouping':
            return x
        return torch.index_select(x, 1, self.idx_shuffle).reshape(-1, self.group_size, x.shape[-1])

    def merge(self, x, batch_size=None):
        if self._mode != 'grouping':
            return x
        B = batch_size or x.shape[0] * self.group_size // self.idx_shuffle.numel()
        return torch.index_select(x.reshape(B, -1, x.shape[-1]), 1, self.idx_unshuffle)


# ----------------------------------------------------------------------------------------- attention
class WindowAttention(nn.Module):
    """Multi-head self-attention with Swin's relative position bias, applied to sequences of grouped
    windows: ``A = softmax(q k^T / sqrt(d) + bias * [M == 0] + M) v``.

    ``forward(x, mask, pos_idx)``: ``x`` (B * n_w, N, C); ``mask`` (n_w, N, N) with 0 (allowed) or -100;
    ``pos_idx`` (n_w, N, N) indices into ``relative_position_bias_table``.
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0., proj_drop=0.):
        super().__init__()
        window_size = tuple(window_size) if isinstance(window_size, (tuple, list)) else (window_size,) * 2
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        # the index of a dense window; unused by group attention, kept so official checkpoints load strictly
        coords = get_coordinates(*window_size).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        index = (rel[..., 0] + window_size[0] - 1) * (2 * window_size[1] - 1) + rel[..., 1] + window_size[1] - 1
        self.register_buffer('relative_position_index', index)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)

    def forward(self, x, mask, pos_idx):
        B_, N, C = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(B_, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # B_, h, N, N

        allowed = (mask == 0)
        nW = mask.shape[0]
        bias = self.relative_position_bias_table[pos_idx.masked_fill(~allowed, 0).reshape(-1)]
        bias = (bias.view(nW, N, N, h) * allowed[..., None]).permute(0, 3, 1, 2)  # nW, h, N, N
        attn = attn.view(B_ // nW, nW, h, N, N) + (bias + mask[:, None]).unsqueeze(0)
        attn = self.attn_drop(attn.view(B_, h, N, N).softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self):
        return f'dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}'
