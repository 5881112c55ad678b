"""``BCNetTrainer``: one supernet training step of BCNetV2 (official ``edgenn/trainer/bcnet_trainer.py``).

    loss_BC(W; c) = 1/2 [ CE(f(x; W_left(c)), y) + CE(f(x; W_right(c)), y) ]

The two paths run one after the other, each backward freeing its graph before the next forward (V2's
"iterative updating", half the activation memory of summing the two losses first); the optimizer then
takes one step. The logged (and recorded) loss is (loss_left + loss_right) / 2. Under DDP the first backward
runs in ``no_sync`` so gradients are all-reduced once per step.

Options: ``full_width_every = k > 0`` trains the full-width supernet every k-th step (BCNet V1 code; V2 and
the default: 0). ``bilateral=False`` trains the left path only (the unilateral AutoSlim-style baseline).
"""
import contextlib

import torch
import torch.nn as nn

__all__ = ['BCNetTrainer']


class BCNetTrainer:
    def __init__(self, stage, algorithm=None, evaluator=None, loss_fn=None, full_width_every=0, bilateral=True,
                 scaler=None, amp_dtype=None):
        self.stage, self.alg, self.evaluator = stage, algorithm, evaluator
        self.loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        self.full_width_every, self.bilateral = int(full_width_every), bilateral
        self.scaler, self.amp_dtype = scaler, amp_dtype
        self.iteration = 0

    def _autocast(self, x):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=x.device.type, dtype=self.amp_dtype)

    def _backward(self, loss):
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _pass(self, model, inputs, targets, weight, sync=True):
        ctx = contextlib.nullcontext() if sync or not hasattr(model, 'no_sync') else model.no_sync()
        with ctx:
            with self._autocast(inputs):
                out = model(inputs)
                loss = self.loss_fn(out, targets)
            self._backward(weight * loss)
        return out, loss.detach()

    def forward(self, model, inputs, targets):
        """Forward and backward of one step (the caller zeroes the grads before and steps after).

        Returns (output of the last pass, the step's loss as a 0-dim tensor).
        """
        if 'supernet' not in self.stage:
            return self._pass(model, inputs, targets, 1.0)
        supernet = getattr(model, 'module', model)
        self.iteration += 1
        if self.full_width_every > 0 and self.iteration % self.full_width_every == 0:
            supernet.reset()
            return self._pass(model, inputs, targets, 1.0)
        self.alg.sample(supernet, left=True)
        if not self.bilateral:
            out, loss = self._pass(model, inputs, targets, 1.0)
            self.alg.subnet_right = self.alg.subnet_left
            self.alg.record_loss(loss.item())
            return out, loss
        _, loss_left = self._pass(model, inputs, targets, 0.5, sync=False)
        self.alg.sample(supernet, left=False)
        out, loss_right = self._pass(model, inputs, targets, 0.5)
        loss = 0.5 * (loss_left + loss_right)
        self.alg.record_loss(loss.item())
        return out, loss

    def search(self, supernet, **kwargs):
        if 'search' not in self.stage:
            return None
        return self.alg.search(supernet, self.evaluator, **kwargs)
