"""Inference throughput with the official protocol: eval mode, no_grad, fp32, random input."""
import time

import torch


@torch.no_grad()
def throughput(model, batch_size=1024, warmup=100, iters=1000, img_size=224, device=None):
    """Images per second of ``model`` on ``batch_size`` random images after ``warmup`` untimed iterations."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        model(x)
    sync()
    elapsed = time.perf_counter() - start
    model.train(was_training)
    return batch_size * iters / elapsed
