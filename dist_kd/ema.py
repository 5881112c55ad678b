"""Model EMA of the B2 recipe: an exponential moving average of every parameter *and* buffer (BN running
statistics included), updated after every optimizer step with a constant decay (no warm-up)."""
import copy

import torch

__all__ = ['ModelEMA']


class ModelEMA:
    def __init__(self, model, decay=0.9999):
        model = getattr(model, 'module', model)          # unwrap DDP
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        """ema <- decay * ema + (1 - decay) * model for floating-point entries; integer buffers are copied."""
        model = getattr(model, 'module', model)
        own = self.module.state_dict()
        for k, v in model.state_dict().items():
            e = own[k]
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(v.detach().to(e.dtype), alpha=1.0 - self.decay)
            else:
                e.copy_(v)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict):
        self.module.load_state_dict(state_dict)
