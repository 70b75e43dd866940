"""Build small ONNX models by hand for tests that must not depend on torch."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def qdq_matmul_model(k=4, n=3, extra_nodes=(), input_shape=None, seed=0, opset=17) -> onnx.ModelProto:
    """Return x(float[1,k]) -> Q -> DQ -> MatMul(DQ(w)) -> Q -> DQ -> y, optionally with extra nodes after."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (k, n), dtype=np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="quant_x"),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"], name="dq_x"),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], name="dq_w"),
        helper.make_node("MatMul", ["xf", "wf"], ["mm"], name="matmul"),
        helper.make_node("QuantizeLinear", ["mm", "ys", "yz"], ["yq"], name="quant_y"),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y0" if extra_nodes else "y"], name="dq_y"),
        *extra_nodes,
    ]
    inits = [_init("xs", np.float32(0.05)), _init("xz", np.int8(3)), _init("w", w),
             _init("ws", np.float32(0.01)), _init("wz", np.int8(0)),
             _init("ys", np.float32(0.07)), _init("yz", np.int8(-5))]
    shape = input_shape if input_shape is not None else [1, k]
    graph = helper.make_graph(nodes, "qdq_matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def float_matmul_model(k=4, n=3) -> onnx.ModelProto:
    """Return an unquantized float MatMul model."""
    w = np.ones((k, n), np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")], "float_mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [_init("w", w)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
