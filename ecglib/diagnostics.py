"""Measurements on models rather than on data: gradient flow across depth and time (one matrix, state_gradients),
input gradients for saliency, receptive fields (exact support and effective width), throughput, and a probe of
order sensitivity (shuffled segments).

Functions that differentiate a model in eval mode disable cuDNN while they do: cuDNN's RNN kernels
refuse a backward pass outside training mode.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from ecglib.train import autocast, layer_grad_norms, layer_names, pick_device


def _device_of(model):
    return next(model.parameters()).device


def _targets(logits, target):
    """Per-example class indices: one class for all (int) or a tensor [B] (e.g. the true labels); None means each
    example's predicted class, for inputs whose label is unknown."""
    if target is None:
        return logits.argmax(1)
    if isinstance(target, int):
        return torch.full((len(logits),), target, device=logits.device)
    return torch.as_tensor(target, device=logits.device).long()


def grad_norms_per_layer(model, x, y) -> dict[str, float]:
    """L2 norm of each of model.layers' parameter gradients after one backward pass of the (unweighted)
    cross-entropy on the batch (x, y), in training mode, e.g. at initialisation. Leaves no gradients behind."""
    device = _device_of(model)
    was_training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x.to(device)), y.to(device)).backward()
    norms = dict(zip(layer_names(model), layer_grad_norms(model).tolist()))
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return norms


def strides(model) -> list[int]:
    """Input samples per position of each of model.layers' outputs: 2**(poolings before the layer) in a conv
    trunk (tcn: 1), the front end's pooling in convlstm, 1 in a pure recurrent stack."""
    if hasattr(model, "pool_after"):
        return [2 ** sum(p < i for p in model.pool_after) for i in range(len(model.layers))]
    pool = 1 if model.front is None else model.front[-1].kernel_size
    return [pool[0] if isinstance(pool, tuple) else pool] * len(model.layers)


class _Unrolled(torch.nn.Module):
    """A copy of one unidirectional nn.RNN/LSTM/GRU layer, run step by step, with a zero added to its state h_t at
    every step. The gradient of that zero is the full d loss / d h_t: through the layers above AND through the
    layer's own later steps. (The output tensor of the fused layer only sees the first path: its recurrence
    works on an internal copy of h_t.)"""

    def __init__(self, layer):
        super().__init__()
        if layer.bidirectional or layer.num_layers != 1:
            raise ValueError("state_gradients needs unidirectional one-layer recurrent modules")
        kind = {torch.nn.LSTM: torch.nn.LSTMCell, torch.nn.GRU: torch.nn.GRUCell}.get(type(layer), torch.nn.RNNCell)
        extra = {"nonlinearity": layer.nonlinearity} if kind is torch.nn.RNNCell else {}
        self.cell = kind(layer.input_size, layer.hidden_size, bias=layer.bias, **extra).to(layer.weight_ih_l0)
        self.cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
        self.lstm = kind is torch.nn.LSTMCell
        self.probe = None

    def forward(self, x):   # x [B, L, C] (batch_first) -> ([B, L, H], None)
        b, length = x.shape[:2]
        self.probe = torch.zeros(b, length, self.cell.hidden_size, dtype=x.dtype, requires_grad=True)
        h = x.new_zeros(b, self.cell.hidden_size)
        c = h.clone()
        out = []
        for t in range(length):
            if self.lstm:
                h, c = self.cell(x[:, t], (h, c))
            else:
                h = self.cell(x[:, t], h)
            h = h + self.probe[:, t]
            out.append(h)
        return torch.stack(out, 1), None


def state_gradients(model, x, y, readout: str | None = "last") -> np.ndarray:
    """|d loss / d h^l_t|: the gradient of the loss with respect to the hidden state h^l (the output of
    model.layers[l]) at each input sample t, as a [layers, L'] array for an input x [B, C, L] with labels y
    (L' <= L: see time).

    One measure across depth and time, so that both attenuations come from one matrix of one model:
    - loss: unweighted cross-entropy of the true labels, summed over the batch (each example's own gradient),
      read from the trunk's last position (readout="last", the default) whatever readout the model was built
      with: this is Pascanu et al.'s (2013) dE_T / dh_t, and the matrix's last column is then the path across
      layers only and its last row the path across time only. A pooled readout (readout=None keeps the
      model's own) feeds the loss into every step directly, so its rows show no decay whatever the recurrence
      does;
    - size: the root mean square over the layer's units and the batch (L2 norm / sqrt(units)), so a wider
      layer does not look stronger;
    - time: a recurrent layer has one state per step of its input; a conv layer after k 2x poolings has one
      position per s = 2**k input samples (convlstm's LSTM layers: s = its pool). Input sample t reads position
      min(t // s, positions - 1), and the value is divided by s: a pooled position's gradient spread evenly
      over the s samples it averages (exactly what average pooling's backward pass does), so pooling by itself
      neither adds nor removes gradient;
      x is first cut at its start to a multiple of the largest stride, so that every sample left reaches
      every layer (pooling drops a remainder at the end) and the last column lies on the readout's path;
    - precision: float64 on the CPU, on a deep copy of the model: in float32 a gradient below ~1e-7 of the
      largest one is rounding noise, and decay across long sequences goes far below that;
    - mode: training mode (batch norm normalises by the batch, as in training) with dropout off.
    The model itself is left untouched.
    """
    m = copy.deepcopy(model).double().cpu().train()
    if readout == "last":
        m.readout = lambda h: h[:, :, -1]   # on the copy only: an instance attribute shadows the method
    elif readout is not None:
        raise ValueError(f"readout={readout!r} is invalid; it must be 'last' or None (the model's own)")
    for module in m.modules():
        if isinstance(module, torch.nn.Dropout):
            module.eval()
    states = []

    def keep(layer, inputs, output):   # a conv layer's output is its state: nothing else reads it
        output.retain_grad()
        states.append(output)

    for i, layer in enumerate(m.layers):
        if isinstance(layer, torch.nn.RNNBase):
            m.layers[i] = _Unrolled(layer)
        else:
            layer.register_forward_hook(keep)
    x = x[..., x.shape[-1] % max(strides(m)):]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # thousands of tiny per-step ops: thread hand-offs would cost more than the work
    try:
        logits = m(x.detach().cpu().double())
        F.cross_entropy(logits, torch.as_tensor(y).long().cpu(), reduction="sum").backward()
    finally:
        torch.set_num_threads(threads)
    grads = [layer.probe.grad.transpose(1, 2) if isinstance(layer, _Unrolled) else states.pop(0).grad
             for layer in m.layers]   # each [B, units, positions]
    length = x.shape[-1]
    rows = []
    for g, s in zip(grads, strides(m)):
        rms = g.pow(2).mean((0, 1)).sqrt().numpy() / s
        rows.append(rms[np.minimum(np.arange(length) // s, len(rms) - 1)])
    return np.stack(rows)


def input_gradient(model, x, target=None) -> torch.Tensor:
    """|d logit_target / d x| per example, channel and sample: [B, C, L] on the CPU (eval mode).
    target: None (each example's predicted class), a class index, or one class per example."""
    device = _device_of(model)
    was_training = model.training
    model.eval()
    x = x.detach().to(device).float().requires_grad_(True)
    with torch.backends.cudnn.flags(enabled=False):
        logits = model(x)
        logits.gather(1, _targets(logits, target)[:, None]).sum().backward()
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return x.grad.abs().cpu()


def input_time_gradient(model, x, target=None) -> np.ndarray:
    """Mean |d logit_target / d x_t| over the batch (and channels) at each input sample t: [L].
    How much each moment of the input moves the decision: the gradient across time of claim C8."""
    return input_gradient(model, x, target).mean((0, 1)).numpy()


def _centre_gradient(model, length, fn, n, seed):
    """|d (sum over channels of fn(x)[:, :, centre]) / d x| summed over n random inputs, in float64 on the CPU
    (deep products of small weights would underflow float32). fn is a method name of the model."""
    m = copy.deepcopy(model).double().cpu().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m.in_channels, length, generator=g, dtype=torch.float64, requires_grad=True)
    h = getattr(m, fn)(x)
    h[:, :, h.shape[-1] // 2].sum().backward()
    return x.grad.abs().sum((0, 1)).numpy()


def measured_receptive_field(model, length: int, n: int = 16, seed: int = 0) -> int:
    """Number of input samples that the centre position of the conv trunk's output depends on: the support of
    its gradient with respect to a random input of `length` samples (n random inputs together, so that a ReLU
    closed on one input does not hide a sample). Uses model.conv_features: the whole trunk of a conv family,
    the conv front end of convlstm; pure recurrent families raise ValueError. Equals model.receptive_field
    when `length` is large enough for the field to fit around the centre."""
    return int((_centre_gradient(model, length, "conv_features", n, seed) > 0).sum())


def effective_receptive_field(model, length: int, mass: float = 0.95, n: int = 16, seed: int = 0) -> int:
    """Effective receptive field (after Luo et al., 2016): the width, in input samples, of the shortest window
    holding `mass` of the gradient magnitude |d features(x)[centre] / d x| (summed over channels and n random
    inputs, eval mode). Works for every family: for recurrent ones it is the span of input that the centre
    state effectively remembers."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass={mass!r} is invalid; it must be in (0, 1]")
    g = _centre_gradient(model, length, "features", n, seed)
    c = np.concatenate([[0.0], np.cumsum(g)])
    need = mass * c[-1]
    # for each start a, the first end b with c[b] - c[a] >= need; the shortest such window wins
    ends = np.searchsorted(c, c[:-1] + need * (1 - 1e-12), side="left")
    ok = ends <= len(g)
    return int((ends[ok] - np.arange(len(g))[ok]).min())


def throughput(model, seq_len: int, batch_size: int, device=None, steps: int = 10, warmup: int = 3,
               amp: bool = True) -> dict:
    """Training speed of forward + backward (no optimiser step) on random input [batch_size, C, seq_len],
    with the training loop's autocast. Times a copy of the model, so the model itself stays where it is."""
    device = pick_device(device) if device is not None else _device_of(model)
    m = copy.deepcopy(model).to(device).train()
    x = torch.randn(batch_size, m.in_channels, seq_len, device=device)
    y = torch.randint(0, m.n_classes, (batch_size,), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()

    for step in range(warmup + steps):
        if step == warmup:
            sync()
            start = time.perf_counter()
        m.zero_grad(set_to_none=True)
        with autocast(device, amp):
            logits = m(x)
        F.cross_entropy(logits.float(), y).backward()
    sync()
    seconds = (time.perf_counter() - start) / steps
    return {"samples_per_s": batch_size / seconds, "seconds_per_step": seconds}


def permute_segments(x, segment_len: int, generator=None):
    """x [B, ..., L] (tensor or array) with each example's time axis cut into segments of `segment_len`
    samples (the last one may be shorter) and the segments shuffled, independently per example.
    Local shape survives within a segment; order across segments is destroyed (claim C12).
    generator: a numpy Generator or a seed."""
    if not isinstance(segment_len, int) or segment_len < 1:
        raise ValueError(f"segment_len={segment_len!r} is invalid; it must be an integer >= 1")
    rng = np.random.default_rng(generator)
    length = x.shape[-1]
    segments = np.array_split(np.arange(length), range(segment_len, length, segment_len))
    idx = np.stack([np.concatenate([segments[j] for j in rng.permutation(len(segments))]) for _ in range(len(x))])
    idx = idx.reshape(len(x), *[1] * (x.ndim - 2), length)
    if isinstance(x, torch.Tensor):
        return torch.gather(x, -1, torch.from_numpy(idx).to(x.device).expand_as(x))
    return np.take_along_axis(x, idx, axis=-1)


_GATES = {torch.nn.LSTM: 4, torch.nn.GRU: 3, torch.nn.RNN: 1}


def flops_per_sample(model, length: int, in_channels: int = 1) -> int:
    """Multiply-adds x 2 of one forward pass on one input of `length` samples: the compute a matched-compute
    comparison matches. PyTorch's FlopCounterMode counts convolutions and matrix products, but sees into a
    recurrent layer only when its kernel decomposes (the CPU GRU does, the fused LSTM does not); so each
    recurrent layer is counted analytically instead, 2 * gates * hidden * (input + hidden) per step and
    direction, over the steps it actually ran (after any pooling in front of it)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = copy.deepcopy(model).cpu().eval()
    analytic = {}

    def count(name):
        def hook(module, args, _out):
            x = args[0]
            steps = x.shape[1] if module.batch_first else x.shape[0]
            per_step = 0
            for layer in range(module.num_layers):
                inp = module.input_size if layer == 0 else module.hidden_size * (2 if module.bidirectional else 1)
                per_step += _GATES[type(module)] * module.hidden_size * (inp + module.hidden_size)
            analytic[name] = 2 * per_step * steps * (2 if module.bidirectional else 1)
        return hook

    root = type(model).__name__
    hooks = [m.register_forward_hook(count(f"{root}.{n}")) for n, m in model.named_modules() if type(m) in _GATES]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, length))
    finally:
        for h in hooks:
            h.remove()
    seen = counter.get_flop_counts()
    inside = sum(sum(seen.get(name, {}).values()) for name in analytic)   # what the counter saw of them
    return int(counter.get_total_flops() - inside + sum(analytic.values()))
