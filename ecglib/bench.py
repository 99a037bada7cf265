"""`python -m ecglib bench`: is the training loop as fast as a bare PyTorch loop?

A CNN, an LSTM and the conv+LSTM hybrid each train on the same synthetic
ECG-shaped batches twice over: once through train.train, once through the
textbook loop below (same initial weights, batches, AdamW, one-cycle schedule,
class-weighted loss and clipping). Both report samples/s of one epoch. On a shared machine one timing
is noise (three single runs here once gave worst ratios of 0.84, 0.89 and 1.23), so the two loops are
timed in REPEATS interleaved pairs, alternating which goes first, and each pair gives one ratio
loop / bare measured under the same conditions. The report is the median ratio with the lowest and
highest pair (and the median samples/s of each loop). The bar: median ratio >= 0.95.
"""
from __future__ import annotations

import copy
import json
import time

import numpy as np
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

    def __init__(self, n, seed=0, seq_len=None):
        g = torch.Generator().manual_seed(seed)
        super().__init__(torch.randn(n, 1, seq_len or SEQ_LEN, generator=g),
                         torch.randint(0, N_CLASSES, (n,), generator=g))
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


def run(device=None, steps=None, repeats=None, seq_len=None) -> list[dict]:
    """Measure every model in MODELS; one dict per model."""
    device = train.pick_device(device)
    steps = steps or STEPS[device.type]
    repeats = repeats or REPEATS
    seq_len = seq_len or SEQ_LEN   # a recurrent layer's cost grows with it, a conv trunk's too
    ds = Batches(steps * BATCH_SIZE, seq_len=seq_len)
    val = Batches(BATCH_SIZE, seed=1, seq_len=seq_len)
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
        ratios = np.array(loop) / np.array(bare)   # pair r: both timed back to back
        rows.append({"model": name, "family": family, "depth": depth, "n_params": model.n_params,
                     "device": str(device), "batch_size": BATCH_SIZE, "seq_len": seq_len, "steps": steps,
                     "repeats": repeats, "loop_samples_per_s": float(np.median(loop)),
                     "bare_samples_per_s": float(np.median(bare)), "ratio": float(np.median(ratios)),
                     "ratio_low": float(ratios.min()), "ratio_high": float(ratios.max())})
    return rows


def main(args) -> int:
    rows = run(device=args.device, steps=args.steps, repeats=getattr(args, "repeats", None),
               seq_len=getattr(args, "seq_len", None))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<10} {'device':<7} {'length':>6} {'loop samples/s':>15} {'bare samples/s':>15} "
          f"{'ratio (median [min, max] of pairs)':>36}")
    for r in rows:
        flag = "" if r["ratio"] >= BAR else f"  below the {BAR} bar"
        spread = f"{r['ratio']:.3f} [{r['ratio_low']:.3f}, {r['ratio_high']:.3f}]"
        print(f"{r['model']:<10} {r['device']:<7} {r['seq_len']:>6} {r['loop_samples_per_s']:>15.1f} "
              f"{r['bare_samples_per_s']:>15.1f} {spread:>36}{flag}")
    return 0
