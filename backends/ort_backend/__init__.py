"""ONNX Runtime backend: each operation is a one-node ONNX graph (backends/onnx_format/graphs.py) run by a cached session.

Where an ONNX attribute means something else than in torch, this backend gives torch's result:
- ConvTranspose: ORT refuses output_padding >= stride, which torch allows below the dilation. We fold
  output_padding into the end padding, and what no input reaches (only when output_padding > padding)
  is added here: zeros plus the bias.
- MaxPool/AveragePool ceil_mode: this ORT already follows torch (a last window that would start in
  the right padding is dropped; an average divides by its window clipped to the padded input, or by
  the valid pixels with count_include_pad=False). Every result's size is checked against
  cvtool.arithmetic, so an ORT that counts windows differently fails loudly, not silently.
- MaxPool with dilation: a window whose every tap falls in the padding gives -FLT_MAX in ORT and
  -inf in torch; we write -inf there.
Precision: ORT's CPU kernels have no double Conv, ConvTranspose or AveragePool; those compute in
float32 (capabilities.float64 is False); MaxPool, Relu, Sigmoid and Tanh keep float64.
onnx and onnxruntime are imported where they are used: reading the class and its capabilities (what `convcalc
--backward` and `bench` ask of every backend) loads neither.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np

from cvtool.arithmetic import (
    conv2d_output,
    conv_transpose2d_output,
    conv_transpose_output,
    pair,
    pool2d_output,
    resolve_padding,
)
from cvtool.errors import CvtoolError, UsageError
from cvtool_backends.base import Capabilities, Status, require_device

if TYPE_CHECKING:
    from cvtool_backends.ort_backend.runner import OrtRunner

DOUBLE_OPS = ("max_pool2d", "relu", "sigmoid", "tanh")  # the rest have float kernels only on CPU


@functools.cache
def _status() -> Status:
    import onnxruntime as ort

    from cvtool_backends.onnx_format import graphs
    from cvtool_backends.ort_backend import session

    probe = graphs.unary(op="Relu", rank=1, dtype=np.float32)
    providers = session.make(probe, "cpu").get_providers()
    devices, notes = ["cpu"], []
    if session.gpu_present():
        try:
            s = session.make(probe, "cuda")
            s.run(None, {"x": np.ones(2, np.float32)})
            if "CUDAExecutionProvider" in s.get_providers():
                devices.append("cuda")
                providers = s.get_providers()
            else:
                notes.append("a GPU is present but a CUDA session falls back to CPU (CUDA/cuDNN libraries?)")
        except Exception as e:  # noqa: BLE001 - any failure means: no CUDA here
            notes.append(f"a GPU is present but a CUDA session fails: {e}")
    else:
        notes.append(f"wheel built with {', '.join(ort.get_available_providers())}; no NVIDIA GPU here")
    notes.append("float64 only for " + ", ".join(DOUBLE_OPS) + "; the others compute in float32")
    return Status(name="ort", available=True, version=ort.__version__, devices=tuple(devices),
                  providers=tuple(providers), threads=session.THREADS, notes=tuple(notes))


def _fold(full: int, begin: int, end: int, op: int) -> tuple[int, int, int, int]:
    """ConvTranspose padding of one dimension without output_padding, for ORT.

    full: the size with no padding. Returns (ONNX pad begin, ONNX pad end, crop at the begin here,
    add at the end here). When the begin pad would crop everything ORT errors, so we crop it here.
    """
    end_ = max(end - op, 0)
    extra = max(op - end, 0)
    if begin + end_ >= full:  # only with end_ == 0: the output is then the bias alone
        return 0, 0, begin, extra
    return begin, end_, 0, extra


def _all_padding(i: int, k: int, s: int, p: int, d: int, o: int) -> np.ndarray:
    """Which of the o pooling windows along one dimension have every tap in the padding (needs d > 1)."""
    taps = np.arange(o)[:, None] * s - p + np.arange(k)[None, :] * d  # (o, k) input positions
    return np.asarray(((taps < 0) | (taps >= i)).all(axis=1))


def _nchw(x, dtype, what: str = "x") -> np.ndarray:
    x = np.asarray(x, dtype=dtype, order="C")
    if x.ndim != 4:
        raise UsageError(f"{what} must have 4 dimensions (N, C, H, W), got shape {x.shape}")
    return x


class Backend:
    name: ClassVar[str] = "ort"
    capabilities: ClassVar[Capabilities] = Capabilities(ops=True, backward=False, train=False, float64=False,
                                                        extra={"float64_ops": DOUBLE_OPS})

    def __init__(self, device: str = "cpu"):
        self.device = require_device(self.name, device, self.status().devices)  # resolved by the registry

    @classmethod
    def status(cls) -> Status:
        return _status()

    @staticmethod
    def _dtype(op: str, x) -> type:
        return np.float64 if op in DOUBLE_OPS and np.asarray(x).dtype == np.float64 else np.float32

    def _run(self, graph: str, feeds: dict, hw, **attrs) -> np.ndarray:
        """Run the one-node graph graphs.<graph>(**attrs) on feeds; hw: the output size torch's rule gives."""
        import onnxruntime as ort

        from cvtool_backends.onnx_format import graphs
        from cvtool_backends.ort_backend import session

        builder = getattr(graphs, graph)
        sess = session.cached(self.device, builder, tuple(sorted(attrs.items())))
        y = sess.run(None, feeds)[0]
        if hw is not None and tuple(y.shape[2:]) != tuple(hw):
            raise CvtoolError(f"onnxruntime {ort.__version__} gave size {tuple(y.shape[2:])} for "
                              f"{builder.__name__}, torch's rule gives {tuple(hw)}", hint="use another backend")
        return y

    # --- convolutions ---------------------------------------------------------------------------

    def conv2d(self, x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray:
        dt = self._dtype("conv2d", x)
        x, w = _nchw(x, dt), _nchw(w, dt, "w")
        if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
            raise UsageError(f"conv2d: x {x.shape} and w {w.shape} do not fit with groups={groups}")
        hw = conv2d_output(x.shape[2:], w.shape[2:], stride, padding, dilation)
        (pt, pb), (pl, pr) = resolve_padding(padding, kernel=w.shape[2:], stride=stride, dilation=dilation,
                                             input_size=x.shape[2:])
        feeds = {"x": x, "w": w} | ({} if b is None else {"b": np.asarray(b, dtype=dt, order="C")})
        return self._run("conv", feeds, hw, C=x.shape[1], M=w.shape[0], kernel=w.shape[2:],
                         strides=pair(stride), pads=(pt, pl, pb, pr), dilations=pair(dilation),
                         group=groups, bias=b is not None, dtype=dt)

    def conv_transpose2d(self, x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                         groups: int = 1) -> np.ndarray:
        dt = self._dtype("conv_transpose2d", x)
        x, w = _nchw(x, dt), _nchw(w, dt, "w")
        if x.shape[1] != w.shape[0] or x.shape[1] % groups:
            raise UsageError(f"conv_transpose2d: x {x.shape} and w {w.shape} (IOHW) do not fit with groups={groups}")
        S, D, OP = pair(stride), pair(dilation), pair(output_padding)
        hw = conv_transpose2d_output(x.shape[2:], w.shape[2:], stride, padding, output_padding, dilation)
        full = [conv_transpose_output(i, k, s, 0, 0, d) for i, k, s, d in zip(x.shape[2:], w.shape[2:], S, D)]
        (h0, h1, ch, eh), (w0, w1, cw, ew) = [_fold(f, p[0], p[1], op) for f, p, op in
                                              zip(full, resolve_padding(padding, kernel=w.shape[2:]), OP)]
        bias_here = b is not None and (eh or ew)  # rows/columns ORT never sees get the bias here
        feeds = {"x": x, "w": w} | ({"b": np.asarray(b, dtype=dt, order="C")} if b is not None and not bias_here else {})
        y = self._run("conv_transpose", feeds, None, C=x.shape[1], M=w.shape[1] * groups,
                      kernel=w.shape[2:], strides=S, pads=(h0, w0, h1, w1), dilations=D, group=groups,
                      bias="b" in feeds, dtype=dt)
        y = np.pad(y, ((0, 0), (0, 0), (0, eh), (0, ew)))[:, :, ch:, cw:]  # pad, then crop: a crop may reach into the pad
        if bias_here:
            y += np.asarray(b, dtype=dt).reshape(1, -1, 1, 1)
        assert y.shape[2:] == hw, (y.shape, hw)  # _fold's promise
        return y

    # --- pooling ----------------------------------------------------------------------------------

    def max_pool2d(self, x, *, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> np.ndarray:
        x = _nchw(x, self._dtype("max_pool2d", x))
        hw = pool2d_output(x.shape[2:], kernel, stride, padding, dilation, ceil_mode)
        K, S, P, D = pair(kernel), pair(kernel if stride is None else stride), pair(padding), pair(dilation)
        y = self._run("max_pool", {"x": x}, hw, kernel=K, strides=S, pads=(P[0], P[1], P[0], P[1]),
                      dilations=D, ceil_mode=int(ceil_mode), dtype=x.dtype.type)
        if D != (1, 1):  # windows that see only padding: -inf as in torch, not ORT's lowest float
            y[:, :, _all_padding(x.shape[2], K[0], S[0], P[0], D[0], hw[0]), :] = -np.inf
            y[:, :, :, _all_padding(x.shape[3], K[1], S[1], P[1], D[1], hw[1])] = -np.inf
        return y

    def avg_pool2d(self, x, *, kernel, stride=None, padding=0, ceil_mode: bool = False,
                   count_include_pad: bool = True) -> np.ndarray:
        x = _nchw(x, self._dtype("avg_pool2d", x))
        hw = pool2d_output(x.shape[2:], kernel, stride, padding, 1, ceil_mode)
        ph, pw = pair(padding)
        return self._run("avg_pool", {"x": x}, hw, kernel=pair(kernel),
                         strides=pair(kernel if stride is None else stride), pads=(ph, pw, ph, pw),
                         ceil_mode=int(ceil_mode), count_include_pad=int(count_include_pad), dtype=x.dtype.type)

    # --- activations ------------------------------------------------------------------------------

    def _unary(self, op: str, x) -> np.ndarray:
        x = np.asarray(x, dtype=self._dtype(op.lower(), x), order="C")
        return self._run("unary", {"x": x}, None, op=op, rank=x.ndim, dtype=x.dtype.type)

    def relu(self, x) -> np.ndarray:
        return self._unary("Relu", x)

    def sigmoid(self, x) -> np.ndarray:
        return self._unary("Sigmoid", x)

    def tanh(self, x) -> np.ndarray:
        return self._unary("Tanh", x)

    # --- networks -------------------------------------------------------------------------------

    def runner(self, spec, params, opset: int | None = None) -> OrtRunner:
        """The spec exported (float32, backends/ort_backend/export_cache.py: built once, then reused) and run by ONNX
        Runtime. The runner's `note` says whether the export was reused."""
        from cvtool_backends.onnx_format.opset import newest_opset
        from cvtool_backends.ort_backend.export_cache import cached_export
        from cvtool_backends.ort_backend.runner import OrtRunner

        opset = opset or newest_opset()
        src, what = cached_export(spec, params, opset)
        try:
            run = OrtRunner(src, self.device)
        except Exception:  # noqa: BLE001 - a cached file ORT cannot load (truncated, tampered): made again
            src, what = cached_export(spec, params, opset, rebuild=True)
            run = OrtRunner(src, self.device)
        run.note = f"{what} {src}" if isinstance(src, Path) else what
        return run

    def precision_runner(self, spec, params, precision: str, calibration: list | None = None):
        """fp32: runner(); fp16: the float16 export (on the CPU provider its convs run in float32 on float16-rounded
        weights: ORT's x86 CPU kernels have no float16 Conv); int8: the export quantized by ort_backend/quantize.py,
        calibrated on `calibration`, on the CPU provider only."""
        from cvtool.errors import BackendUnavailable
        from cvtool_backends.onnx_format.export import build_model
        from cvtool_backends.onnx_format.opset import newest_opset
        from cvtool_backends.ort_backend.quantize import quantize_int8
        from cvtool_backends.ort_backend.runner import OrtRunner

        if precision == "fp32":
            return self.runner(spec, params)
        if precision == "bf16":
            raise BackendUnavailable("ort runs no bfloat16 networks (no bf16 Conv kernels in its CPU or CUDA provider)",
                                     hint="bf16 runs on --backend torch")
        if precision == "int8" and self.device != "cpu":
            raise BackendUnavailable("ort runs int8 (QDQ) networks on its CPU provider only (CUDA would need TensorRT)",
                                     hint="--device cpu")
        model = build_model(spec, params, {}, opset=newest_opset(), half=precision == "fp16")
        if precision == "int8":
            model = quantize_int8(model, list(calibration or []))
        return OrtRunner(model.SerializeToString(), self.device)

    def load_onnx(self, path) -> OrtRunner:
        from cvtool.errors import DataError
        from cvtool_backends.ort_backend.runner import OrtRunner

        try:
            return OrtRunner(path, self.device)
        except Exception as e:  # ORT's own error types for unreadable or invalid models
            what = "the in-memory export" if isinstance(path, bytes) else path
            raise DataError(f"onnxruntime cannot load {what}: {str(e).splitlines()[0][:200]}") from None

    def set_threads(self, n: int) -> None:
        from cvtool_backends.ort_backend import session

        session.THREADS = n

    def gemm(self, n: int) -> Callable[[], object]:
        """A callable doing one float32 (n x n) @ (n x n) in a one-node MatMul session (MLAS on the CPU), the
        inputs bound once on the device (IO binding), returning when the product is done."""
        import onnxruntime as ort

        from cvtool_backends.onnx_format import graphs
        from cvtool_backends.ort_backend import session

        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        sess = session.make(graphs.one_node("MatMul", [("a", [n, n]), ("b", [n, n])], [n, n], np.float32), self.device)
        binding = sess.io_binding()
        for name, v in (("a", a), ("b", b)):
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(v, self.device, 0))
        binding.bind_output("y", self.device)

        def run():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return run
