"""Inference-only execution of a spec in torch: what `segment`, `bench` and validation run.

The training module (model.SpecNet) runs BatchNorm, ReLU and Concat as separate memory-bound passes over
every activation; at inference they are most of the time (a 4 x 640 x 640 batch: BN 17%, ReLU 14%, Concat 13%
of torch's CPU time, where ONNX Runtime fuses them). Here, on the spec rewritten by cvtool.model.fuse:
- BatchNorm is folded into the conv before it (exact up to float rounding);
- Conv2d -> ReLU runs as one oneDNN primitive (mkldnn._convolution_pointwise, "relu" post-op);
- a conv that reads Concat(a, b) never builds the concatenation: conv(cat(a, b), W) = conv(a, W_a) + conv(b, W_b),
  the second conv adding the first's output with its ReLU fused (oneDNN "add" and "relu" post-ops).
Where the fused primitives are missing (CUDA, a torch built without oneDNN) the same rewritten graph runs
through F.conv2d and in-place ReLU, which cuDNN handles well.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F

from cvtool.model.fuse import ConvReLU, FusedNode, fold_batchnorm, fuse_relu
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
)


def _onednn(device: torch.device) -> bool:
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.mkldnn._convolution_pointwise.default  # noqa: B018  (present in torch >= 2.0 CPU builds)
        torch.ops.mkldnn._convolution_pointwise.binary  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


def _max_pool(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """2x2 stride-2 pooling of even sizes as the maximum of four strided views: no argmax to keep (inference), and
    1.1-2x faster than max_pool2d_with_indices on channels_last activations here. Other windows: F.max_pool2d."""
    if k == stride == 2 and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:
        return torch.maximum(torch.maximum(x[..., ::2, ::2], x[..., 1::2, ::2]),
                             torch.maximum(x[..., ::2, 1::2], x[..., 1::2, 1::2]))
    return F.max_pool2d(x, k, stride)


def channels(nodes: list[FusedNode], in_channels: int) -> dict[str, int]:
    """Output channels of every node: convs say theirs, Concat sums, the rest keep their input's."""
    C = {"input": in_channels}
    for n in nodes:
        L = n.layer.conv if isinstance(n.layer, ConvReLU) else n.layer
        if isinstance(L, (Conv2d, ConvTranspose2d)):
            C[n.name] = L.out_channels
        elif isinstance(L, Concat):
            C[n.name] = sum(C[s] for s in n.inputs)
        else:
            C[n.name] = C[n.inputs[0]]
    return C


class FrozenNet:
    """Evaluation-mode logits of a spec; parameters frozen at construction."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], device: torch.device,
                 dtype: torch.dtype = torch.float32):
        check_params(spec, params)
        nodes, p = fold_batchnorm(spec.graph(), {k: np.asarray(v, np.float32) for k, v in params.items()})
        self.nodes = fuse_relu(nodes)
        self.device, self.fused = device, _onednn(device)
        # oneDNN's conv + add + ReLU primitive falls back to at::add_relu for some shapes, which has no bfloat16 kernel
        # (torch 2.13: "Unsupported datatype for add_relu"): there the add and the ReLU run after the fused conv
        self.fused_add = self.fused and dtype == torch.float32
        # folded in float32, then cast: bfloat16 / float16 weights round once, not through the fold
        self.w = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device, dtype) for k, v in p.items()}
        by_name = {n.name: n for n in self.nodes}
        uses = Counter(src for n in self.nodes for src in n.inputs)
        C = channels(self.nodes, spec.in_channels)
        # a Concat whose only consumer is a conv: split that conv's weight by input channels instead
        self.split: dict[str, tuple[str, ...]] = {}
        for n in self.nodes:
            src = n.inputs[0]
            if isinstance(n.layer, (Conv2d, ConvReLU)) and src in by_name and isinstance(by_name[src].layer, Concat) \
                    and uses[src] == 1:
                parts = by_name[src].inputs
                self.split[n.name] = parts
                w, c0 = self.w[f"{n.name}.weight"], 0
                for i, part in enumerate(parts):
                    self.w[f"{n.name}.weight.{i}"] = w[:, c0:c0 + C[part]].contiguous()
                    c0 += C[part]
        self.cat_free = {n.inputs[0] for n in self.nodes if n.name in self.split}
        self.last_use: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for src in self.split.get(n.name, n.inputs):
                self.last_use[src] = i

    def _conv(self, name: str, L: Conv2d, x: torch.Tensor, relu: bool, w: torch.Tensor | None = None,
              b: torch.Tensor | None = None, acc: torch.Tensor | None = None) -> torch.Tensor:
        """relu?(conv(x, w) + b [+ acc])"""
        w = self.w[f"{name}.weight"] if w is None else w
        (t, bottom), (left, right) = L.pads
        if not L.symmetric:  # TF "SAME" at stride 2: pad first (one more at the bottom/right), then a valid conv
            x, t = F.pad(x, (left, right, t, bottom)), 0
        pad, st, dil = [t] * 2, [L.stride] * 2, [L.dilation] * 2
        if self.fused and (acc is None or not self.fused_add):
            y = torch.ops.mkldnn._convolution_pointwise(x, w, b, pad, st, dil, L.groups,
                                                        "relu" if relu and acc is None else "none", [], "")
            if acc is None:
                return y
            y += acc
            return y.relu_() if relu else y
        if self.fused:
            return torch.ops.mkldnn._convolution_pointwise.binary(x, acc, w, b, pad, st, dil, L.groups, "add", 1.0,
                                                                  "relu" if relu else None, [], "")
        y = F.conv2d(x, w, b, L.stride, t, L.dilation, L.groups)
        if acc is not None:
            y += acc
        return y.relu_() if relu else y

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        vals = {"input": x.contiguous(memory_format=torch.channels_last)}  # 2x faster than NCHW at 4 x 512^2 here
        for i, n in enumerate(self.nodes):
            relu = isinstance(n.layer, ConvReLU)
            L = n.layer.conv if isinstance(n.layer, ConvReLU) else n.layer
            b = self.w.get(f"{n.name}.bias")
            if n.name in self.split:
                assert isinstance(L, Conv2d), "only a conv's weight is split (__init__)"
                parts = self.split[n.name]
                y = self._conv(n.name, L, vals[parts[-1]], False, self.w[f"{n.name}.weight.{len(parts) - 1}"])
                for j in range(len(parts) - 2, -1, -1):  # the bias and ReLU come with the last accumulation
                    y = self._conv(n.name, L, vals[parts[j]], relu and j == 0, self.w[f"{n.name}.weight.{j}"],
                                   b if j == 0 else None, acc=y)
            elif n.name in self.cat_free:
                continue  # never built: its consumer reads the parts (and frees them)
            elif isinstance(L, Conv2d):
                y = self._conv(n.name, L, vals[n.inputs[0]], relu, b=b)
            elif isinstance(L, ConvTranspose2d):
                y = F.conv_transpose2d(vals[n.inputs[0]], self.w[f"{n.name}.weight"], b, L.stride, L.padding,
                                       L.output_padding)
            elif isinstance(L, BatchNorm2d):  # one not after a conv (fold_batchnorm took the rest)
                y = F.batch_norm(vals[n.inputs[0]], self.w[f"{n.name}.running_mean"], self.w[f"{n.name}.running_var"],
                                 self.w[f"{n.name}.weight"], self.w[f"{n.name}.bias"], False, 0.0, L.eps)
            elif isinstance(L, MaxPool2d):
                y = _max_pool(vals[n.inputs[0]], L.kernel_size, L.stride)
            elif isinstance(L, Activation):
                y = {"relu": torch.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[L.kind](
                    vals[n.inputs[0]])
            elif isinstance(L, Concat):
                y = torch.cat([vals[s] for s in n.inputs], dim=1)
            elif isinstance(L, Add):
                y = vals[n.inputs[0]] + vals[n.inputs[1]]
            else:
                raise TypeError(f"unknown layer {L!r}")
            for s in self.split.get(n.name, n.inputs):
                if self.last_use.get(s) == i:
                    vals.pop(s, None)
            vals[n.name] = y
        return vals[self.nodes[-1].name]
