"""Models as users get them: PyTorch QDQ (fake-quant) exports, and ORT-quantized models at opsets 10 to 21."""

import warnings

import numpy as np
import onnx
import onnx.version_converter
import onnxruntime as ort
import pytest

import accel
from accel import zoo
from accel.compiler.frontend import OrtFloatFallbackWarning, ort_float_fallback_nodes

SEED = 99


def torch_qat_model(fake_quant_after_pool: bool):
    """Return a QAT-style CNN whose forward fake-quantizes activations (per-tensor) and weights (per-channel)."""
    import torch
    import torch.nn.functional as F

    class QatCnn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 8, 3, stride=1, padding=(1, 2), dilation=(1, 2))
            self.fc = torch.nn.Linear(8 * 4 * 4, 10)

        @staticmethod
        def fq(x, scale, zp=0):
            return torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127)

        @staticmethod
        def fqw(w):
            scale = (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / 127).clamp(min=1e-8)
            return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(w.shape[0], dtype=torch.int32),
                                                          0, -128, 127)

        def forward(self, x):
            x = self.fq(x, 1 / 255, -128)
            x = self.fq(F.relu(F.conv2d(x, self.fqw(self.c1.weight), self.c1.bias, padding=1)), 0.05, -128)
            x = F.conv2d(x, self.fqw(self.c2.weight), self.c2.bias, padding=(1, 2), dilation=(1, 2))
            x = self.fq(F.relu(x), 0.05, -128)
            x = torch.flatten(F.max_pool2d(x, 2), 1)
            if fake_quant_after_pool:
                x = self.fq(x, 0.05, -128)
            return self.fq(F.linear(x, self.fqw(self.fc.weight), self.fc.bias), 0.1)

    torch.manual_seed(SEED)
    return QatCnn().eval()


def export(model, path, opset=17):
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    return path


def ort_run(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_pytorch_qdq_export_is_bit_exact(tmp_path):
    """Fake-quant QDQ export: float biases quantized as ORT does, per-channel weights, asymmetric pads, dilation."""
    path = export(torch_qat_model(fake_quant_after_pool=True), tmp_path / "qat.onnx")
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops  # a real QDQ export with float biases
    _, _, x, y = zoo.digits_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", OrtFloatFallbackWarning)
        got = accel.open_device("golden").load(path).run(x)
    expected = ort_run(path, x)
    print(f"pytorch qdq export: {int(np.sum(got == expected))} of {expected.size} output elements equal")
    assert np.array_equal(got, expected)


def test_pytorch_qdq_export_with_float_gemm_is_predicted(tmp_path):
    """Without a fake-quant between pooling and Linear, ORT runs the Gemm in float: accel says so."""
    path = export(torch_qat_model(fake_quant_after_pool=False), tmp_path / "qat_float_gemm.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    actual = sorted(n.name for n in onnx.load(options.optimized_model_filepath).graph.node
                    if n.op_type in ("Conv", "Gemm", "MatMul"))
    assert actual == sorted(ort_float_fallback_nodes(onnx.load(path))) == ["/Gemm"]
    with pytest.warns(OrtFloatFallbackWarning, match="1 QDQ group"):
        accel.load_model(path)


@pytest.mark.parametrize("opset", [10, 11, 13, 17, 21])
@pytest.mark.parametrize("variant", ["qdq_tensor", "qop_tensor", "qdq_channel", "qop_channel"])
def test_ort_quantized_models_across_opsets(opset, variant, tmp_path):
    # torch's TorchScript exporter stops at opset 20; onnx's version converter takes it further.
    float_path = zoo.export_float_onnx("digits_mlp", tmp_path / "f.onnx", opset=min(opset, 20))
    if opset > 20:
        onnx.save(onnx.version_converter.convert_version(onnx.load(float_path), opset), float_path)
    x = zoo.calibration_data("digits_mlp", n=64, seed=SEED)
    path = zoo.quantize_onnx(float_path, tmp_path / "q.onnx", x, variant)
    if opset < 13 and variant == "qdq_channel":
        # ORT's quantizer writes per-axis DequantizeLinear, which needs opset 13: an invalid model that
        # onnxruntime refuses to load too. accel says why in one line.
        with pytest.raises(accel.ModelFormatError, match="attribute: axis for operator DequantizeLinear"):
            accel.load_model(path)
        with pytest.raises(Exception, match="INVALID_GRAPH"):
            ort_run(path, x)
        return
    versions = {i.domain or "ai.onnx": i.version for i in onnx.load(path).opset_import}
    assert versions["ai.onnx"] >= opset
    got = accel.open_device("golden").load(path).run(x)
    assert np.array_equal(got, ort_run(path, x))
