"""Concat on the accelerator: each input becomes a 1x1 identity MATMUL into its channel slice of the output.

QLinearConcat (QOperator) and QDQ Concat models run on the emulator bit-exact with the golden
model and onnxruntime; a requantizing input is accepted only when the compiler has checked
every input byte against onnxruntime's arithmetic; unsupported concats name the node.
"""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import accel
from accel.api import load_model
from accel.compiler.backend import compile_model
from accel.compiler.errors import CompileError
from accel.config import preset

SIM_SMALL = preset("sim-small")
SEED = 4242


def concat_model(c_a=8, c_b=5, scales=(0.2, 0.2, 0.2), zps=(-5, -5, -5), axis=1, seed=SEED):
    """Return x -> QLinearConv (c_a) and QLinearConv (c_b) -> QLinearConcat -> QLinearConv (1) -> y."""
    rng = np.random.default_rng(seed)
    cin, h, w = 3, 6, 5
    consts = {
        "xs": np.float32(0.05), "xz": np.int8(3), "ws": np.float32(0.01), "wz": np.int8(0),
        "wa": rng.integers(-127, 128, (c_a, cin, 3, 3)).astype(np.int8),
        "wb": rng.integers(-127, 128, (c_b, cin, 3, 3)).astype(np.int8),
        "wc": rng.integers(-127, 128, (1, c_a + c_b if axis == 1 else c_a, 3, 3)).astype(np.int8),
        "as": np.float32(scales[0]), "az": np.int8(zps[0]), "bs": np.float32(scales[1]), "bz": np.int8(zps[1]),
        "cs": np.float32(scales[2]), "cz": np.int8(zps[2]), "ys": np.float32(0.3), "yz": np.int8(1),
    }
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    ms = "com.microsoft"
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("QLinearConv", ["xq", "xs", "xz", "wa", "ws", "wz", "as", "az"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("QLinearConv", ["xq", "xs", "xz", "wb", "ws", "wz", "bs", "bz"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("QLinearConcat", ["cs", "cz", "a", "as", "az", "b", "bs", "bz"], ["c"], domain=ms, axis=axis),
        helper.make_node("QLinearConv", ["c", "cs", "cz", "wc", "ws", "wz", "ys", "yz"], ["yq"], pads=[1, 1, 1, 1]),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "concat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, h * (1 + (axis == 2)), w])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)])
    model.ir_version = 8
    return model


def run_exact(onnx_model, config=SIM_SMALL, n=3):
    print("seed", SEED)
    data = onnx_model.SerializeToString()
    model = load_model(data)
    x = np.random.default_rng(SEED).normal(0, 3, (n, 1, 3, 6, 5)).astype(np.float32)
    artifact = compile_model(model, config)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    expected = np.stack([session.run(None, {"x": xi})[0] for xi in x])
    golden = accel.open_device("golden").load(model)
    emu = accel.open_device("emu").load(artifact)
    for xi, ei in zip(x, expected):
        assert np.array_equal(golden.run(xi), ei), "golden != onnxruntime"
        assert np.array_equal(emu.run(xi), ei), "emulator != onnxruntime"
    return artifact


def test_concat_with_shared_scale_copies_exactly():
    artifact = run_exact(concat_model())
    copies = [layer for layer in artifact.layers if layer["kind"] == "copy"]
    assert [c["name"] for c in copies] == ["concat/0", "concat/1"] or len(copies) == 2
    assert [c["N"] for c in copies] == [8, 8]  # 8 channels, then 5 padded to two 4-wide column tiles
    assert all(c["macs"] == 0 for c in copies)


def test_concat_requantizing_inputs_checked_byte_by_byte():
    # input b has another scale and zero point: accepted when every byte requantizes like onnxruntime...
    run_exact(concat_model(scales=(0.2, 0.4, 0.2), zps=(-5, 7, -5)))
    run_exact(concat_model(scales=(0.2, 0.3, 0.25), zps=(-5, 7, -5)))
    # ...refused, naming the byte, when no float32 multiplier near the scale ratio reproduces it
    with pytest.raises(CompileError, match=r"node 'c' \(concat\): input 1 \(scale 0\.11[0-9]*, zero point 7\) "
                                           r"requantized to the output's scale gives -?\d+ for byte -?\d+ where "
                                           r"onnxruntime gives -?\d+"):
        run_exact(concat_model(scales=(0.2, 0.11, 0.2), zps=(-5, 7, -5)))


def test_concat_of_unaligned_channels_is_refused():
    with pytest.raises(CompileError, match=r"input 0 has 6 channels; the accelerator concatenates at multiples of "
                                           r"4 channels \(ABUF words\), except the last input"):
        compile_model(load_model(concat_model(c_a=6).SerializeToString()), SIM_SMALL)


def test_concat_on_another_axis_is_refused():
    with pytest.raises(CompileError, match=r"concatenates along axis 2 of .*; the accelerator concatenates "
                                           r"channels \(axis 1\)"):
        compile_model(load_model(concat_model(c_b=8, axis=2).SerializeToString()), SIM_SMALL)
