"""Execute accel's canonical graph in NumPy, bit-identical to onnxruntime.

This is the golden model every other engine is checked against. Integer accumulations are
exact (int8/uint8 products summed in float64 BLAS, exact below 2^53, then cast to int64);
every rounding step calls :mod:`accel.numerics`, which reproduces onnxruntime's kernels.
"""

from __future__ import annotations

import numpy as np

from .. import numerics
from ..compiler.ir import Graph, Node

__all__ = ["run_graph", "conv_accumulate", "matmul_accumulate", "maxpool", "OP_IMPLS"]


def conv_accumulate(x, w, bias, strides, pads, dilations, group, x_zp, w_zp) -> np.ndarray:
    """Return the exact int64 accumulators of a grouped 2-D convolution of NCHW ``x`` with OIHW ``w``.

    Padding uses ``x_zp`` (real zero); ``w_zp`` is a scalar or one value per output channel.
    """
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    top, left, bottom, right = pads
    sh, sw = strides
    dh, dw = dilations
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    xp = np.full((n, c, h + top + bottom, wd + left + right), x_zp, np.float64)
    xp[:, :, top:top + h, left:left + wd] = x
    xp -= x_zp
    cols = np.empty((n, c, kh, kw, oh, ow), np.float64)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
    mg = m // group
    cols = cols.reshape(n, group, cg * kh * kw, oh * ow)
    wq = (w.astype(np.float64) - np.asarray(w_zp, np.float64).reshape(-1, 1, 1, 1)).reshape(group, mg, cg * kh * kw)
    acc = np.matmul(wq[None], cols).reshape(n, m, oh, ow).astype(np.int64)
    if bias is not None:
        acc += bias.astype(np.int64).reshape(1, m, 1, 1)
    return acc


def matmul_accumulate(x, w, bias, x_zp, w_zp) -> np.ndarray:
    """Return the exact int64 accumulators of ``(x - x_zp) @ (w - w_zp) + bias``; ``w_zp`` per column."""
    xf = x.astype(np.float64) - x_zp
    wf = w.astype(np.float64) - np.asarray(w_zp, np.float64)
    acc = np.matmul(xf, wf).astype(np.int64)
    if bias is not None:
        acc += bias.astype(np.int64)
    return acc


def _requantize(acc, requant, channel_axis):
    if requant is None:
        return acc.astype(np.int32)
    multiplier = requant.multiplier
    if multiplier.size > 1:
        shape = [1] * acc.ndim
        shape[channel_axis] = multiplier.size
        multiplier = multiplier.reshape(shape)
    return numerics.requantize(acc, multiplier, requant.zero_point, requant.dtype, (requant.lo, requant.hi))


def maxpool(x, kernel, strides, pads, dilations, ceil_mode) -> np.ndarray:
    """Return the max pool of NCHW integers; padding never wins (it is -infinity)."""
    n, c, h, w = x.shape
    top, left, bottom, right = pads
    out = []
    for i, (size, lo, hi) in enumerate(((h, top, bottom), (w, left, right))):
        span = size + lo + hi - dilations[i] * (kernel[i] - 1) - 1
        o = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
        if ceil_mode and (o - 1) * strides[i] >= size + lo:
            o -= 1
        out.append(o)
    oh, ow = out
    # Pad enough at the end for ceil_mode windows that run past the padded input.
    ph = max(h + top + bottom, (oh - 1) * strides[0] + dilations[0] * (kernel[0] - 1) + 1)
    pw = max(w + left + right, (ow - 1) * strides[1] + dilations[1] * (kernel[1] - 1) + 1)
    low = np.iinfo(np.int64).min
    xp = np.full((n, c, ph, pw), low, np.int64)
    xp[:, :, top:top + h, left:left + w] = x
    y = np.full((n, c, oh, ow), low, np.int64)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            a, b = i * dilations[0], j * dilations[1]
            y = np.maximum(y, xp[:, :, a:a + strides[0] * (oh - 1) + 1:strides[0], b:b + strides[1] * (ow - 1) + 1:strides[1]])
    return y.astype(x.dtype)


def _conv(node: Node, x, w, bias=None):
    a = node.attrs
    acc = conv_accumulate(x, w, bias, a["strides"], a["pads"], a["dilations"], a["group"], a["x_zp"], a["w_zp"])
    return _requantize(acc, a["requant"], 1)


def _matmul(node: Node, x, w, bias=None):
    a = node.attrs
    acc = matmul_accumulate(x, w, bias, a["x_zp"], a["w_zp"])
    return _requantize(acc, a["requant"], acc.ndim - 1)


def _add(node: Node, a, b):
    at = node.attrs
    aq, bq, yq, rq = at["a_quant"], at["b_quant"], at["y_quant"], at["requant"]
    return numerics.qlinear_add(a, aq.scale[0], aq.zero_point[0], b, bq.scale[0], bq.zero_point[0],
                                yq.scale[0], yq.zero_point[0], yq.dtype, (rq.lo, rq.hi),
                                qdq_s8_to_u8=at.get("qdq_s8_to_u8", False))


def _maxpool(node: Node, x):
    a = node.attrs
    return maxpool(x, a["kernel"], a["strides"], a["pads"], a["dilations"], a["ceil_mode"])


def _avgpool(node: Node, x):
    a = node.attrs
    xq, yq = a["x_quant"], a["y_quant"]
    return numerics.qlinear_avgpool(x, xq.scale[0], xq.zero_point[0], yq.scale[0], yq.zero_point[0], yq.dtype,
                                    a["kernel"], a["strides"], a["pads"], bool(a["count_include_pad"]),
                                    bool(a["ceil_mode"]))


def _global_avgpool(node: Node, x):
    xq, yq = node.attrs["x_quant"], node.attrs["y_quant"]
    return numerics.qlinear_global_avgpool(x, xq.scale[0], xq.zero_point[0], yq.scale[0], yq.zero_point[0], yq.dtype)


def _requantize_linear(x, xq, yq):
    if xq.same_as(yq):
        return x
    return numerics.requantize_linear(x, xq.scale[0], xq.zero_point[0], yq.scale[0], yq.zero_point[0], yq.dtype)


def _concat(node: Node, *xs):
    yq = node.attrs["y_quant"]
    parts = [_requantize_linear(x, q, yq) for x, q in zip(xs, node.attrs["in_quants"])]
    return np.concatenate(parts, axis=node.attrs["axis"]).astype(yq.dtype)


def _quantize(node: Node, x):
    q = node.attrs["quant"]
    return numerics.quantize_linear(x, q.scale if q.per_channel else q.scale[0],
                                    q.zero_point if q.per_channel else q.zero_point[0], q.dtype, q.axis)


def _dequantize(node: Node, x):
    q = node.attrs["quant"]
    return numerics.dequantize_linear(x, q.scale if q.per_channel else q.scale[0],
                                      q.zero_point if q.per_channel else q.zero_point[0], q.axis)


OP_IMPLS = {
    "quantize": _quantize,
    "dequantize": _dequantize,
    "conv": _conv,
    "matmul": _matmul,
    "add": _add,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "global_avgpool": _global_avgpool,
    "concat": _concat,
    "requantize": lambda node, x: _requantize_linear(x, node.attrs["x_quant"], node.attrs["y_quant"]),
    "clamp": lambda node, x: np.clip(x, node.attrs["lo"], node.attrs["hi"]).astype(x.dtype),
    "reshape": lambda node, x: x.reshape(node.attrs["shape"]),
    "transpose": lambda node, x: x.transpose(node.attrs["perm"]),
}


def run_graph(graph: Graph, feeds: dict[str, np.ndarray], keep: bool = False) -> dict[str, np.ndarray]:
    """Run one inference of ``graph`` on exactly shaped ``feeds``; return the outputs (all tensors if ``keep``)."""
    env: dict[str, np.ndarray] = dict(graph.constants)
    env.update(feeds)
    for node in graph.nodes:
        result = OP_IMPLS[node.op](node, *(env[name] for name in node.inputs))
        tensor = graph.tensors[node.outputs[0]]
        if result.shape != tensor.shape or result.dtype != tensor.dtype:
            raise RuntimeError(f"golden: node {node.name!r} ({node.op}) made {result.dtype}{list(result.shape)}, "
                               f"the graph says {tensor.dtype}{list(tensor.shape)}")
        env[node.outputs[0]] = result
    if keep:
        return env
    return {name: env[name] for name in graph.outputs}
