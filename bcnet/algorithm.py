"""``BCNetAlgorithm``: the glue between sampler, supernet and searcher (official ``edgenn/algorithm/bcnet.py``).

* ``sample(supernet, left=True)`` draws (or takes the stored complementary) pair of subnets and activates the
  left one; ``sample(supernet, left=False)`` activates the right one of the same pair.
* ``record_loss(loss)`` averages the step's loss over processes and keeps the ``loss_rec_num`` lowest
  ``(loss, subnet_left, subnet_right)`` in a bounded max-heap: the records behind the prior population.
* ``search(supernet, evaluator, ...)`` runs the searcher with those records.
"""
import heapq
import itertools

import torch
import torch.distributed as dist

__all__ = ['BCNetAlgorithm']


class BCNetAlgorithm:
    def __init__(self, sampler, searcher, channel_bins=8, min_channel_bins=1, loss_rec_num=100):
        self.sampler, self.searcher = sampler, searcher
        self.channel_bins, self.min_channel_bins = channel_bins, min_channel_bins
        self.loss_rec_num = loss_rec_num
        self.subnet_left = self.subnet_right = None
        self._heap = []                   # (-loss, tie, subnet_left, subnet_right): root = largest loss
        self._tie = itertools.count()

    def sample(self, supernet, left=True):
        if left:
            choices = supernet.get_channel_choices()
            self.subnet_left, self.subnet_right = self.sampler.gen_subnet(choices)
            supernet.set_channel_choices(self.subnet_left)
        else:
            if self.subnet_right is None:
                raise RuntimeError('sample(left=False) before sample(left=True)')
            supernet.set_channel_choices(self.subnet_right)

    def record_loss(self, loss):
        """Push the step's (process-averaged) loss with its pair; keep the ``loss_rec_num`` lowest."""
        loss = float(loss)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = torch.tensor([loss], dtype=torch.float64,
                             device='cuda' if dist.get_backend() == 'nccl' else 'cpu')
            dist.all_reduce(t)
            loss = t.item() / dist.get_world_size()
        item = (-loss, next(self._tie), [list(x) for x in self.subnet_left], [list(x) for x in self.subnet_right])
        if len(self._heap) < self.loss_rec_num:
            heapq.heappush(self._heap, item)
        elif -loss > self._heap[0][0]:
            heapq.heapreplace(self._heap, item)
        return loss

    @property
    def loss_records(self):
        """[(loss, (subnet_left, subnet_right))], lowest loss first."""
        return [(-neg, (l, r)) for neg, _, l, r in sorted(self._heap, reverse=True)]

    def search(self, supernet, evaluator, layer_flops=None, callback=None, loss_rec=None):
        return self.searcher.search(supernet.get_channel_choices(), evaluator, supernet.flops,
                                    layer_flops if layer_flops is not None else supernet.get_layer_flops(),
                                    self.loss_records if loss_rec is None else loss_rec, callback=callback)

    def state_dict(self):
        return {'sampler': self.sampler.state_dict(), 'records': [(-n, l, r) for n, _, l, r in self._heap],
                'pair': (self.subnet_left, self.subnet_right)}

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state['sampler'])
        self._heap = []
        for loss, l, r in state['records']:
            heapq.heappush(self._heap, (-loss, next(self._tie), l, r))
        self.subnet_left, self.subnet_right = state['pair']
