"""Count the work and parameters of canonical graph nodes, for ``accel inspect`` and reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import Graph, Node

__all__ = ["LayerStats", "layer_stats", "describe_quant"]


@dataclass(frozen=True)
class LayerStats:
    """Hold one node's multiply-accumulates and parameter count."""

    macs: int
    params: int


def layer_stats(graph: Graph, node: Node) -> LayerStats:
    """Return the MACs and parameters (weights plus biases) of one inference of ``node``."""
    out = graph.tensors[node.outputs[0]]
    params = sum(graph.tensors[name].size for name in node.inputs[1:] if graph.is_constant(name))
    if node.op == "conv":
        w = graph.tensors[node.inputs[1]].shape
        return LayerStats(out.size * w[1] * w[2] * w[3], params)
    if node.op == "matmul":
        k = graph.tensors[node.inputs[0]].shape[-1]
        return LayerStats(out.size * k, params)
    return LayerStats(0, params)


def describe_quant(graph: Graph, node: Node) -> str:
    """Summarize a node's quantization: input zero point, weight scales, output scale/zero point, clamp."""
    a = node.attrs
    parts = []
    if node.op in ("conv", "matmul"):
        w_quant = a.get("w_quant")
        parts.append(f"x_zp={a['x_zp']}")
        if w_quant is not None and w_quant.scale.size > 1:
            parts.append(f"w per-ch[{w_quant.scale.size}] zp={'0' if not w_quant.zero_point.any() else 'mixed'}")
        elif w_quant is not None:
            parts.append(f"w s={w_quant.scale[0]:.4g} zp={w_quant.zero_point[0]}")
        rq = a["requant"]
        if rq is None:
            parts.append("-> int32")
        else:
            y = graph.tensors[node.outputs[0]].quant
            if y is not None:
                parts.append(f"y s={y.scale[0]:.4g} zp={y.zero_point[0]}")
            lo, hi = rq.lo, rq.hi
            if (lo, hi) != tuple(int(v) for v in (np.iinfo(rq.dtype).min, np.iinfo(rq.dtype).max)):
                parts.append(f"clamp[{lo},{hi}]")
    elif node.op in ("quantize", "dequantize"):
        parts.append(a["quant"].describe())
    else:
        y = graph.tensors[node.outputs[0]].quant
        if y is not None:
            parts.append(y.describe())
        if node.op == "add":
            rq = a["requant"]
            if (rq.lo, rq.hi) != tuple(int(v) for v in (np.iinfo(rq.dtype).min, np.iinfo(rq.dtype).max)):
                parts.append(f"clamp[{rq.lo},{rq.hi}]")
    return " ".join(parts)
