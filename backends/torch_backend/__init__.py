"""PyTorch backend: torch.nn.functional on NCHW arrays, NumPy in and out. The only module importing torch.

Arrays move to the device, run there without autograd, and come back to the host. float32 stays
float32 and float64 stays float64; anything else becomes float32. Padding that torch cannot take
directly (asymmetric, or 'same' with stride > 1) is resolved by cvtool.arithmetic and done with F.pad
(convolution) or by cropping a padding-free result (transposed convolution).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Callable, ClassVar, overload

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from cvtool.arithmetic import conv2d_output, conv_transpose2d_output, is_symmetric, pair, pool2d_output, resolve_padding
from cvtool.errors import UsageError
from cvtool_backends.base import Capabilities, Status, require_device

if TYPE_CHECKING:
    from cvtool_backends.torch_backend.model import TorchRunner, TorchTrainer


def _cuda_works() -> bool:
    """torch.cuda.is_available() can be True with a broken driver: run one tiny op to be sure."""
    if not torch.cuda.is_available():
        return False
    try:
        return float((torch.ones(2, device="cuda") * 2).sum().item()) == 4.0
    except Exception:  # noqa: BLE001 - any failure means: no usable GPU
        return False


@functools.cache
def _status() -> Status:
    devices = ("cpu", "cuda") if _cuda_works() else ("cpu",)
    return Status(name="torch", available=True, version=torch.__version__, devices=devices,
                  threads=torch.get_num_threads())


def _float(a) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def native_bf16(device: str) -> tuple[bool, str]:
    """(whether bfloat16 runs natively on `device`, how that was found or why not): CUDA asks torch; a CPU needs
    torch's own AVX512-BF16 / AMX query (the /proc/cpuinfo flags where this torch has none) and oneDNN's bf16."""
    if device == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "torch.cuda.is_bf16_supported()" if ok else "this GPU has no native bfloat16"
    from cvtool.model.precision import cpu_bf16

    queries = [q for q in ("_is_avx512_bf16_supported", "_is_amx_tile_supported") if hasattr(torch.cpu, q)]
    if queries:
        found = [q.strip("_").removeprefix("is_").removesuffix("_supported") for q in queries if getattr(torch.cpu, q)()]
        ok, how = bool(found), f"torch reports {', '.join(found)}" if found else \
            "this CPU has neither AVX512-BF16 nor AMX (torch.cpu's own query): bfloat16 would be emulated"
    else:
        ok, how = cpu_bf16()
    if ok and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, "this torch's oneDNN has no bfloat16 kernels"
    return ok, how


class Backend:
    name: ClassVar[str] = "torch"
    capabilities: ClassVar[Capabilities] = Capabilities(ops=True, backward=True, train=True, float64=True,
                                                        extra={"backward_by": "autograd"})

    def __init__(self, device: str = "cpu"):
        self.device = require_device(self.name, device, self.status().devices)  # resolved by the registry
        if self.device == "cuda":  # the ops are checked against float64 at float32 tolerances: no TF32
            from cvtool_backends.torch_backend.model import full_fp32_convolutions

            full_fp32_convolutions()

    @classmethod
    def status(cls) -> Status:
        return _status()

    @overload
    def _t(self, a: None, like: np.ndarray | None = None) -> None: ...

    @overload
    def _t(self, a: ArrayLike, like: np.ndarray | None = None) -> torch.Tensor: ...

    def _t(self, a: ArrayLike | None, like: np.ndarray | None = None) -> torch.Tensor | None:
        """NumPy -> tensor on our device (in like's dtype when given); None stays None."""
        if a is None:
            return None
        a = _float(a) if like is None else np.asarray(a, dtype=like.dtype)
        return torch.from_numpy(np.array(a, order="C")).to(self.device)  # a copy: torch must not share caller memory

    @staticmethod
    def _np(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy()

    @staticmethod
    def _nchw(x, what: str = "x") -> np.ndarray:
        x = _float(x)
        if x.ndim != 4:
            raise UsageError(f"{what} must have 4 dimensions (N, C, H, W), got shape {x.shape}")
        return x

    def gradients(self, op: str, x, w=None, b=None, dy=None, **params) -> dict[str, np.ndarray]:
        """y, dL/dx (and dL/dw, dL/db) of one layer by autograd in float64, L = sum(y * dy) (convcalc --backward)."""
        from cvtool_backends.torch_backend.grads import gradients

        return gradients(op, x, w, b, dy, params)

    # --- convolutions ---------------------------------------------------------------------------

    @torch.no_grad()
    def conv2d(self, x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray:
        x = self._nchw(x)
        w = self._nchw(np.asarray(w, dtype=x.dtype), "w")
        if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
            raise UsageError(f"conv2d: x {x.shape} and w {w.shape} do not fit with groups={groups}")
        conv2d_output(x.shape[2:], w.shape[2:], stride, padding, dilation)  # validates: UsageError, not a torch error
        pads = resolve_padding(padding, kernel=w.shape[2:], stride=stride, dilation=dilation, input_size=x.shape[2:])
        (pt, pb), (pl, pr) = pads
        xt = self._t(x)
        if not is_symmetric(pads):
            xt, pt, pl = F.pad(xt, (pl, pr, pt, pb)), 0, 0  # F.pad takes (left, right, top, bottom)
        y = F.conv2d(xt, self._t(w), self._t(b, x), pair(stride), (pt, pl), pair(dilation), groups)
        return self._np(y)

    @torch.no_grad()
    def conv_transpose2d(self, x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                         groups: int = 1) -> np.ndarray:
        x = self._nchw(x)
        w = self._nchw(np.asarray(w, dtype=x.dtype), "w")  # IOHW: (C, M/groups, KH, KW)
        if x.shape[1] != w.shape[0] or x.shape[1] % groups:
            raise UsageError(f"conv_transpose2d: x {x.shape} and w {w.shape} (IOHW) do not fit with groups={groups}")
        OH, OW = conv_transpose2d_output(x.shape[2:], w.shape[2:], stride, padding, output_padding, dilation)
        pads = resolve_padding(padding, kernel=w.shape[2:])
        (pt, _), (pl, _) = pads
        sym = is_symmetric(pads)  # torch pads both ends alike; otherwise compute unpadded and crop
        y = F.conv_transpose2d(self._t(x), self._t(w), self._t(b, x), pair(stride), (pt, pl) if sym else 0,
                               pair(output_padding), groups, pair(dilation))
        return self._np(y if sym else y[:, :, pt:pt + OH, pl:pl + OW])

    # --- pooling ----------------------------------------------------------------------------------

    @torch.no_grad()
    def max_pool2d(self, x, *, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> np.ndarray:
        x = self._nchw(x)
        pool2d_output(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)  # validates
        y = F.max_pool2d(self._t(x), pair(kernel), pair(kernel if stride is None else stride), pair(padding),
                         pair(dilation), ceil_mode=ceil_mode)
        return self._np(y)

    @torch.no_grad()
    def avg_pool2d(self, x, *, kernel, stride=None, padding=0, ceil_mode: bool = False,
                   count_include_pad: bool = True) -> np.ndarray:
        x = self._nchw(x)
        pool2d_output(x.shape[2:], kernel, stride, padding, 1, ceil_mode)  # validates
        y = F.avg_pool2d(self._t(x), pair(kernel), pair(kernel if stride is None else stride), pair(padding),
                         ceil_mode=ceil_mode, count_include_pad=count_include_pad)
        return self._np(y)

    # --- activations ------------------------------------------------------------------------------

    @torch.no_grad()
    def relu(self, x) -> np.ndarray:
        return self._np(torch.relu(self._t(x)))

    @torch.no_grad()
    def sigmoid(self, x) -> np.ndarray:
        return self._np(torch.sigmoid(self._t(x)))

    @torch.no_grad()
    def tanh(self, x) -> np.ndarray:
        return self._np(torch.tanh(self._t(x)))

    # --- networks -------------------------------------------------------------------------------

    def runner(self, spec, params) -> TorchRunner:
        from cvtool_backends.torch_backend.model import TorchRunner

        return TorchRunner(spec, params, self.device)

    def precision_runner(self, spec, params, precision: str, calibration: list | None = None):
        """fp32: runner(); bf16 where native_bf16 says so (CPU or CUDA); fp16 on CUDA; int8 is ONNX Runtime's."""
        from cvtool.errors import BackendUnavailable
        from cvtool_backends.torch_backend.model import TorchRunner

        if precision == "fp32":
            return self.runner(spec, params)
        if precision == "int8":
            raise BackendUnavailable("torch: int8 inference goes through ONNX Runtime's quantization here",
                                     hint="--backend ort (cvtool export --precision int8)")
        if precision == "fp16" and self.device != "cuda":
            raise BackendUnavailable("torch runs float16 networks on CUDA only (this CPU has no float16 arithmetic)",
                                     hint="bf16 on this CPU, or fp16 through --backend ort")
        if precision == "bf16":
            ok, how = native_bf16(self.device)
            if not ok:
                raise BackendUnavailable(f"no native bfloat16 on {self.device}: {how}", hint="run in fp32")
        return TorchRunner(spec, params, self.device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def trainer(self, spec, params, *, optim, class_weights=None, seed: int = 0, distributed: bool = False,
                dice: float = 0.0) -> TorchTrainer:
        from cvtool_backends.torch_backend.model import TorchTrainer

        return TorchTrainer(spec, params, device=self.device, optim=optim, class_weights=class_weights, seed=seed,
                            distributed=distributed, dice=dice)

    def set_threads(self, n: int) -> None:
        torch.set_num_threads(n)

    def init_distributed(self) -> tuple[int, int]:
        from cvtool_backends.torch_backend import distributed

        return distributed.init(self.device)

    def finish_distributed(self) -> None:
        from cvtool_backends.torch_backend import distributed

        distributed.finish()

    # --- benchmark hooks (cvtool bench) -----------------------------------------------------------

    def gemm(self, n: int) -> Callable[[], object]:
        """A callable doing one float32 (n x n) @ (n x n) on our device, returning when it is done."""
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(self.device)
        b = torch.randn(n, n, generator=g).to(self.device)
        cuda = self.device == "cuda"

        def run():
            c = a @ b
            if cuda:
                torch.cuda.synchronize()
            return c

        return run

    def free_memory(self) -> int | None:
        """Free bytes on the GPU (what inference sizes its passes by); None on the CPU, whose memory the core reads."""
        if self.device != "cuda":
            return None
        free, _total = torch.cuda.mem_get_info()
        return int(free)

    def peak_memory(self, fn):
        """(fn(), peak device bytes during fn) on CUDA; on CPU torch keeps no such counter."""
        if self.device != "cuda":
            return fn(), None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        y = fn()
        torch.cuda.synchronize()
        return y, torch.cuda.max_memory_allocated()
