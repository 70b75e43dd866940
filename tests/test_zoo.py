"""Tests for accel.zoo: the reference models, their quantized variants and the build cache."""

import collections
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from accel import zoo

torch = pytest.importorskip("torch")

# MLPerf Tiny reference counts (TOOLCHAIN.md): model -> (MACs, parameters).
MLPERF_COUNTS = {
    "resnet8": (12.50e6, 78e3),
    "ds_cnn": (2.66e6, 23e3),
    "fc_autoencoder": (0.264e6, 266e3),
    "mobilenet_v1_025": (7.49e6, 211e3),
}

# Microsoft-domain ops each QOperator model must contain.
EXPECTED_MS_OPS = {
    "digits_cnn": {"QGemm"},
    "digits_mlp": {"QGemm"},
    "resnet8": {"QGemm", "QLinearAdd", "QLinearGlobalAveragePool"},
    "ds_cnn": {"QGemm", "QLinearGlobalAveragePool"},
    "fc_autoencoder": {"QGemm"},
    "mobilenet_v1_025": {"QGemm", "QLinearGlobalAveragePool"},
    "mlp_37_53_19": {"QGemm"},
}

ALL_BUILDS = [(name, variant) for name in zoo.MODEL_NAMES for variant in zoo.VARIANTS]


@pytest.fixture(scope="session")
def cache_dir():
    """Use the shared zoo cache, so repeated runs and other test files reuse the builds."""
    return zoo.default_cache_dir()


def _run(path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _op_counts(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter((n.domain or "ai.onnx", n.op_type) for n in model.graph.node)


def _macs_and_params(model, shape) -> tuple[int, int]:
    """Count MACs and deployed parameters (BatchNorm folded) of the Conv2d and Linear layers."""
    counts = {"macs": 0, "params": 0}

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = module.in_channels // module.groups * kh * kw
            cout = module.out_channels
        else:
            per_output = module.in_features
            cout = module.out_features
        counts["macs"] += output[0].numel() * per_output
        counts["params"] += module.weight.numel() + cout  # a folded BatchNorm always adds a bias

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(torch.zeros(shape))
    for handle in handles:
        handle.remove()
    return counts["macs"], counts["params"]


def test_import_needs_neither_torch_nor_sklearn():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['sklearn'] = None\n"
        "import accel.zoo as z; print(z.input_shape('resnet8'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 3, 32, 32)"


def test_digits_dataset_split():
    x_train, y_train, x_test, y_test = zoo.digits_dataset()
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.float32 and x_train.min() == 0.0 and x_train.max() == 1.0
    assert np.bincount(y_test).min() >= 35  # stratified: 35 or 36 or 37 per class
    assert np.array_equal(zoo.digits_dataset()[3], y_test)


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_calibration_data_shape_and_seed(name):
    x = zoo.calibration_data(name, n=5, seed=3)
    assert x.shape == (5, *zoo.input_shape(name)[1:]) and x.dtype == np.float32
    assert np.array_equal(x, zoo.calibration_data(name, n=5, seed=3))


@pytest.mark.parametrize(
    "call",
    [
        lambda: zoo.build("resnet9"),
        lambda: zoo.build("resnet8", "qdq"),
        lambda: zoo.build("resnet8", activation_type="int4"),
        lambda: zoo.build("resnet8", activation_type="int8", weight_type="uint8"),
        lambda: zoo.calibration_data("resnet8", n=0),
    ],
)
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError, match="must|not support"):
        call()


@pytest.mark.parametrize("name", list(MLPERF_COUNTS))
def test_mlperf_macs_and_params_match_reference(name):
    macs, params = _macs_and_params(zoo.float_model(name), zoo.input_shape(name))
    ref_macs, ref_params = MLPERF_COUNTS[name]
    assert macs == pytest.approx(ref_macs, rel=0.05)
    assert params == pytest.approx(ref_params, rel=0.05)


def test_random_batchnorm_statistics_are_nontrivial():
    model = zoo.float_model("resnet8")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    for bn in norms:
        assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_linear_batchnorm_is_fused():
    model = zoo.float_model("fc_autoencoder")
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 10


def test_float_model_is_deterministic():
    a, b = zoo.float_model("mlp_37_53_19", seed=4), zoo.float_model("mlp_37_53_19", seed=4)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_float_onnx_matches_torch(name, cache_dir):
    path = zoo.build_float(name, cache_dir)
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert "BatchNormalization" not in ops
    x = zoo.calibration_data(name, n=4, seed=1)
    model = zoo.float_model(name)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(path, x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("name", "variant"), ALL_BUILDS)
def test_quantized_model_runs(name, variant, cache_dir):
    path = zoo.build(name, variant, cache_dir)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    x = zoo.calibration_data(name, n=3, seed=7)
    y = _run(path, x)
    y_float = _run(zoo.build_float(name, cache_dir), x)
    assert y.shape == y_float.shape and y.shape[0] == 3
    # Loose sanity bound: int8 error is a fraction of the output's spread.
    assert np.abs(y - y_float).mean() < 0.5 * np.abs(y_float).mean() + 0.05


@pytest.mark.parametrize(("name", "variant"), ALL_BUILDS)
def test_quantized_model_domains(name, variant, cache_dir):
    counts = _op_counts(onnx.load(zoo.build(name, variant, cache_dir)))
    domains = {domain for domain, _ in counts}
    ops = {op for _, op in counts}
    if variant.startswith("qdq"):
        assert domains == {"ai.onnx"}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:
        ms_ops = {op for domain, op in counts if domain == "com.microsoft"}
        assert ms_ops == EXPECTED_MS_OPS[name]
        assert not ops & {"Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool"}


@pytest.mark.parametrize("variant", zoo.VARIANTS)
def test_weight_scales_follow_granularity(variant, cache_dir):
    model = onnx.load(zoo.build("resnet8", variant, cache_dir))
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    scales = []
    for node in model.graph.node:
        if node.op_type in ("QLinearConv", "QGemm"):  # input 4 is the weight scale
            scales.append(inits[node.input[4]])
        elif node.op_type == "DequantizeLinear" and inits.get(node.input[0], np.zeros(0)).ndim >= 2:
            scales.append(inits[node.input[1]])
    assert len(scales) == 10  # 9 convolutions and the classifier
    if variant.endswith("channel"):
        assert all(s.ndim == 1 and s.size > 1 for s in scales)
    else:
        assert all(s.size == 1 for s in scales)


def test_ds_cnn_keeps_asymmetric_padding(cache_dir):
    float_model = onnx.load(zoo.build_float("ds_cnn", cache_dir))
    float_ops = [node.op_type for node in float_model.graph.node]
    assert float_ops[:3] == ["Constant", "Pad", "Conv"]
    # quant_pre_process fuses the Pad into the first convolution.
    model = onnx.load(zoo.build("ds_cnn", "qop_channel", cache_dir))
    conv = next(node for node in model.graph.node if node.op_type == "QLinearConv")
    pads = next(onnx.helper.get_attribute_value(a) for a in conv.attribute if a.name == "pads")
    assert pads == [4, 1, 5, 1]


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_digits_float_accuracy(name, cache_dir):
    _, _, x_test, y_test = zoo.digits_dataset()
    x = x_test.reshape(len(x_test), *zoo.input_shape(name)[1:])
    accuracy = np.mean(_run(zoo.build_float(name, cache_dir), x).argmax(1) == y_test)
    assert accuracy >= 0.95


@pytest.mark.parametrize("variant", zoo.VARIANTS)
def test_digits_cnn_int8_accuracy(variant, cache_dir):
    _, _, x_test, y_test = zoo.digits_dataset()
    logits = _run(zoo.build("digits_cnn", variant, cache_dir), x_test)
    accuracy = np.mean(logits.argmax(1) == y_test)
    assert accuracy >= 0.95


def test_build_is_cached(tmp_path, monkeypatch):
    first = zoo.build("mlp_37_53_19", "qop_tensor", tmp_path)
    stamp = first.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("build() rebuilt a cached model")

    monkeypatch.setattr(zoo, "export_float_onnx", fail)
    monkeypatch.setattr(zoo, "quantize_onnx", fail)
    start = time.perf_counter()
    second = zoo.build("mlp_37_53_19", "qop_tensor", tmp_path)
    assert time.perf_counter() - start < 0.5
    assert second == first and second.stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_build_keys_cache_by_arguments(tmp_path):
    paths = {
        zoo.build("mlp_37_53_19", "qdq_tensor", tmp_path),
        zoo.build("mlp_37_53_19", "qdq_tensor", tmp_path, seed=1),
        zoo.build("mlp_37_53_19", "qdq_tensor", tmp_path, activation_type="uint8"),
    }
    assert len(paths) == 3


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_ZOO_CACHE", str(tmp_path))
    assert zoo.default_cache_dir() == tmp_path
    assert zoo.build("mlp_37_53_19", "qop_channel").parent == tmp_path
