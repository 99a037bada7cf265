"""Model families: shapes on both datasets' inputs, receptive fields, learning, validation."""
import pytest
import torch

from ecglib import diagnostics, models
from ecglib.models import CONV_FAMILIES, FAMILIES, RECURRENT_FAMILIES, build_model, width_for_params

MITDB_BEAT = 252    # 0.7 s at 360 Hz
CINC_RECORD = 3000  # 30 s at 100 Hz (10 s at 300 Hz)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_registry_lists_every_family_once():
    assert sorted(CONV_FAMILIES + RECURRENT_FAMILIES) == sorted(FAMILIES)
    assert set(models.OPTIONS) == set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("depth", [1, 2, 8])
def test_forward_backward_shapes(family, depth):
    torch.manual_seed(0)
    model = build_model(family, depth, width=4, in_channels=1, n_classes=5)
    assert len(model.layers) == depth
    assert model.n_params == sum(p.numel() for p in model.parameters())
    for length in (MITDB_BEAT, CINC_RECORD):
        x = torch.randn(2, 1, length)
        # PyTorch's CPU rnn and gru step through time one op at a time, and their backward over 3000 steps
        # takes seconds per layer; the backward path is the one already exercised on the beat shape.
        backward = family not in ("rnn", "gru") or length == MITDB_BEAT
        with torch.set_grad_enabled(backward):
            logits = model(x)
            feats = model.features(x)
        assert logits.shape == (2, 5)
        assert feats.shape[:2] == (2, model.head.in_features) and feats.shape[-1] >= 1
        if backward:
            logits.sum().backward()
            assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.layers.parameters())
            model.zero_grad()


def test_depth_32_runs_on_64_samples():
    for family in CONV_FAMILIES:
        assert build_model(family, 32, width=2)(torch.randn(2, 1, 64)).shape == (2, 5)


def test_recurrent_options():
    x = torch.randn(3, 2, 40)
    for family in RECURRENT_FAMILIES:
        bi = build_model(family, 2, width=4, in_channels=2, n_classes=3, bidirectional=True, readout="mean")
        assert bi(x).shape == (3, 3) and bi.features(x).shape[1] == 8
    # "last" reads the final state of each direction: the forward one at the end, the backward one at the start
    model = build_model("lstm", 1, width=4, bidirectional=True, readout="last").eval()
    h = model.features(x[:, :1])
    assert torch.equal(model.readout(h), torch.cat([h[:, :4, -1], h[:, 4:, 0]], 1))
    hybrid = build_model("convlstm", 1, width=4, pool=4, conv_depth=3)
    assert hybrid.features(torch.randn(1, 1, 64)).shape == (1, 4, 16)
    assert hybrid.receptive_field == 1 + 3 * 6 + 3


@pytest.mark.parametrize("family", ["cnn", "rescnn", "tcn", "glucnn", "convlstm"])
def test_receptive_field_analytical_equals_measured(family):
    for depth in (1, 2, 3, 5, 8):
        torch.manual_seed(depth)
        model = build_model(family, depth, width=8, kernel_size=5)
        length = 2 * model.receptive_field + 64
        assert diagnostics.measured_receptive_field(model, length) == model.receptive_field, (family, depth)


def test_receptive_field_formula():
    # Araujo et al.: r = 1 + sum (k_l - 1) prod_{i<l} s_i; two k=3 convs around a 2x pooling
    assert models.receptive_field([(3, 1), (2, 2), (3, 1)]) == 1 + 2 + 1 + 2 * 2
    # a TCN of 1 conv per level with dilations 1, 2, 4: 1 + (k-1)(2^n - 1)
    assert build_model("tcn", 3, kernel_size=3).receptive_field == 1 + 2 * 7
    assert build_model("lstm", 2).receptive_field is None


def test_pooling_schedule_is_bounded_and_between_residual_pairs():
    for depth in range(1, 33):
        pools = models.pool_after(depth)
        assert len(pools) <= models.MAX_POOLS and all(i % 2 == 0 and i < depth - 1 for i in pools)
    assert models.pool_after(8) == [0, 2, 4, 6]


def learnable(n=160, length=32, n_classes=3, seed=0):
    """Each class adds its own constant offset to noise: every family can learn it in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = torch.randn(n, 1, length, generator=g) * 0.5 + (y.float() - 1)[:, None, None]
    return torch.utils.data.TensorDataset(x, y)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_loss_falls_on_a_learnable_task(family):
    from ecglib.train import TrainConfig, seed_everything, train

    ds = learnable()
    seed_everything(0)
    model = build_model(family, 2, width=8, n_classes=3)
    result = train(model, ds, ds, TrainConfig(epochs=4, batch_size=16, lr=3e-2, progress=False, patience=None))
    losses = [h["train_loss"] for h in result.history]
    assert not result.diverged and len(losses) == 4
    assert losses[-1] < 0.6 * losses[0], losses
    assert result.val["acc"] > 0.6  # chance is 1/3


@pytest.mark.parametrize("call, message", [
    (lambda: build_model("transformer", 2), "valid families: cnn, rescnn"),
    (lambda: build_model("cnn", 0), "depth=0"),
    (lambda: build_model("cnn", 2.5), "depth=2.5"),
    (lambda: build_model("cnn", True), "depth=True"),
    (lambda: build_model("lstm", 2, width=0), "width=0"),
    (lambda: build_model("lstm", 2, kernel_size=5), "valid options: dropout"),
    (lambda: build_model("cnn", 2, readout="last"), "one of ['mean', 'max']"),
    (lambda: build_model("gru", 2, readout="first"), "one of ['last', 'mean', 'max']"),
    (lambda: build_model("rnn", 2, forget_bias=1.0), "rnn has no option forget_bias"),
    (lambda: build_model("cnn", 2, forget_bias=1.0), "cnn has no option forget_bias"),
    (lambda: build_model("cnn", 2, dropout=1.5), "dropout=1.5"),
    (lambda: build_model("convlstm", 2, pool=0), "pool=0"),
    (lambda: width_for_params("cnn", 2, 0), "target_params=0"),
])
def test_bad_arguments_fail_before_building(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert message in str(e.value)


@pytest.mark.parametrize("family", ["cnn", "tcn", "rnn", "lstm", "gru"])
def test_readouts_pool_the_feature_sequence(family):
    x = torch.randn(3, 1, 64)
    for readout in (["mean", "max"] if family in CONV_FAMILIES else ["last", "mean", "max"]):
        model = build_model(family, 2, width=4, readout=readout).eval()
        h = model.features(x)
        expected = {"mean": h.mean(-1), "max": h.amax(-1), "last": h[:, :, -1]}[readout]
        assert torch.equal(model.readout(h), expected)


@pytest.mark.parametrize("family, gates", [("lstm", 4), ("gru", 3), ("reslstm", 4), ("convlstm", 4)])
def test_forget_bias_sets_the_keep_gate_in_every_layer_and_direction(family, gates):
    model = build_model(family, 3, width=5, forget_bias=1.5, bidirectional=True)
    for layer in model.layers:
        for name, p in layer.named_parameters():
            if name.startswith("bias"):
                blocks = p.detach().view(gates, 5)
                # the second gate block is LSTM's forget gate and GRU's update gate z; the rest keep their init
                assert torch.all(blocks[1] == (1.5 if "ih" in name else 0.0))
                assert not torch.all(blocks[0] == blocks[0][0])
    # the default keeps the state: a GRU's z gate starts biased open, so h' leans towards h
    assert torch.all(build_model("gru", 1, width=5).layers[0].bias_ih_l0.view(3, 5)[1] == 1.0)


def test_width_for_params_is_nearest():
    for family, depth, target in [("cnn", 4, 20_000), ("lstm", 2, 50_000), ("convlstm", 3, 30_000)]:
        w = width_for_params(family, depth, target)
        err = [abs(build_model(family, depth, v).n_params - target) for v in (w - 1, w, w + 1)]
        assert err[1] <= err[0] and err[1] <= err[2]
    assert width_for_params("gru", 1, 1) == 1
    huge = width_for_params("lstm", 8, 10**9)  # built on the meta device: no memory spent
    assert 2000 < huge < 10_000


def test_norm_option_default_is_bit_identical_and_ablations_change_the_model():
    x = torch.randn(2, 1, 40)
    for family in ("cnn", "lstm", "reslstm"):
        torch.manual_seed(0)
        a = build_model(family, 3, width=6)
        torch.manual_seed(0)
        b = build_model(family, 3, width=6, norm=None)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())) and torch.equal(a(x), b(x))
    plain = build_model("cnn", 3, width=6, norm="none")
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    assert all(layer.conv.bias is not None for layer in plain.layers)
    ln = build_model("lstm", 3, width=6, norm="layer")
    assert len(ln.norms) == 2 and ln(x).shape == (2, 5)     # before layers 2 and 3, not before the first
    assert build_model("lstm", 3, width=6, norm="none").n_params == build_model("lstm", 3, width=6).n_params
    with pytest.raises(ValueError, match="lstm: option norm='batch' is invalid"):
        build_model("lstm", 2, norm="batch")
    with pytest.raises(ValueError, match="cnn: option norm='layer' is invalid"):
        build_model("cnn", 2, norm="layer")
