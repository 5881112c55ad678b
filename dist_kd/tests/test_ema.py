import torch

from ema import ModelEMA


def test_ema_of_parameters_and_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = ModelEMA(model, decay=0.9)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    model.train()
    model(torch.randn(8, 3))                     # moves the BN running statistics
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    now = model.state_dict()
    for k, v in ema.state_dict().items():
        if v.dtype.is_floating_point:
            assert torch.allclose(v, 0.9 * start[k] + 0.1 * now[k]), k
        else:
            assert torch.equal(v, now[k]), k     # num_batches_tracked is copied
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
