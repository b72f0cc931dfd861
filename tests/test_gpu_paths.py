"""The GPU call sites, reached on a CPU-only machine by monkeypatching what CUDA would answer.

Each test asserts what the code asked for (the process-group backend, the device an output is bound to, the
convolution precision, the providers, the autocast arguments), so a wrong branch fails here, not only on a GPU.
What a fake cannot stand in for (a real CUDA tensor, a real cuDNN convolution, a real nccl group) is checked for
real at the end of this file under the `gpu` marker, which conftest skips where no GPU is usable.
"""

from __future__ import annotations

import contextlib
import types
from typing import NamedTuple

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import TOL, assert_close, gpu  # tests/ is on sys.path under pytest
from torch import nn

import cvtool_backends as registry
import cvtool_backends.ort_backend as ort_backend
import cvtool_backends.torch_backend as torch_backend
from cvtool.compare import TOLERANCE, Tolerance, compare
from cvtool.model.spec import ModelSpec, init_params
from cvtool.train.optim import OptimConfig
from cvtool_backends.base import Status
from cvtool_backends.onnx_format.export import INPUT, OUTPUT, build_model
from cvtool_backends.ort_backend import runner as ort_runner
from cvtool_backends.ort_backend import session
from cvtool_backends.torch_backend import distributed, infer, model

SPEC = ModelSpec(in_channels=1, num_classes=2, width=2, depth=1)
CUDA_PROVIDERS = [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]  # IEEE float32, not TF32


@pytest.fixture
def params():
    return init_params(SPEC, seed=0)


def image(seed: int = 0) -> np.ndarray:
    """One (N, C, H, W) float32 batch for SPEC (sides divisible by 2**depth)."""
    return np.random.default_rng(seed).standard_normal((2, SPEC.in_channels, 8, 8)).astype(np.float32)


def say_cuda_works(monkeypatch, module) -> None:
    """A backend module's cached _status, answering with a CUDA device (only the status: no tensor moves)."""
    monkeypatch.setattr(module, "_status", lambda: Status(name=module.Backend.name, available=True,
                                                          devices=("cpu", "cuda")))


@pytest.fixture(autouse=True)
def cudnn_precision_kept():
    """The cuDNN precision that a torch Backend('cuda') sets, put back after each test (torch's _FP32Precision
    takes no monkeypatch: its attribute lives in torch._C, and undoing deletes it)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    before = getattr(conv, "fp32_precision", None)
    yield
    if before is not None:
        conv.fp32_precision = before


# --- torch: is a GPU usable? ---------------------------------------------------------------------------------------


def test_torch_status_lists_cuda_only_when_a_tiny_op_on_it_gives_the_right_answer(monkeypatch):
    asked = []

    def ones(*shape, device=None):  # what torch.ones(2, device="cuda") would be: the op runs, on the CPU here
        asked.append(device)
        return torch.full(shape, answer)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "ones", ones)
    answer = 1.0
    assert torch_backend._status.__wrapped__().devices == ("cpu", "cuda") and asked == ["cuda"]
    answer = 0.0  # a broken driver computing garbage (zeros): not usable
    assert torch_backend._status.__wrapped__().devices == ("cpu",)


def test_torch_status_has_no_cuda_when_the_op_fails_or_torch_sees_no_gpu(monkeypatch):
    def fails(*shape, device=None):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(torch, "ones", fails)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_backend._status.__wrapped__().devices == ("cpu",)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # then no op is tried at all (fails would raise)
    assert torch_backend._cuda_works() is False


@pytest.mark.parametrize("module", [torch_backend, ort_backend], ids=["torch", "ort"])
def test_auto_is_cuda_where_the_status_says_a_gpu_works(monkeypatch, module):
    say_cuda_works(monkeypatch, module)
    assert registry.get(module.Backend.name, "auto").device == "cuda"
    assert registry.get(module.Backend.name, "cpu").device == "cpu"


# --- torch: peak memory and the process group -----------------------------------------------------------------------


def fake_cuda_counters(monkeypatch) -> list[str]:
    """torch.cuda's memory counters and synchronize, faked: the order they are called in."""
    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: calls.append("read") or 12345)
    return calls


def test_peak_memory_on_cuda_resets_the_counter_before_fn_and_reads_it_after(monkeypatch):
    say_cuda_works(monkeypatch, torch_backend)
    calls = fake_cuda_counters(monkeypatch)
    y, peak = torch_backend.Backend("cuda").peak_memory(lambda: calls.append("fn") or "y")
    assert (y, peak) == ("y", 12345)
    # synchronised on both sides of fn: kernels queued before do not count, kernels of fn all do
    assert calls == ["synchronize", "reset", "fn", "synchronize", "read"]


def test_peak_memory_on_cpu_touches_no_cuda_counter(monkeypatch):
    calls = fake_cuda_counters(monkeypatch)
    assert torch_backend.Backend("cpu").peak_memory(lambda: calls.append("fn") or "y") == ("y", None)
    assert calls == ["fn"]


class ProcessGroup(NamedTuple):
    """What distributed.init asked of torch.distributed and torch.cuda."""

    backends: list
    devices: list


def fake_process_group(monkeypatch, initialized: bool = False) -> ProcessGroup:
    asked = ProcessGroup([], [])
    monkeypatch.setattr(dist, "is_initialized", lambda: initialized)
    monkeypatch.setattr(dist, "init_process_group", lambda backend=None, **kw: asked.backends.append(backend))
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 3)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 4)
    monkeypatch.setattr(torch.cuda, "set_device", asked.devices.append)
    return asked


@pytest.mark.parametrize("device, backend, cuda_device", [("cuda", "nccl", [3]), ("cpu", "gloo", [])])
def test_init_distributed_asks_nccl_and_the_local_rank_gpu_on_cuda_gloo_on_cpu(monkeypatch, device, backend,
                                                                                cuda_device):
    say_cuda_works(monkeypatch, torch_backend)
    asked = fake_process_group(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert torch_backend.Backend(device).init_distributed() == (3, 4)  # (rank, world size) as the group says
    assert asked == ProcessGroup([backend], cuda_device)


def test_init_distributed_keeps_an_existing_group_and_defaults_to_gpu_0(monkeypatch):
    asked = fake_process_group(monkeypatch, initialized=True)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert distributed.init("cuda") == (3, 4)
    assert asked == ProcessGroup([], [0])


# --- torch: the trainer's device, DDP and bf16 autocast ---------------------------------------------------------


@pytest.mark.parametrize("device, probes, expected", [
    ("cuda", (False, False), True),  # every CUDA GPU torch supports has bf16 tensor cores or fast emulation
    ("cpu", (False, False), False),  # a CPU without native bf16 (this one's AVX-512 BF16 is stubbed away)
    ("cpu", (True, False), True),  # AVX512-BF16
    ("cpu", (False, True), True),  # AMX
])
def test_native_bf16_by_device_and_cpu_features(monkeypatch, device, probes, expected):
    monkeypatch.delenv("CVTOOL_AMP", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: probes[0])
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: probes[1])
    assert model.native_bf16(torch.device(device)) is expected


def test_native_bf16_env_override_and_an_old_torch_without_probes(monkeypatch):
    monkeypatch.setenv("CVTOOL_AMP", "0")
    assert model.native_bf16(torch.device("cuda")) is False
    monkeypatch.setenv("CVTOOL_AMP", "1")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert model.native_bf16(torch.device("cpu")) is True
    monkeypatch.delenv("CVTOOL_AMP")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert model.native_bf16(torch.device("cpu")) is False


class Autocast(NamedTuple):
    device_type: str
    dtype: torch.dtype | None
    enabled: bool


class AutocastRecorder:
    """Stands in for torch.autocast: records what was asked, changes nothing."""

    def __init__(self):
        self.asked: list[Autocast] = []

    def __call__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self.asked.append(Autocast(device_type, dtype, enabled))
        return contextlib.nullcontext()


class FakeDDP(nn.Module):
    """DistributedDataParallel without a process group: keeps the device_ids it was given."""

    def __init__(self, module, device_ids=None):
        super().__init__()
        self.module, self.device_ids = module, device_ids

    def forward(self, x):
        return self.module(x)


def cuda_trainer(monkeypatch, params, *, current: int = 2, **kw) -> model.TorchTrainer:
    """A TorchTrainer told its device is CUDA whose net is built on the CPU (what build() was asked is kept)."""
    real_build = model.build
    built_on: list[torch.device] = []

    def build_on_cpu(spec, p, device):
        built_on.append(device)
        return real_build(spec, p, torch.device("cpu"))

    monkeypatch.setattr(model, "build", build_on_cpu)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", FakeDDP)
    trainer = model.TorchTrainer(SPEC, params, device="cuda", optim=OptimConfig(), **kw)
    trainer.built_on = built_on  # type: ignore[attr-defined]
    return trainer


def test_a_distributed_cuda_trainer_takes_the_current_gpu_and_gives_ddp_its_index(monkeypatch, params):
    monkeypatch.delenv("CVTOOL_AMP", raising=False)
    trainer = cuda_trainer(monkeypatch, params, current=2, distributed=True)
    assert trainer.device == torch.device("cuda", 2) and trainer.built_on == [torch.device("cuda", 2)]
    assert isinstance(trainer.model, FakeDDP) and trainer.model.device_ids == [2]
    assert trainer.amp is True  # bf16 autocast on CUDA by default


def test_a_single_process_cuda_trainer_keeps_the_device_it_was_given(monkeypatch, params):
    trainer = cuda_trainer(monkeypatch, params, current=2, amp=False)
    assert trainer.device == torch.device("cuda") and trainer.model is trainer.net and trainer.amp is False


def test_a_distributed_cpu_trainer_gives_ddp_no_device_ids(monkeypatch, params):
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", FakeDDP)
    trainer = model.TorchTrainer(SPEC, params, device="cpu", optim=OptimConfig(), distributed=True, amp=False)
    assert isinstance(trainer.model, FakeDDP) and trainer.model.device_ids is None


@pytest.mark.parametrize("amp", [True, False])
def test_predict_on_cuda_asks_bf16_autocast_exactly_when_amp_is_on(monkeypatch, params, amp):
    trainer = cuda_trainer(monkeypatch, params, amp=amp)
    monkeypatch.setattr(trainer, "_x", lambda x: torch.from_numpy(np.ascontiguousarray(x, np.float32)))  # stays here
    autocast = AutocastRecorder()
    monkeypatch.setattr(torch, "autocast", autocast)
    y = trainer.predict(image())
    assert autocast.asked == [Autocast("cuda", torch.bfloat16, amp)]
    assert y.dtype == np.float32 and y.shape == (2, SPEC.num_classes, 8, 8)


def test_on_cpu_predict_stays_float32_even_where_training_uses_bf16(monkeypatch, params):
    """predict scores what `cvtool segment` will see, and TorchRunner runs float32 on the CPU."""
    trainer = model.TorchTrainer(SPEC, params, device="cpu", optim=OptimConfig(), amp=True)
    autocast = AutocastRecorder()
    monkeypatch.setattr(torch, "autocast", autocast)
    trainer.predict(image())
    assert autocast.asked == [Autocast("cpu", torch.bfloat16, False)]


# --- torch: IEEE float32 convolutions on CUDA -------------------------------------------------------------------


def test_full_fp32_convolutions_uses_the_per_backend_api_where_torch_has_it(monkeypatch):
    cudnn = types.SimpleNamespace(conv=types.SimpleNamespace(fp32_precision="tf32"), allow_tf32=True)
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    model.full_fp32_convolutions()
    # the legacy flag is left alone: torch >= 2.9 raises when the two APIs are mixed
    assert cudnn.conv.fp32_precision == "ieee" and cudnn.allow_tf32 is True


@pytest.mark.parametrize("cudnn", [types.SimpleNamespace(allow_tf32=True),
                                   types.SimpleNamespace(conv=types.SimpleNamespace(), allow_tf32=True)],
                         ids=["no conv attribute", "conv without fp32_precision"])
def test_full_fp32_convolutions_on_an_older_torch_switches_tf32_off(monkeypatch, cudnn):
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    model.full_fp32_convolutions()
    assert cudnn.allow_tf32 is False


@pytest.mark.parametrize("device, precision", [("cuda", "ieee"), ("cpu", "tf32")])
def test_the_torch_backend_on_cuda_computes_its_ops_in_ieee_float32(monkeypatch, device, precision):
    say_cuda_works(monkeypatch, torch_backend)
    cudnn = types.SimpleNamespace(conv=types.SimpleNamespace(fp32_precision="tf32"))
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    torch_backend.Backend(device)
    assert cudnn.conv.fp32_precision == precision


class FrozenNetRecorder:
    """Stands in for infer.FrozenNet: the device it was asked for and the cuDNN precision at that moment."""

    def __init__(self, cudnn):
        self.cudnn, self.asked = cudnn, []

    def __call__(self, spec, params, device, **kw):
        self.asked.append((device, self.cudnn.conv.fp32_precision))
        return lambda t: t


@pytest.mark.parametrize("device, precision", [("cuda", "ieee"), ("cpu", "tf32")])
def test_the_runner_switches_cuda_convolutions_to_ieee_before_building_its_net(monkeypatch, params, device, precision):
    cudnn = types.SimpleNamespace(conv=types.SimpleNamespace(fp32_precision="tf32"))
    monkeypatch.setattr(torch.backends, "cudnn", cudnn)
    frozen = FrozenNetRecorder(cudnn)
    monkeypatch.setattr(infer, "FrozenNet", frozen)
    model.TorchRunner(SPEC, params, device)
    assert frozen.asked == [(torch.device(device), precision)]


# --- ort: is a GPU usable? --------------------------------------------------------------------------------------


class RecordingSession(ort.InferenceSession):
    """An InferenceSession that keeps the providers it was asked for and runs on the CPU. With `cuda_works` it
    reports those providers back, as onnxruntime-gpu does on a working GPU; else it reports what it really uses
    (the CPU: a CUDA-less machine's fallback). io_binding gives a FakeBinding."""

    asked: list[list[str]] = []
    cuda_works = False

    def __init__(self, src, sess_options=None, providers=None, **kw):
        type(self).asked.append(list(providers or []))
        self.wanted, self.calls, self.bindings = list(providers or []), [], []
        super().__init__(src, sess_options, providers=["CPUExecutionProvider"])

    def get_providers(self):
        if not type(self).cuda_works:
            return super().get_providers()
        return [p if isinstance(p, str) else p[0] for p in self.wanted]  # names, without their options

    def io_binding(self):
        self.bindings.append(FakeBinding(self.calls))
        return self.bindings[-1]

    def run_with_iobinding(self, iobinding, run_options=None):
        self.calls.append(("run_with_iobinding",))
        feeds = {k: (v.numpy() if isinstance(v, ort.OrtValue) else v) for k, v in iobinding.inputs.items()}
        iobinding.outputs = self.run(iobinding.output_names, feeds)


class FakeBinding:
    """An IOBinding that records the calls made on it (into the session's list) and keeps what was bound."""

    def __init__(self, calls: list):
        self.calls, self.inputs, self.output_names, self.outputs = calls, {}, [], []

    def bind_cpu_input(self, name, arr):
        self.calls.append(("bind_cpu_input", name))
        self.inputs[name] = arr

    def bind_ortvalue_input(self, name, value):
        self.calls.append(("bind_ortvalue_input", name))
        self.inputs[name] = value

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        self.calls.append(("bind_output", name, device_type))
        self.output_names.append(name)

    def synchronize_outputs(self):
        self.calls.append(("synchronize_outputs",))

    def copy_outputs_to_cpu(self):
        self.calls.append(("copy_outputs_to_cpu",))
        return self.outputs


@pytest.fixture
def sessions(monkeypatch):
    """ort.InferenceSession replaced by RecordingSession (session.py and runner.py read it from the module)."""
    monkeypatch.setattr(RecordingSession, "asked", [])
    monkeypatch.setattr(RecordingSession, "cuda_works", False)
    monkeypatch.setattr(ort, "InferenceSession", RecordingSession)
    return RecordingSession


def test_ort_status_lists_cuda_when_a_cuda_session_runs_and_keeps_its_provider(monkeypatch, sessions):
    monkeypatch.setattr(session, "gpu_present", lambda: True)
    sessions.cuda_works = True
    st = ort_backend._status.__wrapped__()
    assert sessions.asked == [["CPUExecutionProvider"], CUDA_PROVIDERS]  # the probe asked for CUDA, CPU behind it
    assert st.devices == ("cpu", "cuda") and st.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")


def test_ort_status_has_no_cuda_when_the_cuda_session_falls_back_to_the_cpu(monkeypatch, sessions):
    monkeypatch.setattr(session, "gpu_present", lambda: True)
    st = ort_backend._status.__wrapped__()
    assert sessions.asked[-1] == CUDA_PROVIDERS and st.devices == ("cpu",)
    assert list(st.providers) == ["CPUExecutionProvider"] and any("falls back to CPU" in n for n in st.notes)


def test_ort_status_has_no_cuda_when_a_cuda_session_fails(monkeypatch):
    monkeypatch.setattr(session, "gpu_present", lambda: True)
    real_make = session.make

    def make(model_proto, device):
        if device == "cuda":
            raise RuntimeError("libcudnn.so.9: cannot open shared object file")
        return real_make(model_proto, device)

    monkeypatch.setattr(session, "make", make)
    st = ort_backend._status.__wrapped__()
    assert st.devices == ("cpu",)
    assert any(n.startswith("a GPU is present but a CUDA session fails: libcudnn") for n in st.notes)


def test_ort_status_asks_for_no_cuda_session_without_a_gpu(monkeypatch, sessions):
    monkeypatch.setattr(session, "gpu_present", lambda: False)
    st = ort_backend._status.__wrapped__()
    assert sessions.asked == [["CPUExecutionProvider"]] and st.devices == ("cpu",)
    assert any(n.endswith("no NVIDIA GPU here") for n in st.notes)


@pytest.mark.parametrize("nodes, driver, present", [({"/dev/nvidia0"}, [], True),
                                                    (set(), ["/proc/driver/nvidia/gpus/0000:01:00.0"], True),
                                                    (set(), [], False)])
def test_a_gpu_is_present_by_a_device_node_or_a_driver_entry(monkeypatch, nodes, driver, present):
    monkeypatch.setattr(session.os.path, "exists", lambda p: p in nodes)
    monkeypatch.setattr(session.glob, "glob", lambda pattern: driver if pattern.startswith("/proc/driver/") else [])
    assert session.gpu_present() is present


# --- ort: IO binding on CUDA ------------------------------------------------------------------------------------


def onnx_bytes(params) -> bytes:
    return build_model(SPEC, params, {}, opset=17).SerializeToString()


def test_the_cuda_runner_binds_the_input_from_the_host_and_the_output_on_the_gpu(sessions, params):
    x = image().astype(np.float64)[:, :, :, ::-1]  # float64 and not contiguous: the runner must convert
    expected = ort_runner.OrtRunner(onnx_bytes(params), "cpu")(x)
    cpu_session = ort_runner.OrtRunner(onnx_bytes(params), "cpu").sess
    run = ort_runner.OrtRunner(onnx_bytes(params), "cuda")
    y = run(x)
    assert sessions.asked == [["CPUExecutionProvider"]] * 2 + [CUDA_PROVIDERS]
    assert run.sess.calls == [("bind_cpu_input", INPUT), ("bind_output", OUTPUT, "cuda"), ("run_with_iobinding",),
                              ("copy_outputs_to_cpu",)]
    (bound,) = [b.inputs[INPUT] for b in run.sess.bindings]
    assert bound.dtype == np.float32 and bound.flags.c_contiguous and np.array_equal(bound, x)
    assert cpu_session.calls == []  # the CPU runner feeds and fetches plainly
    assert_close(y, expected, TOL["ort"], "cuda runner (run on the CPU here) against the CPU runner")


def test_the_ort_backend_runner_on_cuda_binds_its_output_on_the_gpu(monkeypatch, sessions, params):
    say_cuda_works(monkeypatch, ort_backend)
    run = ort_backend.Backend("cuda").runner(SPEC, params)
    run(image())
    assert sessions.asked[-1] == CUDA_PROVIDERS and ("bind_output", OUTPUT, "cuda") in run.sess.calls


def test_the_ort_gemm_on_cuda_binds_both_inputs_and_the_output_on_the_gpu(monkeypatch, sessions):
    say_cuda_works(monkeypatch, ort_backend)
    placed = []
    real_from_numpy = ort.OrtValue.ortvalue_from_numpy

    def from_numpy(arr, device_type="cpu", device_id=0, *rest):
        placed.append((device_type, device_id))
        return real_from_numpy(arr)  # kept in host memory here

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(from_numpy))
    made = []
    real_make = session.make
    monkeypatch.setattr(session, "make", lambda m, device: made.append(real_make(m, device)) or made[-1])
    ort_backend.Backend("cuda").gemm(4)()
    (sess,) = made
    assert placed == [("cuda", 0), ("cuda", 0)] and sessions.asked[-1] == CUDA_PROVIDERS
    assert sess.calls == [("bind_ortvalue_input", "a"), ("bind_ortvalue_input", "b"), ("bind_output", "y", "cuda"),
                          ("run_with_iobinding",), ("synchronize_outputs",)]
    rng = np.random.default_rng(0)  # gemm's inputs, made again: the product it bound is theirs
    A, B = (rng.standard_normal((4, 4), dtype=np.float32) for _ in range(2))
    np.testing.assert_allclose(sess.bindings[0].outputs[0], A.astype(np.float64) @ B, rtol=1e-5, atol=1e-6)


# --- on a real GPU ----------------------------------------------------------------------------------------------


def float64_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return F.conv2d(torch.from_numpy(x.astype(np.float64)), torch.from_numpy(w.astype(np.float64)), padding=1).numpy()


@gpu
@pytest.mark.parametrize("module", [torch_backend, ort_backend], ids=["torch", "ort"])
def test_gpu_conv2d_on_cuda_is_ieee_float32(module):
    """A TF32 convolution (10 mantissa bits: ~5e-4 per product, ~7e-4 over these 576-term sums) fails 5e-5; IEEE
    float32 (~1e-6 here, a little more where cuDNN picks Winograd) passes it."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 32, 32)).astype(np.float32)
    w = (rng.standard_normal((32, 64, 3, 3)) / 24).astype(np.float32)
    y = module.Backend("cuda").conv2d(x, w, padding=1)
    assert_close(y, float64_conv(x, w), {"rtol": 5e-5, "atol": 5e-5}, f"{module.Backend.name} conv2d on cuda")


@gpu
def test_gpu_torch_runner_on_cuda_agrees_with_the_cpu_runner_in_float32():
    spec = ModelSpec(in_channels=3, num_classes=4, width=16, depth=2)
    p = init_params(spec, seed=1)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    y = model.TorchRunner(spec, p, "cuda")(x)
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    agreement = compare(y, model.TorchRunner(spec, p, "cpu")(x), TOLERANCE["float32 logits"], labels=True)
    assert agreement.ok, agreement


@gpu
def test_gpu_peak_memory_counts_a_tensor_made_inside_fn():
    MiB = 1 << 20
    y, peak = torch_backend.Backend("cuda").peak_memory(lambda: torch.empty(64 * MiB, dtype=torch.uint8, device="cuda"))
    assert y.is_cuda and peak >= 64 * MiB


@gpu
def test_gpu_torch_gemm_on_cuda_is_the_float32_product():
    n = 256
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).double(), torch.randn(n, n, generator=g).double()
    c = torch_backend.Backend("cuda").gemm(n)()
    assert c.is_cuda
    np.testing.assert_allclose(c.cpu().double().numpy(), (a @ b).numpy(), rtol=1e-4, atol=1e-4)


@gpu
def test_gpu_nccl_group_of_one_reduces_on_the_gpu(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                 "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    try:
        assert distributed.init("cuda") == (0, 1)
        assert dist.get_backend() == "nccl" and torch.cuda.current_device() == 0
        assert distributed.all_max(7, torch.device("cuda", 0)) == 7
    finally:
        distributed.finish()


@gpu
def test_gpu_predict_under_bf16_autocast_really_runs_bf16_and_stays_near_float32():
    """bf16 keeps 8 mantissa bits: on this net (bf16 emulated on the CPU) the logits differ from float32 by about
    1% of their largest and ~0.5% of the classes flip; float32 against itself differs by far less than 1e-4."""
    spec = ModelSpec(in_channels=3, num_classes=4, width=8, depth=2)
    p = init_params(spec, seed=2)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    runs = {amp: model.TorchTrainer(spec, p, device="cuda", optim=OptimConfig(), amp=amp).predict(x)
            for amp in (True, False)}
    agreement = compare(runs[True], runs[False], Tolerance(max_rel=5e-2, labels=0.95), labels=True)
    assert runs[True].dtype == np.float32 and agreement.ok, agreement
    assert agreement.max_rel > 1e-4, "amp=True predicted in float32: autocast was not on"


@gpu
def test_gpu_ort_runner_on_cuda_uses_the_cuda_provider_and_agrees_with_the_cpu(params):
    x = image()
    run = ort_runner.OrtRunner(onnx_bytes(params), "cuda")
    assert run.providers[0] == "CUDAExecutionProvider"
    agreement = compare(run(x), ort_runner.OrtRunner(onnx_bytes(params), "cpu")(x), TOLERANCE["float32 logits"],
                        labels=True)
    assert agreement.ok, agreement
