"""The training loop: determinism, divergence, early stopping, metrics, batched datasets, settings."""
import math

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from ecglib.models import build_model
from ecglib.train import (TrainConfig, chance_score, class_weights, collapse, converged, evaluate, metrics,
                          pick_device, seed_everything, train)


pytestmark = pytest.mark.usefixtures("one_thread")


def toy(n=96, length=32, n_classes=3, seed=0):
    """Class c adds a bump of height c - 1 in the middle of noise: learnable, not trivial at step 0."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, n_classes, (n,), generator=g)
    x = torch.randn(n, 1, length, generator=g)
    x[:, 0, length // 2 - 4: length // 2 + 4] += (y.float() - 1)[:, None]
    return TensorDataset(x, y)


class Batched(torch.utils.data.Dataset):
    """Like ecglib.data.EcgDataset: __getitems__ returns one stacked batch; single items are never read."""

    def __init__(self, ds):
        self.x, self.y = ds.tensors
        self.n_classes, self.calls = 3, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        raise AssertionError("the loop should read whole batches")

    def __getitems__(self, indices):
        self.calls += 1
        return self.x[indices], self.y[indices]

    def class_counts(self):
        return np.bincount(self.y.numpy(), minlength=self.n_classes)


def fit(family="cnn", cfg=None, ds=None, val=None, test=None, seed=0):
    seed_everything(seed)
    model = build_model(family, 2, width=8, n_classes=3)
    ds = ds or toy()
    cfg = cfg or TrainConfig(epochs=3, batch_size=16, progress=False)
    return model, train(model, ds, val or toy(48, seed=1), cfg, test_ds=test)


def floats(history):
    """Every number in the history except the timings."""
    return [(k, v) for row in history for k, v in row.items() if k not in ("seconds", "samples_per_s")]


@pytest.mark.parametrize("family", ["cnn", "lstm"])
def test_same_seed_same_history(family):
    _, a = fit(family)
    _, b = fit(family)
    assert floats(a.history) == floats(b.history)
    np.testing.assert_equal(a.val, b.val)   # NaN (undefined per-class values) counts as equal
    _, c = fit(family, seed=1)
    assert floats(c.history) != floats(a.history)


def test_history_rows_and_result():
    model, r = fit(test=toy(40, seed=2))
    assert [h["epoch"] for h in r.history] == [1, 2, 3]
    keys = {"epoch", "lr", "train_loss", "train_acc", "train_f1", "train_score", "val_loss", "val_acc", "val_f1",
            "val_score", "grad_norms", "seconds", "samples_per_s"}
    for h in r.history:
        assert set(h) == keys
        assert list(h["grad_norms"]) == ["layers.0", "layers.1"]
        assert all(v > 0 for v in h["grad_norms"].values())
        assert h["samples_per_s"] > 0 and 0 <= h["train_acc"] <= 1
    assert r.device == "cpu" and not r.diverged and r.diverged_epoch is None
    assert r.test["n"] == 40 and np.array(r.test["confusion"]).sum() == 40
    assert set(r.val) == {"loss", "acc", "macro_f1", "score", "f1", "se", "ppv", "confusion", "n"}
    # the model is left at its best epoch
    assert r.val["score"] == r.history[r.best_epoch - 1]["val_score"]
    np.testing.assert_equal(evaluate(model, toy(48, seed=1)), r.val)


def test_early_stopping_restores_the_best_weights():
    # random validation labels: val F1 wanders, so patience 1 stops the run early
    g = torch.Generator().manual_seed(3)
    noise = TensorDataset(torch.randn(60, 1, 32, generator=g), torch.randint(0, 3, (60,), generator=g))
    model, r = fit(cfg=TrainConfig(epochs=12, batch_size=16, patience=1, progress=False), val=noise)
    assert len(r.history) == r.best_epoch + 1 < 12
    best = max(h["val_score"] for h in r.history)
    assert r.history[r.best_epoch - 1]["val_score"] == best == r.val["score"]
    assert evaluate(model, noise)["score"] == best
    assert r.converged   # it stopped because the score stopped improving


def test_early_stopping_reads_only_the_scored_classes():
    # validation labels all class 2: the score over classes 0 and 1 is 0 whatever the model predicts,
    # so no epoch beats the first and patience 2 ends the run at epoch 3
    g = torch.Generator().manual_seed(4)
    only2 = TensorDataset(torch.randn(30, 1, 32, generator=g), torch.full((30,), 2))
    _, r = fit(cfg=TrainConfig(epochs=10, batch_size=16, patience=2, scored=(0, 1), progress=False), val=only2)
    assert [h["val_score"] for h in r.history] == [0.0, 0.0, 0.0] and r.best_epoch == 1


def test_plateau_schedule_warms_up_then_cuts_on_a_plateau():
    g = torch.Generator().manual_seed(3)
    noise = TensorDataset(torch.randn(60, 1, 32, generator=g), torch.randint(0, 3, (60,), generator=g))
    _, r = fit(cfg=TrainConfig(epochs=8, batch_size=16, lr=1e-2, patience=None, progress=False), val=noise)
    lrs = [h["lr"] for h in r.history]
    assert lrs[0] == pytest.approx(1e-3)   # the warm-up starts at 0.1x
    assert lrs[1] == pytest.approx(1e-2)   # and reaches the full rate after one epoch
    assert min(lrs) < 1e-2 and all(b <= a for a, b in zip(lrs[1:], lrs[2:]))   # then only cuts
    assert set(round(v / 1e-2, 6) for v in lrs[1:]) <= {round(0.3 ** k, 6) for k in range(8)}


class Poisoned(torch.nn.Module):
    """A model whose training forward returns NaN from training step `after` on."""

    def __init__(self, inner, after):
        super().__init__()
        self.inner, self.after, self.steps = inner, after, 0
        self.layers, self.n_classes = inner.layers, inner.n_classes

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            self.steps += 1
            if self.steps > self.after:
                return out * math.nan
        return out


@pytest.mark.parametrize("after, epoch", [(8, 2), (0, 1)])
def test_nan_loss_is_recorded_as_divergence(after, epoch):
    seed_everything(0)
    model = Poisoned(build_model("cnn", 2, width=8, n_classes=3), after)  # 6 steps per epoch
    cfg = TrainConfig(epochs=4, batch_size=16, progress=False)
    r = train(model, toy(), toy(48, seed=1), cfg, test_ds=toy(40, seed=2))
    assert r.diverged and r.diverged_epoch == epoch and len(r.history) == epoch
    assert math.isnan(r.history[-1]["train_loss"])
    if epoch == 1:  # no finite epoch to fall back on
        assert r.best_epoch == 0 and math.isnan(r.val["macro_f1"]) and math.isnan(r.test["loss"])
    else:  # evaluated at the last epoch before divergence, whose weights are finite
        assert r.best_epoch == 1 and math.isfinite(r.val["loss"]) and math.isfinite(r.test["loss"])
        assert all(torch.isfinite(p).all() for p in model.parameters())


def test_huge_learning_rate_diverges_without_crashing():
    _, r = fit(cfg=TrainConfig(epochs=3, batch_size=16, lr=1e30, schedule="cosine", clip=None, progress=False))
    assert r.diverged and r.diverged_epoch is not None


def test_batched_datasets_are_read_a_batch_at_a_time():
    ds = Batched(toy())
    _, r = fit(ds=ds, cfg=TrainConfig(epochs=2, batch_size=16, max_batches=2, progress=False))
    assert ds.calls == 2 * 2
    assert all(h["samples_per_s"] > 0 for h in r.history)


def test_schedules_and_clipping():
    _, cos = fit(cfg=TrainConfig(epochs=3, batch_size=16, schedule="cosine", clip=None, progress=False))
    lrs = [h["lr"] for h in cos.history]
    assert lrs[0] == pytest.approx(3e-3) and lrs[0] > lrs[1] > lrs[2]
    _, one = fit(cfg=TrainConfig(epochs=3, batch_size=16, schedule="onecycle", progress=False))
    assert one.history[0]["lr"] < one.history[1]["lr"]  # one-cycle warms up first


def test_metrics_with_absent_classes():
    m = metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), n_classes=5)
    assert np.array(m["confusion"]).shape == (5, 5)
    assert m["acc"] == 0.75 and m["n"] == 4
    assert m["f1"][0] == pytest.approx(2 / 3) and m["f1"][1] == pytest.approx(0.8)
    assert all(math.isnan(v) for v in m["f1"][2:])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # classes absent from both are left out
    assert m["score"] == pytest.approx((2 / 3 + 0.8) / 5)     # ... but a scored class absent counts as 0
    assert metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 5, scored=[1])["score"] == pytest.approx(0.8)


def test_sensitivity_and_positive_predictivity_follow_de_chazal():
    y = np.array([0] * 8 + [1] * 4 + [2] * 2)
    pred = np.array([0] * 6 + [1] * 2 + [1] * 3 + [0] + [2, 0])
    m = metrics(y, pred, 3, scored=[0, 1])
    assert m["se"] == pytest.approx([6 / 8, 3 / 4, 1 / 2])     # TP / (TP + FN): rows of the confusion
    assert m["ppv"] == pytest.approx([6 / 8, 3 / 5, 1 / 1])    # TP / (TP + FP): its columns
    assert m["score"] == pytest.approx(np.mean(m["f1"][:2]))


def test_chance_score_is_the_mean_share_of_the_scored_classes():
    assert chance_score([50, 50]) == pytest.approx(0.5)
    assert chance_score([80, 10, 10, 0], scored=[0, 1]) == pytest.approx(0.45)


@pytest.mark.parametrize("confusion, val_score, reason", [
    ([[90, 0], [10, 0]], 0.9, "predicts class 0 for 100.0%"),
    ([[989, 1], [10, 0]], 0.9, "predicts class 0 for 99.9%"),
    ([[60, 40], [40, 60]], 0.54, "within 0.05 of chance"),
    ([[60, 40], [40, 60]], float("nan"), "no finite validation score"),
    ([[60, 40], [40, 60]], 0.56, None),
    ([[97, 0], [1, 2]], 0.8, None),            # 98% of predictions in one class is not yet a collapse
])
def test_collapse(confusion, val_score, reason):
    got = collapse(confusion, val_score, chance=0.5)
    assert got is None if reason is None else reason in got


@pytest.mark.parametrize("n_epochs, best, patience, diverged, expected", [
    (10, 4, 6, False, True),      # stopped by early stopping: 6 epochs without a better score
    (10, 5, 6, False, False),     # the budget ran out 5 epochs after the best: still improving, perhaps
    (20, 20, None, False, False),
    (20, 15, None, False, True),  # without early stopping the gap is NO_PATIENCE_GAP = 5
    (10, 4, 6, True, False),
    (0, 0, 6, True, False),
])
def test_converged(n_epochs, best, patience, diverged, expected):
    assert converged([{}] * n_epochs, best, patience, diverged) is expected


def test_class_weights_are_inverse_frequency():
    y = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    w = class_weights(TensorDataset(torch.zeros(10, 1, 4), y), n_classes=4)
    assert w[3] == 0 and w[:3].mean() == pytest.approx(1)
    assert w[1] / w[0] == pytest.approx(2) and w[2] / w[0] == pytest.approx(6)


def test_devices(monkeypatch):
    monkeypatch.delenv("ECGLIB_DEVICE", raising=False)
    assert pick_device().type in ("cuda", "mps", "cpu")
    monkeypatch.setenv("ECGLIB_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    with pytest.raises(ValueError, match=r"valid devices: \['cuda', 'mps', 'cpu'\]"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available"):
            pick_device("cuda")


@pytest.mark.parametrize("field, value, message", [
    ("schedule", "step", "valid schedules: ['plateau', 'onecycle', 'cosine']"),
    ("epochs", 0, "epochs=0"),
    ("batch_size", 2.5, "batch_size=2.5"),
    ("patience", 0, "patience=0"),
    ("lr", -1.0, "lr > 0"),
])
def test_bad_config_fails_before_training(field, value, message):
    with pytest.raises(ValueError) as e:
        TrainConfig(**{field: value})
    assert message in str(e.value)


def test_early_layers_at_rate_zero_stay_at_their_initial_weights():
    """The overfitting chapter's C5 intervention: the first layers frozen (rate x0), the rest trained."""
    seed_everything(0)
    model = build_model("lstm", 2, width=8, n_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, toy(), toy(48, seed=1), TrainConfig(epochs=2, batch_size=16, progress=False, early_layers=1,
                                                      early_lr_scale=0.0, amp=False))
    after = model.cpu().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("layers.0."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("layers.1."))
    with pytest.raises(ValueError, match="early_lr_scale in"):
        TrainConfig(early_layers=1, early_lr_scale=2.0)


def test_weighted_loss_is_the_objective_training_minimised():
    seed_everything(0)
    model = build_model("cnn", 2, width=8, n_classes=3)
    ds = Batched(toy())
    w = class_weights(ds, 3)
    out = evaluate(model, ds, weight=w, device="cpu")
    x, y = ds.x, ds.y
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x), y, weight=w).item()
    assert out["weighted_loss"] == pytest.approx(expected, rel=1e-5)
    assert "weighted_loss" not in evaluate(model, ds, device="cpu")      # the default output is unchanged
