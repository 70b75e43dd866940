"""Check accel.numerics bit for bit against single-node onnxruntime sessions.

Every comparison is ``np.array_equal`` (float outputs by bit pattern).  Random
cases are seeded; each test prints its seed, and ``ACCEL_TEST_SEED`` changes
the base seed.  Where a wrong formula would rarely show on random data (the
order of the float32 scale operations, the operand swap in QLinearAdd), the
tests first search for inputs on which the candidate formulas disagree and
then check that onnxruntime sides with ours.
"""

import os
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel import numerics as nx

ort.set_default_logger_severity(3)

F32 = np.float32
BASE_SEED = int(os.environ.get("ACCEL_TEST_SEED", "20261128"))
DTYPES = [np.int8, np.uint8]
_ONNX_TYPE = {np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint8): TensorProto.UINT8,
              np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}


@pytest.fixture
def rng(request):
    seed = BASE_SEED + zlib.crc32(request.node.name.encode())
    print(f"seed={seed} (ACCEL_TEST_SEED={BASE_SEED})")
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# onnxruntime helpers


def _model(nodes, inputs, consts, output, out_dtype):
    """Return a model whose graph inputs are ``inputs`` (name -> array) and initializers ``consts``."""
    vis = [helper.make_tensor_value_info(n, _ONNX_TYPE[np.asarray(v).dtype], list(np.shape(v)))
           for n, v in inputs.items()]
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in consts.items()]
    out = helper.make_tensor_value_info(output, _ONNX_TYPE[np.dtype(out_dtype)], None)
    graph = helper.make_graph(nodes, "g", vis, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


def _session(model, optimized_path=None):
    so = ort.SessionOptions()  # default options: ORT_ENABLE_ALL, as a user gets
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_op(op, args, out_dtype, attrs=None, domain="", const=()):
    """Run one node; ``args`` are arrays (None for an absent optional input); indices in ``const`` become initializers."""
    names, inputs, consts = [], {}, {}
    for i, arg in enumerate(args):
        if arg is None:
            names.append("")
            continue
        names.append(f"in{i}")
        (consts if i in const else inputs)[f"in{i}"] = np.asarray(arg)
    node = helper.make_node(op, names, ["y"], domain=domain, **(attrs or {}))
    sess = _session(_model([node], inputs, consts, "y", out_dtype))
    return sess.run(None, inputs)[0]


def ort_qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt):
    return run_op("QLinearAdd", [a, F32(sa), dt(za), b, F32(sb), dt(zb), F32(sc), dt(zc)], dt, domain="com.microsoft")


def bits(x):
    return np.asarray(x, np.float32).view(np.uint32)


def rand_scales(rng, n, lo=-10, hi=0):
    """Return float32 scales with random mantissas over several binades."""
    return (rng.uniform(0.5, 1.0, n) * 2.0 ** rng.integers(lo, hi, n)).astype(F32)


def rand_zp(rng, dt, n=None):
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max + 1, n)


def all_codes(dt):
    info = np.iinfo(dt)
    return np.arange(info.min, info.max + 1).astype(dt)


# ---------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear


@pytest.mark.parametrize("dt", DTYPES)
def test_quantize_linear_matches_ort(dt, rng):
    for trial in range(12):
        scale = rand_scales(rng, 1, -12, 4)[0] if trial % 3 else F32(2.0 ** rng.integers(-8, 3))
        zp = int(rand_zp(rng, dt))
        ties = (np.arange(-300, 300) + 0.5) * np.float64(scale)  # exact .5 when scale is a power of two
        x = np.concatenate([rng.uniform(-300, 300, 20000) * scale, ties, np.arange(-300, 300) * np.float64(scale),
                            np.nextafter(ties.astype(F32), F32(np.inf)), np.nextafter(ties.astype(F32), F32(-np.inf)),
                            [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 3e-45]]).astype(F32)
        expected = run_op("QuantizeLinear", [x, scale, dt(zp)], dt)
        assert np.array_equal(nx.quantize_linear(x, scale, zp, dt), expected), (scale, zp)


def test_quantize_linear_rounds_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -128.5, -127.5], F32)
    want = np.array([0, 2, 2, 0, -2, -2, 126, 127, -128, -128], np.int8)
    assert np.array_equal(run_op("QuantizeLinear", [x, F32(1), np.int8(0)], np.int8), want)
    assert np.array_equal(nx.quantize_linear(x, 1.0, 0, np.int8), want)
    # the zero point is added after rounding: 0.5 -> 0 + 1, not rne(1.5) = 2
    assert nx.quantize_linear(np.float32([0.5]), 1.0, 1, np.int8)[0] == 1
    # NaN -> type minimum (MAXPS returns its second operand), infinities saturate
    special = np.array([np.nan, np.inf, -np.inf], F32)
    for dt in DTYPES:
        assert np.array_equal(nx.quantize_linear(special, 0.1, 3, dt), run_op("QuantizeLinear", [special, F32(0.1), dt(3)], dt))


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_and_dequantize_per_axis_match_ort(dt, axis, rng):
    x = rng.uniform(-4, 4, (3, 5, 4, 6)).astype(F32)
    n = x.shape[axis]
    scales = rand_scales(rng, n, -8, -2)
    zps = rand_zp(rng, dt, n).astype(dt)
    q = run_op("QuantizeLinear", [x, scales, zps], dt, attrs={"axis": axis})
    assert np.array_equal(nx.quantize_linear(x, scales, zps, dt, axis=axis), q)
    f = run_op("DequantizeLinear", [q, scales, zps], F32, attrs={"axis": axis})
    assert np.array_equal(bits(nx.dequantize_linear(q, scales, zps, axis=axis)), bits(f))


@pytest.mark.parametrize("dt", DTYPES)
def test_dequantize_linear_matches_ort_on_all_codes(dt, rng):
    q = all_codes(dt)
    for scale, zp in zip(rand_scales(rng, 20, -20, 6), rand_zp(rng, dt, 20)):
        f = run_op("DequantizeLinear", [q, scale, dt(zp)], F32)
        assert np.array_equal(bits(nx.dequantize_linear(q, scale, zp)), bits(f))
    bias = np.concatenate([rng.integers(-2**31, 2**31, 5000), [-2**31, 2**31 - 1, 0, 2**24 + 1]]).astype(np.int32)
    f = run_op("DequantizeLinear", [bias, F32(3.7e-5), np.int32(0)], F32)
    assert np.array_equal(bits(nx.dequantize_linear(bias, F32(3.7e-5), 0)), bits(f))


# ---------------------------------------------------------------------------
# requantization of int32 accumulators


def _discriminating_acc(m_true, m_alt, dt, zp):
    """For each pair of multipliers, return an accumulator whose requantization differs (or None)."""
    info = np.iinfo(dt)
    out = []
    k = np.arange(info.min - zp + 2, info.max - zp - 2)[:, None] + 0.5
    for mt, ma in zip(m_true, m_alt):
        if mt == ma:
            out.append(None)
            continue
        cand = (np.rint(k / np.float64(mt)) + np.arange(-3, 4)[None, :]).ravel()
        cand = cand[np.abs(cand) < 2**31 - 1].astype(np.int64)
        a = np.rint(cand.astype(F32) * mt)
        b = np.rint(cand.astype(F32) * ma)
        hit = np.flatnonzero(a != b)
        out.append(int(cand[hit[0]]) if hit.size else None)
    return out


def _ort_conv_with_bias(bias, x_scale, w_scales, y_scale, y_zp, dt, wdt, w_zp):
    """Run a 1x1 QLinearConv whose weights equal their zero point, so each channel's accumulator is its bias."""
    m = bias.size
    x = np.array(0, dt).reshape(1, 1, 1, 1)
    w = np.full((m, 1, 1, 1), w_zp, wdt)
    y = run_op("QLinearConv", [x, F32(x_scale), dt(0), w, w_scales.astype(F32), np.full(m, w_zp, wdt),
                               F32(y_scale), dt(y_zp), bias.astype(np.int32)], dt, const={3, 4, 5, 8})
    return y.reshape(-1)


@pytest.mark.parametrize("dt,wdt,w_zp", [(np.int8, np.int8, 0), (np.int8, np.int8, 5),
                                          (np.uint8, np.int8, 0), (np.uint8, np.uint8, 128)])
def test_requant_multiplier_order_matches_qlinearconv(dt, wdt, w_zp, rng):
    """ORT computes f32(f32(x_scale * w_scale) / y_scale) and multiplies in float32; catch any other order."""
    m = 2048
    x_scale, y_scale = rand_scales(rng, 1, -8, -2)[0], rand_scales(rng, 1, -6, 0)[0]
    w_scales = rand_scales(rng, m, -12, -4)
    y_zp = int(rand_zp(rng, dt))
    mult = nx.requant_multiplier(x_scale, w_scales, y_scale)
    alternatives = {
        "x*(w/y)": x_scale * (w_scales / y_scale),
        "(x/y)*w": (x_scale / y_scale) * w_scales,
        "f64": (np.float64(x_scale) * w_scales.astype(np.float64) / np.float64(y_scale)).astype(F32),
    }
    bias = rng.integers(-2**24, 2**24, m)
    sensitive = {}
    for name, alt in alternatives.items():
        for c, acc in enumerate(_discriminating_acc(mult, alt, dt, y_zp)):
            if acc is not None and c not in sensitive.values():
                bias[c] = acc
                sensitive[name] = sensitive.get(name, 0) + 1
    y = _ort_conv_with_bias(bias, x_scale, w_scales, y_scale, y_zp, dt, wdt, w_zp)
    assert np.array_equal(nx.requantize(bias, mult, y_zp, dt), y)
    assert np.array_equal(nx.requantize_integer(bias, mult, y_zp, dt), y)
    for name, alt in alternatives.items():
        assert not np.array_equal(nx.requantize(bias, alt, y_zp, dt), y), f"test not sensitive to {name}"
    # a float64 multiply by the right multiplier is wrong too
    info = np.iinfo(dt)
    f64 = np.clip(np.rint(bias * mult.astype(np.float64)) + y_zp, info.min, info.max)
    assert not np.array_equal(f64, y)


def test_requantize_double_rounding_examples_match_ort():
    """Both float32 roundings matter: of the product (first case) and of float32(acc) (second case)."""
    mult = np.array([0.006033348, 1.5559284e-06], F32)  # x_scale = y_scale = 1: the multiplier is w_scale
    acc = np.array([4558, 99297636])
    y = _ort_conv_with_bias(acc, 1.0, mult, 1.0, 0, np.uint8, np.int8, 0)
    assert y.tolist() == [28, 154]
    assert np.array_equal(nx.requantize(acc, mult, 0, np.uint8), y)
    assert np.array_equal(nx.requantize_integer(acc, mult, 0, np.uint8), y)
    assert [round(float(a) * float(m)) for a, m in zip(acc, mult)] == [27, 155]  # exact products round the other way


@pytest.mark.parametrize("dt,wdt", [(np.int8, np.int8), (np.uint8, np.int8), (np.uint8, np.uint8)])
def test_requantize_matches_qlinearconv_near_ties_and_beyond_2_24(dt, wdt, rng):
    m = 4096
    x_scale, y_scale = rand_scales(rng, 1, -8, -2)[0], rand_scales(rng, 1, -6, 0)[0]
    w_scales = rand_scales(rng, m, -12, -2)
    w_scales[:8] = 2.0 ** -10  # exact products: genuine .5 ties
    y_zp = int(rand_zp(rng, dt))
    mult = nx.requant_multiplier(x_scale, w_scales, y_scale)
    k = rng.integers(-300, 300, m) + 0.5
    acc = np.rint(k / mult.astype(np.float64)) + rng.integers(-2, 3, m)
    big = rng.random(m) < 0.4
    acc[big] = rng.integers(-2**31, 2**31, big.sum())  # |acc| >= 2**24: float32(acc) rounds
    acc[:4] = [2**31 - 1, -2**31, 2**24 + 1, -(2**24 + 3)]
    acc = np.clip(acc, -2**31, 2**31 - 1).astype(np.int64)
    w_zp = 128 if wdt == np.uint8 else 0
    y = _ort_conv_with_bias(acc, x_scale, w_scales, y_scale, y_zp, dt, wdt, w_zp)
    assert np.array_equal(nx.requantize(acc, mult, y_zp, dt), y)
    assert np.array_equal(nx.requantize_integer(acc, mult, y_zp, dt), y)
    assert (np.abs(acc) >= 2**24).sum() > 1000


@pytest.mark.parametrize("dt", DTYPES)
def test_requantize_matches_qlinearmatmul_all_pairs_and_large_k(dt, rng):
    wdt = np.int8
    info = np.iinfo(dt)
    # K = 1: every (a, b) pair, per-column weight scales
    a = all_codes(dt).reshape(256, 1)
    b = all_codes(wdt).reshape(1, 256)
    sa, sy = rand_scales(rng, 2, -8, -2)
    sb = rand_scales(rng, 256, -10, -4)
    za, zy = int(rand_zp(rng, dt)), int(rand_zp(rng, dt))
    y = run_op("QLinearMatMul", [a, sa, dt(za), b, sb, np.zeros(256, wdt), sy, dt(zy)], dt)
    acc = (a.astype(np.int64) - za) @ b.astype(np.int64)
    mult = nx.requant_multiplier(sa, sb, sy).reshape(1, -1)
    assert np.array_equal(nx.requantize(acc, mult, zy, dt), y)
    assert np.array_equal(nx.requantize_integer(acc, mult, zy, dt), y)
    # K = 4096 with extreme values: accumulators far beyond 2**24
    k = 4096
    a = np.where(rng.random((8, k)) < 0.9, info.max if dt == np.uint8 else info.min, rng.integers(info.min, info.max + 1, (8, k))).astype(dt)
    b = np.where(rng.random((k, 32)) < 0.9, -128, rng.integers(-128, 128, (k, 32))).astype(wdt)
    za = 0 if dt == np.uint8 else 127
    sy = F32(2.0 ** 14)
    y = run_op("QLinearMatMul", [a, F32(0.5), dt(za), b, F32(0.25), wdt(0), sy, dt(0)], dt)
    acc = (a.astype(np.int64) - za) @ b.astype(np.int64)
    assert np.abs(acc).min() >= 2**24
    mult = nx.requant_multiplier(0.5, 0.25, sy)
    assert np.array_equal(nx.requantize(acc, mult, 0, dt), y)
    assert np.array_equal(nx.requantize_integer(acc, mult, 0, dt), y)


@pytest.mark.parametrize("adt,bdt", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
def test_qgemm_multiplier_matches_qgemm(adt, bdt, rng):
    """QGemm: f32(f32(f32(alpha * a_scale) * b_scale) / y_scale); the accumulator includes the bias C."""
    n = 1024
    sa, sy = rand_scales(rng, 2, -8, -2)
    sb = rand_scales(rng, n, -12, -4)
    alpha = F32(rng.uniform(0.3, 3.0))
    za, zy = int(rand_zp(rng, adt)), int(rand_zp(rng, adt))
    mult = nx.qgemm_multiplier(sa, sb, sy, alpha)
    alternatives = {"alpha*(a*b)/y": (alpha * (sa * sb)) / sy, "a*b/y*alpha": ((sa * sb) / sy) * alpha}
    bias = rng.integers(-2**22, 2**22, n)
    sensitive = set()
    for name, alt in alternatives.items():
        for c, acc in enumerate(_discriminating_acc(mult, alt, adt, zy)):
            if acc is not None and c not in sensitive:
                bias[c] = acc
                sensitive.add(c)
    a = np.array([[za]], adt)  # K = 1 and a == a_zp: the accumulator is exactly the bias
    b = rand_zp(rng, bdt, (1, n)).astype(bdt)
    bzp = 0 if bdt == np.int8 else 128
    y = run_op("QGemm", [a, sa, adt(za), b, sb, np.full(n, bzp, bdt), bias.astype(np.int32), sy, adt(zy)], adt,
               attrs={"alpha": float(alpha)}, domain="com.microsoft")
    acc = bias + (a.astype(np.int64) - za) @ (b.astype(np.int64) - bzp)
    assert np.array_equal(nx.requantize(acc, mult.reshape(1, -1), zy, adt), y)
    assert np.array_equal(nx.requantize_integer(acc, mult.reshape(1, -1), zy, adt), y)
    for name, alt in alternatives.items():
        assert not np.array_equal(nx.requantize(acc, alt.reshape(1, -1), zy, adt), y), f"test not sensitive to {name}"


@pytest.mark.parametrize("dt", DTYPES)
def test_clamp_reproduces_relu_and_clip_after_qlinearconv(dt, rng):
    """DQ -> Relu/Clip -> Q with the conv's own scale is a clamp in the quantized domain."""
    info = np.iinfo(dt)
    x = rand_zp(rng, dt, (1, 8, 6, 6)).astype(dt)
    w = rng.integers(-128, 128, (16, 8, 3, 3)).astype(np.int8)
    ws = rand_scales(rng, 16, -9, -6)
    bias = rng.integers(-5000, 5000, 16).astype(np.int32)
    xs, ys = F32(0.05), F32(0.08)
    xz = int(rand_zp(rng, dt))
    lo_f, hi_f = F32(-0.4), F32(1.3)
    for yz in (int(info.min), int(rand_zp(rng, dt)), int(info.max) - 3):
        consts = {"w": w, "ws": ws, "wz": np.zeros(16, np.int8), "b": bias, "xs": xs, "xz": dt(xz),
                  "ys": ys, "yz": dt(yz), "lo": lo_f, "hi": hi_f}
        conv = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["c"], pads=[1, 1, 1, 1])
        acc = None
        for act in ("Relu", "Clip"):
            nodes = [conv, helper.make_node("DequantizeLinear", ["c", "ys", "yz"], ["cf"]),
                     helper.make_node(act, ["cf"] + (["lo", "hi"] if act == "Clip" else []), ["af"]),
                     helper.make_node("QuantizeLinear", ["af", "ys", "yz"], ["y"])]
            y = _session(_model(nodes, {"x": x}, consts, "y", dt)).run(None, {"x": x})[0]
            if acc is None:
                # accumulators of the conv, computed exactly in int64
                xp = np.pad(x.astype(np.int64) - xz, ((0, 0), (0, 0), (1, 1), (1, 1)))
                cols = np.stack([xp[0, :, i:i + 6, j:j + 6] for i in range(3) for j in range(3)], axis=1)  # C,9,H,W
                acc = np.einsum("ock,ckhw->ohw", w.astype(np.int64).reshape(16, 8, 9), cols)[None]
                acc = acc + bias.reshape(1, 16, 1, 1)
            mult = nx.requant_multiplier(xs, ws, ys).reshape(1, 16, 1, 1)
            if act == "Relu":
                clamp = (yz, None)
            else:
                clamp = tuple(int(v) for v in nx.quantize_linear(np.array([lo_f, hi_f]), ys, yz, dt))
            assert np.array_equal(nx.requantize(acc, mult, yz, dt, clamp=clamp), y), (act, yz)
            assert np.array_equal(nx.requantize_integer(acc, mult, yz, dt, clamp=clamp), y), (act, yz)


# ---------------------------------------------------------------------------
# requantize_integer == requantize


def test_requantize_integer_equals_requantize_on_millions_of_random_pairs(rng):
    n = 1_500_000
    for dt, zp in ((np.int8, -3), (np.uint8, 131)):
        acc = rng.integers(-2**31, 2**31, n) >> rng.integers(0, 32, n)  # every magnitude
        mult = (rng.uniform(1, 2, n) * 2.0 ** rng.integers(-40, 8, n)).astype(F32)
        assert np.array_equal(nx.requantize_integer(acc, mult, zp, dt), nx.requantize(acc, mult, zp, dt))
        # the interesting regime: results inside the output range
        mult = (rng.uniform(1, 2, n) * 2.0 ** rng.integers(-40, 0, n)).astype(F32)
        acc = np.clip(np.rint(rng.uniform(-200, 200, n) / mult.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int64)
        got = nx.requantize_integer(acc, mult, zp, dt)
        assert np.array_equal(got, nx.requantize(acc, mult, zp, dt))
        info = np.iinfo(dt)
        assert ((got > info.min) & (got < info.max)).mean() > 0.5


def test_requantize_integer_equals_requantize_on_rounding_edge_cases(rng):
    accs, mults = [], []

    def add(a, m):
        a, m = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(m, F32))
        accs.append(a.ravel())
        mults.append(m.ravel())

    # 1. float32(acc) ties: acc = (odd) * 2**(s-1) beyond 2**24, and their neighbours
    for s in range(1, 8):
        base = (np.arange(2**23, 2**23 + 4000, dtype=np.int64) * 2 + 1) << (s - 1)
        for d in (-1, 0, 1):
            add(np.concatenate([base + d, -(base + d)]), F32(2.0**-20))
    top = np.arange(2**31 - 300, 2**31, dtype=np.int64)
    add(np.concatenate([top, -top, [-2**31]]), rand_scales(rng, 1, -33, -20)[0])
    # 2. product ties: mantissa products landing exactly halfway between float32 values
    m_odd = F32(1 + 2.0**-23)  # product of two 24-bit mantissas needs 48 bits
    add(np.arange(-100000, 100000, 7), m_odd * F32(2.0**-12))
    add(np.arange(2**24 - 5000, 2**24 + 5000), (F32(1) + F32(3 * 2.0**-23)) * F32(2.0**-20))
    # 3. final ties: acc * 2**-k exactly k + .5
    for k in range(1, 40):
        a = (np.arange(-400, 400) * 2 + 1).astype(np.int64) << (k - 1)
        a = a[np.abs(a) < 2**31]
        add(a, F32(2.0**-k))
    # 4. range ends of the multiplier, all-ones mantissas
    add(rng.integers(-2**31, 2**31, 20000), np.nextafter(F32(2.0**8), F32(0)))
    add(rng.integers(-2**31, 2**31, 20000), F32(2.0**-40))
    add(rng.integers(-2**31, 2**31, 20000), np.nextafter(F32(2.0**-20), F32(0)))
    add([0, 1, -1, 2**31 - 1, -2**31], F32(0.0123))
    acc, mult = np.concatenate(accs), np.concatenate(mults)
    for dt in DTYPES:
        for zp in (np.iinfo(dt).min, 0 if dt == np.int8 else 128, np.iinfo(dt).max):
            want = nx.requantize(acc, mult, zp, dt)
            assert np.array_equal(nx.requantize_integer(acc, mult, zp, dt), want)
            assert np.array_equal(nx.requantize_integer(acc, mult, zp, dt, clamp=(zp, None)),
                                  nx.requantize(acc, mult, zp, dt, clamp=(zp, None)))


def test_requantize_integer_rejects_multipliers_outside_its_range():
    for bad in (F32(2.0**8), F32(2.0**-41), F32(0), F32(-0.01), F32(np.inf), F32(np.nan), F32(1e-45)):
        with pytest.raises(ValueError, match="multiplier"):
            nx.requantize_integer(np.array([5]), bad, 0, np.int8)
    mant, expo = nx.decompose_multiplier(np.array([2.0**-40, 0.75, np.nextafter(F32(256), F32(0))], F32))
    assert np.array_equal(mant * 2.0 ** expo, [2.0**-40, 0.75, float(np.nextafter(F32(256), F32(0)))])
    assert mant.min() >= 2**23 and mant.max() < 2**24 and expo.min() >= -63 and expo.max() <= -16


# ---------------------------------------------------------------------------
# QLinearAdd


def _add_param_sets(rng, dt):
    info = np.iinfo(dt)
    sets = [(*rand_scales(rng, 3, -9, 0), *rand_zp(rng, dt, 3)) for _ in range(6)]
    sets += [(F32(0.02), F32(0.02), F32(0.04), info.min, info.max, info.min),  # saturation both ways
             (F32(1.0), F32(1.0), F32(2.0**-24), info.max, info.min, info.max),  # |sum| >= 2**31: CVTPS2DQ overflow
             (F32(2.0**-7), F32(2.0**-7), F32(2.0**-6), 0, 0, 0),  # exact .5 ties everywhere
             (F32(1e-3), F32(0.5), F32(1.0), info.min, info.min, info.max)]
    return sets


@pytest.mark.parametrize("dt", DTYPES)
def test_qlinear_add_exhaustive_pairs(dt, rng):
    a, b = (g.ravel().copy() for g in np.meshgrid(all_codes(dt), all_codes(dt), indexing="ij"))
    for sa, sb, sc, za, zb, zc in _add_param_sets(rng, dt):
        y = ort_qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt)
        assert np.array_equal(nx.qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt), y), (sa, sb, sc, za, zb, zc)
        if max(sa / sc, sb / sc) >= 2**23:  # the CVTPS2DQ overflow case: the hardware refuses it
            with pytest.raises(ValueError, match="no integer QLinearAdd recipe"):
                _add_by_recipe(a, sa, za, b, sb, zb, sc, zc, dt)
        else:
            assert np.array_equal(_add_by_recipe(a, sa, za, b, sb, zb, sc, zc, dt), y), (sa, sb, sc, za, zb, zc)


def _add_by_recipe(a, sa, za, b, sb, zb, sc, zc, dt, clamp=None, *, qdq_s8_to_u8=False, swap=False):
    """Return QLinearAdd through the hardware's integer recipe (``numerics.qlinear_add_recipe``)."""
    recipe = nx.qlinear_add_recipe(sa, za, sb, zb, sc, zc, dt, clamp, qdq_s8_to_u8=qdq_s8_to_u8, swap=swap)
    lo, hi = clamp or (np.iinfo(dt).min, np.iinfo(dt).max)
    x, t = (b, a) if recipe.x_is_b else (a, b)
    return nx.qlinear_add_by_recipe(x, t, recipe, lo, hi)


@pytest.mark.parametrize("dt", DTYPES)
def test_qlinear_add_recipe_equals_qlinear_add(dt, rng):
    """The integer recipe against the float32 model, every (a, b) pair, scale ratios from 2**-40 to 2**23."""
    a, b = (g.ravel().copy() for g in np.meshgrid(all_codes(dt), all_codes(dt), indexing="ij"))
    info = np.iinfo(dt)
    trial = 0
    while trial < 24:
        sa, sb, sc = rand_scales(rng, 3, -14, 4) if trial % 3 else rand_scales(rng, 3, -40, 30)
        if max(sa / sc, sb / sc) >= 2**23:
            continue
        trial += 1
        za, zb, zc = rand_zp(rng, dt, 3)
        clamp = (int(zc), info.max) if trial % 4 == 0 else None  # a fused ReLU
        s8 = dt == np.int8 and trial % 2 == 1
        want = nx.qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt, clamp, qdq_s8_to_u8=s8)
        got = _add_by_recipe(a, sa, za, b, sb, zb, sc, zc, dt, clamp, qdq_s8_to_u8=s8)
        assert np.array_equal(got, want), (sa, sb, sc, za, zb, zc)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("scales", [(0.01, 0.01, 0.02), (0.005, 0.01, 0.02), (0.25, 0.5, 1.0), (0.02, 0.02, 0.02)])
def test_qlinear_add_recipe_rounds_ties_to_even(dt, scales):
    """Scale ratios like 1/2 put outputs exactly on .5: the exact recipe rounds them to even, like ORT."""
    a, b = (g.ravel().copy() for g in np.meshgrid(all_codes(dt), all_codes(dt), indexing="ij"))
    sa, sb, sc = (F32(s) for s in scales)
    zp = 3 if dt == np.uint8 else -3
    y = ort_qlinear_add(a, sa, zp, b, sb, 0, sc, zp, dt)
    recipe = nx.qlinear_add_recipe(sa, zp, sb, 0, sc, zp, dt)
    assert recipe.tie_even == (scales[0] != scales[2])  # equal scales give integers, no ties
    assert np.array_equal(_add_by_recipe(a, sa, zp, b, sb, 0, sc, zp, dt), y)


def test_qlinear_add_recipe_refuses_wrapping_scales():
    """An output scale 2**28 times below the inputs': ORT's result wraps to the minimum; no recipe, a clear error."""
    with pytest.raises(ValueError, match=r"no integer QLinearAdd recipe .* scales a 1, b 1, y 3\.72529e-09"):
        nx.qlinear_add_recipe(F32(1.0), 0, F32(1.0), 0, F32(2.0**-28), 0, np.uint8)


@pytest.mark.parametrize("dt", DTYPES)
def test_qlinear_add_is_not_the_exact_formula(dt):
    """The FMA kernel differs from sat(rne((sa(a-za) + sb(b-zb)) / sc) + zc) somewhere; keep that documented."""
    a, b = (g.ravel().copy() for g in np.meshgrid(all_codes(dt), all_codes(dt), indexing="ij"))
    sa, sb, sc = F32(1e-3), F32(1e-3), F32(1.0)
    za = zb = zc = 0
    info = np.iinfo(dt)
    exact = np.clip(np.rint((np.float64(sa) * (a.astype(np.float64) - za) + np.float64(sb) * (b.astype(np.float64) - zb))
                            / np.float64(sc)) + zc, info.min, info.max)
    y = ort_qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt)
    assert np.array_equal(nx.qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt), y)
    if dt == np.uint8:
        assert not np.array_equal(exact, y)


BROADCAST_SHAPES = [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 1)), ((1, 3, 1, 1), (2, 3, 4, 5)),
                    ((3, 1), (1, 4)), ((1, 4), (3, 1)), ((3, 1), (1,)), ((1,), (3, 1)), ((), (3, 4)), ((3, 4), ()),
                    ((), ()), ((1,), (1,)), ((2, 1, 1), (1, 1)), ((5,), (2, 5)), ((2, 5), (5,)), ((4, 1, 6), (4, 5, 1)),
                    ((2, 3, 1, 1), (2, 3, 1, 1)), ((2, 1, 4), (2, 3, 4)), ((2, 3, 4), (2, 1, 4)), ((7, 1, 1), (1, 1, 1))]


@pytest.mark.parametrize("dt", DTYPES)
def test_qlinear_add_broadcasting_matches_ort(dt, rng):
    for sa_shape, sb_shape in BROADCAST_SHAPES:
        for _ in range(3):
            sa, sb, sc = rand_scales(rng, 3, -9, 0)
            za, zb, zc = rand_zp(rng, dt, 3)
            a = rand_zp(rng, dt, sa_shape).astype(dt)
            b = rand_zp(rng, dt, sb_shape).astype(dt)
            y = ort_qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt)
            got = nx.qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt)
            assert got.shape == y.shape and np.array_equal(got, y), (sa_shape, sb_shape)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shapes", [((256, 1), (1, 256)), ((1, 256), (256, 1)), ((256, 1), (1,)),
                                    ((256, 1), (1, 1)), ((256,), ()), ((), (256,))])
def test_qlinear_add_operand_swap_matches_ort(dt, shapes, rng):
    """ORT swaps the operands when input 0 is the broadcast one; find scales where that changes the result.

    Both operand orders are evaluated for many parameter sets at once (about
    one output in a million differs), then ORT is asked about the sets where
    the orders disagree.
    """
    info = np.iinfo(dt)
    a = all_codes(dt).reshape(shapes[0]) if shapes[0] else np.array(rand_zp(rng, dt), dt)
    b = rng.permutation(all_codes(dt))[:int(np.prod(shapes[1]))].reshape(shapes[1])
    want_swap = nx._input0_is_span_scalar(a.shape, b.shape)
    col = (slice(None),) + (None,) * max(a.ndim, b.ndim)
    p = max(1, 2**20 // np.broadcast(a, b).size)
    found = []
    for _ in range(48):
        sa, sb, sc = (rand_scales(rng, p, -8, 0) for _ in range(3))
        za, zb, zc = (rand_zp(rng, dt, p) for _ in range(3))
        ab, ba = (np.clip(nx._cvtps_epi32(v), info.min, info.max) for v in (
            nx._qlinear_add_kernel(a[None], (sa / sc)[col], za[col], b[None], (sb / sc)[col], zb[col], zc[col]),
            nx._qlinear_add_kernel(b[None], (sb / sc)[col], zb[col], a[None], (sa / sc)[col], za[col], zc[col])))
        for i in np.flatnonzero((ab != ba).reshape(p, -1).any(axis=1)):
            found.append((sa[i], za[i], sb[i], zb[i], sc[i], zc[i], (ba if want_swap else ab)[i]))
        if len(found) >= 3:
            break
    assert found, "no parameter set separates the two operand orders; try another ACCEL_TEST_SEED"
    for sa, za, sb, zb, sc, zc, predicted in found[:3]:
        y = ort_qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt)
        assert np.array_equal(y, predicted), (shapes, want_swap)
        assert np.array_equal(nx.qlinear_add(a, sa, za, b, sb, zb, sc, zc, dt), y)
        a_, b_ = np.broadcast_arrays(a, b)
        assert np.array_equal(_add_by_recipe(a_, sa, za, b_, sb, zb, sc, zc, dt, swap=want_swap), y)


def _int8_qdq_add_model(n, p):
    """Return float x, b -> Q -> DQ -> Add -> Q -> DQ -> float y, all int8 (what quantize_static writes)."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "sa", "za"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sa", "za"], ["xf"]),
             helper.make_node("QuantizeLinear", ["b", "sb", "zb"], ["bq"]),
             helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bf"]),
             helper.make_node("Add", ["xf", "bf"], ["yf"]),
             helper.make_node("QuantizeLinear", ["yf", "sc", "zc"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "sc", "zc"], ["y"])]
    consts = {k: (F32(v) if k[0] == "s" else np.int8(v)) for k, v in p.items()}
    return _model(nodes, {"x": np.zeros(n, F32), "b": np.zeros(n, F32)}, consts, "y", F32)


def test_int8_qdq_add_runs_in_uint8_after_s8_to_u8_conversion(rng, tmp_path):
    """ORT turns int8 Q->DQ pairs into uint8 on x86 before fusing, so QLinearAdd sees codes + 128."""
    a = np.repeat(all_codes(np.int8).astype(np.int64), 16)
    b = np.tile(rng.permutation(all_codes(np.int8).astype(np.int64))[:16], 256)
    found = []
    for _ in range(64):
        n = 256
        sa, sb, sc = (rand_scales(rng, n, -8, 0) for _ in range(3))
        za, zb, zc = (rand_zp(rng, np.int8, n) for _ in range(3))
        col = (slice(None), None)
        i8, u8 = (np.clip(nx._cvtps_epi32(nx._qlinear_add_kernel(
            a[None] + k, (sa / sc)[col], za[col] + k, b[None] + k, (sb / sc)[col], zb[col] + k, zc[col] + k)),
            lo, lo + 255) - k for k, lo in ((0, -128), (128, 0)))
        found += [i for i in np.flatnonzero((i8 != u8).any(axis=1))]
        if len(found) >= 3:
            break
    assert found, "no parameter set separates the int8 and uint8 kernels; try another ACCEL_TEST_SEED"
    for i in found[:3]:
        p = {"sa": sa[i], "za": za[i], "sb": sb[i], "zb": zb[i], "sc": sc[i], "zc": zc[i]}
        sess = _session(_int8_qdq_add_model(a.size, p), tmp_path / "opt.onnx")
        assert [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node] == [
            "QuantizeLinear", "QuantizeLinear", "QLinearAdd", "DequantizeLinear"]
        x = nx.dequantize_linear(a.astype(np.int8), sa[i], za[i])  # floats that quantize back to the codes
        bf = nx.dequantize_linear(b.astype(np.int8), sb[i], zb[i])
        y = nx.quantize_linear(sess.run(None, {"x": x, "b": bf})[0], sc[i], zc[i], np.int8)
        args = (a.astype(np.int8), sa[i], za[i], b.astype(np.int8), sb[i], zb[i], sc[i], zc[i], np.int8)
        assert np.array_equal(nx.qlinear_add(*args, qdq_s8_to_u8=True), y)
        assert np.array_equal(_add_by_recipe(*args, qdq_s8_to_u8=True), y)
        assert not np.array_equal(nx.qlinear_add(*args), y)


# ---------------------------------------------------------------------------
# QDQ groups: ORT fuses them into the QLinear kernels


def _qdq_model(op, attrs, dt, x_shape, two_inputs, p):
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"])]
    inputs = {"x": np.zeros(x_shape, dt)}
    op_inputs = ["xf"]
    if two_inputs:
        nodes.append(helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"]))
        inputs["b"] = np.zeros(x_shape, dt)
        op_inputs.append("bf")
    nodes += [helper.make_node(op, op_inputs, ["yf"], **attrs), helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"])]
    consts = {"sx": p["sx"], "zx": dt(p["zx"]), "sb": p["sb"], "zb": dt(p["zb"]), "sy": p["sy"], "zy": dt(p["zy"])}
    return _model(nodes, inputs, consts, "y", dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("op,attrs,two,fused", [
    ("Add", {}, True, "QLinearAdd"),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, False, "QLinearAveragePool"),
    ("AveragePool", {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [0, 1, 1, 0], "count_include_pad": 1,
                     "ceil_mode": 1}, False, "QLinearAveragePool"),
    ("AveragePool", {"kernel_shape": [7, 7]}, False, "QLinearAveragePool"),  # whole image: the integer global path
    ("GlobalAveragePool", {}, False, "QLinearGlobalAveragePool"),
    ("Concat", {"axis": 1}, True, "QLinearConcat"),
])
def test_qdq_groups_fuse_into_qlinear_kernels_and_match(dt, op, attrs, two, fused, rng, tmp_path):
    p = dict(zip(("sx", "sb", "sy"), rand_scales(rng, 3, -7, -2)))
    p.update(zip(("zx", "zb", "zy"), rand_zp(rng, dt, 3)))
    shape = (2, 4, 7, 7)
    model = _qdq_model(op, attrs, dt, shape, two, p)
    sess = _session(model, tmp_path / "opt.onnx")
    assert [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node] == [fused]
    x = rand_zp(rng, dt, shape).astype(dt)
    b = rand_zp(rng, dt, shape).astype(dt)
    y = sess.run(None, {"x": x, "b": b} if two else {"x": x})[0]
    if op == "Add":
        got = nx.qlinear_add(x, p["sx"], p["zx"], b, p["sb"], p["zb"], p["sy"], p["zy"], dt)
    elif op == "AveragePool":
        got = nx.qlinear_avgpool(x, p["sx"], p["zx"], p["sy"], p["zy"], dt, attrs["kernel_shape"],
                                 attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0]),
                                 bool(attrs.get("count_include_pad", 0)), bool(attrs.get("ceil_mode", 0)))
    elif op == "GlobalAveragePool":
        got = nx.qlinear_global_avgpool(x, p["sx"], p["zx"], p["sy"], p["zy"], dt)
    else:
        got = np.concatenate([nx.requantize_linear(x, p["sx"], p["zx"], p["sy"], p["zy"], dt),
                              nx.requantize_linear(b, p["sb"], p["zb"], p["sy"], p["zy"], dt)], axis=1)
    assert got.shape == y.shape and np.array_equal(got, y)


# ---------------------------------------------------------------------------
# average pools


@pytest.mark.parametrize("dt", DTYPES)
def test_qlinear_global_avgpool_matches_ort(dt, rng):
    for trial in range(40):
        shape = (2, 5, *rng.integers(1, 40, 2)) if trial % 4 else (2, 3, int(rng.integers(1, 600)))
        x = rand_zp(rng, dt, shape).astype(dt)
        xs, ys = rand_scales(rng, 2, -8, 0)
        xz, yz = rand_zp(rng, dt, 2)
        if trial % 5 == 0:
            xz, x[...] = np.iinfo(dt).max, np.iinfo(dt).min  # the most negative sum
        y = run_op("QLinearGlobalAveragePool", [x, xs, dt(xz), ys, dt(yz)], dt, attrs={"channels_last": 0},
                   domain="com.microsoft")
        got = nx.qlinear_global_avgpool(x, xs, xz, ys, yz, dt)
        assert got.shape == y.shape and np.array_equal(got, y), shape


def test_qlinear_global_avgpool_rejects_what_ort_rejects():
    for shape, xs, ys in (((1, 2, 1, 1), F32(1.0), F32(1e-3)), ((1, 2, 4, 4), F32(1e-9), F32(1.0))):
        x = np.zeros(shape, np.uint8)  # multiplier x_scale / (y_scale * HW) >= 256, then < 2**-32
        with pytest.raises(Exception):
            run_op("QLinearGlobalAveragePool", [x, xs, np.uint8(0), ys, np.uint8(0)], np.uint8,
                   attrs={"channels_last": 0}, domain="com.microsoft")
        with pytest.raises(ValueError, match="computation range"):
            nx.qlinear_global_avgpool(x, xs, 0, ys, 0, np.uint8)


@pytest.mark.parametrize("dt", DTYPES)
def test_qlinear_avgpool_matches_ort(dt, rng):
    for trial in range(120):
        h, w = (int(v) for v in rng.integers(1, 12, 2))
        kh, kw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        if trial % 10 == 0:
            kh, kw = h, w
        strides = [int(v) for v in rng.integers(1, 4, 2)]
        pads = [int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw))]
        if trial % 4 == 0:
            pads = [0, 0, 0, 0]
        cip, ceil = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        x = rand_zp(rng, dt, (2, 3, h, w)).astype(dt)
        xs, ys = rand_scales(rng, 2, -8, 0)
        xz, yz = rand_zp(rng, dt, 2)
        attrs = dict(kernel_shape=[kh, kw], strides=strides, pads=pads, count_include_pad=cip, ceil_mode=ceil)
        y = run_op("QLinearAveragePool", [x, xs, dt(xz), ys, dt(yz)], dt, attrs=attrs, domain="com.microsoft")
        got = nx.qlinear_avgpool(x, xs, xz, ys, yz, dt, [kh, kw], strides, pads, bool(cip), bool(ceil))
        assert got.shape == y.shape and np.array_equal(got, y), (h, w, attrs)


# ---------------------------------------------------------------------------
# QLinearConcat


@pytest.mark.parametrize("dt", DTYPES)
def test_requantize_linear_matches_qlinearconcat(dt, rng):
    q = all_codes(dt).reshape(1, 256)
    for trial in range(25):
        s1, so = rand_scales(rng, 2, -9, 0)
        z1, zo = rand_zp(rng, dt, 2)
        if trial % 5 == 0:
            s1, z1 = so, zo  # identity: ORT copies
        y = run_op("QLinearConcat", [so, dt(zo), q, s1, dt(z1), q, so, dt(zo)], dt, attrs={"axis": 0},
                   domain="com.microsoft")
        got = np.concatenate([nx.requantize_linear(q, s1, z1, so, zo, dt), q])
        assert np.array_equal(got, y)
        assert np.array_equal(nx.requantize_linear(q, s1, z1, so, zo, dt),
                              nx.quantize_linear(nx.dequantize_linear(q, s1, z1), so, zo, dt))


# ---------------------------------------------------------------------------
# argument checking


def test_bad_arguments_raise_value_error():
    q = np.zeros(4, np.int8)
    cases = [
        lambda: nx.quantize_linear(np.zeros(3, F32), 0.1, 0, np.int16),
        lambda: nx.quantize_linear(np.zeros(3, F32), 0.0, 0, np.int8),
        lambda: nx.quantize_linear(np.zeros(3, F32), 0.1, 200, np.int8),
        lambda: nx.quantize_linear(np.zeros(3, np.int32), 0.1, 0, np.int8),
        lambda: nx.quantize_linear(np.zeros((2, 3), F32), np.ones(2, F32), 0, np.int8, axis=1),
        lambda: nx.dequantize_linear(np.zeros(3, np.int32), 0.1, 1),
        lambda: nx.requant_multiplier(0.1, -0.2, 0.3),
        lambda: nx.requantize(np.array([2**31]), F32(0.1), 0, np.int8),
        lambda: nx.requantize(np.array([1.5]), F32(0.1), 0, np.int8),
        lambda: nx.requantize(np.array([1]), F32(0.1), 0, np.int8, clamp=(5, 2)),
        lambda: nx.requantize(np.array([1]), F32(0.1), -1, np.uint8),
        lambda: nx.qlinear_add(q, 0.1, 0, q.astype(np.uint8), 0.1, 0, 0.1, 0, np.int8),
        lambda: nx.qlinear_add(q, 0.1, 0, np.zeros(3, np.int8), 0.1, 0, 0.1, 0, np.int8),
        lambda: nx.qlinear_global_avgpool(np.zeros((2, 3), np.int8), 0.1, 0, 0.1, 0, np.int8),
        lambda: nx.qlinear_avgpool(np.zeros((1, 1, 4, 4), np.int8), 0.1, 0, 0.1, 0, np.int8, [2, 2], [1, 1], [2, 0, 0, 0]),
        lambda: nx.qlinear_avgpool(np.zeros((1, 1, 4, 4), np.int8), 0.1, 0, 0.1, 0, np.int8, [5, 2], [1, 1], [0, 0, 0, 0]),
        lambda: nx.requantize_linear(q, 0.1, 0, 0.2, 0, np.uint8),
    ]
    for i, case in enumerate(cases):
        with pytest.raises(ValueError):
            case()
            pytest.fail(f"case {i} did not raise")
