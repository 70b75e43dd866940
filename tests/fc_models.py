"""Build small quantized fully-connected ONNX models by hand, and run them on onnxruntime, for back-end tests."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from accel.zoo import qlinear_matmul_chain  # noqa: F401  (re-exported for the back-end tests)

_ONNX_TYPES = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8}


def _init(name, value):
    return numpy_helper.from_array(np.asarray(value), name)


def qdq_fc_chain(widths, *, x_dtype=np.int8, w_dtype=np.int8, w_zp=None, per_channel=False, relu=True, seed=0,
                 transpose_b=False, name="fc_chain") -> onnx.ModelProto:
    """Return float x[N, widths[0]] -> Q -> (DQ -> Gemm(DQ(w), DQ(bias)) [-> Relu] -> Q)* -> DQ -> y.

    Weights are random integers of ``w_dtype`` with zero point ``w_zp`` (default 0 for int8,
    128 for uint8), per output channel when ``per_channel``. Scales are chosen so that the
    outputs spread over the int8/uint8 range (with some saturation).
    """
    rng = np.random.default_rng(seed)
    x_dtype, w_dtype = np.dtype(x_dtype), np.dtype(w_dtype)
    x_lo, x_hi = np.iinfo(x_dtype).min, np.iinfo(x_dtype).max
    w_lo, w_hi = np.iinfo(w_dtype).min, np.iinfo(w_dtype).max
    if w_zp is None:
        w_zp = 0 if w_dtype == np.int8 else 128
    nodes, inits = [], []
    x_scale = np.float32(0.02)
    x_zp = x_dtype.type(rng.integers(x_lo // 4, x_hi // 4 + 1))
    inits += [_init("x_scale", x_scale), _init("x_zp", x_zp)]
    nodes.append(helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["q0"], name="quant_in"))
    current, scale, zp = "q0", ("x_scale", x_scale), "x_zp"
    for i, (k, n) in enumerate(zip(widths, widths[1:])):
        last = i == len(widths) - 2
        w_q = rng.integers(w_lo, w_hi + 1, (k, n)).astype(w_dtype)
        channels = n if per_channel else 1
        w_scale = (rng.uniform(0.5, 1.5, channels) * 0.01).astype(np.float32)
        zps = np.full(channels, w_zp, w_dtype)
        b_scale = (scale[1] * w_scale).astype(np.float32)
        bias = rng.integers(-20000, 20000, n).astype(np.int32)
        y_scale = np.float32(scale[1] * w_scale.mean() * np.sqrt(k) * 70 * 70 / 60)
        y_zp = x_dtype.type(rng.integers(x_lo // 2, x_hi // 2 + 1)) if not relu or last else x_dtype.type(x_lo)
        w_arr, axis = (w_q.T.copy(), 0) if transpose_b else (w_q, 1)
        shape_arg = (lambda v: v) if per_channel else (lambda v: v[0])
        inits += [_init(f"w{i}", w_arr), _init(f"w{i}_scale", shape_arg(w_scale)), _init(f"w{i}_zp", shape_arg(zps)),
                  _init(f"b{i}", bias), _init(f"b{i}_scale", shape_arg(b_scale)),
                  _init(f"b{i}_zp", shape_arg(np.zeros(channels, np.int32))),
                  _init(f"y{i}_scale", y_scale), _init(f"y{i}_zp", y_zp)]
        w_attrs = {"axis": axis} if per_channel else {}
        nodes += [
            helper.make_node("DequantizeLinear", [current, scale[0], zp], [f"xf{i}"], name=f"dq_x{i}"),
            helper.make_node("DequantizeLinear", [f"w{i}", f"w{i}_scale", f"w{i}_zp"], [f"wf{i}"], name=f"dq_w{i}",
                             **w_attrs),
            helper.make_node("DequantizeLinear", [f"b{i}", f"b{i}_scale", f"b{i}_zp"], [f"bf{i}"], name=f"dq_b{i}",
                             **({"axis": 0} if per_channel else {})),
            helper.make_node("Gemm", [f"xf{i}", f"wf{i}", f"bf{i}"], [f"g{i}"], name=f"fc{i}", transB=int(transpose_b)),
        ]
        pre_q = f"g{i}"
        if relu and not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"], name=f"relu{i}"))
            pre_q = f"r{i}"
        nodes.append(helper.make_node("QuantizeLinear", [pre_q, f"y{i}_scale", f"y{i}_zp"], [f"q{i + 1}"],
                                      name=f"quant{i}"))
        current, scale, zp = f"q{i + 1}", (f"y{i}_scale", y_scale), f"y{i}_zp"
    nodes.append(helper.make_node("DequantizeLinear", [current, scale[0], zp], ["y"], name="dequant_out"))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", widths[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def ort_run(model, x: np.ndarray) -> np.ndarray:
    """Run a one-input, one-output model (path or ModelProto) on onnxruntime's CPU provider."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def digits_cnn_head(variant: str, tmp_path):
    """Cut the digits CNN's classifier head (Flatten output -> logits) out of the zoo model.

    Return (full model path, head model path, head inputs for the 360 test images): the
    CNN's own Flatten activations, float for QDQ heads and int8 for QOperator heads.
    """
    import onnx.utils

    import accel
    from accel import numerics, zoo
    from accel.sim.golden import run_graph

    path = zoo.build("digits_cnn", variant)
    names = {n.name: n for n in onnx.load(path).graph.node}
    head = tmp_path / f"digits_cnn_head_{variant}.onnx"
    onnx.utils.extract_model(str(path), str(head), [names["/7/Flatten"].output[0]], ["output"])
    full = accel.load_model(path)
    node = next(n for n in full.graph.nodes if n.op == "reshape")
    images = zoo.digits_dataset()[2]
    q = np.stack([run_graph(full.graph, {"input": im[None]}, keep=True)[node.outputs[0]][0] for im in images])
    if accel.load_model(head).inputs[0].dtype == np.float32:
        quant = full.graph.tensors[node.outputs[0]].quant
        return path, head, numerics.dequantize_linear(q, quant.scale[0], quant.zero_point[0])
    return path, head, q
