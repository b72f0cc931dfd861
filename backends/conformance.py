"""The built-in backends against the contract of base.py, for the type checker: each list below names the classes
that claim one Protocol ("these backends Run", "these are Runners"), and mypy checks every claim, signatures and
return types included (tests/test_types.py, fast tier). tests/test_contract.py checks the same at run time, and
plug-ins too.

Nothing here runs: the block is for the type checker only, so importing this module imports no framework.
A new built-in backend joins the lists of what it can do; a new ability or hook of base.py gets a list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvtool_backends import base
    from cvtool_backends.numpy_fast import Backend as NumpyFast
    from cvtool_backends.numpy_fast.model import NumpyRunner, NumpyTrainer
    from cvtool_backends.numpy_loops import Backend as NumpyLoops
    from cvtool_backends.ort_backend import Backend as Ort
    from cvtool_backends.ort_backend.runner import OrtRunner
    from cvtool_backends.torch_backend import Backend as Torch
    from cvtool_backends.torch_backend.model import TorchRunner, TorchTrainer

    def claims(numpy_fast: NumpyFast, numpy_loops: NumpyLoops, torch: Torch, ort: Ort, numpy_runner: NumpyRunner,
               numpy_trainer: NumpyTrainer, torch_runner: TorchRunner, torch_trainer: TorchTrainer,
               ort_runner: OrtRunner) -> list[list]:
        """One object of each class (never made: nothing here runs), in the Protocols it claims."""
        ops: list[base.Backend] = [numpy_fast, numpy_loops, torch, ort]  # every backend
        # the abilities: exactly the backends whose capabilities say so (numpy_loops: operations and backward only)
        runs: list[base.Runs] = [numpy_fast, torch, ort]
        trains: list[base.Trains] = [numpy_fast, torch]
        gradients: list[base.Gradients] = [numpy_fast, numpy_loops, torch]
        # the optional hooks a backend has
        set_threads: list[base.SetThreads] = [numpy_fast, torch, ort]
        gemm: list[base.Gemm] = [torch, ort]
        peak_memory: list[base.PeakMemory] = [torch]
        load_onnx: list[base.LoadOnnx] = [ort]
        # the networks they build, and the trainers' hooks
        runners: list[base.Runner] = [numpy_runner, torch_runner, ort_runner]
        trainers: list[base.Trainer] = [numpy_trainer, torch_trainer]
        max_over_ranks: list[base.MaxOverRanks] = [torch_trainer]
        sync_buffers: list[base.SyncBuffers] = [torch_trainer]
        return [ops, runs, trains, gradients, set_threads, gemm, peak_memory, load_onnx, runners, trainers,
                max_over_ranks, sync_buffers]
