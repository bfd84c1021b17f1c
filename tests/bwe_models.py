"""Small ONNX models in the MMSys 2024 challenge's signature, built with onnx's helper API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from onnx import GraphProto


def _save(graph: GraphProto, path: Path) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime of the last years reads
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def stateless_model(path: Path, *, scale: float = 0.5, bias: float = 300_000.0) -> Path:
    """``output[..., 0] = bias + scale * obs[0]`` (obs[0]: the latest short MI's receive rate)."""
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((150, 2), dtype=np.float32)
    weight[0, 0] = scale
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["obs", "W"], ["product"]),
            helper.make_node("Add", ["product", "b"], ["output"]),
        ],
        "stateless",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, 1, 150])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 2])],
        initializer=[
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(np.array([bias, 1.0], dtype=np.float32), "b"),
        ],
    )
    return _save(graph, path)


def recurrent_model(path: Path, width: int = 4) -> Path:
    """States count calls: ``hidden' = hidden + 1``;
    ``output[..., 0] = 100000 + 10000 * sum(hidden)``."""
    from onnx import TensorProto, helper, numpy_helper

    to_output = np.zeros((width, 2), dtype=np.float32)
    to_output[:, 0] = 10_000.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["hidden_states", "Wh"], ["from_state"]),
            helper.make_node("Add", ["from_state", "b"], ["flat"]),
            helper.make_node("Reshape", ["flat", "shape"], ["output"]),
            helper.make_node("Add", ["hidden_states", "one"], ["state_out"]),
            helper.make_node("Identity", ["cell_states"], ["cell_out"]),
        ],
        "recurrent",
        [
            helper.make_tensor_value_info("obs", TensorProto.FLOAT, [1, 1, 150]),
            helper.make_tensor_value_info("hidden_states", TensorProto.FLOAT, [1, width]),
            helper.make_tensor_value_info("cell_states", TensorProto.FLOAT, [1, width]),
        ],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 2]),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, width]),
            helper.make_tensor_value_info("cell_out", TensorProto.FLOAT, [1, width]),
        ],
        initializer=[
            numpy_helper.from_array(to_output, "Wh"),
            numpy_helper.from_array(np.array([100_000.0, 0.0], dtype=np.float32), "b"),
            numpy_helper.from_array(np.array([1, 1, 2], dtype=np.int64), "shape"),
            numpy_helper.from_array(np.ones((1, width), dtype=np.float32), "one"),
        ],
    )
    return _save(graph, path)
