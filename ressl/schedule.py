"""The ReSSL learning-rate schedule (official ``adjust_learning_rate``).  Imports only the standard library."""
import math


def adjust_learning_rate(optimizer, epoch, base_lr, i, iteration_per_epoch, epochs, warm_up=5):
    """Set and return the learning rate of iteration ``i`` of ``epoch``.

    With ``T = epoch * I + i``: linear warm-up ``base_lr * T / (warm_up * I)`` during the first ``warm_up`` epochs
    (exactly 0 at the very first iteration), then a half cosine from ``base_lr`` to 0 over the remaining
    ``(epochs - warm_up) * I`` iterations.  The same value goes into every parameter group.
    """
    T = epoch * iteration_per_epoch + i
    warmup_iters = warm_up * iteration_per_epoch
    if epoch < warm_up:
        lr = base_lr * T / warmup_iters
    else:
        total_iters = (epochs - warm_up) * iteration_per_epoch
        lr = 0.5 * base_lr * (1 + math.cos(math.pi * (T - warmup_iters) / total_iters))
    if optimizer is not None:
        for group in optimizer.param_groups:
            group['lr'] = lr
    return lr
