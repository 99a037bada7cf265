"""Every model family of the book, built by one factory.

    model = build_model("lstm", depth=4, width=64, in_channels=1, n_classes=5)
    logits = model(x)            # x [B, C, L] -> [B, n_classes]

`depth` always counts the stacked layers the book varies: conv layers for the
conv families, recurrent layers for the recurrent ones (convlstm included; its
conv front end is fixed by its options). `model.layers` holds exactly those
layers, in order, so that gradient norms can be read per layer.

Conv trunks pool with 2x *average* pooling rather than max pooling: the gradient
of an average reaches every input sample, so the receptive field measured from
gradients (diagnostics.measured_receptive_field) equals the analytical one.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn as nn

FAMILIES = {
    "cnn": "plain CNN: conv, batch norm, ReLU per layer; 2x average pooling at most 4 times",
    "rescnn": "1D ResNet: the cnn's layers with an identity skip around every pair after the stem",
    "tcn": "dilated CNN (TCN style): dilation doubles per layer (1..128, then repeats), a skip per layer, no pooling",
    "glucnn": "gated CNN: the cnn with GLU units, conv to 2*width channels then a*sigmoid(b)",
    "rnn": "stacked vanilla tanh RNN",
    "lstm": "stacked LSTM",
    "gru": "stacked GRU",
    "reslstm": "residual-stacked LSTM: one nn.LSTM per layer, x + layer(x) from the second layer on",
    "convlstm": "hybrid: conv + pooling front end shortening the sequence, then `depth` LSTM layers",
}
CONV_FAMILIES = ["cnn", "rescnn", "tcn", "glucnn"]
RECURRENT_FAMILIES = ["rnn", "lstm", "gru", "reslstm", "convlstm"]  # depth counts recurrent layers

_CONV_OPTIONS = {"kernel_size": 7, "dropout": 0.0, "readout": "mean"}
_RNN_OPTIONS = {"dropout": 0.0, "bidirectional": False, "readout": "mean"}
# Gated recurrent families start with a positive forget-gate bias (Jozefowicz et al. 2015): the state is kept
# by default, so gradients through time do not vanish before training has begun.
_GATED = {"forget_bias": 1.0}
# The options each family accepts, with their defaults.
OPTIONS = {
    **{f: _CONV_OPTIONS for f in CONV_FAMILIES},
    "rnn": _RNN_OPTIONS,
    **{f: {**_RNN_OPTIONS, **_GATED} for f in ["lstm", "gru", "reslstm"]},
    "convlstm": {**_RNN_OPTIONS, **_GATED, "kernel_size": 7, "conv_depth": 2, "pool": 8},
}
# Normalisation, to build the families alike where a claim is about the family and not its trimmings: None keeps
# each family's own (batch norm in conv layers, none between recurrent layers); "none" drops the conv trunk's batch
# norm (with He initialisation and conv biases, the usual recipe without it); "layer" puts a LayerNorm before
# every recurrent layer after the first (between layers; pre-norm in reslstm, so its skips stay identities).
NORM_KINDS = ("batch", "layer", "none")
NORMS = {f: ("batch", "none") if f in CONV_FAMILIES else ("none", "layer") for f in FAMILIES}
for _f in FAMILIES:
    OPTIONS[_f] = {**OPTIONS[_f], "norm": None}
# How the trunk's output sequence [B, C, L'] becomes one vector: the last step (recurrent only: a conv trunk's
# last step sees only its receptive field), or the mean or max over time.
READOUTS = ["last", "mean", "max"]
CONV_READOUTS = ["mean", "max"]
MAX_POOLS = 4      # conv trunks downsample at most 2**4 = 16x, so depth 1..32 runs on inputs of 64+ samples
TCN_CYCLE = 8      # tcn dilations 1, 2, ..., 128, 1, 2, ... (WaveNet-style repeats keep padding bounded)


def receptive_field(ops: list[tuple[int, int]]) -> int:
    """Receptive field of a chain of (kernel, stride) ops, in input samples (Araujo et al., 2019):
    r = 1 + sum_l (k_l - 1) * prod_{i<l} s_i. A dilated kernel counts as d(k-1)+1, a pooling layer as k=s=pool."""
    r, jump = 1, 1
    for k, s in ops:
        r += (k - 1) * jump
        jump *= s
    return r


def pool_after(depth: int) -> list[int]:
    """Indices of the conv layers followed by 2x pooling: at most MAX_POOLS, spread evenly, at even indices
    other than the last, so that they fall between rescnn's residual pairs (1-2, 3-4, ...)."""
    ends = list(range(0, depth - 1, 2))
    n = min(MAX_POOLS, len(ends))
    return [ends[j * len(ends) // n] for j in range(n)]


class ConvLayer(nn.Module):
    """conv -> batch norm -> ReLU (or GLU) -> dropout: one layer of every conv trunk."""

    def __init__(self, c_in, c_out, kernel_size, dilation=1, gated=False, dropout=0.0, batch_norm=True):
        super().__init__()
        c_conv = 2 * c_out if gated else c_out  # GLU halves the channels: a * sigmoid(b)
        self.conv = nn.Conv1d(c_in, c_conv, kernel_size, padding="same", dilation=dilation, bias=not batch_norm)
        self.norm = nn.BatchNorm1d(c_conv) if batch_norm else nn.Identity()
        if not batch_norm:   # He et al. 2015: keeps the activations' scale through a deep ReLU stack without BN
            nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")
            nn.init.zeros_(self.conv.bias)
        self.act = nn.GLU(dim=1) if gated else nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.act(self.norm(self.conv(x))))


def pool_time(h, kind):
    """[B, C, L] -> [B, C]: global average or max pooling over time."""
    return h.amax(-1) if kind == "max" else h.mean(-1)


def set_forget_bias(cell: nn.Module, value: float) -> None:
    """Set the gate bias that keeps the state to `value` (input-side bias; the hidden-side one to 0), in both
    directions: the LSTM forget gate, or the GRU update gate z (h' = (1 - z) n + z h, so z -> 1 keeps h)."""
    width = cell.hidden_size
    gate = 1  # gate order: LSTM i, f, g, o; GRU r, z, n: the second block either way
    with torch.no_grad():
        for name, p in cell.named_parameters():
            if name.startswith("bias_ih"):
                p[gate * width:(gate + 1) * width].fill_(value)
            elif name.startswith("bias_hh"):
                p[gate * width:(gate + 1) * width].zero_()


class EcgModel(nn.Module):
    """What every family shares: x [B, C, L] -> features [B, C', L'] -> readout [B, C'] -> logits."""

    family: str
    layers: nn.ModuleList
    receptive_field: int | None

    def forward(self, x):
        return self.head(self.readout(self.features(x)))

    def _finish(self, family, in_channels, n_classes):
        self.family, self.in_channels, self.n_classes = family, in_channels, n_classes
        self.n_params = sum(p.numel() for p in self.parameters())


class ConvNet(EcgModel):
    """cnn, rescnn, tcn and glucnn: one trunk of ConvLayers that differ only in skips, gating and dilation,
    so that comparing two families at equal depth isolates one design choice."""

    def __init__(self, family, depth, width, in_channels, n_classes, kernel_size=7, dropout=0.0, readout="mean",
                 norm=None):
        super().__init__()
        tcn = family == "tcn"
        self.readout_kind = readout
        self.layers = nn.ModuleList(
            ConvLayer(in_channels if i == 0 else width, width, kernel_size,
                      dilation=2 ** (i % TCN_CYCLE) if tcn else 1, gated=family == "glucnn", dropout=dropout,
                      batch_norm=norm != "none")
            for i in range(depth)
        )
        # Groups of layers that one skip spans. The stem (layer 0) changes the channel count, so it never has one.
        size = 2 if family == "rescnn" else 1
        self.blocks = [[0]] + [list(range(i, min(i + size, depth))) for i in range(1, depth, size)]
        self.residual = family in ("rescnn", "tcn")
        self.pool_after = [] if tcn else pool_after(depth)
        self.pool = nn.AvgPool1d(2)
        self.head = nn.Linear(width, n_classes)
        ops = []
        for i, layer in enumerate(self.layers):
            ops.append((layer.conv.dilation[0] * (kernel_size - 1) + 1, 1))
            if i in self.pool_after:
                ops.append((2, 2))
        self.receptive_field = receptive_field(ops)
        self._finish(family, in_channels, n_classes)

    def features(self, x):
        for block in self.blocks:
            out = x
            for i in block:
                out = self.layers[i](out)
            x = x + out if self.residual and block[0] > 0 else out
            if block[-1] in self.pool_after:
                x = self.pool(x)
        return x

    conv_features = features

    def readout(self, h):
        return pool_time(h, self.readout_kind)


class RecurrentNet(EcgModel):
    """rnn, lstm, gru, reslstm and convlstm: one nn.RNN/LSTM/GRU per layer (not one multi-layer module) so that
    skips and per-layer gradient norms are possible; dropout between layers, as nn.LSTM(dropout=p) does."""

    def __init__(self, family, depth, width, in_channels, n_classes, dropout=0.0, bidirectional=False,
                 readout="mean", forget_bias=None, kernel_size=7, conv_depth=2, pool=8, norm=None):
        super().__init__()
        self.front = None
        self.receptive_field = None
        c_in = in_channels
        if family == "convlstm":
            self.front = nn.Sequential(
                *[ConvLayer(in_channels if i == 0 else width, width, kernel_size, dropout=dropout)
                  for i in range(conv_depth)],
                nn.AvgPool1d(pool),
            )
            self.receptive_field = receptive_field([(kernel_size, 1)] * conv_depth + [(pool, pool)])
            c_in = width
        cell = {"rnn": nn.RNN, "gru": nn.GRU}.get(family, nn.LSTM)
        dirs = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            cell(c_in if i == 0 else dirs * width, width, batch_first=True, bidirectional=bidirectional)
            for i in range(depth)
        )
        if forget_bias is not None:
            for layer in self.layers:
                set_forget_bias(layer, forget_bias)
        self.residual = family == "reslstm"
        # Built only when asked for: a model without it keeps its parameters, and so its seeded initialisation.
        if norm == "layer":
            self.norms = nn.ModuleList(nn.LayerNorm(dirs * width) for _ in range(depth - 1))
        self.drop = nn.Dropout(dropout)
        self.width, self.bidirectional, self.readout_kind = width, bidirectional, readout
        self.head = nn.Linear(dirs * width, n_classes)
        self._finish(family, in_channels, n_classes)

    def conv_features(self, x):
        if self.front is None:
            raise ValueError(f"{self.family} has no conv trunk: its receptive field is the whole input")
        return self.front(x)

    def features(self, x):
        h = (x if self.front is None else self.front(x)).transpose(1, 2)  # [B, L, C]: batch_first
        # Recurrences run in the weights' precision even under autocast: a state carried over thousands
        # of steps drifts in bfloat16, and not every RNN kernel has a bfloat16 version.
        with torch.autocast(h.device.type, enabled=False):
            h = h.to(next(self.layers.parameters()).dtype)
            for i, layer in enumerate(self.layers):
                x_in = h if i == 0 else self.drop(self.norms[i - 1](h) if hasattr(self, "norms") else h)
                out, _ = layer(x_in)
                h = h + out if self.residual and i > 0 else out
        return h.transpose(1, 2)

    def readout(self, h):
        if self.readout_kind != "last":
            return pool_time(h, self.readout_kind)
        if self.bidirectional:  # each direction's final state: forward at the end, backward at the start
            return torch.cat([h[:, : self.width, -1], h[:, self.width :, 0]], dim=1)
        return h[:, :, -1]


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_option(family, name, value):
    """Raise ValueError naming the option and its valid values if `value` is bad."""
    if name in ("kernel_size", "conv_depth", "pool"):
        ok, valid = _is_int(value) and value >= 1, "an integer >= 1"
    elif name == "dropout":
        ok, valid = isinstance(value, numbers.Real) and 0 <= value < 1, "a number in [0, 1)"
    elif name == "bidirectional":
        ok, valid = isinstance(value, bool), "True or False"
    elif name == "forget_bias":
        ok, valid = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
    elif name == "norm":
        ok, valid = value is None or value in NORMS[family], f"one of {list(NORMS[family])} or None"
    else:  # readout
        choices = CONV_READOUTS if family in CONV_FAMILIES else READOUTS
        ok, valid = value in choices, f"one of {choices}"
    if not ok:
        raise ValueError(f"{family}: option {name}={value!r} is invalid; it must be {valid}")


def build_model(family: str, depth: int, width: int = 32, in_channels: int = 1, n_classes: int = 5,
                **options) -> EcgModel:
    """Build one model of `family` with `depth` stacked layers. Every argument is checked before anything is
    built; OPTIONS[family] lists the options a family accepts and their defaults."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; valid families: {', '.join(FAMILIES)}")
    for name, value in [("depth", depth), ("width", width), ("in_channels", in_channels), ("n_classes", n_classes)]:
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid; it must be an integer >= 1")
    unknown = sorted(set(options) - set(OPTIONS[family]))
    if unknown:
        raise ValueError(f"{family} has no option {', '.join(unknown)}; valid options: "
                         f"{', '.join(f'{k} (default {v!r})' for k, v in OPTIONS[family].items())}")
    for name, value in options.items():
        _check_option(family, name, value)
    options = {**OPTIONS[family], **options}
    cls = ConvNet if family in CONV_FAMILIES else RecurrentNet
    return cls(family, int(depth), int(width), int(in_channels), int(n_classes), **options)


def width_for_params(family: str, depth: int, target_params: int, **kw) -> int:
    """The width whose model has the parameter count nearest `target_params` (the smaller width on a tie),
    for parameter-matched comparisons. `kw` goes to build_model (in_channels, n_classes, options).
    Candidate models are built on the meta device, so even huge widths cost no memory."""
    if not _is_int(target_params) or target_params < 1:
        raise ValueError(f"target_params={target_params!r} is invalid; it must be an integer >= 1")

    def n_params(width):
        with torch.device("meta"):
            return build_model(family, depth, width, **kw).n_params

    hi = 1
    while n_params(hi) < target_params:
        hi *= 2
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:  # smallest width with n_params >= target (n_params grows with width)
        mid = (lo + hi) // 2
        if n_params(mid) >= target_params:
            hi = mid
        else:
            lo = mid + 1
    if hi > 1 and target_params - n_params(hi - 1) <= n_params(hi) - target_params:
        return hi - 1
    return hi
