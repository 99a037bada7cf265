"""The one training loop: every model in the book is trained by `train`.

    seed_everything(0)
    model = build_model("cnn", depth=8)
    result = train(model, train_ds, val_ds, TrainConfig(epochs=10), test_ds=test_ds)

Datasets are any map-style Dataset of (x float32 [C, L], y int64) items; one with
`__getitems__(indices) -> (x [B, C, L], y [B])` (ecglib.data.EcgDataset) is read a
batch at a time. The loop stays within a few percent of a bare PyTorch loop
(`python -m ecglib bench`): losses, predictions and gradient norms accumulate on
the device and are read back once per epoch.

The protocol every run follows (Greff et al. 2017; Melis et al. 2018: train each family well before comparing):
AdamW, a linear warm-up over the first epoch, then the learning rate cut by LR_FACTOR whenever the validation
score has not improved for LR_PATIENCE + 1 epochs ("plateau"), and early stopping after `patience` epochs
without a better validation score; the model keeps its best epoch. The validation *score* is the macro-F1 over
the `scored` classes (the field's metric: N, S, V, F on MIT-BIH; N, A, O on CinC 2017), so a class too rare to
score (MIT-BIH Q) cannot decide when to stop. A run is *converged* when its best epoch came at least
`patience` epochs before its last: it stopped because the score stopped improving, not because the epoch
budget ran out (`converged`). `collapse` tells a model that predicts (almost) one class, or scores at chance.

A non-finite training or validation loss ends the run: `diverged=True`,
`diverged_epoch` is that epoch (its history row holds the non-finite values), and
the model is restored to its best epoch before divergence, whose weights are
finite; `val` and `test` are evaluated there. A run that diverges in its first
epoch has no such epoch: its `val` and `test` metrics are NaN.
"""
from __future__ import annotations

import itertools
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

SCHEDULES = ["plateau", "onecycle", "cosine"]
LR_PATIENCE, LR_FACTOR = 1, 0.3   # plateau: cut the rate 0.3x after 2 epochs without a better validation score
WARMUP_START = 0.1                # plateau: the first epoch ramps the rate linearly from 0.1x to 1x
NO_PATIENCE_GAP = 5               # convergence gap (epochs after the best) for runs without early stopping
COLLAPSE_SHARE = 0.99             # collapsed: one class takes at least this share of the predictions ...
CHANCE_MARGIN = 0.05              # ... or the validation score is within this of a guess by class frequency
DEVICES = ["cuda", "mps", "cpu"]
GRAD_EVERY = 10  # read per-layer gradient norms every this many steps: cheap, and enough for a mean


@dataclass
class TrainConfig:
    epochs: int = 50                # a budget: early stopping normally ends the run well before it
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-2
    schedule: str = "plateau"       # warm-up then cut on plateau; or per-step one-cycle or cosine decay
    clip: float | None = 1.0        # max gradient norm; None disables clipping
    patience: int | None = 6        # epochs without a better val score before stopping; None: never stop
    scored: tuple | None = None     # class indices the score averages F1 over; None: every class
    class_weighted: bool = True     # cross-entropy weighted by inverse class frequency
    device: str | None = None       # None: ECGLIB_DEVICE, else cuda, mps, cpu in that order
    amp: bool = True                # bf16 autocast on CUDA
    seed: int = 0
    progress: bool = True
    max_batches: int | None = None  # batches per epoch at most (smoke runs)
    early_layers: int = 0           # the first this many of model.layers learn at early_lr_scale x lr ...
    early_lr_scale: float = 1.0     # ... (0: frozen at init): a vanishing gradient imposed by hand, see _optimizer

    def __post_init__(self):
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "patience": self.patience,
                    "max_batches": self.max_batches}
        for name, value in positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"TrainConfig.{name}={value!r} is invalid; it must be an integer >= 1"
                                 + (" or None" if name in ("patience", "max_batches") else ""))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule={self.schedule!r} is invalid; valid schedules: {SCHEDULES}")
        if self.early_layers < 0 or not 0 <= self.early_lr_scale <= 1:
            raise ValueError(f"TrainConfig needs early_layers >= 0 and early_lr_scale in [0, 1]; got "
                             f"{self.early_layers}, {self.early_lr_scale}")
        if not self.lr > 0 or self.weight_decay < 0 or (self.clip is not None and not self.clip > 0):
            raise ValueError(f"TrainConfig needs lr > 0, weight_decay >= 0 and clip > 0 or None; got lr={self.lr}, "
                             f"weight_decay={self.weight_decay}, clip={self.clip}")


@dataclass
class TrainResult:
    history: list[dict]             # one row per epoch, see train()
    best_epoch: int                 # 1-based; 0 if no epoch finished with finite losses
    diverged: bool
    diverged_epoch: int | None
    converged: bool                 # see converged()
    device: str
    seconds: float
    val: dict = field(default_factory=dict)
    test: dict | None = None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; on CUDA also ask for deterministic kernels (where they exist)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (and cuDNN RNNs)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False  # autotuning may pick a different algorithm on each run


def pick_device(override: str | torch.device | None = None) -> torch.device:
    """`override`, else ECGLIB_DEVICE, else the best available of cuda, mps, cpu."""
    name = str(override) if override is not None else os.environ.get("ECGLIB_DEVICE")
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name is None:
        return torch.device(next(d for d in DEVICES if available[d]))
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid devices: {DEVICES}")
    if not available[kind]:
        raise ValueError(f"device {name!r} is not available here; available: {[d for d in DEVICES if available[d]]}")
    return torch.device(name)


def collate(batch):
    """A dataset's __getitems__ already returns (x [B, C, L], y [B]); a list of items is stacked."""
    return batch if isinstance(batch, tuple) else default_collate(batch)


def make_loader(ds, batch_size, device, shuffle=False, seed=0) -> DataLoader:
    """The DataLoader every loop here uses: batched reads, pinned memory on CUDA, a seeded shuffle."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      pin_memory=device.type == "cuda", generator=generator)


def autocast(device, amp=True):
    """bf16 autocast on CUDA (no loss scaling needed); full precision elsewhere."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def layer_grad_norms(model) -> torch.Tensor:
    """L2 norm of each of model.layers' parameter gradients (all of a layer's parameters together), on device."""
    norms = []
    for layer in model.layers:
        grads = [p.grad for p in layer.parameters() if p.grad is not None]
        norms.append(torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=_device_of(model)))
    return torch.stack(norms)


def layer_names(model) -> list[str]:
    return [f"layers.{i}" for i in range(len(model.layers))]


def _device_of(model):
    return next(model.parameters()).device


def metrics(y: np.ndarray, pred: np.ndarray, n_classes: int, scored=None) -> dict:
    """acc, macro_f1 (over classes present in y or pred), score (macro-F1 over the `scored` class indices,
    default all; a scored class absent from both counts as F1 0, so a score never rewards a missing class),
    per class: f1 (NaN for a class absent from both), se (sensitivity, recall) and ppv (positive predictivity,
    precision) as de Chazal et al. 2004 report them (NaN where undefined); confusion (rows: true class), n."""
    labels = list(range(n_classes))
    if len(y) == 0:
        nan = [math.nan] * n_classes
        return {"acc": math.nan, "macro_f1": math.nan, "score": math.nan, "f1": nan, "se": nan, "ppv": nan,
                "confusion": np.zeros((n_classes, n_classes), int).tolist(), "n": 0}
    scored = labels if scored is None else [int(c) for c in scored]
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan)
    return {
        "acc": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=np.nan)),
        "score": float(f1_score(y, pred, labels=scored, average="macro", zero_division=0.0)),
        "f1": [float(v) for v in f1],
        "se": [float(v) for v in recall],
        "ppv": [float(v) for v in precision],
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "n": int(len(y)),
    }


def chance_score(counts, scored=None) -> float:
    """Expected score of a guess that draws each class with its frequency in `counts`: class c's F1 is then
    its share p_c, so the macro-F1 over the scored classes is their mean share."""
    p = np.asarray(counts, dtype=float) / max(float(np.sum(counts)), 1.0)
    return float(np.mean(p if scored is None else p[list(scored)]))


def collapse(confusion, val_score: float, chance: float) -> str | None:
    """Why a trained model counts as collapsed, or None: one class takes >= COLLAPSE_SHARE of its predictions
    (columns of the confusion matrix), or its validation score is within CHANCE_MARGIN of `chance`."""
    predicted = np.asarray(confusion, dtype=float).sum(0)
    if predicted.sum() > 0 and predicted.max() / predicted.sum() >= COLLAPSE_SHARE:
        return f"predicts class {int(predicted.argmax())} for {predicted.max() / predicted.sum():.1%} of items"
    if not math.isfinite(val_score):
        return "no finite validation score"
    if val_score <= chance + CHANCE_MARGIN:
        return f"validation score {val_score:.3f} within {CHANCE_MARGIN} of chance ({chance:.3f})"
    return None


def converged(history: list[dict], best_epoch: int, patience: int | None, diverged: bool = False) -> bool:
    """The best epoch came at least `patience` (NO_PATIENCE_GAP without early stopping) epochs before the last:
    the validation score had stopped improving before the run ended."""
    gap = NO_PATIENCE_GAP if patience is None else patience
    return bool(not diverged and best_epoch >= 1 and len(history) - best_epoch >= gap)


@torch.inference_mode()
def evaluate(model, ds, batch_size=512, device=None, amp=True, scored=None, weight=None) -> dict:
    """Unweighted mean cross-entropy (loss) and metrics() of `model` on `ds`, in eval mode; with `weight` (the
    training set's class_weights) also weighted_loss: the class-weighted cross-entropy training minimised
    (F.cross_entropy's weighted mean)."""
    device = pick_device(device) if device is not None else _device_of(model)
    model.to(device).eval()
    loss, ys, preds = torch.zeros((), device=device), [], []
    w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32, device=device)
    weighted, weights = torch.zeros((), device=device), torch.zeros((), device=device)
    for x, y in make_loader(ds, batch_size, device):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        loss += F.cross_entropy(logits.float(), y, reduction="sum")
        if w is not None:
            weighted += F.cross_entropy(logits.float(), y, weight=w, reduction="sum")
            weights += w[y].sum()
        ys.append(y)
        preds.append(logits.argmax(1))
    y, pred = (torch.cat(t).cpu().numpy() if t else np.zeros(0, int) for t in (ys, preds))
    out = metrics(y, pred, model.n_classes, scored)
    out = {"loss": loss.item() / len(y) if len(y) else math.nan, **out}
    if w is not None:
        out["weighted_loss"] = (weighted / weights).item() if weights.item() else math.nan
    return out


def class_weights(ds, n_classes) -> torch.Tensor:
    """Inverse class frequency, normalised to mean 1 over the classes present; 0 for absent classes."""
    if hasattr(ds, "class_counts"):
        counts = np.asarray(ds.class_counts(), dtype=float)
    else:
        ys = [y for _, y in make_loader(ds, 4096, torch.device("cpu"))]
        counts = np.bincount(torch.cat(ys).numpy(), minlength=n_classes).astype(float)
    counts = np.pad(counts, (0, n_classes - len(counts)))
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = 1 / counts[present]
    w *= present.sum() / w.sum()
    return torch.tensor(w, dtype=torch.float32)


def _optimizer(model, cfg) -> torch.optim.AdamW:
    """AdamW; with cfg.early_layers, the first early_layers of model.layers in a second parameter group at
    early_lr_scale x the rate. The step is scaled, not the gradient: Adam divides each weight's gradient by its
    own running RMS, so a constant factor on the gradient cancels, while a vanishing gradient under SGD shrinks
    the step. Scale 0 freezes those layers exactly (decoupled weight decay is scaled by the rate too). Group 0
    stays the main group, whose rate the history records."""
    if not cfg.early_layers:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.early_layers > len(model.layers):
        raise ValueError(f"TrainConfig.early_layers={cfg.early_layers} exceeds the model's {len(model.layers)} layers")
    early = {id(p) for layer in model.layers[:cfg.early_layers] for p in layer.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in early]},
              {"params": [p for p in model.parameters() if id(p) in early], "lr": cfg.lr * cfg.early_lr_scale}]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt, cfg, total_steps, steps_per_epoch):
    """The per-step schedule (plateau: the warm-up; its cuts are made per epoch by ReduceLROnPlateau)."""
    if cfg.schedule == "onecycle":
        max_lr = [g["lr"] for g in opt.param_groups] if cfg.early_layers else cfg.lr   # each group its own peak
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return torch.optim.lr_scheduler.LinearLR(opt, start_factor=WARMUP_START, total_iters=steps_per_epoch)


def train_epoch(model, loader, opt, sched, loss_fn, cfg, device, bar=None, step_schedule=True) -> dict:
    """One pass over `loader` (at most cfg.max_batches batches); reads the device back once, at the end."""
    model.train()
    n_steps = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    loss_sum, grad_sum, n_grad = torch.zeros((), device=device), 0, 0
    ys, preds = [], []
    start = time.perf_counter()
    for step, (x, y) in enumerate(itertools.islice(loader, n_steps)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, cfg.amp):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step % GRAD_EVERY == 0:
            grad_sum, n_grad = grad_sum + layer_grad_norms(model), n_grad + 1
        if cfg.clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if step_schedule:
            sched.step()
        loss_sum += loss.detach()
        ys.append(y)
        preds.append(logits.detach().argmax(1))
        if bar is not None:
            bar.update()
    y, pred = torch.cat(ys).cpu().numpy(), torch.cat(preds).cpu().numpy()  # the epoch's one sync
    seconds = time.perf_counter() - start
    m = metrics(y, pred, model.n_classes, cfg.scored)
    return {"train_loss": loss_sum.item() / n_steps, "train_acc": m["acc"], "train_f1": m["macro_f1"],
            "train_score": m["score"],
            "grad_norms": dict(zip(layer_names(model), (grad_sum / n_grad).tolist())),
            "seconds": seconds, "samples_per_s": len(y) / seconds}


def train(model, train_ds, val_ds, cfg: TrainConfig | None = None, test_ds=None) -> TrainResult:
    """Train `model` (an ecglib.models.EcgModel) with AdamW and early stopping on the validation score.

    history rows: epoch, lr (at the epoch's start), train_loss (the weighted training objective), train_acc,
    train_f1, train_score, val_loss (unweighted cross-entropy), val_acc, val_f1, val_score, grad_norms
    {"layers.i": mean L2 norm of that layer's gradients, before clipping, over every GRAD_EVERY-th step},
    seconds and samples_per_s of the training pass. The model is left at its best weights, on the device.
    """
    cfg = cfg or TrainConfig()
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    model.to(device)
    loader = make_loader(train_ds, cfg.batch_size, device, shuffle=True, seed=cfg.seed)
    if len(loader) == 0:
        raise ValueError("train: the training dataset is empty")
    steps = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    weight = class_weights(train_ds, model.n_classes).to(device) if cfg.class_weighted else None
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, cfg.epochs * steps, steps)
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=LR_FACTOR, patience=LR_PATIENCE)
               if cfg.schedule == "plateau" else None)

    def loss_fn(logits, y):
        return F.cross_entropy(logits, y, weight=weight)

    history, best_score, best_epoch, best_state, diverged_epoch = [], -math.inf, 0, None, None
    start = time.perf_counter()
    bar = tqdm(total=cfg.epochs * steps, desc=f"{getattr(model, 'family', 'model')}", disable=not cfg.progress,
               leave=False)
    for epoch in range(1, cfg.epochs + 1):
        lr = opt.param_groups[0]["lr"]
        # plateau: the per-step scheduler is the warm-up, which ends with the first epoch
        row = train_epoch(model, loader, opt, sched, loss_fn, cfg, device, bar,
                          step_schedule=plateau is None or epoch == 1)
        val = evaluate(model, val_ds, device=device, amp=cfg.amp, scored=cfg.scored)
        history.append({"epoch": epoch, "lr": lr, "train_loss": row["train_loss"], "train_acc": row["train_acc"],
                        "train_f1": row["train_f1"], "train_score": row["train_score"], "val_loss": val["loss"],
                        "val_acc": val["acc"], "val_f1": val["macro_f1"], "val_score": val["score"],
                        "grad_norms": row["grad_norms"], "seconds": row["seconds"],
                        "samples_per_s": row["samples_per_s"]})
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_score=f"{val['score']:.3f}")
        if not (math.isfinite(row["train_loss"]) and math.isfinite(val["loss"])):
            diverged_epoch = epoch
            break
        # NaN scores (nothing to score) never count as an improvement
        if val["score"] > best_score or best_state is None:
            best_score, best_epoch = val["score"], epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif cfg.patience is not None and epoch - best_epoch >= cfg.patience:
            break
        if plateau is not None and math.isfinite(val["score"]):
            plateau.step(val["score"])
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
        val = evaluate(model, val_ds, device=device, amp=cfg.amp, scored=cfg.scored)
        test = evaluate(model, test_ds, device=device, amp=cfg.amp, scored=cfg.scored) if test_ds is not None else None
    else:  # diverged in the first epoch: there are no finite weights to evaluate
        val = _nan_metrics(model.n_classes)
        test = _nan_metrics(model.n_classes) if test_ds is not None else None
    return TrainResult(history=history, best_epoch=best_epoch, diverged=diverged_epoch is not None,
                       diverged_epoch=diverged_epoch,
                       converged=converged(history, best_epoch, cfg.patience, diverged_epoch is not None),
                       device=str(device), seconds=time.perf_counter() - start, val=val, test=test)


def _nan_metrics(n_classes):
    return {"loss": math.nan, **metrics(np.zeros(0, int), np.zeros(0, int), n_classes)}
