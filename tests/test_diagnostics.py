"""Diagnostics: gradients across depth and time, receptive fields, throughput, segment shuffling."""
import numpy as np
import pytest
import torch

from ecglib import diagnostics as dg
from ecglib.models import build_model


pytestmark = pytest.mark.usefixtures("one_thread")


def test_grad_norms_per_layer_leave_the_model_as_they_found_it():
    torch.manual_seed(0)
    model = build_model("lstm", 3, width=8).eval()
    x, y = torch.randn(4, 1, 50), torch.tensor([0, 1, 2, 3])
    norms = dg.grad_norms_per_layer(model, x, y)
    assert list(norms) == ["layers.0", "layers.1", "layers.2"] and all(v > 0 for v in norms.values())
    assert not model.training and all(p.grad is None for p in model.parameters())
    # the norm of a layer is the L2 norm of all its parameter gradients together
    model.train()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    first = torch.cat([p.grad.flatten() for p in model.layers[0].parameters()]).norm()
    assert norms["layers.0"] == pytest.approx(first.item(), rel=1e-5)


def test_input_time_gradient_matches_autograd():
    torch.manual_seed(0)
    model = build_model("cnn", 2, width=4, n_classes=3)
    x = torch.randn(5, 1, 40)
    curve = dg.input_time_gradient(model, x, target=2)
    assert curve.shape == (40,) and (curve >= 0).all() and model.training
    assert np.allclose(curve, dg.input_time_gradient(model, x, target=torch.full((5,), 2)))
    model.eval()
    xr = x.clone().requires_grad_(True)
    model(xr)[:, 2].sum().backward()
    assert np.allclose(curve, xr.grad.abs().mean((0, 1)).numpy(), atol=1e-7)


def test_a_unidirectional_lstm_looks_only_backwards():
    torch.manual_seed(0)
    model = build_model("lstm", 1, width=8)
    grad = dg.input_gradient(model, torch.randn(2, 1, 30), target=None)
    assert grad.shape == (2, 1, 30) and (grad[..., -1] > 0).all()
    # the effective field of the centre state lies in the past: at most half the input plus the centre
    assert dg.effective_receptive_field(model, 64, mass=1.0) <= 33


def test_effective_receptive_field_is_within_the_exact_one():
    torch.manual_seed(0)
    model = build_model("cnn", 5, width=8, kernel_size=5)
    length = 2 * model.receptive_field + 32
    erf = [dg.effective_receptive_field(model, length, mass=m) for m in (0.5, 0.9, 1.0)]
    assert 1 <= erf[0] <= erf[1] <= erf[2] == model.receptive_field
    with pytest.raises(ValueError, match="mass=0"):
        dg.effective_receptive_field(model, length, mass=0)


def test_measured_receptive_field_needs_a_conv_trunk():
    with pytest.raises(ValueError, match="gru has no conv trunk"):
        dg.measured_receptive_field(build_model("gru", 1, width=4), 100)
    # a field wider than the input is cut at the input's edges
    model = build_model("tcn", 6, width=4)
    assert dg.measured_receptive_field(model, 200) == 200 < model.receptive_field


def test_throughput_times_a_copy():
    model = build_model("convlstm", 1, width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = dg.throughput(model, seq_len=128, batch_size=4, steps=2, warmup=1)
    assert set(out) == {"samples_per_s", "seconds_per_step"} and out["samples_per_s"] > 0
    assert out["samples_per_s"] == pytest.approx(4 / out["seconds_per_step"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_permute_segments_shuffles_whole_segments_per_example():
    x = torch.arange(3 * 2 * 10).reshape(3, 2, 10).float()
    out = dg.permute_segments(x, 3, generator=0)
    assert out.shape == x.shape
    for example, shuffled in zip(x, out):
        assert torch.equal(shuffled[1] - shuffled[0], example[1] - example[0])  # channels move together
        pieces = [shuffled[0, i:i + 3].tolist() for i in range(10)]
        segments = [example[0, j:j + 3].tolist() for j in (0, 3, 6)] + [[example[0, 9].item()]]
        assert sorted(shuffled[0].tolist()) == example[0].tolist()
        assert all(any(seg == p[:len(seg)] for p in pieces) for seg in segments)
    assert torch.equal(out, dg.permute_segments(x, 3, generator=0))  # seeded
    assert np.array_equal(dg.permute_segments(x.numpy(), 3, np.random.default_rng(0)), out.numpy())
    assert torch.equal(dg.permute_segments(x, 10, generator=1), x)  # one segment: nothing to shuffle
    assert not torch.equal(dg.permute_segments(x, 1, generator=1), x)
    with pytest.raises(ValueError, match="segment_len=0"):
        dg.permute_segments(x, 0)


def test_state_gradients_is_the_full_derivative_of_the_loss_for_every_family():
    torch.manual_seed(0)
    x, y = torch.randn(3, 1, 24), torch.tensor([0, 1, 2])
    for family in ("lstm", "gru", "rnn", "reslstm"):
        model = build_model(family, 2, width=5, n_classes=3)
        before = [p.detach().clone() for p in model.parameters()]
        g = dg.state_gradients(model, x, y)
        assert g.shape == (2, 24) and g.dtype == np.float64
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and model.training
        # the top layer's state at t < T reaches a last-step loss only through its own later steps: the fused
        # layer's output tensor would show 0 there, the unrolled recurrence does not
        assert (g[1, :-1] > 0).all() and g[1, 0] < g[1, -1]
    # against finite differences of the loss in float64: perturb h^0_5 (every example and unit in turn) inside
    # the recurrence of layer 0, so the perturbation travels through its later steps and through layer 1
    model = build_model("lstm", 2, width=5, n_classes=3).double()
    g = dg.state_gradients(model, x, y)
    cell = dg._Unrolled(model.layers[0]).cell
    xs = x.double().transpose(1, 2)

    def loss(b, u, eps):
        h, c, hs = torch.zeros(3, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64), []
        for t in range(24):
            h, c = cell(xs[:, t], (h, c))
            if t == 5:
                h = h.clone()
                h[b, u] += eps
            hs.append(h)
        out, _ = model.layers[1](torch.stack(hs, 1))
        return torch.nn.functional.cross_entropy(model.head(out[:, -1]), y, reduction="sum").item()

    with torch.no_grad():
        fd = np.array([(loss(b, u, 1e-6) - loss(b, u, -1e-6)) / 2e-6 for b in range(3) for u in range(5)])
    assert np.sqrt(np.mean(fd ** 2)) == pytest.approx(g[0, 5], rel=1e-5)


def test_state_gradients_maps_pooled_positions_to_input_samples():
    torch.manual_seed(0)
    model = build_model("cnn", 4, width=6, n_classes=3)      # pools after layers 0 and 2: strides 1, 2, 2, 4
    assert dg.strides(model) == [1, 2, 2, 4]
    g = dg.state_gradients(model, torch.randn(4, 1, 66), torch.tensor([0, 1, 2, 0]))
    assert g.shape == (4, 64)                                 # cut at the start to a multiple of 4
    assert (g[3].reshape(16, 4) == g[3, ::4, None]).all()     # a position's value repeated over its 4 samples
    assert (g[:, -1] > 0).all() and (g[3, :-4] == 0).all()    # the last-step loss reaches the top layer at its end only
    # readout=None keeps the model's mean pooling: every position of the top layer gets the same gradient
    flat = dg.state_gradients(model, torch.randn(4, 1, 64), torch.tensor([0, 1, 2, 0]), readout=None)
    assert np.allclose(flat[3], flat[3, 0])
    with pytest.raises(ValueError, match="readout='max' is invalid"):
        dg.state_gradients(model, torch.randn(4, 1, 64), torch.tensor([0, 1, 2, 0]), readout="max")
    assert dg.strides(build_model("convlstm", 2, width=4, pool=8)) == [8, 8]
