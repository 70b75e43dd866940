"""Build the reference models that tests, demos and benchmarks compile.

Each model is defined in ``torch.nn``, exported to ONNX with the legacy
(TorchScript) exporter and quantized statically with onnxruntime's quantizer.
The digits models are trained on scikit-learn's bundled digits; the MLPerf Tiny
architectures (ResNet-8, DS-CNN, FC autoencoder, MobileNetV1-0.25) get seeded
random weights and BatchNorm statistics fitted on seeded random data, so that
folding BatchNorm changes the weights.

torch and scikit-learn are imported inside the functions that need them, so
``import accel.zoo`` works without either. Quantized models are cached on disk
by :func:`build`.

Both formats hold the same integer weights, int32 biases, scales and zero points (QDQ adds the
bias DequantizeLinear scales). onnxruntime runs QOperator nodes as integer kernels; in QDQ graphs
it fuses DQ->op->Q groups into the same kernels at session creation, except (onnxruntime 1.32,
x86, int8 activations) around activations that feed two consumers: six of resnet8's convolutions
and two of its Adds then run in float between DQ and Q, and its qdq_* outputs differ from qop_*
by 1 LSB in a few percent of the logits. The other models give identical outputs in both formats.

Typical use::

    from accel import zoo
    path = zoo.build("resnet8", "qop_channel")
    x = zoo.calibration_data("resnet8", n=1)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import tempfile
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "MODEL_NAMES",
    "VARIANTS",
    "ZOO_VERSION",
    "digits_dataset",
    "float_model",
    "input_shape",
    "calibration_data",
    "export_float_onnx",
    "quantize_onnx",
    "build_float",
    "build",
    "default_cache_dir",
    "qlinear_matmul_chain",
]

logger = logging.getLogger(__name__)

MODEL_NAMES = (
    "digits_cnn",
    "digits_mlp",
    "resnet8",
    "ds_cnn",
    "fc_autoencoder",
    "mobilenet_v1_025",
    "mlp_37_53_19",
)
"""Names accepted by every function of this module."""

VARIANTS = ("qdq_tensor", "qdq_channel", "qop_tensor", "qop_channel")
"""Quantization variants: ONNX format (QDQ or QOperator) x weight granularity."""

ZOO_VERSION = 1
"""Bump when a model definition or the quantization recipe changes; it keys the cache."""

_INPUT_SHAPES = {
    "digits_cnn": (1, 1, 8, 8),
    "digits_mlp": (1, 64),
    "resnet8": (1, 3, 32, 32),
    "ds_cnn": (1, 1, 49, 10),
    "fc_autoencoder": (1, 640),
    "mobilenet_v1_025": (1, 3, 96, 96),
    "mlp_37_53_19": (1, 37),
}

_TRAINED = ("digits_cnn", "digits_mlp")

_TRAINING = {
    # name: (epochs, Adam learning rate), batch 32, cosine schedule
    "digits_cnn": (30, 3e-3),
    "digits_mlp": (40, 1e-2),
}

_VARIANT_SETTINGS = {
    # variant: (QuantFormat member name, per_channel)
    "qdq_tensor": ("QDQ", False),
    "qdq_channel": ("QDQ", True),
    "qop_tensor": ("QOperator", False),
    "qop_channel": ("QOperator", True),
}

_QUANT_TYPES = {"int8": "QInt8", "uint8": "QUInt8"}

_DIGITS_TEST_SIZE = 360


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"model name must be one of {MODEL_NAMES}, not {name!r}")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")


def _check_quant_types(activation_type: str, weight_type: str) -> None:
    for what, value in (("activation_type", activation_type), ("weight_type", weight_type)):
        if value not in _QUANT_TYPES:
            raise ValueError(f"{what} must be one of {tuple(_QUANT_TYPES)}, not {value!r}")
    if (activation_type, weight_type) == ("int8", "uint8"):
        raise ValueError(
            "onnxruntime's quantizer does not support int8 activations with uint8 weights; "
            "use int8/int8, uint8/int8 or uint8/uint8"
        )


# --- data ---------------------------------------------------------------------------------------


def digits_dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load scikit-learn's digits as ``x_train, y_train, x_test, y_test``.

    Images are float32 in [0, 1] with shape [N, 1, 8, 8]; labels are int64.
    The split is stratified and seeded, with 360 held-out test images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=_DIGITS_TEST_SIZE, stratify=y, random_state=seed
    )
    return x_train, y_train, x_test, y_test


def input_shape(name: str) -> tuple[int, ...]:
    """Return the model's input shape with batch 1 (NCHW for images).

    digits_mlp takes flattened images, shape (1, 64): reshape digits images with
    ``x.reshape(-1, *input_shape(name)[1:])``.
    """
    _check_name(name)
    return _INPUT_SHAPES[name]


def _random_inputs(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n seeded random inputs in the range the model's real inputs would have."""
    shape = (n, *_INPUT_SHAPES[name][1:])
    if name in ("resnet8", "mobilenet_v1_025"):
        # Camera images scaled to [0, 1].
        return rng.random(shape, dtype=np.float32)
    # Standardized features: MFCCs (ds_cnn), log-mel frames (fc_autoencoder), generic vectors.
    return rng.standard_normal(shape, dtype=np.float32)


def calibration_data(name: str, n: int = 32, seed: int = 0) -> np.ndarray:
    """Return n float32 calibration inputs for the model, shaped [n, *input_shape(name)[1:]].

    The digits models get the first n training images of ``digits_dataset(seed)``
    (never test images); the others get seeded random data in a realistic range:
    uniform [0, 1] images for ResNet-8 and MobileNet, standard normal features otherwise.
    """
    _check_name(name)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive int, not {n!r}")
    if name in _TRAINED:
        x_train = digits_dataset(seed)[0]
        if n > len(x_train):
            raise ValueError(f"n must be at most {len(x_train)} for {name}, not {n}")
        return np.ascontiguousarray(x_train[:n].reshape(n, *_INPUT_SHAPES[name][1:]))
    return _random_inputs(name, int(n), np.random.default_rng([seed, 1]))


# --- torch models -------------------------------------------------------------------------------


def _conv_bn_relu(nn, cin: int, cout: int, kernel, stride=1, padding=0, groups: int = 1) -> list:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


def _zero_pad_class():
    import torch
    import torch.nn as nn

    class PadFunction(torch.autograd.Function):
        """Zero-pad the last two axes; export as one ONNX Pad with constant pads."""

        @staticmethod
        def forward(ctx, x, pads):
            return torch.nn.functional.pad(x, pads)

        @staticmethod
        def symbolic(g, x, pads):
            left, right, top, bottom = pads
            onnx_pads = torch.tensor([0, 0, top, left, 0, 0, bottom, right], dtype=torch.int64)
            return g.op("Pad", x, g.op("Constant", value_t=onnx_pads), mode_s="constant")

    class ZeroPad2d(nn.Module):
        """Zero-pad like ``nn.ZeroPad2d((left, right, top, bottom))``.

        nn.ZeroPad2d exports through a Slice with step -1 that the TorchScript exporter cannot
        constant-fold, which leaves a dozen shape nodes in front of the Pad.
        """

        def __init__(self, pads: tuple[int, int, int, int]):
            super().__init__()
            self.pads = tuple(pads)

        def forward(self, x):
            return PadFunction.apply(x, self.pads)

    return ZeroPad2d


def _residual_block_class():
    import torch.nn as nn

    class ResidualBlock(nn.Module):
        """Apply two 3x3 conv+BN, add the (projected) shortcut, then ReLU."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.bn2 = nn.BatchNorm2d(cout)
            if stride != 1 or cin != cout:
                self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride)
            else:
                self.shortcut = nn.Identity()
            self.relu2 = nn.ReLU()

        def forward(self, x):
            y = self.relu1(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu2(y + self.shortcut(x))

    return ResidualBlock


def _architecture(name: str) -> "torch.nn.Module":
    """Construct the untrained torch module (BatchNorm not yet folded)."""
    import torch.nn as nn

    if name == "digits_cnn":
        return nn.Sequential(
            *_conv_bn_relu(nn, 1, 16, 3, padding=1),
            *_conv_bn_relu(nn, 16, 32, 3, padding=1),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )
    if name == "digits_mlp":
        return nn.Sequential(
            nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)
        )
    if name == "mlp_37_53_19":
        return nn.Sequential(nn.Linear(37, 53), nn.ReLU(), nn.Linear(53, 19))
    if name == "resnet8":
        block = _residual_block_class()
        return nn.Sequential(
            *_conv_bn_relu(nn, 3, 16, 3, padding=1),
            block(16, 16, 1),
            block(16, 32, 2),
            block(32, 64, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 10),
        )
    if name == "ds_cnn":
        # Keras padding="same" with kernel (10, 4), stride 2 on 49x10 pads (4, 5) rows and (1, 1)
        # columns; the asymmetric rows need an explicit pad.
        pad = _zero_pad_class()
        layers = [pad((1, 1, 4, 5)), *_conv_bn_relu(nn, 1, 64, (10, 4), stride=2)]
        for _ in range(4):
            layers += _conv_bn_relu(nn, 64, 64, 3, padding=1, groups=64)
            layers += _conv_bn_relu(nn, 64, 64, 1)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 12)]
        return nn.Sequential(*layers)
    if name == "fc_autoencoder":
        widths = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
        layers = []
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU()]
        layers.append(nn.Linear(128, 640))
        return nn.Sequential(*layers)
    if name == "mobilenet_v1_025":
        # MobileNetV1 alpha 0.25: (output channels, stride) of the 13 depthwise-separable blocks.
        blocks = [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)]
        blocks += [(128, 1)] * 5 + [(256, 2), (256, 1)]
        layers = _conv_bn_relu(nn, 3, 8, 3, stride=2, padding=1)
        cin = 8
        for cout, stride in blocks:
            layers += _conv_bn_relu(nn, cin, cin, 3, stride=stride, padding=1, groups=cin)
            layers += _conv_bn_relu(nn, cin, cout, 1)
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 2)]
        return nn.Sequential(*layers)
    raise AssertionError(f"unhandled model {name!r}")


def _batchnorms(model) -> list:
    import torch.nn as nn

    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _train_digits(name: str, model, seed: int) -> None:
    """Train a digits model in place with Adam; deterministic for a given seed."""
    import torch

    x_train, y_train, _, _ = digits_dataset(seed)
    x = torch.from_numpy(x_train.reshape(len(x_train), *_INPUT_SHAPES[name][1:]))
    y = torch.from_numpy(y_train)
    epochs, lr = _TRAINING[name]
    batch = 32
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    with torch.enable_grad():  # the caller may hold torch.no_grad()
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for start in range(0, len(x), batch):
                idx = order[start : start + batch]
                optimizer.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                optimizer.step()
            scheduler.step()


def _fit_random_batchnorms(name: str, model, seed: int) -> None:
    """Give every BatchNorm random affine parameters and statistics measured on random data."""
    import torch

    for bn in _batchnorms(model):
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    rng = np.random.default_rng([seed, 2])
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.from_numpy(_random_inputs(name, 64, rng)))


def _fold_linear_batchnorms(model):
    """Return a Sequential where each Linear followed by BatchNorm1d is fused into one Linear."""
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_linear_bn_eval

    if not isinstance(model, nn.Sequential):
        return model
    layers = list(model)
    out = []
    i = 0
    while i < len(layers):
        if (
            i + 1 < len(layers)
            and isinstance(layers[i], nn.Linear)
            and isinstance(layers[i + 1], nn.BatchNorm1d)
        ):
            out.append(fuse_linear_bn_eval(layers[i], layers[i + 1]))
            i += 2
        else:
            out.append(layers[i])
            i += 1
    return nn.Sequential(*out)


def float_model(name: str, seed: int = 0) -> "torch.nn.Module":
    """Build the eval-mode float torch model, trained (digits) or with seeded random weights.

    Linear+BatchNorm1d pairs are fused here; Conv+BatchNorm2d pairs stay in the module and the
    ONNX exporter folds them. The result is deterministic for a given seed. The digits models
    train for a few seconds on one thread.
    """
    _check_name(name)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _architecture(name)
            if name in _TRAINED:
                _train_digits(name, model, seed)
            else:
                _fit_random_batchnorms(name, model, seed)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model = _fold_linear_batchnorms(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --- ONNX export and quantization ---------------------------------------------------------------


def export_float_onnx(
    name: str, path: str | os.PathLike, seed: int = 0, opset: int = 17
) -> pathlib.Path:
    """Export the float model to ONNX at path, with a dynamic batch axis, and return the path.

    The input is named "input" and the output "output".
    """
    import torch

    model = float_model(name, seed)
    path = pathlib.Path(path)
    x = torch.zeros(_INPUT_SHAPES[name])
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo; it still gives cleaner graphs.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return path


class _DropQuantizerAdvice(logging.Filter):
    """Drop the quantizer's advice to prefer QDQ, which it logs on the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please use QuantFormat.QDQ")


@contextlib.contextmanager
def _quiet_root_logger():
    advice_filter = _DropQuantizerAdvice()
    root = logging.getLogger()
    root.addFilter(advice_filter)
    try:
        yield
    finally:
        root.removeFilter(advice_filter)


def _calibration_reader(calibration: np.ndarray, batch: int = 16, input_name: str = "input"):
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        """Feed the calibration array to the quantizer in batches."""

        def __init__(self):
            self._batches = iter(
                [calibration[i : i + batch] for i in range(0, len(calibration), batch)]
            )

        def get_next(self):
            x = next(self._batches, None)
            return None if x is None else {input_name: x}

    return ArrayReader()


def quantize_onnx(
    float_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calibration: np.ndarray,
    variant: str,
    activation_type: str = "int8",
    weight_type: str = "int8",
    input_name: str = "input",
    calibration_batch: int = 16,
) -> pathlib.Path:
    """Quantize a float ONNX model statically with onnxruntime and return out_path.

    The model is pre-processed with ``quant_pre_process``, then calibrated with MinMax on
    ``calibration`` (fed as input ``input_name``, ``calibration_batch`` at a time). ``variant`` picks the format (QDQ or QOperator)
    and per-tensor or per-channel weights; the types are "int8" or "uint8".
    """
    _check_variant(variant)
    _check_quant_types(activation_type, weight_type)
    calibration = np.asarray(calibration)
    if calibration.dtype != np.float32 or calibration.ndim < 2 or len(calibration) == 0:
        raise ValueError(
            "calibration must be a non-empty float32 array with a batch axis, "
            f"not {calibration.dtype} of shape {calibration.shape}"
        )
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_format, per_channel = _VARIANT_SETTINGS[variant]
    out_path = pathlib.Path(out_path)
    with _quiet_root_logger(), tempfile.TemporaryDirectory(prefix="accel-zoo-") as tmp:
        pre_path = pathlib.Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(float_path), str(pre_path))
        quantize_static(
            str(pre_path),
            str(out_path),
            _calibration_reader(calibration, calibration_batch, input_name),
            quant_format=getattr(QuantFormat, quant_format),
            per_channel=per_channel,
            activation_type=getattr(QuantType, _QUANT_TYPES[activation_type]),
            weight_type=getattr(QuantType, _QUANT_TYPES[weight_type]),
        )
    return out_path


def _check_runs(path: pathlib.Path, x: np.ndarray) -> None:
    """Run the model in onnxruntime on x and check it gives a finite batch of outputs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"input": x})
    if y.shape[0] != x.shape[0] or not np.all(np.isfinite(y)):
        raise RuntimeError(f"{path.name} gave a bad output of shape {y.shape} for input {x.shape}")


# --- cache --------------------------------------------------------------------------------------


def default_cache_dir() -> pathlib.Path:
    """Return the cache directory: $ACCEL_ZOO_CACHE, else <repo or cwd>/.cache/zoo."""
    env = os.environ.get("ACCEL_ZOO_CACHE")
    if env:
        return pathlib.Path(env)
    repo = pathlib.Path(__file__).resolve().parent.parent
    root = repo if (repo / "pyproject.toml").is_file() else pathlib.Path.cwd()
    return root / ".cache" / "zoo"


@functools.cache
def _tool_key() -> str:
    """Hash the zoo version with the versions of the tools that shape the ONNX files."""
    versions = [str(ZOO_VERSION)]
    for package in ("torch", "onnx", "onnxruntime", "scikit-learn", "numpy"):
        try:
            versions.append(f"{package}={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package}=none")
    return hashlib.sha256(";".join(versions).encode()).hexdigest()[:10]


def _write_atomically(final: pathlib.Path, write) -> pathlib.Path:
    """Call write(tmp_path) in final's directory, then rename tmp_path to final."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{final.stem}-", dir=final.parent) as tmp:
        tmp_path = pathlib.Path(tmp) / final.name
        write(tmp_path)
        os.replace(tmp_path, final)
    return final


def build_float(
    name: str, cache_dir: str | os.PathLike | None = None, seed: int = 0
) -> pathlib.Path:
    """Return the path of the float ONNX model, exporting it into the cache if missing."""
    _check_name(name)
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache_dir / f"{name}_float_s{seed}_{_tool_key()}.onnx"
    if final.is_file():
        return final
    start = time.perf_counter()

    def write(tmp_path: pathlib.Path) -> None:
        export_float_onnx(name, tmp_path, seed)
        _check_runs(tmp_path, calibration_data(name, n=2, seed=seed))

    _write_atomically(final, write)
    logger.info("exported %s in %.2f s", final.name, time.perf_counter() - start)
    return final


def build(
    name: str,
    variant: str = "qdq_channel",
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    activation_type: str = "int8",
    weight_type: str = "int8",
) -> pathlib.Path:
    """Return the path of the quantized ONNX model, building it into the cache if missing.

    Files are keyed by name, variant, seed, types, :data:`ZOO_VERSION` and the tool versions,
    and written atomically, so parallel callers may race safely. The cache directory defaults
    to :func:`default_cache_dir`.
    """
    _check_name(name)
    _check_variant(variant)
    _check_quant_types(activation_type, weight_type)
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache_dir / (
        f"{name}_{variant}_a{activation_type}_w{weight_type}_s{seed}_{_tool_key()}.onnx"
    )
    if final.is_file():
        return final
    float_path = build_float(name, cache_dir, seed)
    start = time.perf_counter()

    def write(tmp_path: pathlib.Path) -> None:
        calibration = calibration_data(name, seed=seed)
        quantize_onnx(float_path, tmp_path, calibration, variant, activation_type, weight_type)
        _check_runs(tmp_path, calibration[:2])

    _write_atomically(final, write)
    logger.info("quantized %s in %.2f s", final.name, time.perf_counter() - start)
    return final


def qlinear_matmul_chain(shapes, *, reshape_to=None, seed=0, name="qlinear_chain") -> "onnx.ModelProto":
    """Return int8 x -> QLinearMatMul -> [Reshape(reshape_to)] -> QLinearMatMul ... -> int8 y (no quantize/dequantize).

    ``shapes`` lists the input shape, then the weight shapes [K, N]; a Reshape to
    ``reshape_to`` sits after the first matmul.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def _init(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    rng = np.random.default_rng(seed)
    x_shape, weights = shapes[0], shapes[1:]
    nodes, inits = [], [_init("s_in", np.float32(0.05)), _init("z_in", np.int8(3))]
    current, s, z = "x", "s_in", "z_in"
    out_shape = list(x_shape)
    for i, (k, n) in enumerate(weights):
        inits += [_init(f"w{i}", rng.integers(-127, 128, (k, n)).astype(np.int8)), _init(f"ws{i}", np.float32(0.01)),
                  _init(f"wz{i}", np.int8(0)), _init(f"s{i}", np.float32(0.05 * 0.01 * np.sqrt(k) * 70 / 0.05)),
                  _init(f"z{i}", np.int8(rng.integers(-20, 20)))]
        nodes.append(helper.make_node("QLinearMatMul", [current, s, z, f"w{i}", f"ws{i}", f"wz{i}", f"s{i}", f"z{i}"],
                                      [f"m{i}"], name=f"qmm{i}"))
        current, s, z = f"m{i}", f"s{i}", f"z{i}"
        out_shape[-1] = n
        if i == 0 and reshape_to is not None:
            inits.append(_init("shape0", np.asarray(reshape_to, np.int64)))
            nodes.append(helper.make_node("Reshape", [current, "shape0"], ["r0"], name="regroup"))
            current, out_shape = "r0", list(reshape_to)
    nodes.append(helper.make_node("Identity", [current], ["y"], name="out"))
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.INT8, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
