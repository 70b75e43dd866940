"""Reproduce onnxruntime's quantized integer/float32 arithmetic bit for bit.

Every function here is a vectorised NumPy model of one piece of arithmetic
that onnxruntime 1.32 (CPU execution provider, default session options) does
on an x86-64 machine with AVX2/FMA (the reference machine also has
AVX512-VNNI).  "Bit for bit" is meant literally: the tests in
``tests/test_numerics.py`` compare every function with single-node ORT
sessions using ``np.array_equal``.  ``docs/numerics.md`` derives each formula
from the ORT sources and spells out the integer-only recipe the hardware uses.

Notation in the docstrings: ``f32(e)`` is the IEEE float32 result of the
float32 operation ``e`` (round to nearest, ties to even); ``rne(v)`` rounds to
the nearest integer with ties to even; ``sat(v)`` saturates to the output
integer type.
"""

from __future__ import annotations

import dataclasses
import operator

import numpy as np

__all__ = [
    "quantize_linear",
    "dequantize_linear",
    "requant_multiplier",
    "qgemm_multiplier",
    "decompose_multiplier",
    "requantize",
    "requantize_integer",
    "qlinear_add",
    "AddRecipe", "qlinear_add_recipe", "qlinear_add_by_recipe",
    "qlinear_global_avgpool",
    "qlinear_avgpool",
    "requantize_linear",
    "MULTIPLIER_MIN",
    "MULTIPLIER_MAX",
]

#: Smallest multiplier ``requantize_integer`` accepts (inclusive).
MULTIPLIER_MIN = 2.0**-40
#: Largest multiplier ``requantize_integer`` accepts (exclusive).
MULTIPLIER_MAX = 2.0**8

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_QUANT_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


# --------------------------------------------------------------------------
# argument checking


def _quant_dtype(dtype, name="dtype"):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _QUANT_DTYPES:
        raise ValueError(f"{name} must be np.int8 or np.uint8, not {dtype!r}")
    return dt


def _positive_scale(value, name, allow_vector=False):
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a float32 number, not {value!r}")
    arr = arr.astype(np.float32)
    if arr.ndim > 1 or (arr.ndim == 1 and not allow_vector and arr.size != 1):
        shape = "a scalar or a 1-D array" if allow_vector else "a scalar"
        raise ValueError(f"{name} must be {shape}, not an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"{name} must be finite and > 0, not {value!r}")
    return arr


def _scalar_scale(value, name):
    return np.float32(_positive_scale(value, name).reshape(-1)[0])


def _zero_point(value, dt, name, allow_vector=False):
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must be an integer, not {value!r}")
    arr = arr.astype(np.int64)
    if arr.ndim > 1 or (arr.ndim == 1 and not allow_vector and arr.size != 1):
        raise ValueError(f"{name} must be a scalar, not an array of shape {arr.shape}")
    info = np.iinfo(dt)
    if np.any(arr < info.min) or np.any(arr > info.max):
        raise ValueError(f"{name} must lie in [{info.min}, {info.max}] for {dt.name}, not {value!r}")
    return arr


def _scalar_zero_point(value, dt, name):
    return int(_zero_point(value, dt, name).reshape(-1)[0])


def _quantized_input(x, dt, name):
    arr = np.asarray(x)
    if arr.dtype != dt:
        raise ValueError(f"{name} must have dtype {dt.name}, not {arr.dtype}")
    return arr


def _float32_input(value, name):
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{name} must be float32, not dtype {arr.dtype}")
    return arr.astype(np.float32)


def _int32_input(acc, name="acc"):
    arr = np.asarray(acc)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array (int32 accumulators), not dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < _INT32_MIN or arr.max() > _INT32_MAX):
        raise ValueError(f"{name} must fit in int32, got values in [{arr.min()}, {arr.max()}]")
    return arr


def _clamp_bounds(clamp, dt):
    info = np.iinfo(dt)
    if clamp is None:
        return int(info.min), int(info.max)
    try:
        lo, hi = clamp
        lo = int(info.min) if lo is None else operator.index(lo)
        hi = int(info.max) if hi is None else operator.index(hi)
    except (TypeError, ValueError):
        raise ValueError(f"clamp must be a pair (lo, hi) of integers or None, not {clamp!r}") from None
    if not info.min <= lo <= hi <= info.max:
        raise ValueError(
            f"clamp must satisfy {info.min} <= lo <= hi <= {info.max} for {dt.name}, not {clamp!r}")
    return lo, hi


def _axis_params(x_ndim, x_shape, scale, zero_point, axis, dt, what):
    """Return (scale, zero_point) arrays broadcastable against x."""
    if scale.size == 1:
        return scale.reshape(()), _zero_point(zero_point, dt, f"{what} zero_point").reshape(-1)[0]
    if axis is None:
        axis = 1
    try:
        axis = operator.index(axis)
    except TypeError:
        raise ValueError(f"axis must be an integer, not {axis!r}") from None
    if not -x_ndim <= axis < x_ndim:
        raise ValueError(f"axis {axis} is out of range for an input of rank {x_ndim}")
    axis %= x_ndim
    if scale.shape != (x_shape[axis],):
        raise ValueError(
            f"per-axis scale must have shape ({x_shape[axis]},) to match axis {axis} of the input, "
            f"not {scale.shape}")
    zp = _zero_point(zero_point, dt, f"{what} zero_point", allow_vector=True)
    if zp.size != 1 and zp.shape != scale.shape:
        raise ValueError(f"per-axis zero_point must be a scalar or have shape {scale.shape}, not {zp.shape}")
    bshape = [1] * x_ndim
    bshape[axis] = x_shape[axis]
    return scale.reshape(bshape), np.broadcast_to(zp.reshape(-1), scale.shape).reshape(bshape)


# --------------------------------------------------------------------------
# float32 building blocks (shared by several operators)


def _fma_f32(x, y, z):
    """Return the correctly rounded float32 fused multiply-add ``x*y + z``.

    The inputs are float32.  The product is exact in float64 (24 + 24 bits);
    a two-sum gives the exact sum as ``s + e``; the float32 rounding of
    ``s`` is then corrected in the one case where it can differ from the
    rounding of ``s + e``: ``s`` sits exactly on a float32 tie and ``e``
    breaks it.  Overflow and float32 subnormal results are not handled; the
    callers never produce them.
    """
    x = np.asarray(x, np.float32).astype(np.float64)
    y = np.asarray(y, np.float32).astype(np.float64)
    z = np.asarray(z, np.float32).astype(np.float64)
    p = x * y
    s = p + z
    bb = s - p
    e = (p - (s - bb)) + (z - bb)
    r = s.astype(np.float32)
    d = s - r.astype(np.float64)
    toward = np.where(d > 0, np.float32(np.inf), np.float32(-np.inf))
    neighbour = np.nextafter(r, toward.astype(np.float32))
    half_gap = (neighbour.astype(np.float64) - r.astype(np.float64)) / 2
    bump = (d != 0) & (d == half_gap) & (e != 0) & (np.sign(e) == np.sign(d))
    return np.where(bump, neighbour, r)


def _cvtps_epi32(v):
    """Convert float32 to int32 like x86 CVTPS2DQ: rne, and INT32_MIN when out of range or NaN."""
    r = np.rint(np.asarray(v, np.float32).astype(np.float64))
    ok = np.abs(r) < 2.0**31  # False for NaN
    return np.where(ok, r, _INT32_MIN).astype(np.int64)


def _quantize_f32(v, scale, zp, dt):
    """Quantize float32 ``v`` like MlasQuantizeLinear: sat(rne(f32(v / scale)) + zp).

    The clamp happens in float before rounding, with x86 MAXPS/MINPS
    semantics, so NaN becomes the type minimum.
    """
    info = np.iinfo(dt)
    with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN are clamped below, as in ORT
        q = np.asarray(v, np.float32) / np.asarray(scale, np.float32)
    zp = np.asarray(zp, np.int64)
    lo = (info.min - zp).astype(np.float32)
    hi = (info.max - zp).astype(np.float32)
    q = np.where(q > lo, q, lo)  # MAXPS(q, lo): second operand when q is NaN
    q = np.where(q < hi, q, hi)  # MINPS(q, hi)
    return (np.rint(q).astype(np.int64) + zp).astype(dt)


def _dequantize_f32(q, scale, zp):
    """Dequantize like ORT: f32(float(int32(q) - zp) * scale)."""
    diff = np.asarray(q).astype(np.int64) - np.asarray(zp, np.int64)
    return diff.astype(np.float32) * np.asarray(scale, np.float32)


# --------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear


def quantize_linear(x, scale, zero_point, dtype, axis=None) -> np.ndarray:
    """Quantize float32 ``x`` exactly like ORT QuantizeLinear.

    ``q = sat(rne(f32(x / scale)) + zero_point)``: a true float32 division (not
    a multiplication by the reciprocal), ties to even, the zero point added
    after rounding.  NaN maps to the type minimum, +-inf saturates.

    ``scale`` is a float32 scalar (per-tensor) or a 1-D array (per-axis along
    ``axis``, default 1 as in ONNX); ``zero_point`` is a scalar or a 1-D array
    of the same length; ``dtype`` is ``np.int8`` or ``np.uint8``.
    """
    dt = _quant_dtype(dtype)
    x = _float32_input(x, "x")
    sc = _positive_scale(scale, "scale", allow_vector=True)
    sc, zp = _axis_params(x.ndim, x.shape, sc, zero_point, axis, dt, "")
    return _quantize_f32(x, sc, zp, dt)


def dequantize_linear(q, scale, zero_point, axis=None) -> np.ndarray:
    """Dequantize ``q`` exactly like ORT DequantizeLinear: ``f32(float(q - zero_point) * scale)``.

    ``q`` is int8, uint8 or int32 (bias; zero point must then be 0);
    ``scale``/``zero_point`` are scalars or 1-D per-axis arrays along ``axis``
    (default 1).  Returns float32.
    """
    q = np.asarray(q)
    if q.dtype not in (*_QUANT_DTYPES, np.dtype(np.int32)):
        raise ValueError(f"q must be int8, uint8 or int32, not dtype {q.dtype}")
    sc = _positive_scale(scale, "scale", allow_vector=True)
    sc, zp = _axis_params(q.ndim, q.shape, sc, zero_point, axis, q.dtype, "")
    if q.dtype == np.int32 and np.any(zp != 0):
        raise ValueError("an int32 input (bias) must have zero_point 0")
    return _dequantize_f32(q, sc, zp)


# --------------------------------------------------------------------------
# requantization of int32 accumulators


def requant_multiplier(x_scale, w_scale, y_scale) -> np.ndarray:
    """Return the float32 multiplier QLinearConv/QLinearMatMul use: ``f32(f32(x_scale * w_scale) / y_scale)``.

    The multiply happens first, then the division, both in float32 (ORT
    ``qlinearconv.cc`` ComputeOutputScale and ``quantize_linear_matmul.cc``).
    ``w_scale`` is a scalar or a per-output-channel 1-D array; the result is
    a 1-D float32 array (length 1 for per-tensor weights).
    """
    xs = _scalar_scale(x_scale, "x_scale")
    ys = _scalar_scale(y_scale, "y_scale")
    ws = _positive_scale(w_scale, "w_scale", allow_vector=True).reshape(-1)
    return (xs * ws) / ys


def qgemm_multiplier(a_scale, b_scale, y_scale, alpha=1.0) -> np.ndarray:
    """Return the float32 multiplier com.microsoft QGemm uses: ``f32(f32(f32(alpha * a_scale) * b_scale) / y_scale)``.

    Order of operations from ORT ``quant_gemm.cc`` ComputeOutputScale.
    ``y_scale=None`` (float output) skips the division.  ``b_scale`` is a
    scalar or a per-column 1-D array; returns a 1-D float32 array.
    """
    al = np.asarray(alpha)
    if al.ndim != 0 or not np.issubdtype(al.dtype, np.number) or not np.isfinite(al):
        raise ValueError(f"alpha must be a finite number, not {alpha!r}")
    al = np.float32(al)
    a = _scalar_scale(a_scale, "a_scale")
    b = _positive_scale(b_scale, "b_scale", allow_vector=True).reshape(-1)
    m = (al * a) * b
    if y_scale is not None:
        m = m / _scalar_scale(y_scale, "y_scale")
    return m


def requantize(acc, multiplier, zero_point, dtype, clamp=None) -> np.ndarray:
    """Requantize int32 accumulators exactly like ORT's MlasRequantizeOutput.

    ``y = sat(rne(f32(f32(acc) * multiplier)) + zero_point)``, then, if
    ``clamp=(lo, hi)`` is given, ``min(max(y, lo), hi)`` in the quantized
    domain (a fused ReLU/Clip; either bound may be None).  The bias must
    already be in ``acc``.  ``multiplier`` (float32, from
    :func:`requant_multiplier`) broadcasts against ``acc``; reshape
    per-channel multipliers yourself.
    """
    dt = _quant_dtype(dtype)
    a = _int32_input(acc)
    m = _float32_input(multiplier, "multiplier")
    if not np.all(np.isfinite(m)):
        raise ValueError("multiplier must be finite")
    zp = _scalar_zero_point(zero_point, dt, "zero_point")
    lo, hi = _clamp_bounds(clamp, dt)
    v = a.astype(np.float32) * m
    info = np.iinfo(dt)
    y = np.clip(np.rint(v.astype(np.float64)), info.min - zp, info.max - zp).astype(np.int64) + zp
    return np.clip(y, lo, hi).astype(dt)


def decompose_multiplier(multiplier):
    """Split float32 multipliers into ``(mantissa, exponent)`` with ``multiplier == mantissa * 2**exponent``.

    ``mantissa`` is a 24-bit integer in [2**23, 2**24) and ``exponent`` lies
    in [-63, -16] for multipliers in the supported range
    [MULTIPLIER_MIN, MULTIPLIER_MAX).  Both are int64 arrays shaped like
    ``multiplier``.  Only the float32 bit pattern is read.
    """
    m = _float32_input(multiplier, "multiplier")
    bits = np.array(m, dtype=np.float32).view(np.uint32).astype(np.int64)
    sign = bits >> 31
    biased = (bits >> 23) & 0xFF
    # 2**-40 has biased exponent 87; 2**8 has 135.
    bad = (sign != 0) | (biased < 127 - 40) | (biased >= 127 + 8)
    if np.any(bad):
        first = m.reshape(-1)[np.flatnonzero(bad.reshape(-1))[0]]
        raise ValueError(
            f"multiplier must be a float32 in [2**-40, 2**8), not {first!r}; "
            "outside this range the integer requantization is not specified")
    mantissa = (bits & 0x7FFFFF) | 0x800000
    exponent = biased - 127 - 23
    return mantissa, exponent


def _bit_length(x):
    """Return the bit length of non-negative int64 values (0 for 0), integer ops only."""
    top = np.zeros(x.shape, np.int64)
    for step in (32, 16, 8, 4, 2, 1):
        hit = (x >> (top + step)) != 0
        top = np.where(hit, top + step, top)
    return np.where(x > 0, top + 1, 0)


def _shift_right_rne(x, k):
    """Return rne(x / 2**k) for non-negative int64 ``x`` and shift counts 0 <= k <= 63."""
    q = x >> k
    rem = x - (q << k)
    half = np.where(k > 0, np.left_shift(np.int64(1), np.maximum(k - 1, 0)), 0)
    up = (rem > half) | ((rem == half) & (k > 0) & ((q & 1) == 1))
    return q + up


def requantize_integer(acc, multiplier, zero_point, dtype, clamp=None) -> np.ndarray:
    """Requantize int32 accumulators with integer-only arithmetic, bit-identical to :func:`requantize`.

    This is the recipe for the hardware (see ``docs/numerics.md``):

    1. ``multiplier = m * 2**e`` with a 24-bit mantissa ``m`` (see
       :func:`decompose_multiplier`); multipliers outside
       [MULTIPLIER_MIN, MULTIPLIER_MAX) raise ValueError.
    2. ``f32(acc)``: ``|acc|`` is rounded half-even to 24 significant bits,
       ``|acc| -> a * 2**s`` (``s = 0`` when ``|acc| < 2**24``).
    3. The exact 24x24-bit product ``p = a * m`` (48 bits).
    4. ``f32(product)``: ``p`` is rounded half-even to 24 significant bits,
       ``p -> r * 2**t``.
    5. ``rne(r * 2**(s + e + t))``, the sign re-applied, ``+ zero_point``,
       saturation to ``dtype``, then the optional ``clamp``.

    Only Python ints and NumPy int64 operations are used (the multiplier's
    float32 bit pattern is read, never computed with).
    """
    dt = _quant_dtype(dtype)
    a = _int32_input(acc)
    mant, expo = decompose_multiplier(multiplier)
    zp = _scalar_zero_point(zero_point, dt, "zero_point")
    lo, hi = _clamp_bounds(clamp, dt)
    a, mant, expo = np.broadcast_arrays(a, mant, expo)

    neg = a < 0
    mag = np.abs(a)  # <= 2**31, fine in int64
    # step 2: float32(acc) = a_m * 2**s, a_m < 2**24 after renormalising a carry
    s = np.maximum(_bit_length(mag) - 24, 0)
    a_m = _shift_right_rne(mag, s)
    carry = a_m == (1 << 24)
    a_m = np.where(carry, 1 << 23, a_m)
    s = s + carry
    # step 3: exact 24x24 -> 48-bit product
    p = a_m * mant
    # step 4: round the product to 24 significant bits
    t = np.maximum(_bit_length(p) - 24, 0)
    r = _shift_right_rne(p, t)
    shift = s + expo + t  # value = r * 2**shift
    # step 5: round half-even to an integer.  r >= 2**23 whenever acc != 0,
    # so shift >= 0 means |value| >= 2**23: it saturates anyway.
    k = np.clip(-shift, 0, 63)
    y = np.where(shift >= 0, np.left_shift(r, np.clip(shift, 0, 15)), _shift_right_rne(r, k))
    y = np.where(neg, -y, y)
    info = np.iinfo(dt)
    y = np.clip(y + zp, info.min, info.max)
    return np.clip(y, lo, hi).astype(dt)


# --------------------------------------------------------------------------
# QLinearAdd


def _input0_is_span_scalar(shape_a, shape_b):
    """Return whether ORT's Broadcaster treats input 0 as a scalar within each span.

    Mirrors ``Broadcaster`` in ``core/providers/cpu/math/element_wise_ops.h``:
    the innermost iterator dimension is the last one, skipping trailing
    dimensions that are 1 in both shapes (but never the leading common one),
    and input 0 is "scalar" when it is not > 1 there.
    """
    if len(shape_a) == 0:
        return True
    if len(shape_b) == 0:
        return not shape_a[-1] > 1
    n = min(len(shape_a), len(shape_b))
    for index in range(n):
        a1, b1 = shape_a[-1 - index], shape_b[-1 - index]
        dim = 0 if min(a1, b1) == 0 else max(a1, b1)
        if dim <= 1 and index + 1 < n:
            continue
        return not a1 > 1
    return True  # unreachable: the loop always returns


def _qlinear_add_operands(a, a_scale, a_zp, b, b_scale, b_zp, c_scale, c_zp, dtype, clamp, qdq_s8_to_u8):
    """Validate QLinearAdd arguments; return the kernel operands in ORT's order and the output limits.

    Returns ``(X, rx, zx, Y, ry, zy, zc, kernel_dt, shift, dt, lo, hi)``:
    ``rx``/``ry`` are the float32 ratios ``f32(x_scale / c_scale)``;
    ``X``/``Y`` are ``a``/``b`` as int64, swapped when ORT's broadcaster
    treats ``a`` as the scalar input; with ``qdq_s8_to_u8`` the int8 codes
    and zero points are moved to uint8 (``+128``) and ``shift`` (128) must
    be subtracted from the kernel's result.
    """
    dt = _quant_dtype(dtype)
    a = _quantized_input(a, dt, "a")
    b = _quantized_input(b, dt, "b")
    sa = _scalar_scale(a_scale, "a_scale")
    sb = _scalar_scale(b_scale, "b_scale")
    sc = _scalar_scale(c_scale, "c_scale")
    za = _scalar_zero_point(a_zp, dt, "a_zp")
    zb = _scalar_zero_point(b_zp, dt, "b_zp")
    zc = _scalar_zero_point(c_zp, dt, "c_zp")
    lo, hi = _clamp_bounds(clamp, dt)
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"a and b shapes {a.shape} and {b.shape} do not broadcast") from None
    a, b = a.astype(np.int64), b.astype(np.int64)
    kernel_dt, shift = dt, 0
    if qdq_s8_to_u8:
        if dt != np.int8:
            raise ValueError(f"qdq_s8_to_u8 applies to int8 tensors only, not {dt.name}")
        kernel_dt, shift = np.dtype(np.uint8), 128
        a, b, za, zb, zc = a + shift, b + shift, za + shift, zb + shift, zc + shift
    ra = np.float32(sa / sc)
    rb = np.float32(sb / sc)
    if _input0_is_span_scalar(a.shape, b.shape):
        return b, rb, zb, a, ra, za, zc, kernel_dt, shift, dt, lo, hi
    return a, ra, za, b, rb, zb, zc, kernel_dt, shift, dt, lo, hi


def qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, c_scale, c_zp, dtype, clamp=None, *,
                qdq_s8_to_u8=False) -> np.ndarray:
    """Add two quantized tensors exactly like ORT com.microsoft QLinearAdd on an AVX2/FMA CPU.

    This is also what ORT runs for a QDQ ``DQ -> Add -> Q`` group, which it
    fuses into QLinearAdd.  With ``ra = f32(a_scale / c_scale)`` and
    ``rb = f32(b_scale / c_scale)``, MLAS' AVX2 kernel computes, with fused
    multiply-adds (one rounding each)::

        fixed = f32(c_zp - fma(rx, x_zp, f32(ry * y_zp)))
        c     = sat(cvt(fma(X, rx, fma(Y, ry, fixed))))

    where ``(X, Y) = (a, b)``, except that ORT swaps the operands
    (``X = b``, ``Y = a``) when ``a`` is the input broadcast along the
    innermost dimension (a "scalar" span).  ``cvt`` is x86 CVTPS2DQ: round
    half to even, and INT32_MIN (so the type minimum) when ``|value| >= 2**31``.
    Inputs broadcast NumPy-style.  ``clamp=(lo, hi)`` optionally clamps the
    result in the quantized domain (either bound may be None).

    ``qdq_s8_to_u8=True`` reproduces an int8 QDQ ``DQ -> Add -> Q`` group on
    x86: ORT's QDQS8ToU8Transformer first turns every int8 ``Q -> DQ`` pair
    into uint8 (codes and zero points ``+128``), so the uint8 kernel runs on
    the shifted values, and the result is shifted back.  The float arithmetic
    sees different numbers, so this differs from the int8 kernel (the
    QOperator format's int8 QLinearAdd node) on a few inputs in a million.
    """
    X, rx, zx, Y, ry, zy, zc, kernel_dt, shift, dt, lo, hi = _qlinear_add_operands(
        a, a_scale, a_zp, b, b_scale, b_zp, c_scale, c_zp, dtype, clamp, qdq_s8_to_u8)
    return _qlinear_add_from_operands(X, rx, zx, Y, ry, zy, zc, kernel_dt, shift, lo, hi).astype(dt)


def _qlinear_add_from_operands(X, rx, zx, Y, ry, zy, zc, kernel_dt, shift, lo, hi):
    """Return the kernel's result (int64) for operands in ORT's order, shifted back and clamped."""
    info = np.iinfo(kernel_dt)
    y = np.clip(_cvtps_epi32(_qlinear_add_kernel(X, rx, zx, Y, ry, zy, zc)), info.min, info.max) - shift
    return np.clip(y, lo, hi)


def _qlinear_add_fixed(rx, zx, ry, zy, zc):
    """Return the per-layer float32 constant ``f32(zc - fma(rx, zx, f32(ry * zy)))``."""
    rx, ry = np.asarray(rx, np.float32), np.asarray(ry, np.float32)
    zx, zy, zc = (np.asarray(z).astype(np.float32) for z in (zx, zy, zc))
    return zc - _fma_f32(rx, zx, ry * zy)


def _qlinear_add_kernel(x, rx, zx, y, ry, zy, zc):
    """Return the float32 value MlasQLinearAddKernelAvx2Helper rounds, for kernel operands X=x, Y=y.

    All arguments broadcast (scale ratios and zero points may be arrays).
    """
    rx, ry = np.asarray(rx, np.float32), np.asarray(ry, np.float32)
    fixed = _qlinear_add_fixed(rx, zx, ry, zy, zc)
    inner = _fma_f32(np.asarray(y).astype(np.float32), ry, fixed)
    return _fma_f32(np.asarray(x).astype(np.float32), rx, inner)


def _float32_parts(v):
    """Return ``(m, e)`` int64 arrays with ``v == m * 2**e`` exactly: ``m`` signed, ``|m| < 2**24``.

    Reads the float32 bit pattern only.  Zero gives ``m = 0``; subnormals are
    handled, infinities and NaN are not (the callers never pass them).
    """
    bits = np.array(v, dtype=np.float32).view(np.uint32).astype(np.int64)
    biased = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    m = np.where(biased > 0, frac | 0x800000, frac)
    e = np.where(biased > 0, biased, 1) - 150
    return np.where(bits >> 31 != 0, -m, m), e


@dataclasses.dataclass(frozen=True)
class AddRecipe:
    """One QLinearAdd layer as the hardware computes it: a multiply, a table lookup and a shift.

    Per element, with ``x`` the code of the multiplied input (``b`` if ``x_is_b``, else
    ``a``; int8 or uint8 as stored) and ``t`` the other input's code::

        w = x * mult + table[t & 0xFF]                  (exact; |w| < 2**33)
        q = w >> shift                                   (floor)
        q = q - 1   if tie_even and w % 2**shift == 0 and q is odd
        y = clamp(q, lo, hi)

    :func:`qlinear_add_recipe` finds the constants and checks them against
    :func:`qlinear_add` on all 65,536 input pairs, so ``y`` equals onnxruntime's result
    for every input (``docs/numerics.md``, section 7).
    """

    mult: int               # 1 <= mult < 2**24
    shift: int              # 0 <= shift <= 31
    tie_even: bool          # round ties to even (the table holds exact values plus one half)
    x_is_b: bool            # the multiplied input is b (the table is indexed by a's code)
    table: np.ndarray       # int64[256], by the table input's byte; each fits int32


#: Bounds of the recipe's constants (the hardware's widths, ``isa.AddParams``).
ADD_MULT_LIMIT = 1 << 24
ADD_SHIFT_MAX = 31
ADD_TABLE_MIN, ADD_TABLE_MAX = -(1 << 31), (1 << 31) - 1


def qlinear_add_by_recipe(x, t, recipe: AddRecipe, lo: int, hi: int) -> np.ndarray:
    """Apply an :class:`AddRecipe` to the codes ``x`` (multiplied) and ``t`` (table index), integer only."""
    w = np.asarray(x, np.int64) * recipe.mult + recipe.table[np.asarray(t, np.int64) & 0xFF]
    q = w >> recipe.shift
    if recipe.tie_even:
        q = q - ((w & ((1 << recipe.shift) - 1) == 0) & (q & 1 == 1))
    return np.clip(q, lo, hi)


def qlinear_add_recipe(a_scale, a_zp, b_scale, b_zp, c_scale, c_zp, dtype, clamp=None, *, qdq_s8_to_u8=False,
                       swap=False) -> AddRecipe:
    """Return an :class:`AddRecipe` equal to :func:`qlinear_add` on every pair of codes.

    ``swap`` is ORT's operand swap (``a`` is the broadcast scalar input, so the kernel's X
    is ``b``). Two kinds of recipe are tried, the smallest ``shift`` first:

    * floor: ``mult`` is ``r * 2**shift`` rounded down or up (``r`` the multiplied input's
      float32 scale ratio) and each table entry is any integer in the interval that makes
      all 256 outputs of its row right (the intervals come from the exact outputs);
    * exact ties: when the multiplied input is the kernel's X, ``X * rx + inner[Y]`` scaled
      by ``2**shift`` is an integer, so the table holds it exactly plus one half, and ties
      round to even as CVTPS2DQ does (scale ratios like 1/2 make ties).

    Raises ``ValueError`` naming the scales when no recipe fits the hardware's widths.
    """
    dt = _quant_dtype(dtype)
    info = np.iinfo(dt)
    codes = np.arange(info.min, info.max + 1, dtype=np.int64)
    a, b = np.meshgrid(codes, codes, indexing="ij")
    X, rx, zx, Y, ry, zy, zc, kernel_dt, shift, dt, lo, hi = _qlinear_add_operands(
        a.astype(dt), a_scale, a_zp, b.astype(dt), b_scale, b_zp, c_scale, c_zp, dt, clamp, qdq_s8_to_u8)
    if swap:
        X, rx, zx, Y, ry, zy = Y, ry, zy, X, rx, zx
    exact = _qlinear_add_from_operands(X, rx, zx, Y, ry, zy, zc, kernel_dt, shift, lo, hi)  # [a, b]
    ratio = {swap: float(rx), not swap: float(ry)}   # the multiplied input's scale ratio, by x_is_b
    for x_is_b in (swap, not swap):
        want = exact.T if x_is_b else exact   # [x, t]
        for s in range(ADD_SHIFT_MAX + 1):
            for mult in sorted({int(np.floor(ratio[x_is_b] * 2.0**s)), int(np.ceil(ratio[x_is_b] * 2.0**s))}):
                table = _floor_recipe_table(want, codes, mult, s, lo, hi) if 0 < mult < ADD_MULT_LIMIT else None
                if table is not None:
                    recipe = AddRecipe(mult, s, False, x_is_b, table)
                    if _recipe_matches(recipe, codes, want, lo, hi):
                        return recipe
    recipe = _exact_tie_recipe(codes, rx, zx, ry, zy, zc, shift, x_is_b=swap)
    if recipe is not None and _recipe_matches(recipe, codes, exact.T if swap else exact, lo, hi):
        return recipe
    raise ValueError(f"no integer QLinearAdd recipe (a 24-bit multiplier, an int32 table, a shift of at most "
                     f"{ADD_SHIFT_MAX}) equals onnxruntime for scales a {float(a_scale):g}, b {float(b_scale):g}, "
                     f"y {float(c_scale):g} and zero points {int(a_zp)}, {int(b_zp)}, {int(c_zp)}")


def _floor_recipe_table(want, codes, mult, s, lo, hi):
    """Return the table making ``floor((x * mult + T[t]) / 2**s)`` clamp to ``want[x, t]``, or None."""
    one = 1 << s
    product = codes[:, None] * mult
    low = np.where(want > lo, want * one - product, ADD_TABLE_MIN).max(axis=0)
    high = np.where(want < hi, (want + 1) * one - product, ADD_TABLE_MAX + 1).min(axis=0)  # exclusive
    low, high = np.maximum(low, ADD_TABLE_MIN), np.minimum(high, ADD_TABLE_MAX + 1)
    if not np.all(low < high):
        return None
    table = np.zeros(256, np.int64)
    table[codes & 0xFF] = low + (high - 1 - low) // 2
    return table


def _exact_tie_recipe(codes, rx, zx, ry, zy, zc, shift, *, x_is_b):
    """Return the exact round-half-even recipe, or None when it does not fit the widths.

    The multiplied input is the kernel's X: ``v - shift = x * rx + (shift * rx + inner[t + shift] - shift)``
    exactly, so with ``s`` large enough for every term to be an integer multiple of
    ``2**-s``, the table holds the second term times ``2**s`` plus one half.
    """
    fixed = _qlinear_add_fixed(rx, zx, ry, zy, zc)
    inner = _fma_f32((codes + shift).astype(np.float32), np.float32(ry), fixed)
    terms = [_strip_trailing_zeros(int(m), int(e)) for m, e in zip(*_float32_parts(np.append(inner, np.float32(rx))))]
    s = max([1] + [-e for m, e in terms if m != 0])
    if s > ADD_SHIFT_MAX:
        return None
    (rm, re_), inner_terms = terms[-1], terms[:-1]
    mult = rm << (re_ + s)
    if not 0 < mult < ADD_MULT_LIMIT:
        return None
    table = np.zeros(256, np.int64)
    for code, (m, e) in zip(codes, inner_terms):
        table[code & 0xFF] = shift * mult + (m << (e + s) if m else 0) - (shift << s) + (1 << (s - 1))
    return AddRecipe(mult, s, True, x_is_b, table)


def _strip_trailing_zeros(m: int, e: int) -> tuple[int, int]:
    """Return ``(m', e')`` with ``m' * 2**e' == m * 2**e`` and ``m'`` odd (or zero)."""
    while m and not m & 1:
        m, e = m >> 1, e + 1
    return m, e


def _recipe_matches(recipe, codes, want, lo, hi) -> bool:
    """Check ``recipe`` on all pairs ``want[x, t]`` and the hardware's widths."""
    w = codes[:, None] * recipe.mult + recipe.table[codes & 0xFF][None, :]
    return (bool(np.all(np.abs(w) < 1 << 33))
            and bool(np.all(recipe.table >= ADD_TABLE_MIN)) and bool(np.all(recipe.table <= ADD_TABLE_MAX))
            and np.array_equal(qlinear_add_by_recipe(codes[:, None], codes[None, :], recipe, lo, hi), want))


# --------------------------------------------------------------------------
# average pools


def _global_avgpool_nchw(x, x_scale, x_zp, y_scale, y_zp, dt):
    """Run MlasQLinearGlobalAveragePoolNchw on x of shape (N, C, image_size)."""
    image_size = x.shape[-1]
    if image_size >= 1 << 24:
        raise ValueError(f"the pooled image has {image_size} pixels; ORT requires fewer than 2**24")
    scale = x_scale / (y_scale * np.float32(image_size))
    if not (2.0**-32 <= scale < 256.0):
        raise ValueError(
            f"x_scale / (y_scale * {image_size}) = {scale!r} is outside [2**-32, 256): "
            "ORT rejects this QLinearGlobalAveragePool as out of computation range")
    acc = x.astype(np.int64).sum(axis=-1) - x_zp * image_size
    acc = acc.astype(np.int32)  # ORT's int32 lanes wrap; only reachable with > 2**23 pixels
    return requantize(acc, scale, y_zp, dt)


def qlinear_global_avgpool(x, x_scale, x_zp, y_scale, y_zp, dtype) -> np.ndarray:
    """Average every channel exactly like ORT com.microsoft QLinearGlobalAveragePool (channels_last=0).

    ``acc = sum(x) - x_zp * HW`` in int32, ``multiplier = f32(x_scale /
    f32(y_scale * HW))``, then :func:`requantize`.  ``x`` is (N, C, ...);
    the result is (N, C, 1, ...) with every spatial dimension 1.  ORT raises
    when the multiplier is outside [2**-32, 256); so does this function.
    """
    dt = _quant_dtype(dtype)
    x = _quantized_input(x, dt, "x")
    if x.ndim < 3:
        raise ValueError(f"x must have rank >= 3 (N, C, spatial...), not shape {x.shape}")
    xs = _scalar_scale(x_scale, "x_scale")
    ys = _scalar_scale(y_scale, "y_scale")
    xz = _scalar_zero_point(x_zp, dt, "x_zp")
    yz = _scalar_zero_point(y_zp, dt, "y_zp")
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    y = _global_avgpool_nchw(flat, xs, xz, ys, yz, dt)
    return y.reshape((n, c) + (1,) * (x.ndim - 2))


def _pool_output_size(in_size, kernel, stride, pad_head, pad_tail, ceil_mode):
    """Return ORT's pooled size (PoolAttributes::ComputeOutputSize plus the ceil_mode fix-up)."""
    num = in_size + pad_head + pad_tail - kernel
    if num < 0:
        raise ValueError(f"kernel {kernel} is larger than the padded input {in_size + pad_head + pad_tail}")
    if not ceil_mode:
        return num // stride + 1
    out = -(-num // stride) + 1
    # the last window must start inside the input or the head padding
    if (out - 1) * stride >= in_size + pad_head:
        out -= 1
    return out


def _int_list(value, name, length, minimum, meaning):
    """Return ``value`` as a list of ``length`` integers >= ``minimum``, or raise ValueError."""
    try:
        vals = [operator.index(v) for v in value]
    except TypeError:
        vals = None
    if vals is None or len(vals) != length or any(v < minimum for v in vals):
        raise ValueError(f"{name} must be {length} integers >= {minimum} {meaning}, not {value!r}")
    return vals


def qlinear_avgpool(x, x_scale, x_zp, y_scale, y_zp, dtype, kernel_shape, strides, pads,
                    count_include_pad=False, ceil_mode=False) -> np.ndarray:
    """Average-pool ``x`` (NCHW) exactly like ORT com.microsoft QLinearAveragePool (2-D, channels_last=0).

    ORT dequantizes every input to float32 (``f32(x_scale * f32(x - x_zp))``),
    sums each window in float32 in row-major order starting from 0, divides
    by the element count in float32 and quantizes with
    ``sat(rne(f32(f32(sum / count) / y_scale) + y_zp))``.  The count is
    ``kh * kw`` with ``count_include_pad`` (even where the window hangs off
    the padding), otherwise the number of input pixels in the window.

    Special case: when the kernel covers the whole input and all pads are 0,
    ORT switches to the integer global average pool
    (:func:`qlinear_global_avgpool`), and so does this function.

    ``pads`` is ``[top, left, bottom, right]``; ``kernel_shape`` and
    ``strides`` are ``[h, w]``.  This is also what ORT runs for a QDQ
    ``DQ -> AveragePool -> Q`` group, which it fuses into QLinearAveragePool.
    """
    dt = _quant_dtype(dtype)
    x = _quantized_input(x, dt, "x")
    if x.ndim != 4:
        raise ValueError(f"x must be NCHW (rank 4), not shape {x.shape}")
    kh, kw = _int_list(kernel_shape, "kernel_shape", 2, 1, "[kh, kw]")
    sh, sw = _int_list(strides, "strides", 2, 1, "[sh, sw]")
    pt, pl, pb, pr = _int_list(pads, "pads", 4, 0, "[top, left, bottom, right]")
    if not (pt < kh and pb < kh and pl < kw and pr < kw):
        raise ValueError(f"pads {pads!r} must be smaller than the kernel {kernel_shape!r}")
    xs = _scalar_scale(x_scale, "x_scale")
    ys = _scalar_scale(y_scale, "y_scale")
    xz = _scalar_zero_point(x_zp, dt, "x_zp")
    yz = _scalar_zero_point(y_zp, dt, "y_zp")

    n, c, h, w = x.shape
    oh = _pool_output_size(h, kh, sh, pt, pb, ceil_mode)
    ow = _pool_output_size(w, kw, sw, pl, pr, ceil_mode)

    if (kh, kw) == (h, w) and (pt, pl, pb, pr) == (0, 0, 0, 0):
        y = _global_avgpool_nchw(x.reshape(n, c, h * w), xs, xz, ys, yz, dt)
        return np.broadcast_to(y.reshape(n, c, 1, 1), (n, c, oh, ow)).copy()

    xf = _dequantize_f32(x, xs, xz)
    y = np.empty((n, c, oh, ow), dt)
    for ph in range(oh):
        h0 = ph * sh - pt
        h1 = min(h0 + kh, h)
        h0 = max(h0, 0)
        for pw in range(ow):
            w0 = pw * sw - pl
            w1 = min(w0 + kw, w)
            w0 = max(w0, 0)
            acc = np.zeros((n, c), np.float32)
            for hh in range(h0, h1):  # sequential float32 sum, row-major like ORT
                for ww in range(w0, w1):
                    acc = acc + xf[:, :, hh, ww]
            count = kh * kw if count_include_pad else (h1 - h0) * (w1 - w0)
            with np.errstate(invalid="ignore", divide="ignore"):
                avg = acc / np.float32(count)
            v = avg / ys + np.float32(yz)
            info = np.iinfo(dt)
            # nearbyintf, static_cast<int32_t>, clamp (NaN -> INT32_MIN -> type minimum)
            y[:, :, ph, pw] = np.clip(_cvtps_epi32(v), info.min, info.max).astype(dt)
    return y


# --------------------------------------------------------------------------
# QLinearConcat


def requantize_linear(q, in_scale, in_zp, out_scale, out_zp, dtype) -> np.ndarray:
    """Convert quantized values to another scale/zero point exactly like ORT com.microsoft QLinearConcat.

    Identity (a copy) when ``in_scale == out_scale`` (float32 equality) and
    ``in_zp == out_zp``; otherwise ORT's 256-entry lookup table
    ``quantize_linear(f32(in_scale * f32(q - in_zp)), out_scale, out_zp)``.
    ORT fuses a QDQ ``DQ -> Concat -> Q`` group into QLinearConcat too.
    """
    dt = _quant_dtype(dtype)
    q = _quantized_input(q, dt, "q")
    si = _scalar_scale(in_scale, "in_scale")
    so = _scalar_scale(out_scale, "out_scale")
    zi = _scalar_zero_point(in_zp, dt, "in_zp")
    zo = _scalar_zero_point(out_zp, dt, "out_zp")
    if si == so and zi == zo:
        return q.copy()
    info = np.iinfo(dt)
    codes = np.arange(info.min, info.max + 1)
    table = _quantize_f32(_dequantize_f32(codes, si, zi), so, zo, dt)
    return table[q.astype(np.int64) - info.min]
