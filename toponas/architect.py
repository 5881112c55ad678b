"""The architecture step (``quark0/darts/cnn/architect.py``), with TopoNAS's topology variables beta updated
together with alpha by one Adam optimizer, and the passive-aggressive regulariser added to the validation loss.

First order: grad of L_val(w, alpha, beta) + lambda_PA * L_PA(beta). Second order (``unrolled=True``): the DARTS
formula with "alpha" read as (alpha, beta):
    w' = w - eta * (mu * m + grad_w L_train(w) + lambda_w * w)
    g  = grad L_val(w') - eta * [grad L_train(w+) - grad L_train(w-)] / (2 eps),  w+- = w +- eps * v,
    v  = grad_{w'} L_val(w'),  eps = 0.01 / ||v||.
Under torch.distributed the architecture gradients are averaged over the processes before the Adam step.
"""
import torch
import torch.distributed as tdist


def _concat(xs):
    return torch.cat([x.reshape(-1) for x in xs])


def _grads_or_zeros(grads, params):
    """``autograd.grad(..., allow_unused=True)`` gives None for unused variables (the node-2 betas)."""
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _arg(args, name, default=None):
    if isinstance(args, dict):
        return args.get(name, default)
    return getattr(args, name, default)


class Architect:
    """``Architect(model, args, pa_reg)``: ``args`` gives ``momentum``, ``weight_decay`` (of the weight optimizer),
    ``arch_learning_rate``, ``arch_weight_decay`` (and optionally ``arch_betas``); ``pa_reg`` is a
    ``topology.PassiveAggressiveReg`` or None. Set ``pa_active = False`` to switch the regulariser off (before
    ``pa_start_epoch``)."""

    def __init__(self, model, args, pa_reg=None):
        self.model = model
        self.network_momentum = float(_arg(args, 'momentum', 0.9))
        self.network_weight_decay = float(_arg(args, 'weight_decay', 3e-4))
        betas = tuple(_arg(args, 'arch_betas', (0.5, 0.999)))
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=float(_arg(args, 'arch_learning_rate', 3e-4)),
                                          betas=betas, weight_decay=float(_arg(args, 'arch_weight_decay', 1e-3)))
        self.pa_reg = pa_reg
        self.pa_active = True
        self.last = {}

    # ------------------------------------------------------------------ objective
    def regulariser(self, model):
        if self.pa_reg is None or not self.pa_active or model.topo_param == 'none':
            return None
        dists = model.topology_distributions()
        marginals = [torch.cat([m for _, _, m in d]) for d in dists]
        probs = [[p for _, p, _ in d] for d in dists]
        return self.pa_reg(marginals, probs)

    def val_objective(self, model, input_valid, target_valid):
        """L_val + lambda_PA * L_PA; records both terms in ``self.last``."""
        loss = model._loss(input_valid, target_valid)
        reg = self.regulariser(model)
        self.last = {'val_loss': float(loss.detach()), 'pa_loss': float(reg.detach()) if reg is not None else 0.0}
        return loss if reg is None else loss + reg

    # ------------------------------------------------------------------ step
    def step(self, input_train, target_train, input_valid, target_valid, eta, network_optimizer, unrolled):
        self.optimizer.zero_grad(set_to_none=True)
        if unrolled:
            self._backward_step_unrolled(input_train, target_train, input_valid, target_valid, eta, network_optimizer)
        else:
            self._backward_step(input_valid, target_valid)
        self._sync_grads()
        self.optimizer.step()

    def _sync_grads(self):
        if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
            return
        params = self.model.arch_parameters()
        flat = _concat(_grads_or_zeros([p.grad for p in params], params))
        tdist.all_reduce(flat)
        flat /= tdist.get_world_size()
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def _backward_step(self, input_valid, target_valid):
        params = self.model.arch_parameters()
        loss = self.val_objective(self.model, input_valid, target_valid)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, _grads_or_zeros(grads, params)):
            p.grad = g

    # ------------------------------------------------------------------ second order
    def _compute_unrolled_model(self, input, target, eta, network_optimizer):
        weights = self.model.weights()
        loss = self.model._loss(input, target)
        theta = _concat(weights).detach()
        try:
            moment = _concat(network_optimizer.state[p]['momentum_buffer'] for p in weights) * self.network_momentum
        except KeyError:  # before the first SGD step
            moment = torch.zeros_like(theta)
        grads = torch.autograd.grad(loss, weights, allow_unused=True)
        dtheta = _concat(_grads_or_zeros(grads, weights)).detach() + self.network_weight_decay * theta
        return self._construct_model_from_theta(theta - eta * (moment + dtheta))

    def _construct_model_from_theta(self, theta):
        model_new = self.model.new()
        model_dict = self.model.state_dict()
        params, offset = {}, 0
        for name, p in self.model.named_weights():
            n = p.numel()
            params[name] = theta[offset:offset + n].view_as(p)
            offset += n
        assert offset == theta.numel()
        model_dict.update(params)
        model_new.load_state_dict(model_dict)
        return model_new

    def _backward_step_unrolled(self, input_train, target_train, input_valid, target_valid, eta, network_optimizer):
        unrolled_model = self._compute_unrolled_model(input_train, target_train, eta, network_optimizer)
        unrolled_loss = self.val_objective(unrolled_model, input_valid, target_valid)
        arch, weights = unrolled_model.arch_parameters(), unrolled_model.weights()
        grads = torch.autograd.grad(unrolled_loss, arch + weights, allow_unused=True)
        grads = _grads_or_zeros(grads, arch + weights)
        dalpha, vector = grads[:len(arch)], grads[len(arch):]
        implicit_grads = self._hessian_vector_product(vector, input_train, target_train)
        for p, g, ig in zip(self.model.arch_parameters(), dalpha, implicit_grads):
            p.grad = (g - eta * ig).detach()

    def _hessian_vector_product(self, vector, input, target, r=1e-2):
        R = r / _concat(vector).norm().clamp_min(1e-12)
        weights, arch = self.model.weights(), self.model.arch_parameters()
        with torch.no_grad():
            for p, v in zip(weights, vector):
                p.add_(v, alpha=float(R))
        grads_p = _grads_or_zeros(torch.autograd.grad(self.model._loss(input, target), arch, allow_unused=True), arch)
        with torch.no_grad():
            for p, v in zip(weights, vector):
                p.sub_(v, alpha=2 * float(R))
        grads_n = _grads_or_zeros(torch.autograd.grad(self.model._loss(input, target), arch, allow_unused=True), arch)
        with torch.no_grad():
            for p, v in zip(weights, vector):
                p.add_(v, alpha=float(R))
        return [(x - y).div_(2 * float(R)) for x, y in zip(grads_p, grads_n)]
