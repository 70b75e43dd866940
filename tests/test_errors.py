"""Bad input gets a typed exception from the API and a one-line error with exit code 2 from the CLI."""

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

import accel
from accel.errors import (FloatModelError, InputMismatchError, ModelFormatError, ShapeError, UnsupportedOpError)

from .onnx_builders import float_matmul_model, qdq_matmul_model


def run_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "accel.cli", *map(str, args)], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(args, *fragments):
    code, out, err = run_cli(*args)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def good_model(tmp_path):
    path = tmp_path / "good.onnx"
    onnx.save(qdq_matmul_model(), path)
    return path


def test_not_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelFormatError, match="notes.onnx"):
        accel.load_model(path)
    assert_one_line_error(["inspect", path], "notes.onnx", "not")


def test_truncated(tmp_path, good_model):
    data = good_model.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="truncated.onnx"):
        accel.load_model(path)
    assert_one_line_error(["inspect", path], "truncated.onnx")


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read"):
        accel.load_model(tmp_path / "nope.onnx")
    assert_one_line_error(["inspect", tmp_path / "nope.onnx"], "nope.onnx")


def test_float_model_says_how_to_quantize(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(float_matmul_model(), path)
    with pytest.raises(FloatModelError, match="quantize_static"):
        accel.load_model(path)
    assert_one_line_error(["inspect", path], "float model", "quantize")


def test_unsupported_op_names_node_op_and_supported_ops(tmp_path):
    softmax = helper.make_node("Softmax", ["y0"], ["y"], name="the_softmax")
    path = tmp_path / "softmax.onnx"
    onnx.save(qdq_matmul_model(extra_nodes=[softmax]), path)
    with pytest.raises(UnsupportedOpError, match="the_softmax"):
        accel.load_model(path)
    line = assert_one_line_error(["inspect", path], "'the_softmax'", "Softmax", "supported ops", "QLinearConv")
    assert "MatMul" in line


def test_unresolvable_shape(tmp_path):
    path = tmp_path / "symbolic.onnx"
    onnx.save(qdq_matmul_model(input_shape=[1, "features"]), path)
    with pytest.raises(ShapeError, match="features"):
        accel.load_model(path)
    assert_one_line_error(["inspect", path], "'x'", "dimension 1", "features")


@pytest.mark.parametrize("bad, fragment", [
    (np.zeros((1, 5), np.float32), "shape [1, 5]"),
    (np.zeros((1, 4), np.float64), "dtype float64"),
    (np.zeros((2, 3, 4), np.float32), "shape [2, 3, 4]"),
])
def test_input_mismatch(tmp_path, good_model, bad, fragment):
    device = accel.open_device("golden").load(accel.load_model(good_model))
    with pytest.raises(InputMismatchError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        device.run(bad)
    np.save(tmp_path / "x.npy", bad)
    assert_one_line_error(["run", good_model, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy"], fragment, "'x'")


def test_unknown_device(good_model, tmp_path):
    with pytest.raises(accel.DeviceError, match="golden"):
        accel.open_device("quantum")
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    assert_one_line_error(["run", good_model, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy",
                           "--device", "quantum"], "quantum", "available")


def test_every_error_is_an_accel_error():
    for cls in (ModelFormatError, FloatModelError, UnsupportedOpError, ShapeError, InputMismatchError):
        assert issubclass(cls, accel.AccelError)
