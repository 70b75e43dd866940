"""Lower the canonical graph to a chain of GEMM layers and fold it into the array's arithmetic.

Stages (see :mod:`accel.compiler.backend` for the whole pipeline):

* :class:`LowerToGemmChain`: canonical graph -> :class:`GemmProgram` layers, with the
  model's quantize/dequantize as the host-side boundaries and layout-only reshapes absorbed;
* :class:`SubtractWeightZeroPoint`: ``W' = W - w_zp``, which must fit ``weight_bits``;
* :class:`FoldInputZeroPointIntoBias`: ``bias' = bias - x_zp * sum_k W'[k, n]``, so the
  array multiplies raw input bytes (``docs/isa.md``, bias folding);
* :class:`CheckAccumulatorRange`: every partial sum fits the config's accumulators.
"""

from __future__ import annotations

import numpy as np

from .. import numerics
from .errors import CompileError
from .gemm import Boundary, GemmLayer, GemmProgram, Stage
from .ir import Node, Quant, dtype_range
from .layout import wrap_signed

__all__ = ["SUPPORTED_OPS", "LowerToGemmChain", "SubtractWeightZeroPoint", "FoldInputZeroPointIntoBias",
           "CheckAccumulatorRange"]

SUPPORTED_OPS = ("quantize", "dequantize", "matmul", "reshape")

_WHAT_RUNS = ("this back end compiles chains of fully-connected layers (matmul with a constant 2-D weight, "
              "requantized to int8/uint8, optionally with a fused ReLU/Clip) between a quantize and a dequantize, "
              "with layout-only reshapes such as Flatten; conv, pooling and add come with the conv back end")


def _where(program: GemmProgram, node: Node) -> str:
    return f"{program.name}: node {node.name!r} ({node.op})"


def _quant_dict(quant: Quant | None, dtype) -> dict:
    if quant is None:  # a raw integer tensor: identity quantization
        return dict(scale=[1.0], zero_point=[0], dtype=np.dtype(dtype).name, axis=None)
    return dict(scale=[float(s) for s in quant.scale], zero_point=[int(z) for z in quant.zero_point],
                dtype=quant.dtype.name, axis=quant.axis)


def _row_view(shape: tuple) -> tuple[int, int]:
    """Return the [rows, features] matrix the accelerator keeps a tensor of ``shape`` as."""
    return int(np.prod(shape[:-1], dtype=np.int64)), int(shape[-1])


class LowerToGemmChain(Stage):
    """Turn a canonical graph of quantize -> (reshape | matmul)* -> dequantize into GEMM layers."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        g = program.graph
        for node in g.nodes:
            if node.op not in SUPPORTED_OPS:
                raise CompileError(f"{_where(program, node)} cannot run on the accelerator yet: {_WHAT_RUNS}")
        if len(g.inputs) != 1 or len(g.outputs) != 1:
            raise CompileError(f"{program.name}: the accelerator runs models with one input and one output; this "
                               f"one has inputs {g.inputs} and outputs {g.outputs}")
        in_name, out_name = g.inputs[0], g.outputs[0]
        tensor = g.tensors[in_name]
        in_quant = _quant_dict(tensor.quant, tensor.dtype)
        in_dtype = tensor.dtype.name
        out_quant = out_dtype = None
        current = name = in_name     # current: the ABUF tensor holding the data; name: its graph alias
        view_change: Node | None = None
        layers: list[GemmLayer] = []
        while name != out_name or g.consumers(name):
            consumers = g.consumers(name)
            if len(consumers) != 1:
                users = ", ".join(f"{n.name!r} ({n.op})" for n in consumers) or "nothing"
                raise CompileError(f"{program.name}: tensor {name!r} feeds {users}; the accelerator runs a chain of "
                                   f"layers, each feeding the next")
            node = consumers[0]
            if node.op == "quantize":
                if name != in_name:
                    raise CompileError(f"{_where(program, node)}: quantize is supported only at the model input")
                in_quant, in_dtype = _quant_dict(node.attrs["quant"], node.attrs["quant"].dtype), "float32"
                current = node.outputs[0]
            elif node.op == "reshape":
                if layers and _row_view(g.tensors[node.outputs[0]].shape) != (layers[-1].rows, layers[-1].N):
                    view_change = view_change or node
                if not layers:
                    current = node.outputs[0]
            elif node.op == "matmul":
                if view_change is not None:
                    before = [layers[-1].rows, layers[-1].N]
                    after = list(_row_view(g.tensors[view_change.outputs[0]].shape))
                    raise CompileError(f"{_where(program, view_change)} regroups the rows {before} as {after} "
                                       f"between two layers; the accelerator keeps activations as rows of the "
                                       f"last dimension, so only reshapes that keep it run between layers")
                layers.append(self._layer(program, node, current))
                current = node.outputs[0]
            else:  # dequantize
                if not layers:
                    raise CompileError(f"{_where(program, node)}: the model has no matmul before its output; "
                                       f"{_WHAT_RUNS}")
                if node.outputs[0] != out_name:
                    raise CompileError(f"{_where(program, node)}: dequantize is supported only at the model output")
                out_quant, out_dtype = _quant_dict(node.attrs["quant"], node.attrs["quant"].dtype), "float32"
            name = node.outputs[0]
        if not layers:
            raise CompileError(f"{program.name}: the model has no matmul; {_WHAT_RUNS}")
        if out_quant is None:
            t = g.tensors[out_name]
            out_quant, out_dtype = _quant_dict(t.quant, t.dtype), t.dtype.name
        program.layers = layers
        program.input = Boundary(in_name, g.tensors[in_name].shape, in_dtype, in_quant, layers[0].x)
        program.output = Boundary(out_name, g.tensors[out_name].shape, out_dtype, out_quant, layers[-1].y)
        program.dynamic_batch = bool(g.dynamic_batch)
        return program

    @staticmethod
    def _layer(program: GemmProgram, node: Node, x_name: str) -> GemmLayer:
        g, a = program.graph, node.attrs
        x, w_name = g.tensors[node.inputs[0]], node.inputs[1]
        if not g.is_constant(w_name):
            raise CompileError(f"{_where(program, node)}: the weight {w_name!r} is not a constant; the accelerator "
                               f"multiplies by a constant 2-D weight [K, N]")
        w = g.constants[w_name].astype(np.int64)
        if w.ndim != 2:
            raise CompileError(f"{_where(program, node)}: the weight {w_name!r} has shape {list(w.shape)}; the "
                               f"accelerator multiplies by a constant 2-D weight [K, N]")
        k, n = w.shape
        if a["requant"] is None:
            raise CompileError(f"{_where(program, node)} has an int32 output (MatMulInteger); the accelerator "
                               f"requantizes every layer to int8/uint8")
        rq = a["requant"]
        bias = np.zeros(n, np.int64)
        if len(node.inputs) > 2:
            if not g.is_constant(node.inputs[2]):
                raise CompileError(f"{_where(program, node)}: the bias {node.inputs[2]!r} must be a constant")
            bias = np.broadcast_to(g.constants[node.inputs[2]].astype(np.int64).ravel(), (n,)).copy()
        multiplier = np.broadcast_to(rq.multiplier, (n,)).astype(np.float32)
        bad = (multiplier < numerics.MULTIPLIER_MIN) | (multiplier >= numerics.MULTIPLIER_MAX)
        if bad.any():
            raise CompileError(f"{_where(program, node)}: requantization multiplier {multiplier[bad][0]!r} "
                               f"(x_scale * w_scale / y_scale) is outside [2**-40, 2**8), the hardware "
                               f"requantizer's range")
        rows, features = _row_view(x.shape)
        if features != k:
            raise CompileError(f"{_where(program, node)}: input {list(x.shape)} does not match weight [{k}, {n}]")
        return GemmLayer(
            name=node.name, op=node.op, x=x_name, y=node.outputs[0], rows=rows, weight=w, bias=bias,
            multiplier=multiplier, x_zp=int(a["x_zp"]),
            w_zp=np.broadcast_to(np.asarray(a["w_zp"], np.int64).ravel(), (n,)).copy(),
            x_dtype=x.dtype, y_dtype=rq.dtype, y_zp=rq.zero_point, y_lo=rq.lo, y_hi=rq.hi)


class SubtractWeightZeroPoint(Stage):
    """Store ``W' = W - w_zp`` and check it fits the config's signed ``weight_bits``."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        bits, cfg = program.config.weight_bits, program.config
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        for layer in program.layers:
            w = layer.weight - layer.w_zp
            bad = ((w < lo) | (w > hi)).any(axis=0)
            if bad.any():
                c = int(np.flatnonzero(bad)[0])
                raise CompileError(
                    f"{program.name}: node {layer.name!r} ({layer.op}): channel {c} has weight zero point "
                    f"{int(layer.w_zp[c])}, so its weights minus the zero point span [{int(w[:, c].min())}, "
                    f"{int(w[:, c].max())}], which does not fit the {bits}-bit signed weights of config "
                    f"{cfg.name!r} ([{lo}, {hi}]); quantize the weights as int8 (zero point 0) or uint8 with zero "
                    f"point 128, or use a config with weight_bits=9")
            layer.weight, layer.w_zp = w, np.zeros_like(layer.w_zp)
        return program


class FoldInputZeroPointIntoBias(Stage):
    """Fold the input zero point into the bias: ``bias' = bias - x_zp * sum_k W'[k, n]`` (int32 wrap-around)."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        for layer in program.layers:
            # The hardware adds acc + bias' modulo 2**32, so wrapping bias' keeps the int32 result exact.
            layer.bias = wrap_signed(layer.bias - layer.x_zp * layer.weight.sum(axis=0), 32)
            layer.x_zp = 0
        return program


class CheckAccumulatorRange(Stage):
    """Check that every partial sum ``sum_k x[k] * W'[k, n]`` fits the config's ``acc_width`` for any input bytes."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        width = program.config.acc_width
        limit_lo, limit_hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        for layer in program.layers:
            x_lo, x_hi = dtype_range(layer.x_dtype)
            # The range includes 0, so the bound of the full sum also bounds every partial sum over K tiles.
            high = np.maximum(layer.weight * x_lo, layer.weight * x_hi).sum(axis=0)
            low = np.minimum(layer.weight * x_lo, layer.weight * x_hi).sum(axis=0)
            if high.max() > limit_hi or low.min() < limit_lo:
                c = int(np.argmax(np.maximum(high - limit_hi, limit_lo - low)))
                raise CompileError(
                    f"{program.name}: node {layer.name!r} ({layer.op}): with K={layer.K} the accumulator of channel "
                    f"{c} can reach [{int(low[c]):,}, {int(high[c]):,}] for {layer.x_dtype.name} inputs, beyond the "
                    f"{width}-bit accumulators of config {program.config.name!r}")
        return program
