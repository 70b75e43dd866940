"""Run compiled models on the cycle-accurate RTL: rtl == emu == onnxruntime, element for element.

The acceptance cases of the hardware issues: the MLPerf Tiny FC autoencoder, the
37->53->19 MLP, the digits MLP and the digits CNN's classifier head (first hardware
path); the digits CNN in its four quantization variants, ResNet-8, DS-CNN and
MobileNetV1-0.25 (convolutional networks). Each is compiled and run through the ``rtl``
device (one resident Verilator simulation per module and config); the hardware's cycle
counter must equal the emulator's and the compiler's cycle model.
"""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import accel
from accel import zoo
from accel.compiler.backend import compile_model
from accel.config import BufferSpec, preset

from ..fc_models import digits_cnn_head

SEED = 2026
CONFIG = preset("sim-small")


def ort_run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def rtl(sim_cache_root, live_output):
    with live_output():
        device = accel.open_device("rtl", config=CONFIG, cache_root=sim_cache_root)
    with device:
        yield device


def check(rtl, path, x, batch=1, config=CONFIG):
    model = accel.load_model(path)
    artifact = compile_model(model, config, batch=batch)
    expected = ort_run(path, x)
    emu = accel.open_device("emu").load(artifact)
    y_emu = emu.run(x)
    y_rtl = rtl.load(artifact).run(x)
    equal = int(np.sum(y_rtl == expected))
    print(f"{path.name} batch {batch}: {equal} of {expected.size} output elements equal onnxruntime; "
          f"rtl cycles per run {rtl.last_cycles[:3]}, emu {emu.last_cycles[:3]}")
    assert y_rtl.dtype == expected.dtype and y_rtl.shape == expected.shape
    assert equal == expected.size
    assert np.array_equal(y_emu, expected)
    assert rtl.last_cycles == emu.last_cycles == [sum(layer["cycles"] for layer in artifact.layers)] * len(
        rtl.last_cycles)
    assert rtl.last_stream_bytes == emu.last_stream_bytes
    return artifact


@pytest.mark.parametrize("variant", ["qdq_channel", "qop_channel"])
def test_fc_autoencoder(rtl, variant):
    print("seed", SEED)
    x = zoo.calibration_data("fc_autoencoder", n=3, seed=SEED)
    check(rtl, zoo.build("fc_autoencoder", variant), x)


@pytest.mark.parametrize("variant", zoo.VARIANTS)
def test_mlp_37_53_19(rtl, variant):
    print("seed", SEED)
    x = zoo.calibration_data("mlp_37_53_19", n=7, seed=SEED)
    check(rtl, zoo.build("mlp_37_53_19", variant), x, batch=3)


@pytest.mark.parametrize("variant", ["qdq_channel", "qop_tensor"])
def test_digits_mlp_all_test_images(rtl, variant):
    x = zoo.digits_dataset()[2].reshape(-1, 64)
    check(rtl, zoo.build("digits_mlp", variant), x, batch=40)


@pytest.mark.parametrize("variant", ["qdq_tensor", "qop_channel"])
def test_digits_cnn_classifier_head(rtl, variant, tmp_path):
    _, head, x = digits_cnn_head(variant, tmp_path)
    check(rtl, head, x, batch=36)


def test_cli_compile_and_run_on_rtl(tmp_path, sim_cache_root):
    path = zoo.build("mlp_37_53_19", "qdq_channel")
    x = zoo.calibration_data("mlp_37_53_19", n=4, seed=SEED)
    np.save(tmp_path / "x.npy", x)
    art = tmp_path / "mlp.accel"
    env = {**os.environ, "ACCEL_SIM_CACHE": str(sim_cache_root)}
    for args in (["compile", path, "--config", "sim-small", "-o", art],
                 ["run", art, "--input", tmp_path / "x.npy", "--device", "rtl", "-o", tmp_path / "y.npy"]):
        proc = subprocess.run([sys.executable, "-m", "accel.cli", *map(str, args)], capture_output=True, text=True,
                              env=env)
        assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "y.npy"), ort_run(path, x))


def test_onnx_backend_on_rtl(sim_cache_root):
    """onnx's own QLinearMatMul node tests, through accel's backend on the rtl engine."""
    from onnx.backend.test.case.node import collect_testcases

    import accel.onnx_backend as backend

    cases = [c for c in collect_testcases(None) if c.name.startswith("test_qlinearmatmul_2D")]
    assert len(cases) == 4
    rtl_backend = backend.backend_for("rtl")
    assert rtl_backend.engine == "rtl"
    for case in cases:
        for inputs, outputs in case.data_sets:
            got = rtl_backend.prepare(case.model).run(list(inputs))
            assert np.array_equal(got[0], outputs[0]), case.name


# -- convolutional networks (issue 4) ----------------------------------------------------------

ICEBREAKER = preset("icebreaker")


@pytest.mark.parametrize("variant", zoo.VARIANTS)
def test_digits_cnn(rtl, variant):
    images = zoo.digits_dataset()[2]
    # all 360 test images for one variant, 40 for the others (the same program: only the scales differ)
    check(rtl, zoo.build("digits_cnn", variant), images if variant == "qdq_channel" else images[:40], batch=1)


@pytest.mark.parametrize("name, variant", [("resnet8", "qop_channel"), ("resnet8", "qdq_channel"),
                                           ("ds_cnn", "qop_channel"), ("ds_cnn", "qdq_channel")])
def test_mlperf_tiny_cnns(rtl, name, variant):
    print("seed", SEED)
    # onnxruntime fuses ResNet-8's int8 QDQ residual branches only with uint8 activations (docs/frontend.md)
    activation = "uint8" if (name, variant) == ("resnet8", "qdq_channel") else "int8"
    x = zoo.calibration_data(name, n=2, seed=SEED)
    check(rtl, zoo.build(name, variant, activation_type=activation), x)


@pytest.fixture(scope="module")
def icebreaker_rtl(sim_cache_root, live_output):
    with live_output():
        device = accel.open_device("rtl", config=ICEBREAKER, cache_root=sim_cache_root)
    with device:
        yield device


@pytest.mark.parametrize("name, variant", [("mobilenet_v1_025", "qop_channel"), ("mobilenet_v1_025", "qdq_channel"),
                                           ("fc_autoencoder", "qop_channel"), ("fc_autoencoder", "qdq_channel"),
                                           ("ds_cnn", "qdq_channel")])
def test_weight_streaming_on_icebreaker(icebreaker_rtl, name, variant):
    """Models whose weights, parameters and program exceed the icebreaker's buffers stream them during each run.

    MobileNet's and the autoencoder's programs exceed IMEM and stream too (each segment's code
    at IMEM 0); DS-CNN's program stays in IMEM (each STREAM resumes at the next instruction).
    """
    print("seed", SEED)
    x = zoo.calibration_data(name, n=2 if name == "fc_autoencoder" else 1, seed=SEED)
    artifact = check(icebreaker_rtl, zoo.build(name, variant), x, config=ICEBREAKER)
    assert len(artifact.segments) > 1
    # segment 0 is loaded with the program; later runs write it again after the last segment
    first = artifact.stream_bytes() - artifact.segments[0].nbytes(ICEBREAKER)
    assert icebreaker_rtl.last_stream_bytes == [first] + [artifact.stream_bytes()] * (len(x) - 1)
    print(f"{name} {variant}: {len(artifact.segments)} segments, {artifact.stream_bytes():,} bytes streamed per run")


@pytest.mark.parametrize("scales", [(0.2, 0.2, 0.2), (0.2, 0.4, 0.2)], ids=["shared-scale", "requantizing"])
def test_concat(rtl, scales, tmp_path):
    """QLinearConcat runs as identity MATMULs into the output's channel slices (tests/test_concat.py)."""
    from tests.test_concat import concat_model
    path = tmp_path / "concat.onnx"
    path.write_bytes(concat_model(scales=scales, zps=(-5, 7, -5)).SerializeToString())
    x = np.random.default_rng(SEED).normal(0, 3, (2, 3, 6, 5)).astype(np.float32)
    print("seed", SEED)
    for xi in x:
        check(rtl, path, xi[None])


@pytest.mark.parametrize("channels, size", [(4, 1), (8, 1), (4, 2), (8, 3)])
def test_small_global_pool_cycles_on_shared_requantizer_lanes(icebreaker_rtl, channels, size):
    """GSUM over fewer pixels than rows waits for its parameters; with one requantizer lane one cycle more per chunk."""
    from tests.test_conv_backend import _qconv_model
    model = accel.load_model(_qconv_model(4, size, size, channels, (1, 1), gap=True).SerializeToString())
    artifact = compile_model(model, ICEBREAKER)
    x = np.random.default_rng(SEED).normal(0, 3, (1, 4, size, size)).astype(np.float32)
    print("seed", SEED)
    emu = accel.open_device("emu").load(artifact)
    assert np.array_equal(icebreaker_rtl.load(artifact).run(x), emu.run(x))
    assert icebreaker_rtl.last_cycles == emu.last_cycles == [sum(layer["cycles"] for layer in artifact.layers)]


# -- packed input taps: a few-channel input, several pixels per ABUF word (PackInputTaps) -------

SIM_8X8 = dataclasses.replace(CONFIG, name="sim-8x8-rq2", rows=8, cols=8, imem=BufferSpec(256), abuf=BufferSpec(4096),
                              wbuf=BufferSpec(4096), accbuf=BufferSpec(256), pbuf=BufferSpec(512), requant_lanes=4)


SIM_12X12 = dataclasses.replace(SIM_8X8, name="sim-12x12-rq3", rows=12, cols=12)


@pytest.mark.parametrize("config", [ICEBREAKER, SIM_8X8, SIM_12X12], ids=["icebreaker", "8x8", "12x12"])
def test_packed_input_taps(sim_cache_root, live_output, config):
    """The word-pair read and byte rotation of packed taps equal the emulator, cycles included.

    2, 4 and 8 pixels a word on the power-of-two arrays; on 12x12, 4 pixels of 3 bytes and
    2 pixels of 6 (rotations by multiples of 3 bytes). Tall kernels run over the transposed
    image and write their output rows ``out_w`` pixels apart.
    """
    from tests.test_conv_backend import PACKED, _ort, _qconv_model
    print("seed", SEED)
    rng = np.random.default_rng(SEED)
    with live_output():
        device = accel.open_device("rtl", config=config, cache_root=sim_cache_root)
    packs, layouts = set(), set()
    with device:
        for cin, h, w, cout, kernel, strides, pads, dilations in PACKED:
            onnx_model = _qconv_model(cin, h, w, cout, kernel, strides=strides, pads=pads, dilations=dilations,
                                      gap=True, seed=SEED + cin)
            artifact = compile_model(accel.load_model(onnx_model.SerializeToString()), config, batch=2)
            packs.add(artifact.inputs[0].pack)
            layouts.add(artifact.inputs[0].layout)
            x = rng.normal(0, 3, (2, 1, cin, h, w)).astype(np.float32)
            emu = accel.open_device("emu").load(artifact)
            y_rtl, y_emu = device.load(artifact).run(x), emu.run(x)
            expected = _ort(onnx_model.SerializeToString(), x.reshape(2, cin, h, w))
            assert np.array_equal(y_rtl.reshape(expected.shape), expected)
            assert np.array_equal(y_rtl, y_emu)
            assert device.last_cycles == emu.last_cycles == [sum(layer["cycles"] for layer in artifact.layers)]
    assert packs >= {4: {4, 2}, 8: {8, 4, 2}, 12: {4, 2}}[config.rows]
    assert "nchw_t" in layouts  # a tall kernel: the image written transposed, the output down its columns
