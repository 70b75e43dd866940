"""Define accel's canonical quantized graph: a small set of integer ops on static shapes.

The front end (:mod:`accel.compiler.frontend`) turns any supported ONNX model, QDQ or
QOperator, into this form; the golden model (:mod:`accel.sim.golden`) executes it, and the
back end compiles it for the accelerator. The ops are:

==================  ==========================================================================
op                  meaning
==================  ==========================================================================
``quantize``        float32 -> int8/uint8 at a graph input (ONNX QuantizeLinear)
``dequantize``      int8/uint8 -> float32 at a graph output (ONNX DequantizeLinear)
``conv``            2-D convolution, groups/strides/pads/dilations, int32 accumulation,
                    optional requantization to int8/uint8 with a clamp
``matmul``          ``x[..., K] @ w[..., K, N]`` (Gemm/MatMul), same accumulation/requant
``add``             elementwise add with onnxruntime's QLinearAdd arithmetic
``maxpool``         max pool on the integer values
``avgpool``         average pool with onnxruntime's QLinearAveragePool arithmetic
``global_avgpool``  global average pool with onnxruntime's QLinearGlobalAveragePool arithmetic
``concat``          concatenation, requantizing inputs whose scale differs from the output's
``requantize``      change of scale/zero point (a DequantizeLinear followed by QuantizeLinear)
``clamp``           clamp integer values into [lo, hi]
``reshape``         layout only
``transpose``       layout only
==================  ==========================================================================

Shapes are static and describe one inference. Tensors are named; constants (weights,
biases) live in :attr:`Graph.constants`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

__all__ = ["QUANT_DTYPES", "Quant", "Requant", "Tensor", "Node", "Graph", "OPS", "IRError", "dtype_range"]

QUANT_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8))


class IRError(Exception):
    """Report a malformed canonical graph (a compiler bug, not bad user input)."""


def dtype_range(dtype) -> tuple[int, int]:
    """Return the (min, max) integer range of ``dtype``."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


@dataclass(frozen=True, eq=False)
class Quant:
    """Describe how an integer tensor maps to real values: ``real = (q - zero_point) * scale``.

    ``scale`` and ``zero_point`` are 1-D; with ``axis`` None they have one element
    (per-tensor), otherwise one per index of ``axis`` (per-channel).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: np.dtype
    axis: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "scale", np.atleast_1d(np.asarray(self.scale, np.float32)).ravel())
        object.__setattr__(self, "zero_point", np.atleast_1d(np.asarray(self.zero_point)).astype(np.int64).ravel())
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.scale.shape != self.zero_point.shape and self.zero_point.size != 1:
            raise IRError(f"scale shape {self.scale.shape} and zero point shape {self.zero_point.shape} differ")
        if self.axis is None and self.scale.size != 1:
            raise IRError(f"per-tensor quantization needs one scale, not {self.scale.size}")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def same_as(self, other: "Quant | None") -> bool:
        """Return True when both map integers to reals identically."""
        return (
            other is not None
            and self.dtype == other.dtype
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
            and (self.axis == other.axis or self.scale.size == 1)
        )

    def describe(self) -> str:
        kind = np.dtype(self.dtype).name
        if self.scale.size == 1:
            return f"{kind} s={self.scale[0]:.4g} zp={self.zero_point[0]}"
        return f"{kind} per-ch[{self.scale.size}] s={self.scale.min():.3g}..{self.scale.max():.3g}"


@dataclass(eq=False)
class Requant:
    """Describe the requantization of int32 accumulators to int8/uint8.

    ``out = clamp(round_half_even(float32(acc) * multiplier) + zero_point, lo, hi)``, with
    ``multiplier`` a float32 1-D array (one element, or one per output channel).
    """

    multiplier: np.ndarray
    zero_point: int
    dtype: np.dtype
    lo: int | None = None
    hi: int | None = None

    def __post_init__(self):
        self.multiplier = np.atleast_1d(np.asarray(self.multiplier, np.float32)).ravel()
        self.dtype = np.dtype(self.dtype)
        tmin, tmax = dtype_range(self.dtype)
        self.lo = tmin if self.lo is None else max(int(self.lo), tmin)
        self.hi = tmax if self.hi is None else min(int(self.hi), tmax)
        self.zero_point = int(self.zero_point)

    def clamp(self) -> tuple[int, int]:
        return self.lo, self.hi


@dataclass(eq=False)
class Tensor:
    """Describe one named tensor: static shape, dtype and (for integer tensors) quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    quant: Quant | None = None

    def __post_init__(self):
        self.shape = tuple(int(d) for d in self.shape)
        self.dtype = np.dtype(self.dtype)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(eq=False)
class Node:
    """Describe one canonical op: its type, tensor names, attributes and the ONNX node it came from."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)

    def __repr__(self):
        return f"Node({self.op} {self.name!r}: {self.inputs} -> {self.outputs})"


# Each op: (minimum inputs, maximum inputs, required attributes).
OPS: dict[str, tuple[int, int, tuple[str, ...]]] = {
    "quantize": (1, 1, ("quant",)),
    "dequantize": (1, 1, ("quant",)),
    "conv": (2, 3, ("strides", "pads", "dilations", "group", "x_zp", "w_zp", "requant")),
    "matmul": (2, 3, ("x_zp", "w_zp", "requant")),
    "add": (2, 2, ("a_quant", "b_quant", "requant")),
    "maxpool": (1, 1, ("kernel", "strides", "pads", "dilations", "ceil_mode")),
    "avgpool": (1, 1, ("kernel", "strides", "pads", "count_include_pad", "ceil_mode", "x_quant", "y_quant")),
    "global_avgpool": (1, 1, ("x_quant", "y_quant")),
    "concat": (1, 1 << 16, ("axis", "in_quants", "y_quant")),
    "requantize": (1, 1, ("x_quant", "y_quant")),
    "clamp": (1, 1, ("lo", "hi")),
    "reshape": (1, 1, ("shape",)),
    "transpose": (1, 1, ("perm",)),
}


class Graph:
    """Hold a canonical quantized graph: tensors, constants and topologically ordered nodes."""

    def __init__(self, name: str = "model"):
        self.name = name
        self.tensors: dict[str, Tensor] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        # Inputs whose leading dimension was symbolic in ONNX and resolved to 1.
        self.dynamic_batch: set[str] = set()
        self.metadata: dict = {}

    # -- construction -----------------------------------------------------------------
    def add_tensor(self, name: str, shape, dtype, quant: Quant | None = None) -> Tensor:
        if name in self.tensors:
            raise IRError(f"tensor {name!r} defined twice")
        tensor = Tensor(name, shape, dtype, quant)
        self.tensors[name] = tensor
        return tensor

    def add_constant(self, name: str, value: np.ndarray, quant: Quant | None = None) -> str:
        value = np.asarray(value)
        self.add_tensor(name, value.shape, value.dtype, quant)
        self.constants[name] = value
        return name

    def add_node(self, op: str, name: str, inputs, outputs, **attrs) -> Node:
        node = Node(op, name, list(inputs), list(outputs), attrs)
        self.nodes.append(node)
        return node

    def unique_name(self, base: str) -> str:
        name, i = base, 1
        while name in self.tensors:
            name = f"{base}_{i}"
            i += 1
        return name

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    # -- queries ----------------------------------------------------------------------
    def producer(self, name: str) -> Node | None:
        for node in self.nodes:
            if name in node.outputs:
                return node
        return None

    def consumers(self, name: str) -> list[Node]:
        return [node for node in self.nodes if name in node.inputs]

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def compute_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op not in ("quantize", "dequantize")]

    # -- checking ---------------------------------------------------------------------
    def verify(self) -> "Graph":
        """Check that the graph is well formed, raising :class:`IRError` if not."""
        defined = set(self.inputs) | set(self.constants)
        for name in self.inputs:
            if name not in self.tensors:
                raise IRError(f"input {name!r} has no tensor")
        for name, value in self.constants.items():
            if self.tensors[name].shape != value.shape:
                raise IRError(f"constant {name!r} shape {value.shape} != tensor {self.tensors[name].shape}")
        for node in self.nodes:
            if node.op not in OPS:
                raise IRError(f"node {node.name!r}: unknown op {node.op!r}")
            lo, hi, attrs = OPS[node.op]
            if not lo <= len(node.inputs) <= hi:
                raise IRError(f"node {node.name!r} ({node.op}) has {len(node.inputs)} inputs")
            for attr in attrs:
                if attr not in node.attrs:
                    raise IRError(f"node {node.name!r} ({node.op}) lacks attribute {attr!r}")
            for name in node.inputs:
                if name not in defined:
                    raise IRError(f"node {node.name!r} ({node.op}) reads {name!r} before it is defined")
            for name in node.outputs:
                if name in defined:
                    raise IRError(f"node {node.name!r} ({node.op}) redefines {name!r}")
                if name not in self.tensors:
                    raise IRError(f"node {node.name!r} ({node.op}) output {name!r} has no tensor")
                defined.add(name)
        for name in self.outputs:
            if name not in defined:
                raise IRError(f"output {name!r} is never computed")
        return self

    def __repr__(self):
        return f"Graph({self.name!r}, {len(self.nodes)} nodes, inputs={self.inputs}, outputs={self.outputs})"
