"""A ModelSpec built as a torch.nn.Module, and its trainer (autograd + torch.optim).

Module paths equal the spec's node names, so `state_dict()` keys are the spec's parameter names
(`enc0.conv1.weight`); only BatchNorm's `num_batches_tracked` is extra and never exported.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvtool.model.spec import (
    Activation,
    Add,
    BatchNorm2d,
    Concat,
    Conv2d,
    ConvTranspose2d,
    MaxPool2d,
    ModelSpec,
    Node,
    check_params,
)
from cvtool.train.optim import OptimConfig, frozen_statistics, lr_scale


class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d with explicit (top, bottom, left, right) zero padding (TF "SAME" at stride 2 pads one more pixel
    at the bottom/right than at the top/left, which nn.Conv2d's symmetric padding cannot say). Same parameters."""

    def __init__(self, layer: Conv2d):
        super().__init__(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, 0, layer.dilation,
                         groups=layer.groups, bias=layer.bias)
        (t, b), (left, right) = layer.pads
        self.pad = (left, right, t, b)  # F.pad's order: last dimension first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


def _module(layer) -> nn.Module | None:
    if isinstance(layer, Conv2d):
        if not layer.symmetric:
            return PaddedConv2d(layer)
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         layer.pads[0][0], layer.dilation, groups=layer.groups, bias=layer.bias)
    if isinstance(layer, ConvTranspose2d):
        return nn.ConvTranspose2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                  layer.padding, layer.output_padding, bias=layer.bias)
    if isinstance(layer, BatchNorm2d):
        return nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)
    if isinstance(layer, MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, Activation):
        return {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh()}[layer.kind]
    return None  # Concat and Add have no module


class SpecNet(nn.Module):
    """Runs the spec's graph node by node; modules nested by dotted name."""

    def __init__(self, spec: ModelSpec, nodes: list[Node] | None = None):
        super().__init__()
        self.spec = spec
        self.nodes = spec.graph() if nodes is None else nodes  # another graph over the spec's layers (a classifier)
        self._mods: dict[str, nn.Module] = {}
        for n in self.nodes:
            m = _module(n.layer)
            if m is None:
                continue
            parent: nn.Module = self
            *path, leaf = n.name.split(".")
            for p in path:
                if not hasattr(parent, p):
                    parent.add_module(p, nn.Module())
                parent = getattr(parent, p)
            parent.add_module(leaf, m)
            self._mods[n.name] = m
        # free intermediate tensors as soon as the last consumer has run
        last_use: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for src in n.inputs:
                last_use[src] = i
        self._last_use = last_use

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vals = {"input": x}
        for i, n in enumerate(self.nodes):
            if isinstance(n.layer, Concat):
                y = torch.cat([vals[s] for s in n.inputs], dim=1)
            elif isinstance(n.layer, Add):
                y = vals[n.inputs[0]] + vals[n.inputs[1]]
            else:
                y = self._mods[n.name](vals[n.inputs[0]])
            for s in n.inputs:
                if self._last_use[s] == i:
                    del vals[s]
            vals[n.name] = y
        return vals[self.nodes[-1].name]


def build(spec: ModelSpec, params: dict[str, np.ndarray], device: torch.device) -> SpecNet:
    check_params(spec, params)
    net = SpecNet(spec)
    sd = {k: torch.from_numpy(np.asarray(v, np.float32).copy()) for k, v in params.items()}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:  # check_params passed, so this is a bug, not a user error
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return net.to(device)


def export_params(net: SpecNet) -> dict[str, np.ndarray]:
    return {k: v.detach().float().cpu().numpy().copy() for k, v in net.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def _make_optimizer(net: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """One parameter group per learning-rate factor (cvtool.train.optim.lr_scale); step() sets lr x the group's."""
    groups: dict[float, list] = {}
    for name, w in net.named_parameters():
        groups.setdefault(lr_scale(name, cfg), []).append(w)
    ps = [{"params": ws, "lr_scale": f} for f, ws in groups.items()]
    if cfg.name == "sgd":
        return torch.optim.SGD(ps, lr=0.0, weight_decay=cfg.weight_decay)
    if cfg.name == "momentum":
        return torch.optim.SGD(ps, lr=0.0, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(ps, lr=0.0, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name}")


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast pays off: CUDA, and CPUs with AVX512-BF16 or AMX (on a 2-core Zen 4 the default U-Net
    trains 1.8x faster than in float32 at 256x256 batch 8, 1.5x at 96x96: convs and the memory-bound BN/ReLU both
    move half the bytes; validation mIoU after 1440 steps on the synthetic shapes: 0.88 either way).
    Elsewhere bf16 would be emulated (not measured here), so float32 stays. CVTOOL_AMP=0 or 1 overrides."""
    forced = os.environ.get("CVTOOL_AMP", "")
    if forced in ("0", "1"):
        return forced == "1"
    if device.type == "cuda":
        return True
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch without the probes
        return False


def soft_dice(logits: torch.Tensor, y: torch.Tensor, ignore_index: int = 255, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the batch's soft Dice coefficient on valid pixels (backends.numpy_fast.loss.soft_dice)."""
    valid = (y != ignore_index)[:, None]
    p = torch.softmax(logits, 1) * valid
    g = F.one_hot(torch.where(valid[:, 0], y, 0), logits.shape[1]).permute(0, 3, 1, 2).to(p.dtype) * valid
    inter, den = (p * g).sum((0, 2, 3)), p.sum((0, 2, 3)) + g.sum((0, 2, 3))
    return 1 - ((2 * inter + smooth) / (den + smooth)).mean()


class TorchTrainer:
    """Autograd + torch.optim on a SpecNet, channels_last. Mixed precision (bf16 autocast, float32 weights, optimiser
    and loss) where the hardware has native bf16 (native_bf16); amp=False forces float32. predict() runs in float32
    on CPU, as TorchRunner and the exported model do, so validation scores what `cvtool segment` will see."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], *, device: str, optim: OptimConfig,
                 class_weights: np.ndarray | None = None, seed: int = 0, distributed: bool = False,
                 amp: bool | None = None, dice: float = 0.0):
        torch.manual_seed(seed)
        self.dice = float(dice)  # weight of the soft Dice term added to the cross-entropy
        self.device = torch.device(device)
        if distributed and self.device.type == "cuda" and self.device.index is None:  # one GPU per process
            self.device = torch.device("cuda", torch.cuda.current_device())  # set from LOCAL_RANK by distributed.init
        self.distributed = distributed
        # Module.to takes memory_format at run time (torch._C._nn._parse_to); torch's overloads leave it out
        self.net = build(spec, params, self.device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model: nn.Module = self.net
        if distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.opt = _make_optimizer(self.net, optim)
        self.frozen = [m for name, m in self.net._mods.items()  # BatchNorm on its running statistics (eval mode)
                       if isinstance(m, nn.BatchNorm2d) and frozen_statistics(name, optim)]
        self.names = [k for k, _ in self.net.named_parameters()]
        self.weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32, device=self.device)
        self.amp = native_bf16(self.device) if amp is None else amp

    def _x(self, x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last)

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        self.model.train()
        for m in self.frozen:
            m.eval()
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        xt = self._x(x)
        yt = torch.from_numpy(np.asarray(y, np.int64)).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.model(xt)
        loss = F.cross_entropy(logits.float(), yt, weight=self.weight, ignore_index=255)
        if self.dice:
            loss = loss + self.dice * soft_dice(logits.float(), yt)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        self.net.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp and self.device.type == "cuda"):
            out = self.net(self._x(x))
        return out.float().cpu().numpy()

    def params(self) -> dict[str, np.ndarray]:
        return export_params(self.net)

    def sync_buffers(self) -> None:
        """DDP: BatchNorm's running statistics averaged over the ranks (see distributed.average_buffers)."""
        if self.distributed:
            from cvtool_backends.torch_backend.distributed import average_buffers

            average_buffers(self.net)

    def max_over_ranks(self, v: int) -> int:
        """The largest v over all processes (one tiny all-reduce): ranks agree on when to stop."""
        if not self.distributed:
            return v
        from cvtool_backends.torch_backend.distributed import all_max

        return all_max(v, self.device)

    def optim_state(self) -> tuple[dict[str, np.ndarray], int]:
        out, step = {}, 0
        for name, p in zip(self.names, self.net.parameters()):
            st = self.opt.state.get(p, {})
            for slot, v in st.items():
                if slot == "step":
                    step = int(v)
                elif torch.is_tensor(v):
                    out[f"{slot}.{name}"] = v.detach().float().cpu().numpy().copy()
        return out, step

    def load_optim_state(self, state: dict[str, np.ndarray], step: int) -> None:
        by_param: dict[str, dict[str, np.ndarray]] = {}
        for key, v in state.items():
            slot, _, pname = key.partition(".")  # "exp_avg.enc0.conv1.weight"
            by_param.setdefault(pname, {})[slot] = v
        for name, p in zip(self.names, self.net.parameters()):
            if name not in by_param:
                continue
            st = self.opt.state[p]
            for slot, v in by_param[name].items():
                st[slot] = torch.from_numpy(np.array(v, np.float32)).to(self.device)
            if isinstance(self.opt, torch.optim.Adam):
                st["step"] = torch.tensor(float(step))


def full_fp32_convolutions() -> None:
    """cuDNN runs float32 convolutions in TF32 by default on Ampere and later (10 mantissa bits: ~1e-3 relative
    error), which the float64 reference would flag at every tolerance of the table; inference keeps IEEE float32.
    Training is unaffected (it runs under bf16 autocast on CUDA)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9: the per-backend API
        conv.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False


class TorchRunner:
    """Inference through infer.FrozenNet (BatchNorm folded, ReLU and the skip concatenations fused)."""

    def __init__(self, spec: ModelSpec, params: dict[str, np.ndarray], device: str, dtype=torch.float32):
        from cvtool_backends.torch_backend.infer import FrozenNet

        self.device, self.dtype = torch.device(device), dtype
        if self.device.type == "cuda":
            full_fp32_convolutions()
        self.net = FrozenNet(spec, params, self.device, dtype=dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device, self.dtype)
        return self.net(t).float().cpu().numpy()  # float32 out, whatever the net computes in


def set_threads() -> int:
    n = int(os.environ.get("CVTOOL_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(n)
    return n
