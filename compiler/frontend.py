"""Import quantized ONNX models (QDQ or QOperator form) into accel's canonical graph.

The importer walks the ONNX graph once, in topological order, tracking what every ONNX
tensor *is* rather than what type it has:

* an integer tensor of the canonical graph (:class:`_Int`),
* a constant (:class:`_Const`),
* a float view of an integer tensor, i.e. the output of a DequantizeLinear (:class:`_Dq`),
* a real float tensor, i.e. a float graph input (:class:`_Float`),
* the float result of a compute op whose inputs are all float views, waiting for the
  QuantizeLinear that makes it an integer op again (:class:`_Pending`).

That covers both quantized forms with one mechanism: a QDQ group ``DQ -> Conv [-> Relu]
-> Q`` and a QOperator ``QLinearConv`` become the same canonical ``conv``, exactly as
onnxruntime fuses the QDQ group into the same integer kernel. Layout ops and MaxPool
commute with per-tensor dequantization, so they run on the integers directly, as
onnxruntime's QDQ "drop" rules do.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import numerics
from ..errors import (AccelError, FloatModelError, ModelFormatError, ShapeError,
                      UnsupportedAttributeError, UnsupportedOpError)
from .ir import QUANT_DTYPES, Graph, Quant, Requant, dtype_range

__all__ = ["load_onnx", "import_model", "ort_float_fallback_nodes", "OrtFloatFallbackWarning", "SUPPORTED_OPS",
           "MIN_OPSET"]

MIN_OPSET = 10

# ONNX op types the importer understands, by domain, for error messages and the README.
SUPPORTED_OPS = {
    "ai.onnx (QDQ form)": [
        "QuantizeLinear", "DequantizeLinear", "Conv", "MatMul", "Gemm", "Add",
        "MaxPool", "AveragePool", "GlobalAveragePool", "Concat", "Relu", "Clip",
        "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout",
    ],
    "ai.onnx (QOperator form)": ["QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"],
    "com.microsoft": ["QGemm", "QLinearAdd", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat"],
    "constant folding": ["Constant", "Shape", "Gather", "Cast", "Concat", "Slice", "and any op on constants"],
}

_COMPUTE_OPS = {"Conv", "MatMul", "Gemm", "Add", "AveragePool", "GlobalAveragePool", "Concat"}
_LAYOUT_OPS = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "MaxPool"}
_QOP_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QLinearAdd",
            "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat"}
_QUANT_MARKERS = _QOP_OPS | {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def _supported_list() -> str:
    return ", ".join(op for group in list(SUPPORTED_OPS.values())[:3] for op in group)


# -- values tracked per ONNX tensor --------------------------------------------------------
@dataclass
class _Int:
    name: str                      # canonical tensor name


@dataclass
class _Const:
    value: np.ndarray
    quant: Quant | None = None     # set when produced by QuantizeLinear of a constant


@dataclass
class _Dq:
    src: "_Int | _Const"
    quant: Quant


@dataclass
class _Float:
    name: str


@dataclass
class _Pending:
    node: onnx.NodeProto
    kind: str
    inputs: list
    shape: tuple
    lo: float = -math.inf
    hi: float = math.inf
    attrs: dict = field(default_factory=dict)


# -- reading ----------------------------------------------------------------------------
def load_onnx(source) -> tuple[onnx.ModelProto, str]:
    """Read an ONNX model from a path, bytes or ModelProto; return it and a label for errors."""
    if isinstance(source, onnx.ModelProto):
        return source, source.graph.name or "<model>"
    if isinstance(source, (bytes, bytearray)):
        label, data = "<bytes>", bytes(source)
    else:
        label = os.fspath(source)
        try:
            with open(label, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ModelFormatError(f"{label}: cannot read file: {exc.strerror}") from None
    if not data:
        raise ModelFormatError(f"{label}: file is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:  # protobuf raises DecodeError, sometimes RuntimeWarning-ish errors
        raise ModelFormatError(
            f"{label}: not an ONNX model or truncated ({len(data)} bytes; protobuf: {exc})") from None
    if not model.HasField("graph") or not model.graph.node or model.ir_version <= 0:
        raise ModelFormatError(
            f"{label}: not an ONNX model ({len(data)} bytes parsed to no graph; expected an ONNX ModelProto)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "validation failed"
        raise ModelFormatError(f"{label}: invalid or truncated ONNX model: {first}") from None
    return model, label


def import_model(source, name: str | None = None) -> Graph:
    """Import an ONNX model (path, bytes or ModelProto) into a verified canonical :class:`Graph`.

    Warns with :class:`OrtFloatFallbackWarning` when onnxruntime would run some QDQ groups
    of this model in float (see :func:`ort_float_fallback_nodes`).
    """
    model, label = load_onnx(source)
    graph = _Importer(model, label, name).run()
    fallback, to_uint8 = _ort_qdq_rewrites(model)
    graph.metadata["ort_float_fallback"] = fallback
    for node in graph.nodes:
        if node.op == "add" and node.name in to_uint8:
            # onnxruntime adds these as uint8 (codes and zero points +128), which rounds differently.
            node.attrs["qdq_s8_to_u8"] = True
    if fallback:
        warnings.warn(OrtFloatFallbackWarning(
            f"{label}: onnxruntime's CPU provider runs {len(fallback)} QDQ group(s) of this int8 model in float "
            f"({', '.join(fallback[:4])}{', ...' if len(fallback) > 4 else ''}), because its int8->uint8 QDQ rewrite "
            "skips tensors with several consumers; accel runs them as integer kernels, so its outputs may differ "
            "from onnxruntime's by rounding at those nodes. Quantize activations as uint8 to avoid this."), stacklevel=2)
    return graph


class OrtFloatFallbackWarning(UserWarning):
    """Warn that onnxruntime runs some QDQ groups of a model in float, so exact agreement is not assured."""


_FUSED_QDQ_OPS = {"Conv", "MatMul", "Gemm", "Add", "AveragePool", "GlobalAveragePool", "Concat"}


def ort_float_fallback_nodes(model: onnx.ModelProto) -> list[str]:
    """Return the names of QDQ compute nodes onnxruntime's CPU provider leaves in float on x86.

    onnxruntime rewrites an int8 QuantizeLinear -> DequantizeLinear pair to uint8 when the
    Q feeds exactly one DQ that itself has one consumer (``QDQS8ToU8Transformer``, after
    ``EnsureUniqueDQForNodeUnit``). A QDQ group whose int8 activations end up with mixed
    types after that rewrite is no longer fused into an integer kernel: onnxruntime then
    computes DQ -> op -> Q in float. accel always runs the integer kernel, which agrees
    with the float result except where rounding differs, so such nodes are reported.
    """
    return _ort_qdq_rewrites(model)[0]


def _ort_qdq_rewrites(model: onnx.ModelProto) -> tuple[list[str], set[str]]:
    """Return (QDQ nodes onnxruntime runs in float, int8 QDQ nodes it runs as uint8 kernels)."""
    graph = model.graph
    consumers: dict[str, list] = defaultdict(list)
    producer = {}
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
        for name in node.output:
            producer[name] = node
    outputs = {o.name for o in graph.output}
    inits = {i.name: i for i in graph.initializer}

    def zp_dtype(node):
        if len(node.input) < 3 or node.input[2] not in inits:
            return None
        return helper.tensor_dtype_to_np_dtype(inits[node.input[2]].data_type)

    def fate(q):  # the activation type onnxruntime ends up with for the output of Q node q
        dtype = zp_dtype(q)
        if dtype != np.int8:
            return np.dtype(dtype) if dtype is not None else None
        users = consumers[q.output[0]]
        if len(users) == 1 and q.output[0] not in outputs and users[0].op_type == "DequantizeLinear":
            dq = users[0]
            # EnsureUniqueDQForNodeUnit gives every consumer of a shared DQ its own copy first.
            if len(consumers[dq.output[0]]) + (dq.output[0] in outputs) <= 1 and zp_dtype(dq) == np.int8 \
                    and inits[dq.input[2]].raw_data == inits[q.input[2]].raw_data:
                return np.dtype(np.uint8)
        return np.dtype(np.int8)

    def feeds_only_q(node):  # the output goes to QuantizeLinear, through at most one unbranched Relu/Clip
        after = consumers[node.output[0]]
        if len(after) == 1 and after[0].op_type in ("Relu", "Clip") and after[0].output[0] not in outputs:
            after = consumers[after[0].output[0]]
        return bool(after) and node.output[0] not in outputs and all(q.op_type == "QuantizeLinear" for q in after)

    flagged, to_uint8 = [], set()
    for node in graph.node:
        if node.op_type not in _FUSED_QDQ_OPS or node.domain not in ("", "ai.onnx"):
            continue
        # onnxruntime fuses only DQ -> op -> Q groups: every input straight from a DequantizeLinear (a float
        # Conv/Gemm bias initializer is quantized first by its WeightBiasQuantization), output into Q.
        direct = all(
            not name or (producer.get(name) is not None and producer[name].op_type == "DequantizeLinear")
            or (i == 2 and node.op_type in ("Conv", "Gemm") and name in inits)
            for i, name in enumerate(node.input))
        if not direct or not feeds_only_q(node):
            if any(producer.get(n) is not None and producer[n].op_type == "DequantizeLinear" for n in node.input):
                flagged.append(node.name or node.output[0])
            continue
        fates, original = set(), set()
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits:
                continue  # weights and biases are initializers
            q = producer.get(dq.input[0])
            if q is None and zp_dtype(dq) is not None:
                # An integer graph input keeps its type.
                original.add(np.dtype(zp_dtype(dq)))
                fates.add(np.dtype(zp_dtype(dq)))
                continue
            if q is None or q.op_type != "QuantizeLinear":
                continue
            original.add(np.dtype(zp_dtype(q)) if zp_dtype(q) is not None else None)
            fates.add(fate(q))
        after = consumers[node.output[0]]
        if len(after) == 1 and after[0].op_type in ("Relu", "Clip"):
            after = consumers[after[0].output[0]]
        for q in after:
            if q.op_type == "QuantizeLinear":
                original.add(np.dtype(zp_dtype(q)) if zp_dtype(q) is not None else None)
                fates.add(fate(q))
        if np.dtype(np.int8) in original and len(fates) > 1:
            flagged.append(node.name or node.output[0])
        elif np.dtype(np.int8) in original and fates == {np.dtype(np.uint8)}:
            to_uint8.add(node.name or node.output[0])
    return flagged, to_uint8


# -- attribute helpers ------------------------------------------------------------------
def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


class _Importer:
    def __init__(self, model: onnx.ModelProto, label: str, name: str | None):
        self.model = model
        self.label = label
        self.graph = Graph(name or model.graph.name or os.path.splitext(os.path.basename(label))[0])
        self.values: dict[str, object] = {}
        self.opset = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
        self.uses: dict[str, int] = {}

    # -- errors -------------------------------------------------------------------------
    def where(self, node) -> str:
        return f"{self.label}: node {node.name or node.output[0]!r} ({node.op_type})"

    def unsupported(self, node, why=None):
        domain = f" in domain {node.domain!r}" if node.domain not in ("", "ai.onnx") else ""
        detail = f": {why}" if why else f"{domain} is not supported; supported ops: {_supported_list()}"
        raise UnsupportedOpError(f"{self.where(node)}{detail}")

    def bad_attr(self, node, attr, value, allowed):
        raise UnsupportedAttributeError(f"{self.where(node)}: attribute {attr}={value!r} is not supported; {allowed}")

    # -- main ---------------------------------------------------------------------------
    def run(self) -> Graph:
        version = self.opset.get("ai.onnx", 0)
        if version < MIN_OPSET:
            raise UnsupportedOpError(f"{self.label}: opset {version} is too old; accel reads opsets {MIN_OPSET} and newer")
        g = self.model.graph
        float_inputs = [i for i in g.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
        if float_inputs and not any(n.op_type in _QUANT_MARKERS for n in g.node):
            ops = sorted({n.op_type for n in g.node})
            raise FloatModelError(
                f"{self.label}: float model (ops {', '.join(ops[:8])}) has no QuantizeLinear or QLinear ops; quantize it "
                "first, e.g. onnxruntime.quantization.quantize_static(model, out, reader, quant_format=QuantFormat.QDQ)")
        for init in g.initializer:
            self.values[init.name] = _Const(numpy_helper.to_array(init))
        for node in g.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for vi in g.input:
            if vi.name not in self.values:
                self.add_input(vi)
        for node in g.node:
            self.visit(node)
        for vi in g.output:
            self.add_output(vi.name)
        self.graph.metadata.update(source=self.label, opset=dict(self.opset),
                                   producer=f"{self.model.producer_name} {self.model.producer_version}".strip())
        return self.graph.verify()

    def add_input(self, vi: onnx.ValueInfoProto):
        t = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        shape = []
        for i, dim in enumerate(t.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                shape.append(dim.dim_value)
            elif i == 0:
                shape.append(1)
                self.graph.dynamic_batch.add(vi.name)
            else:
                raise ShapeError(
                    f"{self.label}: input {vi.name!r} dimension {i} is {dim.dim_param or 'unknown'!r}; accel needs "
                    "static shapes except a leading batch dimension (fix it with onnx.tools.update_model_dims)")
        if not t.HasField("shape"):
            raise ShapeError(f"{self.label}: input {vi.name!r} has no shape; accel needs static input shapes")
        if dtype == np.float32:
            self.graph.add_tensor(vi.name, shape, dtype)
            self.values[vi.name] = _Float(vi.name)
        elif dtype in QUANT_DTYPES:
            self.graph.add_tensor(vi.name, shape, dtype)
            self.values[vi.name] = _Int(vi.name)
        else:
            raise InputDtypeError(f"{self.label}: input {vi.name!r} has dtype {dtype}; accel takes float32, int8 or uint8 inputs")
        self.graph.inputs.append(vi.name)

    def add_output(self, name: str):
        value = self.values.get(name)
        if isinstance(value, _Dq):
            src = self.materialize(value.src)
            out = self.fresh(name)
            tensor = self.graph.tensors[src]
            self.graph.add_tensor(out, tensor.shape, np.float32)
            self.graph.add_node("dequantize", out, [src], [out], quant=value.quant)
            value = _Int(out)
        if isinstance(value, _Pending):
            raise UnsupportedOpError(
                f"{self.where(value.node)}: its float output {name!r} is a graph output; accel runs integer ops only, "
                "so every compute op must be followed by QuantizeLinear")
        if isinstance(value, _Const):
            value = _Int(self.materialize(value))
        if not isinstance(value, (_Int, _Float)):
            raise UnsupportedOpError(f"{self.label}: output {name!r} is not computed by a supported op")
        if value.name != name and name not in self.graph.tensors:
            self.rename(value.name, name)
        elif value.name != name:
            raise ShapeError(f"{self.label}: output {name!r} aliases {value.name!r}")
        self.graph.outputs.append(name)

    def rename(self, old: str, new: str):
        g = self.graph
        tensor = g.tensors.pop(old)
        tensor.name = new
        g.tensors[new] = tensor
        if old in g.constants:
            g.constants[new] = g.constants.pop(old)
        for node in g.nodes:
            node.inputs = [new if n == old else n for n in node.inputs]
            node.outputs = [new if n == old else n for n in node.outputs]
        g.inputs = [new if n == old else n for n in g.inputs]
        for key, v in self.values.items():
            if isinstance(v, (_Int, _Float)) and v.name == old:
                v.name = new

    def fresh(self, base: str) -> str:
        return self.graph.unique_name(base)

    # -- value helpers ------------------------------------------------------------------
    def get(self, node, i):
        if i >= len(node.input) or not node.input[i]:
            return None
        name = node.input[i]
        if name not in self.values:
            raise ShapeError(f"{self.where(node)}: input {name!r} is not produced by any node")
        return self.values[name]

    def const(self, node, i, what, required=True):
        v = self.get(node, i)
        if v is None:
            if required:
                raise UnsupportedOpError(f"{self.where(node)}: input {i} ({what}) is missing")
            return None
        if not isinstance(v, _Const):
            raise UnsupportedOpError(f"{self.where(node)}: input {node.input[i]!r} ({what}) must be a constant initializer")
        return v.value

    def shape_of(self, v) -> tuple:
        if isinstance(v, _Const):
            return tuple(v.value.shape)
        if isinstance(v, (_Int, _Float)):
            return self.graph.tensors[v.name].shape
        if isinstance(v, _Dq):
            return self.shape_of(v.src)
        if isinstance(v, _Pending):
            return v.shape
        raise AccelError(f"unknown value {v!r}")

    def materialize(self, v) -> str:
        """Return a canonical tensor name for an integer value, adding constants as needed."""
        if isinstance(v, _Int):
            return v.name
        if isinstance(v, _Const):
            name = self.fresh("const")
            self.graph.add_constant(name, v.value, v.quant)
            v_int = _Int(name)
            return v_int.name
        raise AccelError(f"cannot materialize {v!r}")

    def quant_params(self, node, scale_i, zp_i, axis=None, ndim=None, default_dtype=np.uint8) -> Quant:
        scale = self.const(node, scale_i, "scale")
        zp = self.const(node, zp_i, "zero point", required=False) if zp_i is not None else None
        if scale.dtype not in (np.float32, np.float16):
            raise UnsupportedAttributeError(f"{self.where(node)}: scale dtype {scale.dtype} is not supported; use float32")
        dtype = np.dtype(zp.dtype) if zp is not None else np.dtype(default_dtype)
        if dtype not in QUANT_DTYPES:
            raise UnsupportedAttributeError(
                f"{self.where(node)}: quantized type {dtype} is not supported; accel supports int8 and uint8")
        if zp is None:
            zp = np.zeros(scale.shape, dtype)
        scale = scale.astype(np.float32)
        if np.any(~(scale > 0)) or np.any(~np.isfinite(scale)):
            raise UnsupportedAttributeError(f"{self.where(node)}: scales must be positive and finite")
        if scale.size == 1:
            return Quant(scale.ravel(), zp.ravel()[:1], dtype, None)
        if axis is None or ndim is None:
            raise UnsupportedAttributeError(f"{self.where(node)}: per-channel scale of shape {scale.shape} is not supported here")
        axis = axis + ndim if axis < 0 else axis
        if scale.ndim != 1:
            raise UnsupportedAttributeError(f"{self.where(node)}: blocked quantization (scale shape {scale.shape}) is not supported")
        zp = np.broadcast_to(zp.ravel(), scale.shape)
        return Quant(scale, zp, dtype, axis)

    # -- dispatch -----------------------------------------------------------------------
    def visit(self, node: onnx.NodeProto):
        op = node.op_type
        domain = node.domain or "ai.onnx"
        if domain not in ("ai.onnx", "com.microsoft"):
            self.unsupported(node)
        args = [self.values.get(n) if n else None for n in node.input]
        for n, a in zip(node.input, args):
            if n and a is None:
                raise ShapeError(f"{self.where(node)}: input {n!r} is not produced by any node")
        real_args = [a for a in args if a is not None]
        if op == "QuantizeLinear":
            return self.visit_quantize(node)
        if op == "DequantizeLinear":
            return self.visit_dequantize(node)
        if domain == "ai.onnx" and real_args and all(isinstance(a, _Const) for a in real_args) or op == "Constant":
            return self.fold(node)
        if op == "Shape":
            shape = self.shape_of(args[0])
            at = _attrs(node)
            start, end = at.get("start", 0), at.get("end", None)
            return self.set(node, _Const(np.array(shape[start:end], np.int64)))
        if op in _QOP_OPS:
            return getattr(self, f"visit_{op}")(node)
        if domain != "ai.onnx":
            self.unsupported(node)
        if op in _COMPUTE_OPS:
            return self.visit_compute(node)
        if op in _LAYOUT_OPS:
            return self.visit_layout(node)
        if op in ("Relu", "Clip"):
            return self.visit_activation(node)
        self.unsupported(node)

    def set(self, node, value, i=0):
        self.values[node.output[i]] = value

    def fold(self, node):
        """Evaluate a node whose inputs are all constants with onnx's reference evaluator."""
        from onnx.reference import ReferenceEvaluator
        inputs = [self.values[n].value if n else None for n in node.input]
        names = [f"i{k}" if n else "" for k, n in enumerate(node.input)]
        folded = helper.make_node(node.op_type, names, list(node.output), domain=node.domain, **_attrs(node))
        graph = helper.make_graph(
            [folded], "fold",
            [helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for nm, v in zip(names, inputs) if nm],
            [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset.get("ai.onnx", 17))])
        try:
            results = ReferenceEvaluator(model).run(None, {nm: v for nm, v in zip(names, inputs) if nm})
        except Exception as exc:
            raise UnsupportedOpError(f"{self.where(node)}: cannot fold this constant expression ({exc})") from None
        for i, value in enumerate(results):
            self.set(node, _Const(np.asarray(value)), i)

    # -- QuantizeLinear / DequantizeLinear ------------------------------------------------
    def qdq_attrs(self, node, ndim):
        at = _attrs(node)
        if at.get("block_size", 0):
            self.bad_attr(node, "block_size", at["block_size"], "accel supports per-tensor and per-axis quantization")
        if "output_dtype" in at and at["output_dtype"] not in (0, onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            self.bad_attr(node, "output_dtype", at["output_dtype"], "accel supports int8 and uint8")
        default = np.uint8
        if at.get("output_dtype") == onnx.TensorProto.INT8:
            default = np.int8
        return at.get("axis", 1), default

    def visit_quantize(self, node):
        x = self.get(node, 0)
        ndim = len(self.shape_of(x))
        axis, default = self.qdq_attrs(node, ndim)
        q = self.quant_params(node, 1, 2, axis, ndim, default)
        if isinstance(x, _Const):
            value = numerics.quantize_linear(x.value.astype(np.float32), q.scale, q.zero_point, q.dtype, q.axis)
            return self.set(node, _Const(value, q))
        if isinstance(x, _Float):
            out = self.fresh(node.output[0])
            self.graph.add_tensor(out, self.graph.tensors[x.name].shape, q.dtype, q)
            self.graph.add_node("quantize", node.name or out, [x.name], [out], quant=q)
            return self.set(node, _Int(out))
        if isinstance(x, _Dq):
            return self.set(node, self.emit_requantize(node, x, q, -math.inf, math.inf))
        if isinstance(x, _Pending):
            return self.set(node, self.emit_pending(x, q, node))
        self.unsupported(node, f"input {node.input[0]!r} is already quantized")

    def visit_dequantize(self, node):
        x = self.get(node, 0)
        ndim = len(self.shape_of(x))
        axis, _ = self.qdq_attrs(node, ndim)
        if isinstance(x, _Const):
            dtype = x.value.dtype
        elif isinstance(x, _Int):
            dtype = self.graph.tensors[x.name].dtype
        else:
            self.unsupported(node, f"input {node.input[0]!r} is not an int8/uint8 tensor")
        if dtype == np.int32:
            # A quantized bias: keep its integers, scale must be x_scale * w_scale.
            scale = self.const(node, 1, "scale").astype(np.float32)
            return self.set(node, _Dq(x, Quant(scale.ravel(), np.zeros(scale.size, np.int64), np.int32,
                                             None if scale.size == 1 else 0)))
        if dtype not in QUANT_DTYPES:
            self.bad_attr(node, "input dtype", str(dtype), "accel supports int8 and uint8")
        q = self.quant_params(node, 1, 2, axis, ndim, dtype)
        if q.dtype != dtype:
            raise UnsupportedAttributeError(f"{self.where(node)}: zero point dtype {q.dtype} differs from input dtype {dtype}")
        self.set(node, _Dq(x, q))

    # -- QDQ compute ops ----------------------------------------------------------------
    def visit_compute(self, node):
        op = node.op_type
        args = [self.get(node, i) for i in range(len(node.input))]
        at = _attrs(node)
        for i, a in enumerate(args):
            if a is None:
                continue
            if isinstance(a, _Const) and op in ("Add", "Concat", "Gemm", "Conv", "MatMul") and a.value.dtype == np.float32 \
                    and not (op == "Gemm" and i == 2) and not (op == "Conv" and i == 2):
                self.unsupported(node, f"input {node.input[i]!r} is a float constant; accel needs it quantized "
                                 "(QuantizeLinear/DequantizeLinear around it)")
            if not isinstance(a, (_Dq, _Const)):
                self.unsupported(node, f"input {node.input[i]!r} is not dequantized from int8/uint8; accel runs "
                                 "integer ops only (QDQ groups DequantizeLinear -> op -> QuantizeLinear)")
        shape = self.float_shape(node, args, at)
        self.set(node, _Pending(node, op, args, shape, attrs=at))

    def visit_activation(self, node):
        x = self.get(node, 0)
        if node.op_type == "Relu":
            lo, hi = 0.0, math.inf
        else:
            at = _attrs(node)
            lo, hi = at.get("min", -math.inf), at.get("max", math.inf)
            if len(node.input) > 1 and node.input[1]:
                lo = float(self.const(node, 1, "min"))
            if len(node.input) > 2 and node.input[2]:
                hi = float(self.const(node, 2, "max"))
        if isinstance(x, _Pending):
            x.lo, x.hi = max(x.lo, lo), min(x.hi, hi)
            return self.set(node, x)
        if isinstance(x, _Dq):
            return self.set(node, _Pending(node, "Identity", [x], self.shape_of(x), lo, hi))
        if isinstance(x, _Int):
            # An integer Relu/Clip (opset 14+) clamps the raw integers.
            tensor = self.graph.tensors[x.name]
            tmin, tmax = dtype_range(tensor.dtype)
            lo_i = tmin if math.isinf(lo) else max(tmin, int(math.ceil(lo)))
            hi_i = tmax if math.isinf(hi) else min(tmax, int(math.floor(hi)))
            out = self.fresh(node.output[0])
            self.graph.add_tensor(out, tensor.shape, tensor.dtype, tensor.quant)
            self.graph.add_node("clamp", node.name or out, [x.name], [out], lo=lo_i, hi=hi_i)
            return self.set(node, _Int(out))
        self.unsupported(node, f"input {node.input[0]!r} is a float tensor")

    def float_shape(self, node, args, at) -> tuple:
        op = node.op_type
        shapes = [self.shape_of(a) if a is not None else None for a in args]
        if op == "Conv":
            x, w = shapes[0], shapes[1]
            geo = self.conv_geometry(node, at, x, w[2:])
            return (x[0], w[0]) + geo["out"]
        if op == "MatMul":
            return tuple(np.broadcast_shapes(shapes[0][:-2], shapes[1][:-2])) + (shapes[0][-2], shapes[1][-1]) \
                if len(shapes[1]) > 1 else shapes[0][:-1]
        if op == "Gemm":
            if at.get("transA", 0):
                self.bad_attr(node, "transA", 1, "accel supports transA=0")
            n = shapes[1][0] if at.get("transB", 0) else shapes[1][1]
            return (shapes[0][0], n)
        if op == "Add":
            return tuple(np.broadcast_shapes(shapes[0], shapes[1]))
        if op in ("AveragePool",):
            geo = self.pool_geometry(node, at, shapes[0])
            return shapes[0][:2] + geo["out"]
        if op == "GlobalAveragePool":
            return shapes[0][:2] + (1,) * (len(shapes[0]) - 2)
        if op == "Concat":
            axis = at["axis"] % len(shapes[0])
            out = list(shapes[0])
            out[axis] = sum(s[axis] for s in shapes)
            return tuple(out)
        raise AccelError(op)

    # -- geometry -------------------------------------------------------------------------
    def explicit_pads(self, node, at, in_hw, kernel, strides, dilations):
        auto_pad = _decode(at.get("auto_pad", "NOTSET"))
        n = len(in_hw)
        if auto_pad in ("NOTSET", "", None):
            pads = list(at.get("pads", [0] * 2 * n))
        elif auto_pad == "VALID":
            pads = [0] * 2 * n
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0] * 2 * n
            for i in range(n):
                out = -(-in_hw[i] // strides[i])
                total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_hw[i])
                small, big = total // 2, total - total // 2
                pads[i], pads[i + n] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        else:
            self.bad_attr(node, "auto_pad", auto_pad, "use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
        return pads

    def conv_geometry(self, node, at, x_shape, kernel):
        if len(x_shape) != 4:
            raise UnsupportedAttributeError(f"{self.where(node)}: input rank {len(x_shape)} is not supported; accel runs 2-D convolutions (NCHW)")
        kernel = tuple(int(k) for k in at.get("kernel_shape", kernel))
        strides = tuple(at.get("strides", [1, 1]))
        dilations = tuple(at.get("dilations", [1, 1]))
        pads = self.explicit_pads(node, at, x_shape[2:], kernel, strides, dilations)
        out = tuple(
            (x_shape[2 + i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1
            for i in range(2))
        if min(out) < 1:
            raise ShapeError(f"{self.where(node)}: output shape {out} is empty for input {x_shape}")
        return dict(kernel=kernel, strides=strides, dilations=dilations, pads=tuple(pads), out=out)

    def pool_geometry(self, node, at, x_shape):
        if len(x_shape) != 4:
            raise UnsupportedAttributeError(f"{self.where(node)}: input rank {len(x_shape)} is not supported; accel pools 2-D (NCHW)")
        kernel = tuple(at["kernel_shape"])
        strides = tuple(at.get("strides", [1, 1]))
        dilations = tuple(at.get("dilations", [1, 1]))
        pads = self.explicit_pads(node, at, x_shape[2:], kernel, strides, dilations)
        ceil_mode = int(at.get("ceil_mode", 0))
        out = []
        for i in range(2):
            span = x_shape[2 + i] + pads[i] + pads[i + 2] - dilations[i] * (kernel[i] - 1) - 1
            o = (-(-span // strides[i]) if ceil_mode else span // strides[i]) + 1
            if ceil_mode and (o - 1) * strides[i] >= x_shape[2 + i] + pads[i]:
                o -= 1
            out.append(o)
        return dict(kernel=kernel, strides=strides, dilations=dilations, pads=tuple(pads),
                    ceil_mode=ceil_mode, out=tuple(out))

    # -- emitting canonical ops ------------------------------------------------------------
    def new_int(self, base, shape, quant: Quant | None, dtype=None) -> str:
        name = self.fresh(base)
        self.graph.add_tensor(name, shape, dtype if dtype is not None else quant.dtype, quant)
        return name

    def clamp_for(self, lo, hi, q: Quant) -> tuple[int | None, int | None]:
        """Return the integer clamp a float clamp [lo, hi] becomes after quantization with ``q``."""
        qlo = None if math.isinf(lo) else int(numerics.quantize_linear(np.float32([lo]), q.scale, q.zero_point, q.dtype)[0])
        qhi = None if math.isinf(hi) else int(numerics.quantize_linear(np.float32([hi]), q.scale, q.zero_point, q.dtype)[0])
        return qlo, qhi

    def emit_requantize(self, node, x: _Dq, q: Quant, lo, hi) -> _Int:
        if q.per_channel or x.quant.per_channel:
            self.unsupported(node, "per-channel requantization of an activation is not supported")
        src = self.materialize(x.src)
        shape = self.graph.tensors[src].shape
        cur = src
        if not x.quant.same_as(q):
            cur = self.new_int(node.output[0], shape, q)
            self.graph.add_node("requantize", node.name or cur, [src], [cur], x_quant=x.quant, y_quant=q)
        qlo, qhi = self.clamp_for(lo, hi, q)
        if qlo is not None or qhi is not None:
            tmin, tmax = dtype_range(q.dtype)
            out = self.new_int(node.output[0], shape, q)
            self.graph.add_node("clamp", node.name or out, [cur], [out],
                                lo=tmin if qlo is None else qlo, hi=tmax if qhi is None else qhi)
            cur = out
        return _Int(cur)

    def emit_pending(self, p: _Pending, q: Quant, qnode) -> _Int:
        if q.per_channel:
            self.unsupported(qnode, "per-channel quantization of an activation is not supported")
        if p.kind == "Identity":
            return self.emit_requantize(p.node, p.inputs[0], q, p.lo, p.hi)
        node, at = p.node, p.attrs
        name = node.name or node.output[0]
        lo, hi = self.clamp_for(p.lo, p.hi, q)
        out_name = qnode.output[0]
        if p.kind in ("Conv", "MatMul", "Gemm"):
            x, w = p.inputs[0], p.inputs[1]
            bias = p.inputs[2] if len(p.inputs) > 2 else None
            if not isinstance(x, _Dq) or not isinstance(w, _Dq):
                self.unsupported(node, "both the input and the weight must come from DequantizeLinear")
            if x.quant.per_channel:
                self.unsupported(node, "per-channel quantized activations are not supported")
            w_value, w_quant = w.src, w.quant
            if p.kind == "Gemm":
                if at.get("alpha", 1.0) != 1.0 or (bias is not None and at.get("beta", 1.0) != 1.0):
                    self.bad_attr(node, "alpha/beta", (at.get("alpha", 1.0), at.get("beta", 1.0)), "accel supports alpha=beta=1")
                if at.get("transB", 0):
                    if not isinstance(w_value, _Const):
                        self.unsupported(node, "transB=1 needs a constant weight")
                    w_value = _Const(w_value.value.T.copy(), w_value.quant)
                    if w_quant.per_channel:
                        w_quant = Quant(w_quant.scale, w_quant.zero_point, w_quant.dtype, 1)
            w_axis_expected = 0 if p.kind == "Conv" else len(self.shape_of(w_value)) - 1
            if w_quant.per_channel and w_quant.axis != w_axis_expected:
                self.unsupported(node, f"weight quantized per-channel along axis {w_quant.axis}; accel needs the output-channel axis {w_axis_expected}")
            bias_value = None
            if isinstance(bias, _Const) and bias.value.dtype == np.float32 and bias.value.ndim == 1:
                # A float bias (PyTorch QDQ exports): quantize it as onnxruntime's WeightBiasQuantization
                # does, Cast(Round(bias / (x_scale * w_scale))), all in float32.
                scale = (x.quant.scale[0] * w_quant.scale).astype(np.float32)
                bias_value = np.rint((bias.value / scale).astype(np.float32)).astype(np.int32)
            elif bias is not None:
                if isinstance(bias, _Const) or not isinstance(bias.src, _Const) or bias.src.value.dtype != np.int32:
                    self.unsupported(node, "bias must be a 1-D float constant or an int32 constant through "
                                     "DequantizeLinear")
                bias_value = bias.src.value
            return self.emit_linear(p.kind, node, out_name, x.src, x.quant, w_value, w_quant, bias_value, q,
                                    at, lo, hi, p.shape)
        if p.kind == "Add":
            a, b = p.inputs
            for v in (a, b):
                if not isinstance(v, _Dq) or v.quant.per_channel:
                    self.unsupported(node, "both inputs must be per-tensor DequantizeLinear outputs")
            return self.emit_add(name, out_name, a.src, a.quant, b.src, b.quant, q, lo, hi, p.shape)
        if p.kind == "AveragePool":
            x = p.inputs[0]
            return self.emit_avgpool(node, name, out_name, x.src, x.quant, q, at, lo, hi, p.shape)
        if p.kind == "GlobalAveragePool":
            x = p.inputs[0]
            return self.emit_global_avgpool(name, out_name, x.src, x.quant, q, lo, hi, p.shape)
        if p.kind == "Concat":
            for v in p.inputs:
                if not isinstance(v, _Dq) or v.quant.per_channel:
                    self.unsupported(node, "every input must be a per-tensor DequantizeLinear output")
            return self.emit_concat(name, out_name, [v.src for v in p.inputs], [v.quant for v in p.inputs], q,
                                    at["axis"], lo, hi, p.shape)
        raise AccelError(p.kind)

    def with_clamp(self, cur: str, lo, hi, quant: Quant, name: str) -> str:
        if lo is None and hi is None:
            return cur
        tmin, tmax = dtype_range(quant.dtype)
        out = self.new_int(cur, self.graph.tensors[cur].shape, quant)
        self.graph.add_node("clamp", name, [cur], [out], lo=tmin if lo is None else lo, hi=tmax if hi is None else hi)
        return out

    def emit_linear(self, kind, node, out_name, x, x_quant, w, w_quant, bias, y_quant, at, lo, hi, shape,
                    multiplier=None) -> _Int:
        name = node.name or node.output[0]
        x_name = self.materialize(x)
        w_name = self.materialize(w)
        inputs = [x_name, w_name]
        if bias is not None:
            bias = np.asarray(bias).astype(np.int32)
            inputs.append(self.materialize(_Const(bias)))
        requant = None
        if y_quant is not None:
            if multiplier is None:
                multiplier = numerics.requant_multiplier(x_quant.scale, w_quant.scale, y_quant.scale)
            requant = Requant(multiplier, int(y_quant.zero_point[0]), y_quant.dtype, lo, hi)
        out = self.new_int(out_name, shape, y_quant, None if y_quant is not None else np.int32)
        attrs = dict(x_zp=int(x_quant.zero_point[0]) if x_quant is not None else 0,
                     w_zp=w_quant.zero_point.copy() if w_quant is not None else np.zeros(1, np.int64),
                     requant=requant, x_quant=x_quant, w_quant=w_quant)
        if kind == "Conv":
            geo = self.conv_geometry(node, at, self.graph.tensors[x_name].shape, self.graph.tensors[w_name].shape[2:])
            group = int(at.get("group", 1))
            attrs.update(strides=geo["strides"], pads=geo["pads"], dilations=geo["dilations"], group=group)
            self.graph.add_node("conv", name, inputs, [out], **attrs)
        else:
            self.graph.add_node("matmul", name, inputs, [out], **attrs)
        return _Int(out)

    def emit_add(self, name, out_name, a, a_quant, b, b_quant, y_quant, lo, hi, shape) -> _Int:
        a_name, b_name = self.materialize(a), self.materialize(b)
        out = self.new_int(out_name, shape, y_quant)
        requant = Requant(np.float32([1.0]), int(y_quant.zero_point[0]), y_quant.dtype, lo, hi)
        self.graph.add_node("add", name, [a_name, b_name], [out], a_quant=a_quant, b_quant=b_quant,
                            y_quant=y_quant, requant=requant)
        return _Int(out)

    def emit_avgpool(self, node, name, out_name, x, x_quant, y_quant, at, lo, hi, shape) -> _Int:
        x_name = self.materialize(x)
        geo = self.pool_geometry(node, at, self.graph.tensors[x_name].shape)
        if geo["dilations"] != (1, 1):
            self.bad_attr(node, "dilations", geo["dilations"], "accel supports dilation 1 for average pooling")
        out = self.new_int(out_name, shape, y_quant)
        self.graph.add_node("avgpool", name, [x_name], [out], kernel=geo["kernel"], strides=geo["strides"],
                            pads=geo["pads"], ceil_mode=geo["ceil_mode"],
                            count_include_pad=int(at.get("count_include_pad", 0)), x_quant=x_quant, y_quant=y_quant)
        return _Int(self.with_clamp(out, lo, hi, y_quant, name))

    def emit_global_avgpool(self, name, out_name, x, x_quant, y_quant, lo, hi, shape) -> _Int:
        x_name = self.materialize(x)
        out = self.new_int(out_name, shape, y_quant)
        self.graph.add_node("global_avgpool", name, [x_name], [out], x_quant=x_quant, y_quant=y_quant)
        return _Int(self.with_clamp(out, lo, hi, y_quant, name))

    def emit_concat(self, name, out_name, xs, quants, y_quant, axis, lo, hi, shape) -> _Int:
        names = [self.materialize(x) for x in xs]
        axis = axis % len(shape)
        out = self.new_int(out_name, shape, y_quant)
        self.graph.add_node("concat", name, names, [out], axis=axis, in_quants=list(quants), y_quant=y_quant)
        return _Int(self.with_clamp(out, lo, hi, y_quant, name))

    # -- layout ops (commute with per-tensor dequantization) --------------------------------
    def visit_layout(self, node):
        x = self.get(node, 0)
        op = node.op_type
        at = _attrs(node)
        if isinstance(x, _Dq):
            quant = x.quant
            if quant.per_channel and op == "Transpose" and isinstance(x.src, _Const):
                # A per-channel constant (a weight) keeps its channels along the moved axis.
                perm = list(at.get("perm", list(range(x.src.value.ndim))[::-1]))
                quant = Quant(quant.scale, quant.zero_point, quant.dtype, perm.index(quant.axis))
            elif quant.per_channel and op not in ("Identity", "Dropout"):
                self.unsupported(node, "layout ops on per-channel quantized tensors are not supported")
            src = self.layout_int(node, x.src, at)
            return self.set(node, _Dq(src, quant))
        if isinstance(x, _Int):
            return self.set(node, self.layout_int(node, x, at))
        self.unsupported(node, f"input {node.input[0]!r} is a float tensor; accel runs {op} on quantized tensors")

    def layout_int(self, node, x, at):
        op = node.op_type
        if op in ("Identity", "Dropout"):
            return x
        shape = self.shape_of(x)
        if op == "MaxPool":
            geo = self.pool_geometry(node, at, shape)
            if int(at.get("storage_order", 0)):
                self.bad_attr(node, "storage_order", 1, "accel supports storage_order=0")
            if len(node.output) > 1 and node.output[1]:
                self.unsupported(node, "the Indices output is not supported")
            if isinstance(x, _Const):
                x = _Int(self.materialize(x))
            tensor = self.graph.tensors[x.name]
            out = self.new_int(node.output[0], shape[:2] + geo["out"], tensor.quant, tensor.dtype)
            self.graph.add_node("maxpool", node.name or out, [x.name], [out], kernel=geo["kernel"],
                                strides=geo["strides"], pads=geo["pads"], dilations=geo["dilations"],
                                ceil_mode=geo["ceil_mode"])
            return _Int(out)
        if op == "Transpose":
            perm = tuple(at.get("perm", list(range(len(shape)))[::-1]))
            new_shape = tuple(shape[p] for p in perm)
            if isinstance(x, _Const):
                return _Const(x.value.transpose(perm), x.quant)
            tensor = self.graph.tensors[x.name]
            out = self.new_int(node.output[0], new_shape, tensor.quant, tensor.dtype)
            self.graph.add_node("transpose", node.name or out, [x.name], [out], perm=perm)
            return _Int(out)
        new_shape = self.reshape_target(node, at, shape)
        if isinstance(x, _Const):
            return _Const(x.value.reshape(new_shape), x.quant)
        tensor = self.graph.tensors[x.name]
        out = self.new_int(node.output[0], new_shape, tensor.quant, tensor.dtype)
        self.graph.add_node("reshape", node.name or out, [x.name], [out], shape=new_shape)
        return _Int(out)

    def reshape_target(self, node, at, shape) -> tuple:
        op = node.op_type
        size = int(np.prod(shape))
        if op == "Flatten":
            axis = at.get("axis", 1) % (len(shape) + 1) if shape else 0
            return (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        if op == "Reshape":
            target = [int(d) for d in self.const(node, 1, "shape")]
            if at.get("allowzero", 0) and 0 in target:
                self.bad_attr(node, "allowzero", 1, "accel supports allowzero=0")
            target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
            if target.count(-1) == 1:
                known = int(np.prod([d for d in target if d != -1]))
                target[target.index(-1)] = size // known if known else 0
            if int(np.prod(target)) != size:
                raise ShapeError(f"{self.where(node)}: cannot reshape {shape} to {target}")
            return tuple(target)
        axes = at.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = [int(a) for a in self.const(node, 1, "axes")]
        if op == "Squeeze":
            if axes is None:
                return tuple(d for d in shape if d != 1)
            axes = {a % len(shape) for a in axes}
            return tuple(d for i, d in enumerate(shape) if i not in axes)
        if op == "Unsqueeze":
            rank = len(shape) + len(axes)
            axes = sorted(a % rank for a in axes)
            out = list(shape)
            for a in axes:
                out.insert(a, 1)
            return tuple(out)
        raise AccelError(op)

    # -- QOperator ops ---------------------------------------------------------------------
    def int_input(self, node, i, what):
        v = self.get(node, i)
        if isinstance(v, (_Int, _Const)):
            return v
        self.unsupported(node, f"input {node.input[i]!r} ({what}) must be an int8/uint8 tensor")

    def op_quant(self, node, scale_i, zp_i, x_value=None, axis=None):
        dtype = None
        if x_value is not None:
            dtype = x_value.value.dtype if isinstance(x_value, _Const) else self.graph.tensors[x_value.name].dtype
        ndim = len(self.shape_of(x_value)) if x_value is not None else None
        q = self.quant_params(node, scale_i, zp_i, axis, ndim, dtype or np.uint8)
        if dtype is not None and q.dtype != dtype:
            raise UnsupportedAttributeError(
                f"{self.where(node)}: zero point dtype {q.dtype} differs from tensor dtype {dtype}")
        return q

    def visit_QLinearConv(self, node):
        at = _attrs(node)
        x = self.int_input(node, 0, "x")
        w = self.int_input(node, 3, "w")
        xq = self.op_quant(node, 1, 2, x)
        wq = self.op_quant(node, 4, 5, w, axis=0)
        zp7 = self.get(node, 7)
        yq = self.quant_params(node, 6, 7, default_dtype=zp7.value.dtype if isinstance(zp7, _Const) else np.uint8)
        bias = self.const(node, 8, "bias", required=False) if len(node.input) > 8 else None
        shape = self.float_shape_conv(node, x, w, at)
        self.set(node, self.emit_linear("Conv", node, node.output[0], x, xq, w, wq, bias, yq,
                                        at, None, None, shape))

    def float_shape_conv(self, node, x, w, at):
        xs, ws = self.shape_of(x), self.shape_of(w)
        geo = self.conv_geometry(node, at, xs, ws[2:])
        group = int(at.get("group", 1))
        if xs[1] != ws[1] * group:
            raise ShapeError(f"{self.where(node)}: input channels {xs[1]} != weight channels {ws[1]} x group {group}")
        return (xs[0], ws[0]) + geo["out"]

    def visit_ConvInteger(self, node):
        at = _attrs(node)
        x = self.int_input(node, 0, "x")
        w = self.int_input(node, 1, "w")
        xq = self.zp_only_quant(node, 2, x)
        wq = self.zp_only_quant(node, 3, w, axis=0)
        shape = self.float_shape_conv(node, x, w, at)
        self.set(node, self.emit_linear("Conv", node, node.output[0], x, xq, w, wq, None, None,
                                        at, None, None, shape))

    def zp_only_quant(self, node, zp_i, x, axis=None):
        dtype = x.value.dtype if isinstance(x, _Const) else self.graph.tensors[x.name].dtype
        zp = self.const(node, zp_i, "zero point", required=False) if zp_i < len(node.input) else None
        if zp is None:
            zp = np.zeros(1, dtype)
        zp = np.asarray(zp).ravel()
        return Quant(np.ones(zp.size, np.float32), zp, dtype, axis if zp.size > 1 else None)

    def matmul_shape(self, node, a, b):
        sa, sb = self.shape_of(a), self.shape_of(b)
        if sa[-1] != sb[-2 if len(sb) > 1 else 0]:
            raise ShapeError(f"{self.where(node)}: cannot multiply {sa} by {sb}")
        return tuple(np.broadcast_shapes(sa[:-2], sb[:-2])) + (sa[-2], sb[-1]) if len(sa) > 1 else (sb[-1],)

    def visit_QLinearMatMul(self, node):
        a = self.int_input(node, 0, "a")
        b = self.int_input(node, 3, "b")
        aq = self.op_quant(node, 1, 2, a)
        bq = self.op_quant(node, 4, 5, b, axis=-1)
        zp7 = self.get(node, 7)
        yq = self.quant_params(node, 6, 7, default_dtype=zp7.value.dtype if isinstance(zp7, _Const) else np.uint8)
        self.set(node, self.emit_linear("MatMul", node, node.output[0], a, aq, b, bq, None, yq,
                                        {}, None, None, self.matmul_shape(node, a, b)))

    def visit_MatMulInteger(self, node):
        a = self.int_input(node, 0, "A")
        b = self.int_input(node, 1, "B")
        aq = self.zp_only_quant(node, 2, a)
        bq = self.zp_only_quant(node, 3, b, axis=len(self.shape_of(b)) - 1)
        self.set(node, self.emit_linear("MatMul", node, node.output[0], a, aq, b, bq, None, None,
                                        {}, None, None, self.matmul_shape(node, a, b)))

    def visit_QGemm(self, node):
        at = _attrs(node)
        if at.get("transA", 0):
            self.bad_attr(node, "transA", 1, "accel supports transA=0")
        a = self.int_input(node, 0, "A")
        b = self.int_input(node, 3, "B")
        if len(node.input) < 8 or not node.input[7]:
            self.unsupported(node, "QGemm without y_scale (float output) is not supported")
        aq = self.op_quant(node, 1, 2, a)
        bq = self.op_quant(node, 4, 5, b, axis=0 if at.get("transB", 0) else 1)
        if at.get("transB", 0):
            if not isinstance(b, _Const):
                self.unsupported(node, "transB=1 needs a constant B")
            b = _Const(b.value.T.copy())
            if bq.per_channel:
                bq = Quant(bq.scale, bq.zero_point, bq.dtype, 1)
        zp8 = self.get(node, 8)
        yq = self.quant_params(node, 7, 8, default_dtype=zp8.value.dtype if isinstance(zp8, _Const) else aq.dtype)
        bias = self.const(node, 6, "C", required=False) if len(node.input) > 6 else None
        if bias is not None and at.get("beta", 1.0) != 1.0:
            self.bad_attr(node, "beta", at["beta"], "accel supports beta=1 with a bias")
        multiplier = numerics.qgemm_multiplier(aq.scale, bq.scale, yq.scale, at.get("alpha", 1.0))
        shape = (self.shape_of(a)[0], self.shape_of(b)[1])
        self.set(node, self.emit_linear("Gemm", node, node.output[0], a, aq, b, bq, bias, yq,
                                        at, None, None, shape, multiplier=multiplier))

    def visit_QLinearAdd(self, node):
        a = self.int_input(node, 0, "A")
        b = self.int_input(node, 3, "B")
        aq, bq = self.op_quant(node, 1, 2, a), self.op_quant(node, 4, 5, b)
        yq = self.op_quant(node, 6, 7, a)
        shape = tuple(np.broadcast_shapes(self.shape_of(a), self.shape_of(b)))
        self.set(node, self.emit_add(node.name or node.output[0], node.output[0], a, aq, b, bq, yq, None, None, shape))

    def visit_QLinearAveragePool(self, node):
        at = _attrs(node)
        if at.get("channels_last", 0):
            self.bad_attr(node, "channels_last", 1, "accel supports NCHW (channels_last=0)")
        x = self.int_input(node, 0, "X")
        xq = self.op_quant(node, 1, 2, x)
        yq = self.op_quant(node, 3, 4, x)
        geo = self.pool_geometry(node, at, self.shape_of(x))
        shape = self.shape_of(x)[:2] + geo["out"]
        self.set(node, self.emit_avgpool(node, node.name or node.output[0], node.output[0], x, xq, yq, at, None, None, shape))

    def visit_QLinearGlobalAveragePool(self, node):
        at = _attrs(node)
        if at.get("channels_last", 0):
            self.bad_attr(node, "channels_last", 1, "accel supports NCHW (channels_last=0)")
        x = self.int_input(node, 0, "X")
        xq, yq = self.op_quant(node, 1, 2, x), self.op_quant(node, 3, 4, x)
        xs = self.shape_of(x)
        shape = xs[:2] + (1,) * (len(xs) - 2)
        self.set(node, self.emit_global_avgpool(node.name or node.output[0], node.output[0], x, xq, yq, None, None, shape))

    def visit_QLinearConcat(self, node):
        at = _attrs(node)
        xs, quants = [], []
        for i in range(2, len(node.input), 3):
            x = self.int_input(node, i, f"input {i // 3}")
            xs.append(x)
            quants.append(self.op_quant(node, i + 1, i + 2, x))
        yq = self.op_quant(node, 0, 1, xs[0])
        shapes = [self.shape_of(x) for x in xs]
        axis = at["axis"] % len(shapes[0])
        shape = list(shapes[0])
        shape[axis] = sum(s[axis] for s in shapes)
        self.set(node, self.emit_concat(node.name or node.output[0], node.output[0], xs, quants, yq, axis,
                                        None, None, tuple(shape)))


class InputDtypeError(ShapeError):
    """Report a graph input of a dtype accel cannot take."""
