"""Check the golden model against onnxruntime on whole models, element for element.

* the digits CNN (trained at test time) in its four quantization variants, on all 360
  held-out images, with accuracy reported;
* the four MLPerf Tiny reference architectures and two MLPs, per-channel in both formats;
* onnxruntime's float fallback for int8 QDQ graphs with residual branches, which accel
  predicts and warns about.
"""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import accel
from accel import zoo
from accel.compiler.frontend import OrtFloatFallbackWarning, ort_float_fallback_nodes

SEED = 1234


def ort_outputs(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def golden_outputs(path, x):
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrtFloatFallbackWarning)  # these models must be fully fused in ORT
        model = accel.load_model(path)
    return accel.open_device("golden").load(model).run(x)


def assert_bit_exact(path, x):
    expected, got = ort_outputs(path, x), golden_outputs(path, x)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    equal = int(np.sum(got == expected))
    print(f"{path.name}: {equal} of {expected.size} output elements equal")
    assert equal == expected.size
    return got


@pytest.mark.parametrize("variant", zoo.VARIANTS)
def test_digits_cnn_matches_ort_on_whole_test_set(variant):
    _, _, x_test, y_test = zoo.digits_dataset()
    path = zoo.build("digits_cnn", variant)
    logits = assert_bit_exact(path, x_test)
    accuracy = float(np.mean(logits.argmax(axis=1) == y_test))
    print(f"digits_cnn {variant}: int8 accuracy {accuracy:.2%} on {len(y_test)} held-out images")
    assert accuracy >= 0.95


@pytest.mark.parametrize("variant", zoo.VARIANTS)
@pytest.mark.parametrize("name", ["digits_mlp", "mlp_37_53_19"])
def test_mlps_match_ort(name, variant):
    x = zoo.calibration_data(name, n=64, seed=SEED)
    print("seed", SEED)
    assert_bit_exact(zoo.build(name, variant), x.reshape(-1, *zoo.input_shape(name)[1:]))


# (name, batch): the MLPerf Tiny models, per-channel, in both formats.
MLPERF = [("resnet8", 64), ("ds_cnn", 64), ("fc_autoencoder", 64), ("mobilenet_v1_025", 32)]


@pytest.mark.parametrize("variant", ["qdq_channel", "qop_channel"])
@pytest.mark.parametrize("name, batch", MLPERF)
def test_mlperf_tiny_matches_ort(name, batch, variant):
    # onnxruntime runs int8 QDQ residual branches in float (see test_ort_float_fallback...);
    # ResNet-8's QDQ form therefore uses uint8 activations, which onnxruntime fuses fully.
    activation = "uint8" if (name, variant) == ("resnet8", "qdq_channel") else "int8"
    x = zoo.calibration_data(name, n=batch, seed=SEED)
    print("seed", SEED)
    assert_bit_exact(zoo.build(name, variant, activation_type=activation), x)


def ort_float_nodes(path, tmp_path):
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    return sorted(n.name for n in optimized.graph.node
                  if n.op_type in ("Conv", "MatMul", "Gemm", "Add", "AveragePool", "GlobalAveragePool", "Concat"))


@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", "digits_cnn", "fc_autoencoder"])
@pytest.mark.parametrize("activation", ["int8", "uint8"])
def test_ort_float_fallback_is_predicted_exactly(name, activation, tmp_path):
    """accel names exactly the QDQ groups that onnxruntime leaves in float, and warns about them."""
    path = zoo.build(name, "qdq_channel", activation_type=activation)
    actual = ort_float_nodes(path, tmp_path)
    predicted = sorted(ort_float_fallback_nodes(onnx.load(path)))
    assert predicted == actual
    if (name, activation) == ("resnet8", "int8"):
        assert len(actual) == 8  # six convs and two adds on the residual branches
        with pytest.warns(OrtFloatFallbackWarning, match="8 QDQ group"):
            accel.load_model(path)
    else:
        assert actual == []
