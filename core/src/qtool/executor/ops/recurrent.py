"""Recurrent layers: LSTM, GRU and RNN (every direction, layout, sequence_lens, clip and activation of the spec)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._common import optional_input
from .registry import op_impl

Activation = Callable[[torch.Tensor], torch.Tensor]

# name -> (alpha default, beta default, function of (x, alpha, beta)); a None default: the function takes none.
# The defaults are onnxruntime's (rnn_helpers.cc): 0 for Affine, ScaledTanh and ThresholdedRelu, where the spec's
# operators of those names default alpha to 1.
_ACTIVATIONS: dict[str, tuple[float | None, float | None, Callable]] = {
    "relu": (None, None, lambda x, a, b: torch.relu(x)),
    "tanh": (None, None, lambda x, a, b: torch.tanh(x)),
    "sigmoid": (None, None, lambda x, a, b: torch.sigmoid(x)),
    "affine": (0.0, 0.0, lambda x, a, b: x * a + b),
    "leakyrelu": (0.01, None, lambda x, a, b: F.leaky_relu(x, a)),
    "thresholdedrelu": (0.0, None, lambda x, a, b: torch.where(x > a, x, torch.zeros_like(x))),
    "scaledtanh": (0.0, 0.0, lambda x, a, b: a * torch.tanh(b * x)),
    "hardsigmoid": (0.2, 0.5, lambda x, a, b: torch.clamp(x * a + b, 0, 1)),
    "elu": (1.0, None, lambda x, a, b: F.elu(x, a)),
    "softsign": (None, None, lambda x, a, b: F.softsign(x)),
    "softplus": (None, None, lambda x, a, b: F.softplus(x)),
}


def _activations(attrs: dict, defaults: tuple[str, ...], num_directions: int) -> list[list[Activation]]:
    """Per direction, the layer's activation functions; alphas and betas go in order to those that take them."""
    names = attrs.get("activations") or list(defaults) * num_directions
    if len(names) != len(defaults) * num_directions:
        raise ValueError(f"{len(names)} activations given, {len(defaults) * num_directions} expected")
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    functions = []
    for name in names:
        try:
            alpha, beta, fn = _ACTIVATIONS[name.lower()]
        except KeyError:
            raise ValueError(f"unknown recurrent activation {name!r}") from None
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        functions.append(lambda x, fn=fn, alpha=alpha, beta=beta: fn(x, alpha, beta))
    k = len(defaults)
    return [functions[d * k:(d + 1) * k] for d in range(num_directions)]


@dataclass(frozen=True)
class _Layer:
    """What every recurrent op shares: directions, layout, clip, sequence lengths, initial states."""

    x: torch.Tensor  # [seq, batch, input]
    w: torch.Tensor  # [dirs, gates * hidden, input]
    r: torch.Tensor  # [dirs, gates * hidden, hidden]
    b: torch.Tensor  # [dirs, 2 * gates * hidden]: input biases, then recurrence biases (zeros when absent)
    seq_lens: torch.Tensor | None  # [batch]
    directions: tuple[bool, ...]  # per direction: reversed?
    clip: float | None
    layout: int

    @property
    def hidden(self) -> int:
        return self.r.shape[-1]

    def initial(self, state: torch.Tensor | None, hidden: int) -> torch.Tensor:
        """[num_directions, batch, hidden], zeros when absent."""
        if state is None:
            return self.x.new_zeros(len(self.directions), self.x.shape[1], hidden)
        return state.transpose(0, 1) if self.layout == 1 else state

    def clipped(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.clip is None else torch.clamp(t, -self.clip, self.clip)

    def steps(self, reverse: bool):
        """(time index, mask [batch, 1] of the sequences still running or None) in processing order."""
        length = self.x.shape[0]
        for t in (reversed(range(length)) if reverse else range(length)):
            yield t, None if self.seq_lens is None else (t < self.seq_lens).unsqueeze(1)

    def output(self, y: torch.Tensor, finals: list[torch.Tensor]) -> list[torch.Tensor]:
        """Y [seq, dirs, batch, hidden] and final states [dirs, batch, hidden], in the op's layout; a sequence of
        length 0 ends in zero states, not its initial ones (as onnxruntime has it)."""
        if self.seq_lens is not None:
            finals = [torch.where((self.seq_lens > 0).unsqueeze(1), f, torch.zeros_like(f)) for f in finals]
        if self.layout == 1:
            return [y.permute(2, 0, 1, 3), *(f.transpose(0, 1) for f in finals)]
        return [y, *finals]


def _layer(attrs: dict, inputs: list, gates: int) -> _Layer:
    x, w, r = inputs[0], inputs[1], inputs[2]
    layout = attrs.get("layout", 0)
    if layout == 1:
        x = x.transpose(0, 1)
    direction = attrs.get("direction", "forward")
    directions = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}.get(direction)
    if directions is None:
        raise ValueError(f"unknown direction {direction!r}")
    seq_lens = optional_input(inputs, 4)
    if seq_lens is not None and bool(((seq_lens < 0) | (seq_lens > x.shape[0])).any()):
        raise ValueError(f"sequence_lens {seq_lens.tolist()} holds values outside [0, {x.shape[0]}] (the sequence "
                         "length)")
    if seq_lens is not None and bool((seq_lens == x.shape[0]).all()):
        seq_lens = None  # every sequence runs to the end: no masking needed
    b = optional_input(inputs, 3)
    if b is None:
        b = w.new_zeros(len(directions), 2 * gates * r.shape[-1])
    return _Layer(x, w, r, b, None if seq_lens is None else seq_lens.to(torch.int64), directions, attrs.get("clip"),
                  layout)


def _keep(mask: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where the sequence still runs, ``old`` where it has ended."""
    return new if mask is None else torch.where(mask, new, old)


def _emitted(mask: torch.Tensor | None, h: torch.Tensor) -> torch.Tensor:
    return h if mask is None else torch.where(mask, h, torch.zeros_like(h))


def _scan(layer: _Layer, initial: list[torch.Tensor], step) -> list[torch.Tensor]:
    """Run ``step(d, t, states) -> new states`` (hidden first) over every direction; Y and the final states."""
    ys, finals = [], []
    for d, reverse in enumerate(layer.directions):
        states, y = [s[d] for s in initial], [None] * layer.x.shape[0]
        for t, mask in layer.steps(reverse):
            new = step(d, t, states)
            states = [_keep(mask, n, old) for n, old in zip(new, states, strict=True)]
            y[t] = _emitted(mask, new[0])
        ys.append(torch.stack(y))
        finals.append(states)
    return layer.output(torch.stack(ys, 1), [torch.stack([f[i] for f in finals]) for i in range(len(initial))])


def _projected(layer: _Layer, bias: torch.Tensor) -> list[torch.Tensor]:
    """Per direction, X W' + bias for every step at once."""
    return [torch.matmul(layer.x, layer.w[d].t()) + bias[d] for d in range(len(layer.directions))]


@op_impl("LSTM")
def lstm(ctx, attrs, inputs):
    """Gates in order i, o, f, c; peepholes P in order i, o, f; ``input_forget`` couples f = 1 - i."""
    layer = _layer(attrs, inputs, 4)
    r, b, hidden, dirs = layer.r, layer.b, layer.hidden, len(layer.directions)
    xw = _projected(layer, b[:, :4 * hidden] + b[:, 4 * hidden:])
    p = optional_input(inputs, 7)
    peepholes = [(None, None, None) if p is None else p[d].split(hidden) for d in range(dirs)]
    acts = _activations(attrs, ("Sigmoid", "Tanh", "Tanh"), dirs)
    couple = bool(attrs.get("input_forget", 0))

    def step(d, t, states):
        h, c = states
        f, g, h_act = acts[d]
        pi, po, pf = peepholes[d]
        gi, go, gf, gc = (xw[d][t] + h @ r[d].t()).split(hidden, dim=-1)
        if pi is not None:
            gi, gf = gi + pi * c, gf + pf * c
        i = f(layer.clipped(gi))
        forget = 1 - i if couple else f(layer.clipped(gf))
        c_new = forget * c + i * g(layer.clipped(gc))
        if po is not None:
            go = go + po * c_new
        return [f(layer.clipped(go)) * h_act(c_new), c_new]

    initial = [layer.initial(optional_input(inputs, 5), hidden), layer.initial(optional_input(inputs, 6), hidden)]
    return _scan(layer, initial, step)[:ctx.num_outputs]


@op_impl("GRU")
def gru(ctx, attrs, inputs):
    """Gates in order z, r, h; ``linear_before_reset`` applies the reset gate after the recurrence product."""
    layer = _layer(attrs, inputs, 3)
    r, b, hidden, dirs = layer.r, layer.b, layer.hidden, len(layer.directions)
    xw = _projected(layer, b[:, :3 * hidden])
    rb = b[:, 3 * hidden:]
    acts = _activations(attrs, ("Sigmoid", "Tanh"), dirs)
    linear_before_reset = bool(attrs.get("linear_before_reset", 0))

    def step(d, t, states):
        (h,) = states
        f, g = acts[d]
        xz, xr, xh = xw[d][t].split(hidden, dim=-1)
        hz, hr = (h @ r[d, :2 * hidden].t() + rb[d, :2 * hidden]).split(hidden, dim=-1)
        z, reset = f(layer.clipped(xz + hz)), f(layer.clipped(xr + hr))
        rh, rbh = r[d, 2 * hidden:], rb[d, 2 * hidden:]
        if linear_before_reset:
            candidate = xh + reset * (h @ rh.t() + rbh)
        else:
            candidate = xh + (reset * h) @ rh.t() + rbh
        return [(1 - z) * g(layer.clipped(candidate)) + z * h]

    return _scan(layer, [layer.initial(optional_input(inputs, 5), hidden)], step)[:ctx.num_outputs]


@op_impl("RNN")
def rnn(ctx, attrs, inputs):
    """H = f(X W' + H R' + Wb + Rb), f Tanh unless ``activations`` says otherwise."""
    layer = _layer(attrs, inputs, 1)
    r, b, hidden, dirs = layer.r, layer.b, layer.hidden, len(layer.directions)
    xw = _projected(layer, b[:, :hidden] + b[:, hidden:])
    acts = _activations(attrs, ("Tanh",), dirs)

    def step(d, t, states):
        (h,) = states
        return [acts[d][0](layer.clipped(xw[d][t] + h @ r[d].t()))]

    return _scan(layer, [layer.initial(optional_input(inputs, 5), hidden)], step)[:ctx.num_outputs]
