"""The architecture step of the bilevel search (quark0/darts ``architect.py``), for alphas and DST betas.

first order : g = grad_alpha L_val(w, alpha)
second order: w' = w - xi (mu m + grad_w L_train(w, alpha) + lambda_w w)
              g  = grad_alpha L_val(w', alpha) - xi [grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)] / 2eps
              w+- = w +- eps v, v = grad_w' L_val(w', alpha), eps = 0.01 / ||v||
Weights that the current forward does not use (Transit-cell ops outside S_j, pruned DST pairs) get no gradient and
are left out of the virtual step, exactly as SGD leaves them alone. Under torch.distributed the architecture
gradient is averaged over the processes. After the Adam step the derived sets S_j are recomputed.
"""
import torch
import torch.distributed as tdist


def _zeros_for_none(grads, tensors):
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]


class Architect:
    def __init__(self, model, args):
        self.network_momentum = float(args.momentum)
        self.network_weight_decay = float(args.weight_decay)
        self.model = model
        self.optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=float(args.arch_learning_rate),
                                          betas=(0.5, 0.999), weight_decay=float(args.arch_weight_decay))

    def step(self, input_train, target_train, input_valid, target_valid, eta, network_optimizer, unrolled):
        """One Adam step on the architecture parameters; returns the validation loss (a float)."""
        arch = self.model.arch_parameters()
        if unrolled:
            loss, grads = self._backward_step_unrolled(input_train, target_train, input_valid, target_valid, eta,
                                                       network_optimizer)
        else:
            loss = self.model._loss(input_valid, target_valid)
            grads = _zeros_for_none(torch.autograd.grad(loss, arch, allow_unused=True), arch)
        if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
            world = tdist.get_world_size()
            for g in grads:
                tdist.all_reduce(g)
                g.div_(world)
        for a, g in zip(arch, grads):
            a.grad = g.detach()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.derive()  # S_j follows alpha after every update
        return float(loss.detach())

    # ------------------------------------------------------------------ second order
    def _compute_unrolled_model(self, input, target, eta, network_optimizer):
        params = list(self.model.parameters())
        loss = self.model._loss(input, target)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        unrolled = self.model.new()
        unrolled.load_state_dict(self.model.state_dict())
        with torch.no_grad():
            for p, g, q in zip(params, grads, unrolled.parameters()):
                if g is None:  # not in the forward: SGD would not touch it either
                    continue
                buf = network_optimizer.state.get(p, {}).get('momentum_buffer') if network_optimizer else None
                moment = buf * self.network_momentum if buf is not None else torch.zeros_like(p)
                q.copy_(p - eta * (moment + g + self.network_weight_decay * p))
        return unrolled

    def _backward_step_unrolled(self, input_train, target_train, input_valid, target_valid, eta,
                                network_optimizer):
        unrolled = self._compute_unrolled_model(input_train, target_train, eta, network_optimizer)
        loss = unrolled._loss(input_valid, target_valid)
        u_arch, u_params = unrolled.arch_parameters(), list(unrolled.parameters())
        grads = torch.autograd.grad(loss, u_arch + u_params, allow_unused=True)
        dalpha = _zeros_for_none(grads[:len(u_arch)], u_arch)
        vector = _zeros_for_none(grads[len(u_arch):], u_params)
        implicit = self._hessian_vector_product(vector, input_train, target_train)
        return loss, [g - eta * ig for g, ig in zip(dalpha, implicit)]

    def _hessian_vector_product(self, vector, input, target, r=1e-2):
        """[grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)] / (2 eps), eps = r / ||v||."""
        params, arch = list(self.model.parameters()), self.model.arch_parameters()
        norm = torch.cat([v.reshape(-1) for v in vector]).norm()
        if float(norm) == 0.0:
            return [torch.zeros_like(a) for a in arch]
        R = r / norm
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.add_(v * R)
        grads_p = _zeros_for_none(torch.autograd.grad(self.model._loss(input, target), arch, allow_unused=True),
                                  arch)
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.sub_(v * 2 * R)
        grads_n = _zeros_for_none(torch.autograd.grad(self.model._loss(input, target), arch, allow_unused=True),
                                  arch)
        with torch.no_grad():
            for p, v in zip(params, vector):
                p.add_(v * R)
        return [(x - y) / (2 * R) for x, y in zip(grads_p, grads_n)]
