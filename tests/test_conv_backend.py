"""Tests for the conv back end: emulator == golden == onnxruntime, element for element.

Zoo models on sim-small (MobileNetV1-0.25 needs 3,000 PBUF words, so it runs on sim-small
with PBUF deepened to 4,096), a conv geometry sweep on hand-built QLinearConv models,
maxpool / add / global average pool programs and the errors the compiler raises.
"""

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import accel
from accel import zoo
from accel.api import load_model
from accel.compiler.backend import compile_model
from accel.compiler.errors import CompileError
from accel.config import BufferSpec, preset
from accel.report import report_text

SEED = 20261128
SIM_SMALL = preset("sim-small")
BIG_PBUF = dataclasses.replace(SIM_SMALL, name="sim-small-pbuf4k", pbuf=BufferSpec(4096))


def _ort(model_bytes, x):
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _check(model, x, config=SIM_SMALL, batch=None):
    artifact = compile_model(model, config, batch=batch or len(x))
    emu = accel.open_device("emu").load(artifact).run(x)
    golden = accel.open_device("golden").load(model).run(x)
    reference = _ort(model.onnx_bytes if getattr(model, "onnx_bytes", None) else open(model.source, "rb").read(), x)
    assert np.array_equal(golden, reference), "golden != onnxruntime"
    assert np.array_equal(emu, golden), "emulator != golden"
    return artifact


@pytest.mark.parametrize("variant", zoo.VARIANTS)
def test_digits_cnn_all_test_images(variant):
    print("seed", SEED)
    model = load_model(str(zoo.build("digits_cnn", variant)))
    _, _, x_test, _ = zoo.digits_dataset()
    x = x_test.reshape(-1, 1, 8, 8).astype(np.float32)
    assert len(x) == 360
    artifact = compile_model(model, SIM_SMALL, batch=8)
    emu = accel.open_device("emu").load(artifact).run(x)
    golden = accel.open_device("golden").load(model).run(x)
    assert np.array_equal(emu, golden)
    assert np.array_equal(golden, _ort(open(model.source, "rb").read(), x))


@pytest.mark.parametrize("name, variant, activation, config", [
    ("resnet8", "qop_channel", "int8", SIM_SMALL),
    ("resnet8", "qdq_channel", "uint8", SIM_SMALL),
    ("ds_cnn", "qdq_channel", "int8", SIM_SMALL),
    ("ds_cnn", "qop_channel", "int8", SIM_SMALL),
    ("mobilenet_v1_025", "qop_channel", "int8", BIG_PBUF),
    ("mobilenet_v1_025", "qdq_channel", "int8", BIG_PBUF),
    ("fc_autoencoder", "qdq_channel", "int8", SIM_SMALL),
])
def test_zoo_models_bit_exact(name, variant, activation, config):
    print("seed", SEED)
    model = load_model(str(zoo.build(name, variant, activation_type=activation)))
    x = zoo.calibration_data(name, n=2, seed=SEED % 1000)
    artifact = _check(model, x, config, batch=1)
    text = report_text(artifact)
    if name != "fc_autoencoder":
        assert "conv" in text or "pointwise" in text


def test_mobilenet_activations_must_fit_abuf():
    model = load_model(str(zoo.build("mobilenet_v1_025", "qop_channel")))
    small_abuf = dataclasses.replace(SIM_SMALL, name="small-abuf", abuf=BufferSpec(4096))
    with pytest.raises(accel.DoesNotFitError, match=r"needs abuf 55,296 bytes, small-abuf has 16,384; .*"
                                                    r"activations and accumulators stay on chip"):
        compile_model(model, small_abuf)


# -- hand-built QLinearConv models --------------------------------------------------------------

def _qconv_model(cin, h, w, cout, kernel, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1,
                 seed=0, pool=None, add=False, gap=False, reshape=None):
    rng = np.random.default_rng(seed)
    kh, kw = kernel
    weight = rng.integers(-127, 128, (cout, cin // group, kh, kw)).astype(np.int8)
    bias = rng.integers(-2000, 2000, cout).astype(np.int32)
    inits = [numpy_helper.from_array(v, n) for n, v in [
        ("xs", np.array(0.05, np.float32)), ("xz", np.array(3, np.int8)), ("ws", np.array(0.01, np.float32)),
        ("wz", np.array(0, np.int8)), ("ys", np.array(0.2, np.float32)), ("yz", np.array(-5, np.int8)),
        ("w", weight), ("b", bias), ("zs", np.array(0.15, np.float32)), ("zz", np.array(2, np.int8))]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"])]
    if reshape:  # the conv reads the quantized input reshaped to this [1, C, H', W']
        inits.append(numpy_helper.from_array(np.array(reshape, np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["xq", "shape"], ["xr"]))
    nodes.append(helper.make_node("QLinearConv", ["xr" if reshape else "xq", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                                  "b"], ["yq"], strides=list(strides), pads=list(pads),
                                  dilations=list(dilations), group=group))
    out = "yq"
    if pool:
        nodes.append(helper.make_node("MaxPool", [out], ["pq"], **pool))
        out = "pq"
    if add:
        nodes.append(helper.make_node("QLinearAdd", [out, "ys", "yz", out, "ys", "yz", "zs", "zz"], ["aq"],
                                      domain="com.microsoft"))
        out = "aq"
    if gap:
        nodes.append(helper.make_node("QLinearGlobalAveragePool", [out, "zs" if add else "ys", "zz" if add else "yz",
                                                                   "zs", "zz"], ["gq"], domain="com.microsoft"))
        out = "gq"
    scale, zp = ("zs", "zz") if (add or gap) else ("ys", "yz")
    nodes.append(helper.make_node("DequantizeLinear", [out, scale, zp], ["y"]))
    graph = helper.make_graph(nodes, "qconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.zeros((1, cin, h, w), np.float32)})[0]
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y.shape)))
    return model


def _run_hand_built(onnx_model, config=SIM_SMALL, n=2, seed=0):
    data = onnx_model.SerializeToString()
    model = load_model(data) if not isinstance(data, str) else load_model(data)
    shape = [d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).normal(0, 3, (n, *shape)).astype(np.float32)  # N inferences of [1, C, H, W]
    artifact = compile_model(model, config, batch=n)
    emu = accel.open_device("emu").load(artifact).run(x)
    golden = accel.open_device("golden").load(model).run(x)
    assert np.array_equal(golden.reshape(n, -1), _ort(data, x.reshape(n * shape[0], *shape[1:])).reshape(n, -1)), \
        "golden != onnxruntime"
    assert np.array_equal(emu, golden), "emulator != golden"
    return artifact


# Output maps must be single-channel (host reads row-major) or pooled, so each case ends in a GAP.
GEOMETRIES = [
    dict(cin=1, h=9, w=7, cout=5, kernel=(3, 3)),
    dict(cin=3, h=8, w=8, cout=6, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    dict(cin=5, h=10, w=9, cout=7, kernel=(3, 2), strides=(2, 1), pads=(0, 2, 1, 0)),
    dict(cin=6, h=11, w=12, cout=9, kernel=(3, 3), dilations=(2, 3), pads=(2, 1, 2, 3)),
    dict(cin=1, h=49, w=10, cout=8, kernel=(10, 4), strides=(2, 2), pads=(4, 1, 5, 1)),
    dict(cin=8, h=7, w=7, cout=8, kernel=(3, 3), pads=(1, 1, 1, 1), group=8),
    dict(cin=12, h=6, w=6, cout=12, kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), group=12),
    dict(cin=8, h=6, w=5, cout=16, kernel=(3, 3), pads=(1, 1, 1, 1), group=2),
    dict(cin=6, h=6, w=5, cout=9, kernel=(1, 3), pads=(0, 1, 0, 1), group=3),
    dict(cin=10, h=5, w=5, cout=6, kernel=(1, 1)),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_conv_geometry_sweep(geometry):
    print("seed", SEED)
    cin = geometry["cin"]
    model = _qconv_model(**geometry, gap=True, seed=SEED)
    if cin > 1:
        pass  # inputs with several channels go through the on-array layout transpose
    _run_hand_built(model, seed=SEED)


# Few-channel model inputs are packed (PackInputTaps): 2**p pixels per ABUF word, a K tile
# holds 2**p taps of one kernel row. (cin, h, w, cout, kernel, strides, pads, dilations)
PACKED = [
    (1, 9, 7, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (2, 8, 8, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
    (3, 10, 9, 7, (3, 2), (2, 1), (0, 2, 1, 0), (1, 1)),
    (3, 12, 11, 4, (5, 5), (1, 3), (2, 2, 2, 2), (2, 1)),
    (1, 49, 10, 8, (10, 4), (2, 2), (4, 1, 5, 1), (1, 1)),
    (4, 7, 13, 9, (2, 7), (1, 2), (1, 3, 0, 4), (1, 1)),
    (5, 6, 6, 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
    (7, 5, 9, 5, (1, 3), (1, 1), (0, 1, 0, 1), (3, 1)),
    # kernels that pack better down their columns: the image goes transposed
    (3, 11, 8, 5, (5, 2), (1, 2), (2, 0, 2, 1), (1, 1)),
    (2, 9, 10, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 2)),
    (1, 13, 6, 3, (7, 1), (3, 1), (3, 0, 2, 0), (1, 1)),
]
WIDE = dataclasses.replace(preset("ulx3s-85f"), name="ulx3s-85f-test")
TWELVE = dataclasses.replace(preset("ulx3s-85f"), name="twelve-test", rows=12, cols=12)


@pytest.mark.parametrize("config", [SIM_SMALL, WIDE, TWELVE], ids=["4x4", "16x16", "12x12"])
@pytest.mark.parametrize("case", PACKED, ids=lambda c: f"c{c[0]}-{c[1]}x{c[2]}-k{c[4][0]}x{c[4][1]}-s{c[5][0]}{c[5][1]}")
def test_packed_input_taps(config, case):
    """A few-channel input is packed into ABUF words and its conv reads several taps per K tile, exactly."""
    cin, h, w, cout, kernel, strides, pads, dilations = case
    R = config.rows
    # the most pixels per word, a power of two dividing R, that leave each pixel cin bytes
    group = max((g for g in (2, 4, 8, 16) if R % g == 0 and R // g >= cin), default=1)
    model = _qconv_model(cin, h, w, cout, kernel, strides=strides, pads=pads, dilations=dilations, gap=True,
                         seed=SEED + cin)
    print("seed", SEED + cin)
    artifact = _run_hand_built(model, config=config, n=3, seed=SEED)
    placement = artifact.inputs[0]
    (kh, kw), (dil_y, dil_x) = kernel, dilations
    # K tiles packing along rows (needs dil_x = 1), or down columns of the transposed image (dil_y = 1)
    options = [(kh * -(-kw // group), False)] if dil_x == 1 and kw > 1 else []
    options += [(kw * -(-kh // group), True)] if dil_y == 1 and kh > 1 else []
    options = [option for option in options if group > 1 and option[0] < kh * kw]
    # which of the valid options is the compiler's (cycle model) choice; unpacked without one
    k_tiles, transposed = artifact.layers[0]["tiles"]["k"], placement.layout == "nchw_t"
    assert (k_tiles, transposed) in options if options else (k_tiles, transposed) == (kh * kw * -(-cin // R), False)
    assert placement.pack == (group if options else 1)
    assert placement.layout == ("nchw_t" if transposed else "nchw" if cin > 1 else "rows")
    text = report_text(artifact)
    assert (f"packed {placement.pack} per ABUF word" in text) == bool(options)
    assert ("written transposed" in text) == transposed


def test_inputs_with_dilated_rows_and_columns_or_one_by_one_kernels_stay_unpacked():
    for geometry in (dict(kernel=(3, 3), dilations=(2, 2)), dict(kernel=(1, 1)), dict(kernel=(3, 1), dilations=(2, 1))):
        model = _qconv_model(1, 9, 9, 4, gap=True, seed=SEED, **geometry)
        assert _run_hand_built(model, config=SIM_SMALL, n=2, seed=SEED).inputs[0].pack == 1


@pytest.mark.parametrize("kernel", [(3, 1), (1, 3), (3, 3)])
@pytest.mark.parametrize("cin", [1, 2])
def test_conv_after_a_reshape_that_changes_height_and_width(cin, kernel):
    """[1, C, 6, 8] -> [1, C, 8, 6]: the words stay pixel-major, the conv sees the new height and width."""
    model = _qconv_model(cin, 6, 8, 3, kernel, pads=(1, 1, 1, 1), gap=True, seed=SEED + cin, reshape=[1, cin, 8, 6])
    print("seed", SEED + cin)
    for config in (SIM_SMALL, WIDE):
        artifact = _run_hand_built(model, config=config, n=2, seed=SEED)
        assert artifact.inputs[0].layout != "nchw_t"  # the input is not the conv's image


def test_a_short_wide_output_is_not_transposed():
    """A 4x2 kernel over 1x4x600 packs to fewer K tiles transposed, but each MATMUL would be one 1-row output column."""
    config = preset("ulx3s-85f-8x8")
    artifact = _run_hand_built(_qconv_model(1, 4, 600, 8, (4, 2), gap=True, seed=SEED), config=config, n=1, seed=SEED)
    assert artifact.inputs[0].layout == "rows" and artifact.inputs[0].pack == 8
    assert artifact.layers[0]["tiles"]["k"] == 4  # kh * ceil(kw / 8), by kernel rows
    # DS-CNN's tall output (25 x 5) is transposed on 16 rows: 4 K tiles instead of 10
    ds_cnn = compile_model(load_model(zoo.build("ds_cnn", "qop_channel")), preset("ulx3s-85f"))
    assert ds_cnn.inputs[0].layout == "nchw_t" and ds_cnn.layers[0]["tiles"]["k"] == 4


def test_single_channel_feature_map_output():
    _run_hand_built(_qconv_model(1, 8, 6, 1, (3, 3), pads=(1, 1, 1, 1)), seed=SEED)


@pytest.mark.parametrize("pool", [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 3], strides=[1, 2], pads=[0, 1, 1, 0], dilations=[2, 1]),
])
def test_maxpool_programs(pool):
    _run_hand_built(_qconv_model(3, 9, 9, 5, (3, 3), pool=pool, gap=True, seed=SEED), seed=SEED)


def test_add_and_gap_programs():
    artifact = _run_hand_built(_qconv_model(3, 8, 8, 6, (3, 3), pads=(1, 1, 1, 1), add=True, gap=True, seed=SEED),
                               seed=SEED)
    kinds = [layer["kind"] for layer in artifact.layers]
    assert kinds == ["conv", "add", "gap"]  # the host transposes the NCHW input
    assert "add" in report_text(artifact)


def test_layer_kinds_in_report():
    model = load_model(str(zoo.build("ds_cnn", "qdq_channel")))
    artifact = compile_model(model, SIM_SMALL)
    kinds = {layer["kind"] for layer in artifact.layers}
    assert {"conv", "depthwise", "pointwise", "gap", "fc"} <= kinds
    for layer in artifact.layers:
        if layer["kind"] == "depthwise":
            assert layer["utilization"] < 0.5  # block-diagonal weights: honest, low
    text = report_text(artifact)
    assert "depthwise" in text and "pointwise" in text


# -- errors ---------------------------------------------------------------------------------------

def test_kernel_beyond_setconv_field_is_a_compile_error():
    model = load_model(_qconv_model(1, 40, 8, 2, (32, 3), gap=True).SerializeToString())
    with pytest.raises(CompileError, match=r"node .*kernel height 32 is outside the SETCONV field kh"):
        compile_model(model, SIM_SMALL)


def test_stride_beyond_setconv_field_is_a_compile_error():
    model = load_model(_qconv_model(1, 40, 40, 2, (3, 3), strides=(16, 1), gap=True).SerializeToString())
    with pytest.raises(CompileError, match="stride .* outside the SETCONV field stride_y"):
        compile_model(model, SIM_SMALL)


def test_average_pool_is_a_compile_error():
    model = _qconv_model(3, 8, 8, 4, (3, 3), gap=False)
    graph = model.graph
    dq = graph.node[-1]
    graph.node.insert(len(graph.node) - 1, helper.make_node(
        "QLinearAveragePool", ["yq", "ys", "yz", "ys", "yz"], ["apq"], domain="com.microsoft", kernel_shape=[2, 2],
        strides=[2, 2]))
    dq.input[0] = "apq"
    with pytest.raises(CompileError, match="rounds the window sum in float32"):
        compile_model(load_model(model.SerializeToString()), SIM_SMALL)


def test_multi_channel_feature_map_output_is_a_compile_error():
    with pytest.raises(CompileError, match="feature map with several channels"):
        compile_model(load_model(_qconv_model(3, 8, 8, 4, (3, 3)).SerializeToString()), SIM_SMALL)


# -- deferred requantization: the last MATMULs of a layer shrink -------------------------------

def test_matmul_rows_cover_the_layer_and_shrink_before_the_sync():
    from accel import isa
    from accel.compiler.convnet import _matmul_rows
    from accel.compiler.cycles import CycleModel, drain_cycles

    def modelled(config, k_tiles, counts):
        model = CycleModel(config)
        for n in counts:
            model.step(isa.Opcode.MATMUL, n, k_tiles)
        model.step(isa.Opcode.SYNC)
        return model.cycles

    ulx = preset("ulx3s-85f")  # 4 requantizer lanes: requant_spacing 4, ACC halves of 256 rows
    tapered = 0
    for total, k_tiles in ((1024, 9), (256, 18), (100, 36), (17, 9), (4000, 5), (64, 3), (1024, 8)):
        ranges = _matmul_rows(total, ulx.acc_rows, k_tiles, ulx, tapered=True)
        counts = [n for _, n in ranges]
        plain = [min(256, total - m0) for m0 in range(0, total, 256)]
        assert [m0 for m0, _ in ranges] == list(np.cumsum([0, *counts[:-1]])) and sum(counts) == total
        assert all(1 <= n <= ulx.acc_rows for n in counts)
        if k_tiles <= ulx.requant_spacing:  # streaming never hides a drain: plain tiles
            assert counts == plain
            continue
        assert modelled(ulx, k_tiles, counts) <= modelled(ulx, k_tiles, plain)
        if counts != plain:
            tapered += 1
            assert modelled(ulx, k_tiles, counts) < modelled(ulx, k_tiles, plain)
            # each of the shrinking MATMULs streams at least as long as the one before it drains
            tail = counts[counts.index(max(counts)):]
            for before, after in zip(tail, tail[1:]):
                assert k_tiles * after >= ulx.requant_spacing * before + drain_cycles(ulx)
    assert tapered >= 3
    # untapered, and on a config that does not defer: plain tiles
    assert [n for _, n in _matmul_rows(1024, 256, 9, ulx, tapered=False)] == [256] * 4
    assert [n for _, n in _matmul_rows(1024, 256, 9, SIM_SMALL, tapered=True)] == [256] * 4


def test_group_rows_take_the_fastest_of_full_even_and_tapered_splits():
    from accel.compiler.convnet import _even_ranges, _group_rows, _m_ranges, _matmul_rows, _modelled_cycles

    ulx = preset("ulx3s-85f")  # requant_spacing 4, ACC halves of 256 rows
    wins = dict(tapered=0, even=0)
    for total, k_tiles, groups in ((784, 9, 2), (196, 18, 4), (300, 9, 3), (49, 9, 2), (256, 18, 2), (1024, 3, 2),
                                   (300, 4, 2), (576, 4, 2), (300, 2, 2), (17, 9, 1)):
        plan = _group_rows(total, ulx.acc_rows, k_tiles, ulx, groups)
        assert len(plan) == groups
        for ranges in plan:  # every group covers the rows in order, each MATMUL fits its ACC half
            counts = [n for _, n in ranges]
            assert [m0 for m0, _ in ranges] == list(np.cumsum([0, *counts[:-1]])) and sum(counts) == total
            assert all(1 <= n <= ulx.acc_rows for n in counts)
        full, tapered = _m_ranges(total, ulx.acc_rows), _matmul_rows(total, ulx.acc_rows, k_tiles, ulx, tapered=True)
        last_only, every = [full] * (groups - 1) + [tapered], [tapered] * groups
        cycles = _modelled_cycles(ulx, plan, k_tiles)
        assert cycles <= min(_modelled_cycles(ulx, last_only, k_tiles), _modelled_cycles(ulx, every, k_tiles))
        if cycles < _modelled_cycles(ulx, [full] * groups, k_tiles):
            wins["tapered"] += tapered != full and plan[-1] == tapered
            wins["even"] += plan[0] != full and plan[0] != tapered
        fewest = -(-total // ulx.acc_rows)
        for parts in range(fewest, min(fewest + 4, total + 1)):  # no candidate beats the choice
            even = _even_ranges(total, parts)
            assert cycles <= _modelled_cycles(ulx, [even] * groups, k_tiles)
            assert max(n for _, n in even) - min(n for _, n in even) <= 1
    print(wins)
    assert wins["tapered"] >= 1 and wins["even"] >= 4
    # k_tiles = requant_spacing: a full tile and a short rest leave the array idle while the
    # full tile drains; even MATMULs drain while the next streams
    plan = _group_rows(576, 512, 4, ulx, 1)
    counts = [n for _, n in plan[0]]
    assert len(counts) >= 2 and max(counts) - min(counts) <= 1
    assert _modelled_cycles(ulx, plan, 4) < 0.8 * _modelled_cycles(ulx, [_m_ranges(576, 512)], 4)
    # one group of one MATMUL's worth of rows, streaming longer than it drains: one MATMUL
    assert _group_rows(9, 256, 9, ulx, 1) == [[(0, 9)]]


def test_resnet8_3x3_convs_fill_the_ulx3s_array():
    """Issue 4's goal, from the cycle model (which tests/sim checks against the RTL): >= 80% on the 3x3 convs."""
    ulx = preset("ulx3s-85f")
    artifact = compile_model(load_model(zoo.build("resnet8", "qop_channel")), ulx)
    convs = [layer for layer in artifact.layers if layer["kind"] == "conv"]
    assert len(convs) == 7
    utilization = sum(layer["macs"] for layer in convs) / (sum(layer["cycles"] for layer in convs) * ulx.macs_per_cycle)
    print(f"ResNet-8 3x3 convs on ulx3s-85f: {utilization:.1%}")
    assert utilization >= 0.80


@pytest.mark.parametrize("name", ["digits_cnn", "resnet8", "ds_cnn", "mobilenet_v1_025", "fc_autoencoder"])
def test_every_model_fits_the_ulx3s_8x8_preset_activations_on_chip(name):
    """The preset that builds keeps every model's activations in ABUF (weights may stream) and runs it exactly."""
    config = preset("ulx3s-85f-8x8")
    path = zoo.build(name, "qop_channel")
    artifact = compile_model(load_model(path), config)  # DoesNotFitError if the activations did not fit
    assert config.rows == 8 and config.pe_dsp_blocks == 0
    if name in ("digits_cnn", "ds_cnn"):  # the quick ones: emulator = onnxruntime
        seed = SEED
        print("seed", seed)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
        x = np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)
        expected = session.run(None, {session.get_inputs()[0].name: x})[0]
        assert np.array_equal(accel.open_device("emu").load(artifact).run(x), expected)
