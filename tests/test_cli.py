"""The CLI and Python API on real models: inspect tables, .npy/.npz I/O, batches."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import accel
from accel import zoo


def cli(*args):
    return subprocess.run([sys.executable, "-m", "accel.cli", *map(str, args)], capture_output=True, text=True)


def test_inspect_prints_the_layer_table():
    path = zoo.build("digits_cnn", "qop_channel")
    proc = cli("inspect", path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any("conv" in line and "9,216" in line and "per-ch[16]" in line for line in lines)
    assert any("maxpool" in line and "k2x2 s2" in line for line in lines)
    assert lines[-1] == "7 ops, 309,248 MACs, 9,930 parameters per inference"
    assert "input  input: float32[Nx1x8x8]" in proc.stdout


def test_run_npy_batch_equals_api(tmp_path):
    path = zoo.build("digits_cnn", "qdq_tensor")
    _, _, x_test, _ = zoo.digits_dataset()
    x = x_test[:20]
    np.save(tmp_path / "x.npy", x)
    proc = cli("run", path, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy", "--device", "golden")
    assert proc.returncode == 0, proc.stderr
    y_cli = np.load(tmp_path / "y.npy")
    y_api = accel.open_device("golden").load(accel.load_model(path)).run(x)
    assert y_cli.shape == (20, 10) and np.array_equal(y_cli, y_api)
    # one inference at a time gives the same rows
    device = accel.open_device("golden").load(path)
    for i in (0, 7, 19):
        assert np.array_equal(device.run(x[i:i + 1]), y_api[i:i + 1])


def two_input_model():
    """Return an int8 model with two inputs and two outputs: a QLinearAdd and a MaxPool."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(
        s1=np.float32(0.1), z1=np.int8(0), s2=np.float32(0.2), z2=np.int8(5), s3=np.float32(0.25), z3=np.int8(-3)).items()]
    nodes = [helper.make_node("QLinearAdd", ["a", "s1", "z1", "b", "s2", "z2", "s3", "z3"], ["sum"], domain="com.microsoft"),
             helper.make_node("MaxPool", ["a"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("a", TensorProto.INT8, [1, 2, 4, 4]),
                                             helper.make_tensor_value_info("b", TensorProto.INT8, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("sum", TensorProto.INT8, [1, 2, 4, 4]),
                               helper.make_tensor_value_info("pooled", TensorProto.INT8, [1, 2, 2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def test_run_npz_with_several_inputs_and_outputs(tmp_path):
    import onnxruntime as ort
    onnx.save(two_input_model(), tmp_path / "two.onnx")
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (3, 1, 2, 4, 4)).astype(np.int8)
    b = rng.integers(-128, 128, (3, 1, 2, 4, 4)).astype(np.int8)
    np.savez(tmp_path / "x.npz", a=a, b=b)
    proc = cli("run", tmp_path / "two.onnx", "-i", tmp_path / "x.npz", "-o", tmp_path / "y.npz")
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "y.npz")
    assert sorted(out.files) == ["pooled", "sum"]
    session = ort.InferenceSession(str(tmp_path / "two.onnx"), providers=["CPUExecutionProvider"])
    for i in range(3):
        ref_sum, ref_pooled = session.run(None, {"a": a[i], "b": b[i]})
        assert np.array_equal(out["sum"][i], ref_sum) and np.array_equal(out["pooled"][i], ref_pooled)
    # several outputs need an .npz
    proc = cli("run", tmp_path / "two.onnx", "-i", tmp_path / "x.npz", "-o", tmp_path / "y.npy")
    assert proc.returncode == 2 and "npz" in proc.stderr


def test_api_accepts_models_bytes_and_protos():
    proto = two_input_model()
    for source in (proto, proto.SerializeToString()):
        model = accel.load_model(source)
        assert [t.name for t in model.inputs] == ["a", "b"]
        assert [t.name for t in model.outputs] == ["sum", "pooled"]


def test_batches_must_agree():
    device = accel.open_device("golden").load(two_input_model())
    a = np.zeros((2, 1, 2, 4, 4), np.int8)
    with pytest.raises(accel.InputMismatchError, match="batch"):
        device.run({"a": a, "b": np.zeros((3, 1, 2, 4, 4), np.int8)})
    with pytest.raises(accel.InputMismatchError, match="missing"):
        device.run({"a": a})
    with pytest.raises(accel.DeviceError, match="no model"):
        accel.open_device("golden").run(a)


def test_quantize_compile_run(tmp_path):
    """`accel quantize` calibrates a float model with onnxruntime; the result compiles and runs exactly like ORT."""
    import onnxruntime as ort
    float_path = zoo.build_float("digits_cnn")
    images = zoo.digits_dataset()[0][:48].astype(np.float32).reshape(-1, 1, 8, 8)
    np.save(tmp_path / "calib.npy", images)
    out = tmp_path / "q.onnx"
    proc = cli("quantize", float_path, "--calibration", tmp_path / "calib.npy", "--format", "qop", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "qop_channel" in proc.stdout
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "QLinearConv" in ops and "QuantizeLinear" in ops
    x = images[:4]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    got = accel.open_device("emu", config="icebreaker").load(str(out)).run(x[:, None])
    assert np.array_equal(got.reshape(expected.shape), expected)
    # already quantized, and a calibration of the wrong shape: one line each, exit 2
    again = cli("quantize", out, "--calibration", tmp_path / "calib.npy")
    assert again.returncode == 2 and "already quantized" in again.stderr and "Traceback" not in again.stderr
    np.save(tmp_path / "bad.npy", images[:, 0])
    bad = cli("quantize", float_path, "--calibration", tmp_path / "bad.npy")
    assert bad.returncode == 2 and "the calibration is float32 [N, 1, 8, 8]" in bad.stderr
