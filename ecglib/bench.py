"""`python -m ecglib bench`: is the training loop as fast as a bare PyTorch loop?

A CNN, an LSTM and the conv+LSTM hybrid each train on the same synthetic
ECG-shaped batches twice over: once through train.train, once through the
textbook loop below (same initial weights, batches, AdamW, one-cycle schedule,
class-weighted loss and clipping). Both report samples/s of one epoch; the two
loops alternate, and each keeps its best of REPEATS, so that neither one-time
warm-up costs nor a noisy neighbour on the machine pass for loop overhead.
The bar: loop_samples_per_s >= 0.95 * bare_samples_per_s.
"""
from __future__ import annotations

import copy
import json
import time

import torch
import torch.nn.functional as F

from ecglib import models, train

BATCH_SIZE = 64
SEQ_LEN = 1000     # 2.8 s at 360 Hz, 3.3 s at 300 Hz
N_CLASSES = 5
REPEATS = 5
STEPS = {"cpu": 6, "mps": 50, "cuda": 200}  # timed steps per epoch: enough for a stable timing
MODELS = {  # name -> (family, depth, options)
    "cnn": ("cnn", 8, {}),
    "lstm": ("lstm", 2, {}),
    "convlstm": ("convlstm", 2, {}),
}
BAR = 0.95


class Batches(torch.utils.data.TensorDataset):
    """Random ECG-shaped signals with random labels, read a batch at a time like ecglib.data.EcgDataset."""

    def __init__(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        super().__init__(torch.randn(n, 1, SEQ_LEN, generator=g), torch.randint(0, N_CLASSES, (n,), generator=g))
        self.n_classes = N_CLASSES

    def __getitems__(self, indices):
        x, y = self.tensors
        return x[indices], y[indices]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def bare_loop(model, ds, cfg, device) -> float:
    """The same training as train.train with nothing else: samples/s of its last epoch."""
    model.to(device).train()
    loader = train.make_loader(ds, cfg.batch_size, device, shuffle=True, seed=cfg.seed)
    weight = train.class_weights(ds, model.n_classes).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * len(loader))
    for _ in range(cfg.epochs):
        _sync(device)
        start = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with train.autocast(device, cfg.amp):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            opt.step()
            sched.step()
        _sync(device)
        seconds = time.perf_counter() - start
    return len(ds) / seconds


def run(device=None, steps=None, repeats=None) -> list[dict]:
    """Measure every model in MODELS; one dict per model."""
    device = train.pick_device(device)
    steps = steps or STEPS[device.type]
    repeats = repeats or REPEATS
    ds = Batches(steps * BATCH_SIZE)
    val = Batches(BATCH_SIZE, seed=1)
    cfg = train.TrainConfig(epochs=1, batch_size=BATCH_SIZE, schedule="onecycle", patience=None, progress=False,
                            device=str(device))
    rows = []
    for name, (family, depth, options) in MODELS.items():
        train.seed_everything(0)
        model = models.build_model(family, depth, in_channels=1, n_classes=N_CLASSES, **options)
        init = copy.deepcopy(model.state_dict())
        loop, bare = [], []
        for r in range(repeats):
            # alternate which loop goes first, so that a slow start or a busy neighbour hits both alike
            for which in (("loop", "bare") if r % 2 == 0 else ("bare", "loop")):
                model.load_state_dict(init)
                if which == "loop":
                    loop.append(train.train(model, ds, val, cfg).history[-1]["samples_per_s"])
                else:
                    bare.append(bare_loop(model, ds, cfg, device))
        rows.append({"model": name, "family": family, "depth": depth, "n_params": model.n_params,
                     "device": str(device), "batch_size": BATCH_SIZE, "seq_len": SEQ_LEN, "steps": steps,
                     "loop_samples_per_s": max(loop), "bare_samples_per_s": max(bare),
                     "ratio": max(loop) / max(bare)})
    return rows


def main(args) -> int:
    rows = run(device=args.device, steps=args.steps, repeats=getattr(args, "repeats", None))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<10} {'device':<7} {'loop samples/s':>15} {'bare samples/s':>15} {'ratio':>6}")
    for r in rows:
        flag = "" if r["ratio"] >= BAR else f"  below the {BAR} bar"
        print(f"{r['model']:<10} {r['device']:<7} {r['loop_samples_per_s']:>15.1f} "
              f"{r['bare_samples_per_s']:>15.1f} {r['ratio']:>6.3f}{flag}")
    return 0
