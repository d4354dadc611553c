"""precise_bn_stats: exact population statistics, closed forms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlab.nn import BatchNorm, precise_bn_stats


def _data(n=37, shape=(3, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.5, 2.0, 1.0]).view(1, 3, *([1] * (len(shape) - 1)))
    return torch.randn(n, *shape, generator=g) * scale + 3.0


def _uneven(x, sizes=(16, 5, 11, 5)):
    assert sum(sizes) == x.shape[0]
    return list(torch.split(x, list(sizes)))


@pytest.mark.parametrize(
    "make, unbiased",
    [
        (lambda: BatchNorm(num_features=3), False),
        (lambda: BatchNorm(num_features=3, variance="unbiased"), True),
        (lambda: BatchNorm(num_features=3, virtual_batch_size=4), False),
        (lambda: BatchNorm(num_features=3, renorm=True), False),
        (lambda: BatchNorm(), False),  # lazy: built by the first pass
        (lambda: nn.BatchNorm2d(3), True),
    ],
    ids=["biased", "unbiased", "ghost", "renorm", "lazy", "torch"],
)
def test_population_statistics_of_a_fixed_tensor(make, unbiased):
    x = _data()
    bn = make()
    seen = precise_bn_stats(bn, _uneven(x))
    assert seen == 37
    mean = x.double().mean(dim=(0, 2, 3))
    var = x.double().var(dim=(0, 2, 3), correction=1 if unbiased else 0)
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-6, atol=1e-6)
    assert int(bn.num_batches_tracked) == 0  # the passes are not training steps
    assert bn.training  # flags restored
    if isinstance(bn, BatchNorm) and bn.renorm:  # Keras's stddev form stays consistent
        torch.testing.assert_close(bn.moving_stddev.double(), (var + bn.epsilon).sqrt())


def test_tuples_max_batches_and_a_trailing_single_sample():
    x = _data(n=10, shape=(3,))
    y = torch.zeros(10)
    bn = BatchNorm(num_features=3)
    batches = [(x[:4], y[:4]), (x[4:9], y[4:9]), (x[9:], y[9:])]  # last: one sample
    assert precise_bn_stats(bn, batches) == 10
    torch.testing.assert_close(bn.moving_mean, x.mean(0), rtol=1e-6, atol=1e-6)
    assert precise_bn_stats(bn, batches, max_batches=1) == 4
    torch.testing.assert_close(bn.moving_variance, x[:4].var(0, correction=0), rtol=1e-5, atol=1e-6)


def test_channels_last_layer():
    x = _data().permute(0, 2, 3, 1)
    bn = BatchNorm(axis=-1)
    precise_bn_stats(bn, _uneven(x))
    torch.testing.assert_close(bn.moving_mean, x.mean(dim=(0, 1, 2)), rtol=1e-6, atol=1e-6)


def test_network_dropout_off_downstream_sees_batch_normalised_inputs():
    """Second BN's input is the first BN's batch-normalised output (fvcore's passes)."""
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    model = nn.Sequential(nn.Dropout(0.5), BatchNorm(num_features=3), lin, nn.BatchNorm1d(2))
    model.train()
    x = _data(n=12, shape=(3,))
    batches = [x[:6], x[6:]]
    precise_bn_stats(model, batches)
    assert all(m.training for m in model.modules())  # every flag restored
    # dropout was off: the first layer saw x itself
    torch.testing.assert_close(model[1].moving_mean, x.mean(0), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        z = torch.cat(
            [lin((b - b.mean(0)) / torch.sqrt(b.var(0, correction=0) + 1e-3)) for b in batches]
        )
    torch.testing.assert_close(model[3].running_mean, z.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[3].running_var, z.var(0), rtol=1e-5, atol=1e-6)
    assert int(model[3].num_batches_tracked) == 0


def test_frozen_layers_are_left_alone_and_torch_buffers_restored_on_error():
    frozen = BatchNorm(num_features=3)
    frozen.trainable = False
    live = nn.BatchNorm1d(3)
    model = nn.Sequential(frozen, live).eval()
    x = _data(n=8, shape=(3,))
    precise_bn_stats(model, [x])
    assert torch.equal(frozen.moving_mean, torch.zeros(3))
    assert not live.training and not frozen.training

    class Boom(Exception):
        pass

    def batches():
        yield x
        yield x[:4]
        raise Boom

    before = live.running_mean.clone()
    with pytest.raises(Boom):
        precise_bn_stats(model, batches())
    assert torch.equal(live.running_mean, before)
    assert int(live.num_batches_tracked) == 0
    assert not model.training and not live.training


def test_model_without_bn_counts_samples_and_bad_batches_are_refused():
    assert precise_bn_stats(nn.Linear(3, 2), [torch.randn(4, 3), torch.randn(3, 3)]) == 7
    with pytest.raises(Exception, match="batches: an element of type str"):
        precise_bn_stats(BatchNorm(num_features=3), ["not a tensor"])
    with pytest.raises(Exception, match="max_batches: 0"):
        precise_bn_stats(BatchNorm(num_features=3), [torch.randn(4, 3)], max_batches=0)
