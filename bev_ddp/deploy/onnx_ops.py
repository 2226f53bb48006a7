"""ONNX translations of the aten ops the exporter has none for (onnxscript functions).

``aten.linalg_inv`` (the camera geometry inverts the intrinsics and the image augmentation):
onnxruntime's contrib operator ``com.microsoft::Inverse`` (batched ``[*, M, M]``, CPU and CUDA
providers of stock onnxruntime).  A translation for ``linalg_inv`` itself keeps the exporter from
decomposing it into ``linalg_inv_ex`` + an error check, which have no ONNX form.
"""
from __future__ import annotations

import onnx
import onnxscript
import torch
from onnxscript import opset18 as op

MICROSOFT = onnxscript.values.Opset("com.microsoft", 1)


def _register_inverse_schema() -> None:
    """Declare ``com.microsoft::Inverse`` to onnx (onnxruntime defines it; onnx's registry has no
    contrib operators), so onnxscript can build the node and the checker can check it."""
    if "Inverse" in MICROSOFT:
        return
    types = ["tensor(float)", "tensor(double)", "tensor(float16)"]
    onnx.defs.register_schema(onnx.defs.OpSchema(
        "Inverse", "com.microsoft", 1, doc="inverse of square matrices [*, M, M] (onnxruntime contrib)",
        inputs=[onnx.defs.OpSchema.FormalParameter("X", "T")],
        outputs=[onnx.defs.OpSchema.FormalParameter("Y", "T")],
        type_constraints=[("T", types, "float tensors")],
    ))


def linalg_inv(matrices):
    """[*, M, M] -> inverse [*, M, M]."""
    return MICROSOFT.Inverse(matrices)


def translation_table() -> dict:
    """``custom_translation_table`` of :func:`torch.onnx.export`."""
    _register_inverse_schema()
    return {torch.ops.aten.linalg_inv.default: linalg_inv}
