"""The spec's network on the reference layers: forward over the graph, backward in reverse, a trainer.

forward walks `spec.graph()` in order, keeping each node's layer cache on a tape and dropping a
node's output as soon as its last consumer has run. backward walks the tape in reverse: a tensor
that feeds several nodes (a U-Net skip feeds both a pool and a concat) gets the SUM of its
consumers' gradients, and Concat's backward splits the gradient along channels. Each cache and
each gradient is freed as soon as it has been used.

The trainer mirrors backends.torch_backend.model.TorchTrainer: F.cross_entropy(weight, ignore_index=255)
mean loss, BatchNorm in training mode during a step (running stats updated in place), evaluation mode
in predict, and optim.py's update rules (numerically torch.optim's SGD / SGD(momentum) / Adam).
The dtype (float32 or float64) is that of the parameters and input given to forward.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from cvtool.errors import UsageError
from cvtool.glibc_malloc import keep_freed_memory
from cvtool.model.fuse import ConvReLU, GraphNode, fold_batchnorm, fuse_relu
from cvtool.model.spec import (
    Activation,
    Add,
    BatchNorm2d,
    Concat,
    Conv2d,
    ConvTranspose2d,
    MaxPool2d,
    ModelSpec,
    check_params,
    trainable,
)
from cvtool.train.optim import OptimConfig, frozen_statistics, lr_scale
from cvtool_backends.numpy_fast import layers
from cvtool_backends.numpy_fast import optim as rules
from cvtool_backends.numpy_fast.activations import ReluCache
from cvtool_backends.numpy_fast.parallel import held, map_blocks, map_channels

IGNORE_INDEX = 255

# Each activation's cache has its own type (ReluCache, OutCache), read only by its own backward: Any stands for it.
_ACT_FORWARD: dict[str, Callable[[np.ndarray], tuple[np.ndarray, Any]]] = {
    "relu": layers.relu_forward, "relu6": layers.relu6_forward, "sigmoid": layers.sigmoid_forward,
    "tanh": layers.tanh_forward}
_ACT_BACKWARD: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {
    "relu": layers.relu_backward, "relu6": layers.relu6_backward, "sigmoid": layers.sigmoid_backward,
    "tanh": layers.tanh_backward}


class Tape(NamedTuple):
    """What backward needs: the nodes in graph order and each one's layer cache (name -> cache)."""

    nodes: Sequence[GraphNode]
    caches: dict[str, Any]


def _last_use(nodes: Sequence[GraphNode]) -> dict[str, int]:
    """Node name -> index of its last consumer (the graph output is never consumed)."""
    last: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for src in n.inputs:
            last[src] = i
    return last


# ReLU after BN (or a conv) is the commonest pair: its input has no other consumer and no cache holds
# it, so the ReLU may overwrite it, and its backward may overwrite its (fresh) dout. out > 0 exactly
# where x > 0, so the cache keeps the output, which the next conv caches anyway: one tensor, not two.
# (2-7x faster than the out-of-place layers on big tensors; a NaN in dout stays NaN, torch zeroes it.)

def _relu_inplace_forward(x: np.ndarray) -> tuple[np.ndarray, ReluCache]:
    if not x.flags.c_contiguous:  # a flat view would be a copy: do it in one piece
        np.maximum(x, 0, out=x)
        return x, ReluCache(x)
    flat = x.reshape(-1)
    map_blocks(lambda a, b: np.maximum(flat[a:b], 0, out=flat[a:b]), _chunks(flat.size, x.itemsize))
    return x, ReluCache(x)


def _relu_inplace_backward(dout: np.ndarray, cache: ReluCache) -> np.ndarray:
    if not (dout.flags.c_contiguous and cache.x.flags.c_contiguous):
        return np.multiply(dout, cache.x > 0, out=dout)
    d, x = dout.reshape(-1), cache.x.reshape(-1)
    map_blocks(lambda a, b: np.multiply(d[a:b], x[a:b] > 0, out=d[a:b]), _chunks(d.size, d.itemsize))
    return dout


def _concat(xs: list[np.ndarray]) -> np.ndarray:
    """np.concatenate(xs, axis=1), copied per block of channels on all cores."""
    out = np.empty((xs[0].shape[0], sum(x.shape[1] for x in xs), *xs[0].shape[2:]), np.result_type(*xs))
    starts = np.cumsum([0] + [x.shape[1] for x in xs])

    def block(c0: int, c1: int) -> None:  # output channels c0:c1, from whichever inputs hold them
        for x, s0 in zip(xs, starts):
            a, b = max(c0, s0), min(c1, s0 + x.shape[1])
            if a < b:
                out[:, a:b] = x[:, a - s0:b - s0]

    map_channels(block, out.shape[1], out[:, 0].nbytes)
    return out


def _chunks(n: int, itemsize: int, block_bytes: int = 1 << 20) -> list[tuple[int, int]]:
    step = max(1, block_bytes // itemsize)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _node_forward(n: GraphNode, xs: list[np.ndarray], p: dict[str, np.ndarray], training: bool, owned: bool,
                  keep: bool = True, frozen: frozenset[str] = frozenset()):
    """One node: inputs -> (output, cache). owned: the (single) input may be overwritten;
    keep: backward will follow (else layers may skip building their cache)."""
    L = n.layer
    if isinstance(L, ConvReLU):
        L = L.conv
        return layers.conv2d_relu(xs[0], p[f"{n.name}.weight"], p.get(f"{n.name}.bias"), stride=L.stride,
                                  padding=L.padding, dilation=L.dilation, groups=L.groups), None
    if isinstance(L, Conv2d):
        return layers.conv2d_forward(xs[0], p[f"{n.name}.weight"], p.get(f"{n.name}.bias"), stride=L.stride,
                                     padding=L.padding, dilation=L.dilation, groups=L.groups)
    if isinstance(L, ConvTranspose2d):
        return layers.conv_transpose2d_forward(xs[0], p[f"{n.name}.weight"], p.get(f"{n.name}.bias"), stride=L.stride,
                                               padding=L.padding, output_padding=L.output_padding)
    if isinstance(L, BatchNorm2d):  # running stats change in place when training, unless frozen
        return layers.batchnorm2d_forward(xs[0], p[f"{n.name}.weight"], p[f"{n.name}.bias"],
                                          p[f"{n.name}.running_mean"], p[f"{n.name}.running_var"],
                                          training=training and n.name not in frozen, momentum=L.momentum, eps=L.eps)
    if isinstance(L, Activation):
        if L.kind == "relu" and owned:
            return _relu_inplace_forward(xs[0])
        return _ACT_FORWARD[L.kind](xs[0])
    if isinstance(L, MaxPool2d):
        return layers.max_pool2d_forward(xs[0], kernel=L.kernel_size, stride=L.stride, cache=keep)
    if isinstance(L, Concat):
        return _concat(xs), [x.shape[1] for x in xs]  # cache: channels per input
    if isinstance(L, Add):  # a residual: d(a + b)/da = d(a + b)/db = 1, nothing to keep
        return np.add(xs[0], xs[1]), None
    raise TypeError(f"no forward for layer {L!r}")


def forward(nodes: Sequence[GraphNode], params: dict[str, np.ndarray], x: np.ndarray, *, training: bool,
            keep: bool = True, frozen: frozenset[str] = frozenset()) -> tuple[np.ndarray, Tape | None]:
    """x (N, C, H, W) -> logits (N, K, H, W), and the tape for backward (None when keep is False). frozen: the
    BatchNorm nodes that normalise with their running statistics even when training."""
    last = _last_use(nodes)
    uses = Counter(src for n in nodes for src in n.inputs)
    vals = {"input": x}
    caches: dict[str, Any] = {}
    for i, n in enumerate(nodes):
        owned = len(n.inputs) == 1 and n.inputs[0] != "input" and uses[n.inputs[0]] == 1  # never the caller's x
        out, cache = _node_forward(n, [vals[s] for s in n.inputs], params, training, owned, keep, frozen)
        if keep:
            caches[n.name] = cache
        for s in n.inputs:
            if last[s] == i:
                del vals[s]
        vals[n.name] = out
        del out, cache
    return vals[nodes[-1].name], (Tape(nodes, caches) if keep else None)


def _node_backward(n: GraphNode, dout: np.ndarray, cache, grads: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One node: dL/d(output) -> dL/d(inputs), in input order; parameter gradients go into `grads`."""
    L = n.layer
    if isinstance(L, (Conv2d, ConvTranspose2d)):
        back = layers.conv2d_backward if isinstance(L, Conv2d) else layers.conv_transpose2d_backward
        dx, dw, db = back(dout, cache)
        grads[f"{n.name}.weight"] = dw
        if db is not None:
            grads[f"{n.name}.bias"] = db
        return [dx]
    if isinstance(L, BatchNorm2d):
        dx, grads[f"{n.name}.weight"], grads[f"{n.name}.bias"] = layers.batchnorm2d_backward(dout, cache)
        return [dx]
    if isinstance(L, Activation):  # every dout here is backward's own (a layer's dx, or a sum of them)
        return [_relu_inplace_backward(dout, cache) if L.kind == "relu" else _ACT_BACKWARD[L.kind](dout, cache)]
    if isinstance(L, Add):  # both inputs get dout; a copy for the second, as backward adds into and overwrites them
        return [dout, dout.copy()]
    if isinstance(L, MaxPool2d):
        return [layers.max_pool2d_backward(dout, cache)]
    if isinstance(L, Concat):  # split the channels back; copies, so dout is freed with the first consumer
        cuts = np.cumsum(cache)[:-1]
        return [np.ascontiguousarray(d) for d in np.split(dout, cuts, axis=1)]
    raise TypeError(f"no backward for layer {L!r}")


def backward(dlogits: np.ndarray, tape: Tape) -> dict[str, np.ndarray]:
    """dL/d(logits) -> dL/d(every trainable parameter), by name. Consumes the tape."""
    nodes, caches = tape
    dvals = {nodes[-1].name: dlogits}  # dL/d(node output), summed over consumers
    grads: dict[str, np.ndarray] = {}
    for n in reversed(nodes):
        dout = dvals.pop(n.name)
        dxs = _node_backward(n, dout, caches.pop(n.name), grads)
        del dout
        for src, dx in zip(n.inputs, dxs):
            if src == "input":
                continue  # nothing upstream of the input
            if src in dvals:
                dvals[src] += dx  # the second consumer of a skip tensor
            else:
                dvals[src] = dx
        del dxs
    return grads


# --- a network to run ------------------------------------------------------------------------

def _own(params: dict[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    """Private, writable copies in one dtype (BN running stats are updated in place)."""
    return {k: np.array(v, dtype=dtype) for k, v in params.items()}


class NumpyRunner:
    """Evaluation-mode logits, in `dtype` (float32, or float64 for a reference); BatchNorm folded
    into the convolutions before it (fold_batchnorm)."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], dtype=np.float32):
        check_params(spec, params)
        keep_freed_memory()
        self.spec, self.dtype = spec, np.dtype(dtype)
        nodes, self.p = fold_batchnorm(spec.graph(), _own(params, self.dtype))
        self.nodes = fuse_relu(nodes)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with held():  # BLAS on one thread, the layers' blocks on all cores (see parallel.py)
            logits, _ = forward(self.nodes, self.p, np.asarray(x, self.dtype), training=False, keep=False)
        return logits


# --- a network to train ----------------------------------------------------------------------

def _update_rule(cfg: OptimConfig):
    """OptimConfig -> update(w, dw, state, lr) with torch.optim's semantics."""
    wd = cfg.weight_decay
    if cfg.name == "sgd":
        return lambda w, dw, st, lr: rules.sgd(w, dw, st, lr=lr, weight_decay=wd)
    if cfg.name == "momentum":
        return lambda w, dw, st, lr: rules.momentum(w, dw, st, lr=lr, mu=cfg.momentum, weight_decay=wd)
    if cfg.name == "adam":
        b1, b2 = cfg.betas
        return lambda w, dw, st, lr: rules.adam(w, dw, st, lr=lr, beta1=b1, beta2=b2, eps=cfg.eps, weight_decay=wd)
    raise UsageError(f"unknown optimizer {cfg.name!r}", hint="choose one of sgd, momentum, adam")


class NumpyTrainer:
    """The Trainer protocol (backends.base) on hand-written backward and update rules."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], *, optim: OptimConfig,
                 class_weights: np.ndarray | None = None, seed: int = 0, dtype=np.float32, dice: float = 0.0):
        check_params(spec, params)
        keep_freed_memory()
        self.spec, self.nodes, self.dtype = spec, spec.graph(), np.dtype(dtype)
        self.seed = seed  # nothing here is random (no dropout); kept for the protocol's sake
        self.p = _own(params, self.dtype)
        self.names = [k for k in self.p if trainable(k)]  # torch's named_parameters() order
        self.update = _update_rule(optim)
        self.lr_scale = {k: lr_scale(k, optim) for k in self.names}  # a pretrained encoder's factor
        self.frozen = frozenset(n.name for n in self.nodes if isinstance(n.layer, BatchNorm2d) and
                                frozen_statistics(n.name, optim))
        self.state: dict[str, dict] = {k: {} for k in self.names}  # per parameter, torch's slot names
        self.weight = None if class_weights is None else np.asarray(class_weights, self.dtype)
        self.dice = float(dice)  # weight of the soft Dice term added to the cross-entropy

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Training-mode forward (BN running stats move), the loss, and every parameter's gradient."""
        logits, tape = forward(self.nodes, self.p, np.asarray(x, self.dtype), training=True, frozen=self.frozen)
        assert tape is not None  # keep=True: forward kept its tape
        loss, dlogits = layers.softmax_cross_entropy(logits, y, weight=self.weight, ignore_index=IGNORE_INDEX)
        if self.dice:
            dice, ddice = layers.soft_dice(logits, y, ignore_index=IGNORE_INDEX)
            loss, dlogits = loss + self.dice * dice, dlogits + self.dice * ddice
        del logits
        return loss, backward(dlogits, tape)

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        with held():  # BLAS on one thread, the layers' blocks on all cores (see parallel.py)
            loss, grads = self.loss_and_grads(x, y)
            for name in self.names:
                self.update(self.p[name], grads.pop(name), self.state[name], lr * self.lr_scale[name])
        return loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        with held():
            logits, _ = forward(self.nodes, self.p, np.asarray(x, self.dtype), training=False, keep=False)
        return logits

    def params(self) -> dict[str, np.ndarray]:
        return {k: v.astype(np.float32) for k, v in self.p.items()}  # astype copies

    def optim_state(self) -> tuple[dict[str, np.ndarray], int]:
        out, step = {}, 0
        for name, st in self.state.items():
            for slot, v in st.items():
                if slot == "step":
                    step = int(v)
                else:
                    out[f"{slot}.{name}"] = v.astype(np.float32)
        return out, step

    def load_optim_state(self, state: dict[str, np.ndarray], step: int) -> None:
        for key, v in state.items():
            slot, _, name = key.partition(".")  # "exp_avg.enc0.conv1.weight"
            if name not in self.state:
                raise UsageError(f"optimiser state {key!r} names no parameter of this network")
            st = self.state[name]
            st[slot] = np.array(v, dtype=self.dtype).reshape(self.p[name].shape)
            if "exp_avg" in st or "exp_avg_sq" in st:  # Adam's slots count steps
                st["step"] = int(step)


__all__ = ["Tape", "forward", "backward", "fold_batchnorm", "fuse_relu", "ConvReLU", "NumpyRunner", "NumpyTrainer"]
