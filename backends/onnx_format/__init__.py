"""ONNX files without ONNX Runtime: one-node graphs (graphs.py), a network's export and its metadata (export.py),
opsets and their IR versions (opset.py). Needs only the `onnx` package, so reading an export's metadata (cvtool
segment, export --verify-only, bench --model) never loads onnxruntime; ort_backend runs what is built here.
This file imports nothing."""
