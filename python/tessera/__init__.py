"""Tessera: run an ONNX model split over N devices, with onnxruntime's session API.

    import tessera
    sess = tessera.InferenceSession("model.onnx", devices=2)
    outputs = sess.run(None, {"x": x})

See docs/python.md.
"""
from ._tessera import (
    InferenceSession,
    InvalidArgument,
    NodeArg,
    Plan,
    TesseraError,
    compile,
)

__all__ = [
    "InferenceSession",
    "InvalidArgument",
    "NodeArg",
    "Plan",
    "TesseraError",
    "compile",
]
