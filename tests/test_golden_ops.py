"""Check the golden model against onnxruntime op by op, over geometries and quantization types.

Each case builds a one-op ONNX model (QOperator and QDQ forms), runs it in onnxruntime
and in accel's golden model on seeded random int8/uint8 data, and compares exactly.
"""

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import accel

SEED = 20261128
MS = "com.microsoft"


def ort_run(model, feeds):
    opts = ort.SessionOptions()
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def golden_run(model, feeds):
    device = accel.open_device("golden").load(accel.load_model(model))
    outputs = device.run_dict(feeds)
    return [outputs[o.name] for o in model.graph.output]


def check(model, feeds):
    expected = ort_run(model, feeds)
    got = golden_run(model, feeds)
    for e, g in zip(expected, got):
        assert e.dtype == g.dtype and e.shape == g.shape, (e.dtype, e.shape, g.dtype, g.shape)
        mismatches = int(np.sum(e != g))
        assert mismatches == 0, f"{mismatches} of {e.size} elements differ (seed {SEED})"


def tensor_type(dtype):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def make(nodes, inputs, outputs, inits, ms=False, opset=17):
    graph = helper.make_graph(nodes, "op", [helper.make_tensor_value_info(n, tensor_type(d), s) for n, d, s in inputs],
                              [helper.make_tensor_value_info(n, tensor_type(d), s) for n, d, s in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(MS, 1)] if ms else [])
    return helper.make_model(graph, opset_imports=imports)


def rand_q(rng, dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def zp(rng, dtype, size=None):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size).astype(dtype)


CONV_CASES = [
    # (C, M, H, W, kh, kw, stride, pads(t,l,b,r), dilation, group)
    (3, 8, 9, 9, 3, 3, 1, (1, 1, 1, 1), 1, 1),
    (4, 6, 10, 7, 3, 3, 2, (0, 1, 1, 0), 1, 1),       # asymmetric pads, stride 2
    (2, 4, 12, 6, 10, 4, 2, (4, 1, 5, 2), 1, 1),      # DS-CNN style 10x4 kernel
    (8, 8, 7, 7, 3, 3, 1, (1, 1, 1, 1), 1, 8),        # depthwise
    (6, 4, 8, 8, 3, 3, 1, (2, 2, 2, 2), 2, 2),        # grouped, dilated
    (16, 5, 5, 5, 1, 1, 1, (0, 0, 0, 0), 1, 1),       # pointwise
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "C{}M{}_{}x{}_k{}x{}_s{}_p{}_d{}_g{}".format(*c[:6], c[6], "".join(map(str, c[7])), c[8], c[9]))
@pytest.mark.parametrize("xdt, wdt", [(np.uint8, np.int8), (np.int8, np.int8), (np.uint8, np.uint8)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinearconv(case, xdt, wdt, per_channel):
    c, m, h, w, kh, kw, s, pads, d, g = case
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    x = rand_q(rng, xdt, (2, c, h, w))
    wt = rand_q(rng, wdt, (m, c // g, kh, kw))
    ws = (rng.uniform(0.001, 0.02, m) if per_channel else rng.uniform(0.001, 0.02, ())).astype(np.float32)
    wz = np.zeros(ws.shape, wdt) if wdt == np.int8 else np.full(ws.shape, 128, wdt)
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    inits = dict(xs=np.float32(0.03), xz=zp(rng, xdt), w=wt, ws=ws, wz=wz, ys=np.float32(0.2), yz=zp(rng, xdt), b=bias)
    attrs = dict(kernel_shape=[kh, kw], strides=[s, s], pads=[pads[0], pads[1], pads[2], pads[3]], dilations=[d, d], group=g)
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], **attrs)
    model = make([node], [("x", xdt, x.shape)], [("y", xdt, None)], inits)
    check(model, {"x": x})
    # The QDQ form of the same conv, with the bias dequantized from int32.
    qdq = [
        helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
        helper.make_node("DequantizeLinear", ["b", "bs"], ["bf"], axis=0),
        helper.make_node("Conv", ["xf", "wf", "bf"], ["yf"], **attrs),
        helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"]),
    ]
    inits["bs"] = (np.float32(0.03) * ws).astype(np.float32)
    check(make(qdq, [("x", xdt, x.shape)], [("y", xdt, None)], inits), {"x": x})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("k, n", [(64, 10), (37, 53), (300, 7)])
def test_qlinearmatmul_and_qgemm(dtype, per_channel, k, n):
    rng = np.random.default_rng(SEED + k)
    print("seed", SEED + k)
    x = rand_q(rng, dtype, (5, k))
    w = rand_q(rng, np.int8, (k, n))
    ws = (rng.uniform(0.001, 0.02, n) if per_channel else rng.uniform(0.001, 0.02, ())).astype(np.float32)
    inits = dict(xs=np.float32(0.05), xz=zp(rng, dtype), w=w, ws=ws, wz=np.zeros(ws.shape, np.int8),
                 ys=np.float32(0.3), yz=zp(rng, dtype))
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    check(make([node], [("x", dtype, x.shape)], [("y", dtype, None)], inits), {"x": x})
    # com.microsoft QGemm with transB and an int32 bias
    inits.update(wt=w.T.copy(), c=rng.integers(-20000, 20000, n).astype(np.int32))
    node = helper.make_node("QGemm", ["x", "xs", "xz", "wt", "ws", "wz", "c", "ys", "yz"], ["y"], domain=MS, transB=1)
    check(make([node], [("x", dtype, x.shape)], [("y", dtype, None)], inits, ms=True), {"x": x})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("kernel, stride, pads, ceil", [((2, 2), 2, (0, 0, 0, 0), 0), ((3, 3), 2, (1, 1, 1, 1), 0),
                                                        ((3, 3), 2, (0, 0, 0, 0), 1), ((3, 2), 1, (1, 0, 0, 1), 0)])
def test_pools(dtype, kernel, stride, pads, ceil):
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    x = rand_q(rng, dtype, (2, 3, 9, 8))
    attrs = dict(kernel_shape=list(kernel), strides=[stride, stride], pads=list(pads), ceil_mode=ceil)
    check(make([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [("x", dtype, x.shape)], [("y", dtype, None)], {}),
          {"x": x})
    inits = dict(xs=np.float32(0.02), xz=zp(rng, dtype), ys=np.float32(0.015), yz=zp(rng, dtype))
    for count_include_pad in (0, 1):
        node = helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS,
                                count_include_pad=count_include_pad, **attrs)
        check(make([node], [("x", dtype, x.shape)], [("y", dtype, None)], inits, ms=True), {"x": x})
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ys", "yz"], ["y"], domain=MS)
    check(make([node], [("x", dtype, x.shape)], [("y", dtype, None)], inits, ms=True), {"x": x})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("b_shape", [(2, 4, 5, 5), (1, 4, 1, 1), (1,)])
def test_qlinearadd(dtype, b_shape):
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    a, b = rand_q(rng, dtype, (2, 4, 5, 5)), rand_q(rng, dtype, b_shape)
    inits = dict(as_=np.float32(0.04), az=zp(rng, dtype), bs=np.float32(0.09), bz=zp(rng, dtype), cs=np.float32(0.1),
                 cz=zp(rng, dtype), bb=b)
    node = helper.make_node("QLinearAdd", ["a", "as_", "az", "bb", "bs", "bz", "cs", "cz"], ["y"], domain=MS)
    check(make([node], [("a", dtype, a.shape)], [("y", dtype, None)], inits, ms=True), {"a": a})
    qdq = [helper.make_node("DequantizeLinear", ["a", "as_", "az"], ["af"]),
           helper.make_node("DequantizeLinear", ["bb", "bs", "bz"], ["bf"]),
           helper.make_node("Add", ["af", "bf"], ["yf"]),
           helper.make_node("QuantizeLinear", ["yf", "cs", "cz"], ["y"])]
    check(make(qdq, [("a", dtype, a.shape)], [("y", dtype, None)], inits), {"a": a})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_qlinearconcat_and_layout(dtype):
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    a, b = rand_q(rng, dtype, (1, 3, 4, 4)), rand_q(rng, dtype, (1, 5, 4, 4))
    inits = dict(ys=np.float32(0.05), yz=zp(rng, dtype), as_=np.float32(0.05), az=inits_zp(rng, dtype),
                 bs=np.float32(0.11), bz=zp(rng, dtype), shape=np.array([1, -1], np.int64))
    inits["az"] = inits["yz"]  # input a is copied, input b requantized
    nodes = [helper.make_node("QLinearConcat", ["ys", "yz", "a", "as_", "az", "b", "bs", "bz"], ["c"], domain=MS, axis=1),
             helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["y"])]
    check(make(nodes, [("a", dtype, a.shape), ("b", dtype, b.shape)], [("y", dtype, None)], inits, ms=True),
          {"a": a, "b": b})


def inits_zp(rng, dtype):
    return zp(rng, dtype)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("axis", [None, 1])
def test_quantize_dequantize_boundary(dtype, axis):
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    x = (rng.standard_normal((4, 3, 5)) * 3).astype(np.float32)
    x[0, 0, :] = [0.5, 1.5, -0.5, -2.5, 2.5]  # exact ties at scale 1
    scale = np.float32(1.0) if axis is None else np.array([1.0, 0.07, 0.013], np.float32)
    zero = zp(rng, dtype) if axis is None else zp(rng, dtype, 3)
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)]
    model = make(nodes, [("x", np.float32, x.shape)], [("q", dtype, None), ("y", np.float32, None)],
                 dict(s=scale, z=zero))
    check(model, {"x": x})


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_requantization_ties_round_half_to_even(dtype):
    """Multiplier exactly 0.5: every odd accumulator is a tie, which ORT rounds half to even."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    x = rand_q(rng, dtype, (64, 16))
    w = rng.integers(-3, 4, (16, 32)).astype(np.int8)
    inits = dict(xs=np.float32(0.5), xz=zp(rng, dtype), w=w, ws=np.float32(0.25), wz=np.int8(0),
                 ys=np.float32(0.25), yz=np.array(0, dtype))
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    model = make([node], [("x", dtype, x.shape)], [("y", dtype, None)], inits)
    check(model, {"x": x})
    acc = (x.astype(np.int64) - int(inits["xz"])) @ w.astype(np.int64)
    assert np.sum(acc % 2 == 1) > 100  # the case really exercises ties


def test_accumulators_beyond_2_to_24_round_through_float32():
    """|acc| >= 2^24 loses bits in float32(acc), exactly as ORT's requantization does."""
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    k = 1100
    x = rng.integers(200, 256, (8, k)).astype(np.uint8)
    w = rng.integers(100, 128, (k, 16)).astype(np.int8)
    w[:, 1::2] *= -1
    inits = dict(xs=np.float32(0.01), xz=np.uint8(0), w=w, ws=np.float32(0.003), wz=np.int8(0),
                 ys=np.float32(7.0), yz=np.uint8(128))
    y_scale_ties = np.float32(0.01) * np.float32(0.003) / np.float32(7.0)
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    model = make([node], [("x", np.uint8, x.shape)], [("y", np.uint8, None)], inits)
    check(model, {"x": x})
    acc = x.astype(np.int64) @ w.astype(np.int64)
    assert np.abs(acc).max() >= 2 ** 24 and y_scale_ties > 0
