"""Compile convolutional networks: DAGs of conv, matmul, maxpool, global average pool and add.

The back end for graphs beyond a chain of fully-connected layers (``docs/isa.md``,
"Convolution, pooling and element-wise ops"). It is one list of named stages,
:data:`CONV_PIPELINE`, each rewriting or annotating a :class:`NetProgram`, with
:meth:`NetProgram.verify` after every stage:

============================  ===================================================================
stage                         does
============================  ===================================================================
``CanonicalizeGraph``         the graph passes (:mod:`accel.compiler.passes`: clamps folded into
                              their producer, identities and reshape chains removed), checked
                              against the golden model before and after
``LowerToNetLayers``          canonical DAG -> layers (``conv``/``depthwise``/
                              ``pointwise``/``grouped``, ``fc``, ``pool``, ``gap``, ``add``,
                              ``copy`` for each concat input) on
                              pixel-major activations; quantize/dequantize become the host
                              boundaries
``FoldWeights``               per column tile: ``W' = W - w_zp`` laid out in the im2col tap order
                              (block-diagonal for small groups), ``bias' = bias - x_zp*sum W'``,
                              range checks for ``weight_bits`` and ``acc_width``; the per-lane
                              constants of ``gap`` and ``add``
``PlanNetMemory``             ABUF regions by liveness over the DAG (first fit), WBUF/PBUF bases,
                              or :class:`DoesNotFitError`
``EmitNetProgram``            WBUF/PBUF images and IMEM: SETCONV, MATMUL (``conv = 1``), VECTOR,
                              a SYNC after every layer, HALT
``ModelNetCycles``            modelled cycles per layer (:mod:`accel.compiler.cycles`)
============================  ===================================================================

Layout: an activation of one inference with ``P`` pixels (``H*W``, or the rows of a 2-D
tensor) and ``C`` channels holds ``S = ceil(C / R)`` ABUF words per pixel, pixel-major:
pixel ``p`` chunk ``cc`` at ``base + p*S + cc``; batch item ``b`` at ``base + b*P*S``. A
Flatten of ``[1, C, H, W]`` is a view of the same words as one row of ``P*S*R`` bytes; the
Gemm reading it gets its weight rows permuted from C-major to this order (zero rows for the
lanes past ``C``). A model input ``[1, C, H, W]`` is transposed to pixel-major by the host
(``TensorPlacement.layout = "nchw"``; ``"nchw_t"``, column after column, when
``PackInputTaps`` runs the first conv over the transposed image).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data

from .. import isa, numerics
from ..config import HardwareConfig
from .cycles import CycleModel, drain_cycles, model_layer_cycles, weight_load_cycles
from .errors import CompileError, DoesNotFitError
from .gemm import Boundary
from .ir import Graph, IRError, Node, dtype_range
from ..artifact import StreamSegment
from .layout import chunks, pack_words, param_words, wrap_signed
from .lowering import _quant_dict
from .memplan import STREAMABLE, check_fits, first_fit

__all__ = ["NetProgram", "NetLayer", "Activation", "CONV_PIPELINE", "CONV_OPS", "needs_conv_backend",
           "CanonicalizeGraph", "LowerToNetLayers", "FoldWeights", "PlanNetMemory", "EmitNetProgram",
           "ModelNetCycles"]

CONV_OPS = ("conv", "maxpool", "global_avgpool", "add", "avgpool")
#: Float32 steps either side of a concat input's scale ratio searched for an exact multiplier.
_COPY_SEARCH_ULPS = 64
_SUPPORTED = ("quantize", "dequantize", "conv", "matmul", "maxpool", "global_avgpool", "add", "concat", "reshape")
_COUNT_MAX = (1 << 16) - 1
_GEOMETRY_BITS = {name: data.Layout.cast(isa.ConvGeometry)[name].width
                  for name in ("in_h", "in_w", "out_w", "kh", "kw", "stride_y", "stride_x", "dil_y", "dil_x",
                               "pad_t", "pad_l", "c_chunks")}
_INSN_BITS = {name: data.Layout.cast(isa.Insn)[name].width
              for name in ("w_addr", "a_addr", "a_stride", "count", "k_tiles", "p_addr", "y_addr", "y_stride",
                           "oy0", "ox0", "b_stride")}


def needs_conv_backend(graph: Graph) -> bool:
    """Return True when ``graph`` has ops only the conv back end compiles."""
    return any(node.op in CONV_OPS for node in graph.nodes) or any(
        len(graph.tensors[name].shape) == 4 for name in graph.inputs)


@dataclass(eq=False)
class Activation:
    """Describe an integer tensor as the accelerator holds it: ``pixels`` x ``channels``, pixel-major.

    ``storage`` names the ABUF region (views such as a Flatten share their source's);
    ``flat`` is True for a Flatten view, read as one row of ``pixels * S * R`` bytes.
    """

    storage: str
    pixels: int
    channels: int
    dtype: np.dtype
    height: int = 1
    width: int = 1
    quant: object = None
    flat: bool = False


@dataclass(eq=False)
class NetLayer:
    """Describe one layer: what it computes, where its operands live, and (as stages run) its tiles and program."""

    name: str
    kind: str               # conv | depthwise | pointwise | grouped | fc | pool | gap | add | copy
    op: str
    inputs: list[str]       # storage names read
    output: str             # storage name written
    node: Node | None = None
    geometry: dict = field(default_factory=dict)  # SETCONV fields (conv, pool, gap)
    x_pixels: int = 1       # pixels (or rows) per inference of the input
    x_chunks: int = 1       # ABUF words per input pixel (a_stride)
    y_pixels: int = 1
    y_chunks: int = 1       # ABUF words per output pixel (the output row stride)
    y_chunk0: int = 0       # copy: the first output chunk written (a concat input's channel offset / R)
    x_dtype: np.dtype = np.dtype(np.int8)
    y_dtype: np.dtype = np.dtype(np.int8)
    y_zp: int = 0
    y_lo: int = -128
    y_hi: int = 127
    # matmul-like layers, filled by FoldWeights
    tiles: list[np.ndarray] = field(default_factory=list)   # per column tile: W' [k_tiles*R, cols]
    tile_chunk: list[int] = field(default_factory=list)     # per column tile: first input chunk read (conv)
    bias: np.ndarray | None = None                          # int64 [n_tiles*cols] (gap: [S*R])
    multiplier: np.ndarray | None = None                    # float32, same shape
    add_words: list[int] | None = None                      # add: the recipe's PBUF words (isa.add_params)
    swap_operands: bool = False                             # add: the hardware multiplies the second input
    copy_input: int = 0                                     # copy: which concat input
    copy_channels: int = 0                                  # copy: its channels
    k_tiles: int = 0
    macs: int = 0           # useful multiply-accumulates per inference
    transposed: bool = False  # conv: geometry over the transposed image, output written un-transposed (PackInputTaps)
    # placement and program
    w_addr: int = 0         # WBUF word of column tile 0 (resident programs)
    p_addr: int = 0         # PBUF word of column tile 0, or of the layer's constants
    tile_w: list[int] = field(default_factory=list)  # per column tile: WBUF word of its weights
    tile_p: list[int] = field(default_factory=list)  # per column tile: PBUF word of its parameters
    segment: int = 0        # the stream segment holding the layer's first instructions
    insns: range | None = None  # indices into NetProgram.flat
    cycles: int | None = None

    @property
    def n_tiles(self) -> int:
        return len(self.tiles)

    @property
    def pbuf_words(self) -> int:
        if self.add_words is not None:
            return len(self.add_words)
        return 0 if self.bias is None else len(self.bias)


@dataclass(eq=False)
class NetProgram:
    """Hold a convolutional network being compiled for one config."""

    name: str
    graph: Graph
    config: HardwareConfig
    batch: int
    layers: list[NetLayer] = field(default_factory=list)
    storage: dict[str, int] = field(default_factory=dict)   # ABUF words per inference of each region
    abuf: dict[str, int] = field(default_factory=dict)      # ABUF base of each region
    input: Boundary | None = None
    output: Boundary | None = None
    input_view: tuple[int, int] = (1, 1)    # (rows, features) per inference as the host writes the input
    input_layout: str = "rows"              # TensorPlacement.layout of the input
    input_pack: int = 1                     # input pixels per ABUF word (PackInputTaps)
    output_view: tuple[int, int] = (1, 1)
    dynamic_batch: bool = False
    done: list[str] = field(default_factory=list)
    abuf_words: int | None = None
    wbuf: list[int] | None = None
    pbuf: list[int] | None = None
    imem: list[int] | None = None        # segment 0's program (the whole program when nothing streams)
    segments: "_StreamPlan | None" = None  # weight streaming: what stays on chip, and the segments
    stream: list[StreamSegment] = field(default_factory=list)  # segments 1, 2, ... (images at address 0)
    flat: list[int] | None = None        # the instructions in execution order, STREAMs included

    def verify(self) -> "NetProgram":
        """Check the invariants of the stages done so far; raise :class:`IRError` (a compiler bug) if one fails."""
        if "CanonicalizeGraph" in self.done:
            self.graph.verify()
        if "LowerToNetLayers" in self.done:
            written = {self.input.tensor}
            for layer in self.layers:
                for name in layer.inputs:
                    _check(name in written, f"layer {layer.name!r} reads {name!r} before it is written")
                _check(layer.output not in layer.inputs, f"layer {layer.name!r} writes its own input")
                written.add(layer.output)
            _check(self.output.tensor in written, "the output is never written")
        if "FoldWeights" in self.done:
            bits = self.config.weight_bits
            for layer in self.layers:
                for tile in layer.tiles:
                    _check(tile.shape == (layer.k_tiles * self.config.rows, self.config.cols),
                           f"layer {layer.name!r}: tile shape {tile.shape}")
                    _check(tile.min(initial=0) >= -(1 << (bits - 1)) and tile.max(initial=0) < 1 << (bits - 1),
                           f"layer {layer.name!r}: W' does not fit {bits} bits")
        if "PlanNetMemory" in self.done:
            for name, words in self.storage.items():
                _check(self.abuf[name] + words * self.batch <= self.config.abuf.depth, f"{name!r} outside ABUF")
        if "EmitNetProgram" in self.done:
            cfg = self.config
            _check(0 < len(self.imem) <= cfg.imem.depth, "the loaded program does not fit IMEM")
            _check(len(self.wbuf) <= cfg.wbuf.depth and len(self.pbuf) <= cfg.pbuf.depth,
                   "the loaded weights or parameters do not fit")
            for k, seg in enumerate(self.stream):
                _check(seg.imem_addr + len(seg.imem) <= cfg.imem.depth, f"segment {k}'s program does not fit IMEM")
                _check(seg.wbuf_addr + len(seg.wbuf) <= cfg.wbuf.depth, f"segment {k}'s weights do not fit WBUF")
                _check(seg.pbuf_addr + len(seg.pbuf) <= cfg.pbuf.depth, f"segment {k}'s parameters do not fit PBUF")
            ends = [i for i, w in enumerate(self.flat) if isa.decode(w).opcode in (isa.Opcode.STREAM, isa.Opcode.HALT)]
            _check(len(ends) == max(1, len(self.stream)) and ends[-1] == len(self.flat) - 1
                   and isa.decode(self.flat[-1]).opcode == isa.Opcode.HALT,
                   "the program is not its segments, each ending with STREAM or HALT")
            _check(self.layers[-1].insns.stop == len(self.flat), "layers do not cover the program")
        return self


def _check(condition: bool, message: str):
    if not condition:
        raise IRError(f"conv back end: {message}")


def _where(program, node: Node) -> str:
    return f"{program.name}: node {node.name!r} ({node.op})"


class NetStage:
    """Rewrite or annotate a :class:`NetProgram`; subclasses implement :meth:`apply`."""

    def apply(self, program: NetProgram, check_feeds: dict | None = None) -> NetProgram:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__


class CanonicalizeGraph(NetStage):
    """Run the graph passes (clamp folding, identity and reshape clean-up), checked against golden if feeds are given."""

    def apply(self, program, check_feeds=None):
        from .passes import canonicalize
        program.graph = canonicalize(program.graph.copy(), check_feeds=check_feeds)
        return program


class LowerToNetLayers(NetStage):
    """Turn the canonical DAG into layers on pixel-major activations; quantize/dequantize become host boundaries."""

    def apply(self, program, check_feeds=None):
        g = program.graph
        self._storage = {}
        for node in g.nodes:
            if node.op == "avgpool":
                raise CompileError(
                    f"{_where(program, node)}: an AveragePool whose window is not the whole image cannot run: "
                    f"onnxruntime's QLinearAveragePool rounds the window sum in float32, which the accelerator's "
                    f"integer datapath does not reproduce; use GlobalAveragePool (or pool the whole image)")
            if node.op not in _SUPPORTED:
                raise CompileError(f"{_where(program, node)} cannot run on the accelerator; the conv back end runs "
                                   f"{', '.join(_SUPPORTED)} (with clamps folded into their producer)")
        if len(g.inputs) != 1 or len(g.outputs) != 1:
            raise CompileError(f"{program.name}: the accelerator runs models with one input and one output; this "
                               f"one has inputs {g.inputs} and outputs {g.outputs}")
        in_name, out_name = g.inputs[0], g.outputs[0]
        t = g.tensors[in_name]
        in_quant, in_dtype = _quant_dict(t.quant, t.dtype), t.dtype.name
        acts: dict[str, Activation] = {}
        layers: list[NetLayer] = []
        first = None
        out_quant = out_dtype = None
        out_act = None
        for node in g.nodes:
            if node.op == "quantize":
                if node.inputs[0] != in_name:
                    raise CompileError(f"{_where(program, node)}: quantize is supported only at the model input")
                in_quant, in_dtype = _quant_dict(node.attrs["quant"], node.attrs["quant"].dtype), "float32"
                first = node.outputs[0]
                continue
            if node.op == "dequantize":
                if node.outputs[0] != out_name:
                    raise CompileError(f"{_where(program, node)}: dequantize is supported only at the model output")
                out_quant, out_dtype = _quant_dict(node.attrs["quant"], node.attrs["quant"].dtype), "float32"
                out_act = acts[node.inputs[0]]
                continue
            for name in node.inputs:
                if name not in acts and not g.is_constant(name):
                    if name != (first or in_name):
                        raise CompileError(f"{_where(program, node)} reads {name!r}, which the accelerator does "
                                           f"not compute")
                    acts[name] = self._input(program, name, layers)
            if node.op == "reshape":
                acts[node.outputs[0]] = self._reshape(program, node, acts[node.inputs[0]])
                continue
            if node.op == "concat":
                layers.extend(self._concat(program, node, acts))
                continue
            layers.append(self._layer(program, node, acts))
        if out_act is None:
            out_act = acts.get(out_name)
            t = g.tensors[out_name]
            out_quant, out_dtype = _quant_dict(t.quant, t.dtype), t.dtype.name
        if out_act is None or not layers:
            raise CompileError(f"{program.name}: the model computes nothing on the accelerator")
        if out_act.flat or (out_act.pixels > 1 and out_act.channels > 1):
            raise CompileError(f"{program.name}: the output {out_name!r} {list(g.tensors[out_name].shape)} is a "
                               f"feature map with several channels; the host reads outputs row-major, so end the "
                               f"model with a global pool/flatten + Gemm or a single-channel map")
        program.layers = layers
        program.input = Boundary(in_name, g.tensors[in_name].shape, in_dtype, in_quant, "input")
        program.output = Boundary(out_name, g.tensors[out_name].shape, out_dtype, out_quant, out_act.storage)
        program.output_view = (out_act.pixels, out_act.channels)
        # ABUF words per inference of every region
        program.storage = self._storage
        program.dynamic_batch = bool(g.dynamic_batch)
        return program

    # -- activations ------------------------------------------------------------------------
    def _input(self, program, name, layers) -> Activation:
        g, R = program.graph, program.config.rows
        t = g.tensors[name]
        if len(t.shape) == 4:
            _, c, h, w = t.shape
            program.input_view = (h * w, c)
            if c > 1 and h * w > 1:
                program.input_layout = "nchw"  # the host transposes the image to pixel-major
            act = Activation("input", h * w, c, t.dtype, h, w, t.quant)
        elif len(t.shape) == 2:
            program.input_view = (t.shape[0], t.shape[1])
            act = Activation("input", t.shape[0], t.shape[1], t.dtype, t.shape[0], 1, t.quant)
        else:
            raise CompileError(f"{program.name}: input {name!r} has shape {list(t.shape)}; the conv back end takes "
                               f"[1, C, H, W] or [rows, features] inputs")
        self._storage.setdefault("input", act.pixels * chunks(act.channels, R))
        return act

    def _reshape(self, program, node, src: Activation) -> Activation:
        shape = program.graph.tensors[node.outputs[0]].shape
        if src.flat or len(shape) != 2 or shape[0] != 1:
            if not src.flat and len(shape) == 4 and shape[2] * shape[3] == src.pixels and shape[1] == src.channels:
                # each channel's plane keeps its row-major order, so the pixel-major words stay; the image's
                # height and width are the new ones
                return Activation(src.storage, src.pixels, src.channels, src.dtype, shape[2], shape[3], src.quant)
            raise CompileError(f"{_where(program, node)} reshapes to {list(shape)}; the accelerator keeps "
                               f"activations pixel-major and runs Flatten to [1, features] before a Gemm only")
        if src.pixels == 1:
            return Activation(src.storage, 1, shape[1], src.dtype, 1, 1, src.quant)
        return Activation(src.storage, src.pixels, src.channels, src.dtype, src.height, src.width, src.quant, flat=True)

    def _new(self, program, node, pixels, channels, dtype, h=1, w=1) -> Activation:
        name = node.outputs[0]
        t = program.graph.tensors[name]
        self._storage[name] = pixels * chunks(channels, program.config.rows)
        return Activation(name, pixels, channels, np.dtype(dtype), h, w, t.quant)

    # -- layers -----------------------------------------------------------------------------
    def _layer(self, program, node, acts) -> NetLayer:
        g, R = program.graph, program.config.rows
        x = acts[node.inputs[0]]
        if x.flat and node.op != "matmul":
            raise CompileError(f"{_where(program, node)} reads a flattened feature map; only a Gemm/MatMul can")
        y_t = g.tensors[node.outputs[0]]
        common = dict(name=node.name, op=node.op, node=node, x_pixels=x.pixels, x_chunks=chunks(x.channels, R),
                      x_dtype=x.dtype, y_dtype=y_t.dtype)
        if node.op in ("conv", "matmul"):
            if node.attrs["requant"] is None:
                raise CompileError(f"{_where(program, node)} has an int32 output; the accelerator requantizes "
                                   f"every layer to int8/uint8")
            rq = node.attrs["requant"]
            common.update(y_zp=rq.zero_point, y_lo=rq.lo, y_hi=rq.hi)
            for name in node.inputs[1:]:
                if not g.is_constant(name):
                    raise CompileError(f"{_where(program, node)}: {name!r} must be a constant")
        if node.op == "conv":
            _, n, oh, ow = y_t.shape
            y = self._new(program, node, oh * ow, n, y_t.dtype, oh, ow)
            layer = NetLayer(kind=self._conv_kind(program, node), inputs=[x.storage], output=y.storage,
                             y_pixels=oh * ow, y_chunks=chunks(n, R), **common)
            layer.geometry = self._conv_geometry(program, node, x, ow)
        elif node.op == "matmul":
            if len(y_t.shape) != 2:
                raise CompileError(f"{_where(program, node)}: output {list(y_t.shape)}; the accelerator runs "
                                   f"[rows, K] @ [K, N] with a constant 2-D weight")
            rows, n = y_t.shape
            y = self._new(program, node, rows, n, y_t.dtype, rows, 1)
            layer = NetLayer(kind="fc", inputs=[x.storage], output=y.storage, y_pixels=rows, y_chunks=chunks(n, R),
                             **common)
            layer.geometry = dict(flat=x.flat, x_pixels=x.pixels, x_channels=x.channels)
            if x.flat:
                layer.x_pixels = 1
        elif node.op == "maxpool":
            a = node.attrs
            _, c, oh, ow = y_t.shape
            y = self._new(program, node, oh * ow, c, y_t.dtype, oh, ow)
            layer = NetLayer(kind="pool", inputs=[x.storage], output=y.storage, y_pixels=oh * ow,
                             y_chunks=chunks(c, R), **common)
            lo, hi = dtype_range(y_t.dtype)
            layer.y_lo, layer.y_hi = lo, hi
            layer.geometry = self._geometry(program, node, x, ow, a["kernel"], a["strides"], a["dilations"],
                                            a["pads"], chunks(c, R), 0)
        elif node.op == "global_avgpool":
            _, c = y_t.shape[:2]
            y = self._new(program, node, 1, c, y_t.dtype)
            yq = node.attrs["y_quant"]
            lo, hi = dtype_range(y_t.dtype)
            layer = NetLayer(kind="gap", inputs=[x.storage], output=y.storage, y_pixels=1, y_chunks=chunks(c, R),
                             y_zp=int(yq.zero_point[0]), y_lo=lo, y_hi=hi, **common)
            layer.geometry = dict(in_h=x.height, in_w=x.width, out_w=1, kh=1, kw=1, stride_y=1, stride_x=1,
                                  dil_y=1, dil_x=1, pad_t=0, pad_l=0, c_chunks=chunks(c, R), x_pad=0)
            self._check_geometry(program, node, layer.geometry)
        else:  # add
            b = acts[node.inputs[1]]
            sa, sb = g.tensors[node.inputs[0]].shape, g.tensors[node.inputs[1]].shape
            if sa != sb or b.flat or (b.pixels, b.channels) != (x.pixels, x.channels):
                raise CompileError(f"{_where(program, node)} adds shapes {list(sa)} and {list(sb)}; the accelerator "
                                   f"adds tensors of identical shape only (no broadcasting)")
            rq = node.attrs["requant"]
            y = self._new(program, node, x.pixels, x.channels, y_t.dtype, x.height, x.width)
            layer = NetLayer(kind="add", inputs=[x.storage, b.storage], output=y.storage, y_pixels=x.pixels,
                             y_chunks=chunks(x.channels, R), y_lo=rq.lo, y_hi=rq.hi, **common)
            if x.dtype != b.dtype or x.dtype != y_t.dtype:
                raise CompileError(f"{_where(program, node)}: inputs {x.dtype.name}/{b.dtype.name} and output "
                                   f"{y_t.dtype.name} must share one type")
        acts[node.outputs[0]] = y
        return layer

    def _concat(self, program, node, acts) -> list[NetLayer]:
        """Lower a channel concat to one ``copy`` layer per input: a 1x1 identity MATMUL into its channel slice."""
        g, R = program.graph, program.config.rows
        y_t = g.tensors[node.outputs[0]]
        xs = [acts[name] for name in node.inputs]
        axis = node.attrs["axis"] % len(y_t.shape)
        if axis != 1 or any(x.flat for x in xs) or len({x.pixels for x in xs}) != 1:
            raise CompileError(f"{_where(program, node)} concatenates along axis {node.attrs['axis']} of "
                               f"{list(y_t.shape)}; the accelerator concatenates channels (axis 1) of equal maps")
        for i, x in enumerate(xs[:-1]):
            if x.channels % R:
                raise CompileError(f"{_where(program, node)}: input {i} has {x.channels} channels; the accelerator "
                                   f"concatenates at multiples of {R} channels (ABUF words), except the last input")
        x0 = xs[0]
        y = self._new(program, node, x0.pixels, sum(x.channels for x in xs), y_t.dtype, x0.height, x0.width)
        yq = node.attrs["y_quant"]
        lo, hi = dtype_range(y_t.dtype)
        layers, offset = [], 0
        for i, x in enumerate(xs):
            layer = NetLayer(name=f"{node.name}/{i}", kind="copy", op="concat", node=node, inputs=[x.storage],
                             output=y.storage, x_pixels=x.pixels, x_chunks=chunks(x.channels, R), x_dtype=x.dtype,
                             y_dtype=y_t.dtype, y_pixels=y.pixels, y_chunks=chunks(y.channels, R),
                             y_chunk0=offset // R, y_zp=int(yq.zero_point[0]), y_lo=lo, y_hi=hi)
            layer.geometry = dict(in_h=x.height, in_w=x.width, out_w=x.width, kh=1, kw=1, stride_y=1, stride_x=1,
                                  dil_y=1, dil_x=1, pad_t=0, pad_l=0, c_chunks=1, x_pad=0)
            self._check_geometry(program, node, layer.geometry)
            layer.copy_channels, layer.copy_input = x.channels, i
            layers.append(layer)
            offset += x.channels
        acts[node.outputs[0]] = y
        return layers

    @staticmethod
    def _conv_kind(program, node) -> str:
        w = program.graph.constants[node.inputs[1]]
        group = node.attrs["group"]
        if group == 1:
            return "pointwise" if w.shape[2] * w.shape[3] == 1 else "conv"
        return "depthwise" if w.shape[1] == 1 else "grouped"

    def _conv_geometry(self, program, node, x: Activation, ow: int) -> dict:
        a, w = node.attrs, program.graph.constants[node.inputs[1]]
        if len(w.shape) != 4:
            raise CompileError(f"{_where(program, node)}: weight {list(w.shape)}; the accelerator runs 2-D convs")
        return self._geometry(program, node, x, ow, w.shape[2:], a["strides"], a["dilations"], a["pads"],
                              0, int(a["x_zp"]))

    def _geometry(self, program, node, x: Activation, ow, kernel, strides, dilations, pads, c_chunks, x_pad):
        if len(kernel) != 2 or len(pads) != 4:
            raise CompileError(f"{_where(program, node)}: only 2-D windows run on the accelerator")
        geometry = dict(in_h=x.height, in_w=x.width, out_w=ow, kh=int(kernel[0]), kw=int(kernel[1]),
                        stride_y=int(strides[0]), stride_x=int(strides[1]), dil_y=int(dilations[0]),
                        dil_x=int(dilations[1]), pad_t=int(pads[0]), pad_l=int(pads[1]), c_chunks=c_chunks,
                        x_pad=x_pad)
        self._check_geometry(program, node, geometry)
        return geometry

    @staticmethod
    def _check_geometry(program, node, geometry):
        names = dict(in_h="input height", in_w="input width", out_w="output width", kh="kernel height",
                     kw="kernel width", stride_y="stride (y)", stride_x="stride (x)", dil_y="dilation (y)",
                     dil_x="dilation (x)", pad_t="top padding", pad_l="left padding", c_chunks="channel chunks")
        for key, bits in _GEOMETRY_BITS.items():
            value = geometry[key]
            low = 0 if key in ("pad_t", "pad_l", "c_chunks") else 1
            if not low <= value < 1 << bits:
                raise CompileError(f"{_where(program, node)}: {names[key]} {value} is outside the SETCONV field "
                                   f"{key} ({low}..{(1 << bits) - 1})")


class FoldWeights(NetStage):
    """Build each matmul-like layer's column tiles ``W'`` (im2col tap order), ``bias'`` and multipliers; add/gap constants."""

    def apply(self, program, check_feeds=None):
        for layer in program.layers:
            getattr(self, f"_{layer.kind if layer.kind in ('fc', 'gap', 'add', 'pool', 'copy') else 'conv'}")(
                program, layer)
        return program

    @staticmethod
    def _pool(program, layer):
        a = layer.node.attrs
        layer.macs = 0
        layer.k_tiles = a["kernel"][0] * a["kernel"][1]

    def _conv(self, program, layer):
        g, cfg = program.graph, program.config
        R, C = cfg.rows, cfg.cols
        node, a = layer.node, layer.node.attrs
        w = _conv_weights(program, node)
        n, cg, kh, kw = w.shape
        group = a["group"]
        ng = n // group
        self._check_weights(program, layer, w.reshape(n, -1).T)
        s = layer.x_chunks
        # the input chunks each column tile reads: the union of its output channels' groups
        windows = []
        for nt in range(chunks(n, C)):
            outs = np.arange(nt * C, min(n, nt * C + C))
            g_lo, g_hi = outs[0] // ng, outs[-1] // ng
            windows.append(((g_lo * cg) // R, ((g_hi + 1) * cg - 1) // R))
        c_chunks = max(hi - lo + 1 for lo, hi in windows)
        layer.geometry["c_chunks"] = c_chunks
        LowerToNetLayers._check_geometry(program, node, layer.geometry)
        layer.k_tiles = kh * kw * c_chunks
        for nt, (lo, _) in enumerate(windows):
            first = min(lo, s - c_chunks)
            tile = np.zeros((kh, kw, c_chunks * R, C), np.int64)
            for col, o in enumerate(range(nt * C, min(n, nt * C + C))):
                lanes = (o // ng) * cg + np.arange(cg) - first * R
                tile[:, :, lanes, col] = w[o].transpose(1, 2, 0)
            layer.tiles.append(tile.reshape(-1, C))
            layer.tile_chunk.append(first)
        self._fold_bias(program, layer, w.reshape(n, -1).sum(axis=1), n)
        layer.macs = layer.y_pixels * n * cg * kh * kw

    def _fc(self, program, layer):
        g, cfg = program.graph, program.config
        R, C = cfg.rows, cfg.cols
        node, a = layer.node, layer.node.attrs
        w = g.constants[node.inputs[1]].astype(np.int64)
        if w.ndim != 2:
            raise CompileError(f"{_where(program, node)}: weight {list(w.shape)}; the accelerator multiplies by a "
                               f"constant 2-D weight [K, N]")
        k, n = w.shape
        w = w - np.broadcast_to(np.asarray(a["w_zp"], np.int64).ravel(), (n,))
        self._check_weights(program, layer, w)
        geo = layer.geometry
        if geo["flat"]:  # rows of the flattened [C, H, W] in pixel-major chunk order
            p, c = geo["x_pixels"], geo["x_channels"]
            if p * c != k:
                raise CompileError(f"{_where(program, node)}: input of {p * c} features, weight [{k}, {n}]")
            s = chunks(c, R)
            rows = np.zeros((p * s * R, n), np.int64)
            ch = np.arange(c)
            for pix in range(p):
                rows[pix * s * R + ch] = w[ch * p + pix]
            w_rows = rows
        else:
            if geo["x_channels"] != k:
                raise CompileError(f"{_where(program, node)}: input of {geo['x_channels']} features, weight "
                                   f"[{k}, {n}]")
            w_rows = np.zeros((chunks(k, R) * R, n), np.int64)
            w_rows[:k] = w
        layer.k_tiles = len(w_rows) // R
        layer.x_chunks = layer.k_tiles if geo["flat"] else chunks(k, R)
        padded = np.zeros((len(w_rows), chunks(n, C) * C), np.int64)
        padded[:, :n] = w_rows
        layer.tiles = [padded[:, nt * C:(nt + 1) * C] for nt in range(chunks(n, C))]
        self._fold_bias(program, layer, w.sum(axis=0), n)
        layer.macs = layer.y_pixels * k * n

    @staticmethod
    def _check_weights(program, layer, w):
        bits = program.config.weight_bits
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if w.min() < lo or w.max() > hi:
            raise CompileError(f"{program.name}: node {layer.name!r} ({layer.op}): weights minus the zero point span "
                               f"[{int(w.min())}, {int(w.max())}], beyond the {bits}-bit signed weights of config "
                               f"{program.config.name!r}; quantize the weights as int8 with zero point 0")
        x_lo, x_hi = dtype_range(layer.x_dtype)
        high = np.maximum(w * x_lo, w * x_hi).sum(axis=0)
        low = np.minimum(w * x_lo, w * x_hi).sum(axis=0)
        width = program.config.acc_width
        if high.max() >= 1 << (width - 1) or low.min() < -(1 << (width - 1)):
            raise CompileError(f"{program.name}: node {layer.name!r} ({layer.op}): accumulators can reach "
                               f"[{int(low.min()):,}, {int(high.max()):,}], beyond the {width}-bit accumulators")

    @staticmethod
    def _fold_bias(program, layer, w_sums, n):
        g, node, rq = program.graph, layer.node, layer.node.attrs["requant"]
        bias = np.zeros(n, np.int64)
        if len(node.inputs) > 2:
            bias = np.broadcast_to(g.constants[node.inputs[2]].astype(np.int64).ravel(), (n,)).copy()
        multiplier = np.broadcast_to(rq.multiplier, (n,)).astype(np.float32)
        bad = (multiplier < numerics.MULTIPLIER_MIN) | (multiplier >= numerics.MULTIPLIER_MAX)
        if bad.any():
            raise CompileError(f"{_where(program, node)}: requantization multiplier {multiplier[bad][0]!r} is "
                               f"outside [2**-40, 2**8), the hardware requantizer's range")
        width = layer.n_tiles * program.config.cols
        layer.bias = np.zeros(width, np.int64)
        layer.bias[:n] = wrap_signed(bias - int(node.attrs["x_zp"]) * w_sums, 32)
        layer.multiplier = np.ones(width, np.float32)
        layer.multiplier[:n] = multiplier

    @staticmethod
    def _copy(program, layer):
        """Identity weights for one concat input; the requantization must equal onnxruntime's for every byte."""
        cfg, node = program.config, layer.node
        R, C = cfg.rows, cfg.cols
        xq, yq = node.attrs["in_quants"][layer.copy_input], node.attrs["y_quant"]
        n = layer.copy_channels
        layer.k_tiles = 1
        for nt in range(chunks(n, C)):
            tile = np.zeros((R, C), np.int64)
            cols = np.arange(min(C, n - nt * C))
            tile[cols, cols] = 1
            layer.tiles.append(tile)
            layer.tile_chunk.append(nt)
        x_zp = int(xq.zero_point[0])
        lo, hi = dtype_range(layer.x_dtype)
        values = np.arange(lo, hi + 1).astype(layer.x_dtype)  # every input byte
        if xq.same_as(yq):
            theirs, candidates = values, [np.float32(1.0)]
        else:
            # onnxruntime dequantizes and quantizes in float; search the float32 multipliers next to
            # the scale ratio for one whose requantization equals it on every byte
            theirs = numerics.requantize_linear(values, xq.scale[0], xq.zero_point[0], yq.scale[0],
                                                yq.zero_point[0], layer.y_dtype)
            ratio = np.float32(np.float32(xq.scale[0]) / np.float32(yq.scale[0]))
            steps = np.arange(-_COPY_SEARCH_ULPS, _COPY_SEARCH_ULPS + 1)
            candidates = sorted((ratio.view(np.int32) + steps).astype(np.int32).view(np.float32),
                                key=lambda m: abs(float(m) - float(ratio)))
        nearest = None
        for multiplier in candidates:
            ours = numerics.requantize_integer(values.astype(np.int64) - x_zp,
                                               np.full(values.shape, multiplier, np.float32), layer.y_zp,
                                               layer.y_dtype, clamp=(layer.y_lo, layer.y_hi))
            if np.array_equal(ours, theirs):
                break
            nearest = ours if nearest is None else nearest
        else:
            ours, wrong = nearest, np.flatnonzero(nearest != theirs)[0]
            raise CompileError(f"{_where(program, node)}: input {layer.copy_input} (scale {xq.scale[0]:.6g}, "
                               f"zero point {x_zp}) requantized to the output's scale gives {int(ours[wrong])} for "
                               f"byte {int(values[wrong])} where onnxruntime gives {int(theirs[wrong])}; the "
                               f"accelerator concatenates inputs whose requantization it reproduces exactly "
                               f"(e.g. equal scales)")
        width = layer.n_tiles * C
        layer.bias = np.zeros(width, np.int64)
        layer.bias[:n] = -x_zp
        layer.multiplier = np.ones(width, np.float32)
        layer.multiplier[:n] = multiplier
        layer.macs = 0

    @staticmethod
    def _gap(program, layer):
        a, R = layer.node.attrs, program.config.rows
        xq, yq = a["x_quant"], a["y_quant"]
        count = layer.x_pixels
        multiplier = np.float32(xq.scale[0] / (yq.scale[0] * np.float32(count)))
        if not 2.0 ** -32 <= multiplier < 256.0:
            raise CompileError(f"{_where(program, layer.node)}: multiplier {multiplier!r} outside [2**-32, 256), "
                               f"which onnxruntime rejects")
        width = layer.y_chunks * R
        layer.bias = np.full(width, -int(xq.zero_point[0]) * count, np.int64)
        layer.multiplier = np.full(width, multiplier, np.float32)
        layer.macs = 0

    @staticmethod
    def _add(program, layer):
        g, node = program.graph, layer.node
        a = node.attrs
        aq, bq = a["a_quant"], a["b_quant"]
        yq = a.get("y_quant") or g.tensors[node.outputs[0]].quant
        shape = g.tensors[node.inputs[0]].shape
        # ORT's kernel swaps its operands only for a broadcast scalar span; the shapes here are equal.
        try:
            recipe = numerics.qlinear_add_recipe(
                aq.scale[0], aq.zero_point[0], bq.scale[0], bq.zero_point[0], yq.scale[0], yq.zero_point[0],
                layer.x_dtype, (layer.y_lo, layer.y_hi), qdq_s8_to_u8=bool(a.get("qdq_s8_to_u8", False)),
                swap=bool(numerics._input0_is_span_scalar(shape, shape)))
        except ValueError as e:
            raise CompileError(f"{_where(program, node)}: {e}") from None
        layer.swap_operands = recipe.x_is_b
        layer.add_words = isa.add_params(recipe)
        layer.macs = 0


class PackInputTaps(NetStage):
    """Pack the model input's pixels into ABUF words when its first conv has few channels, so a K tile holds several taps.

    An input with ``C < R`` channels fills ``C/R`` of a K tile (one tap of one pixel). When
    the model input feeds only a standard conv (one group, kernel wider than one), the host
    writes it packed instead (``pack = p``): ``2**p`` pixels of ``C' = R >> p`` bytes per
    word, with ``p`` the largest such that ``2**p`` divides ``R`` and ``C' >= C`` (``R = 12``:
    4 pixels of 3 bytes for RGB), and a K tile is ``2**p`` consecutive pixels of one kernel
    row. The layer then has ``kh * ceil(kw / 2**p)`` K tiles instead of ``kh * kw``; the
    hardware reads the word holding a tile's first pixel and the next one and rotates them
    (``docs/isa.md``, SETCONV ``pack``). The input takes fewer ABUF words, never more.

    A kernel taller than wide (DS-CNN's 10x4) packs better down its columns
    (``kw * ceil(kh / 2**p)`` K tiles): when the cycle model says the layer is faster that
    way (:meth:`_cost`; a short, wide output is not), the host writes the image transposed
    (``TensorPlacement.layout`` ``"nchw_t"``), the layer's geometry and weights are the
    transposed conv's, and each MATMUL covers part of one transposed output row, an
    output column of the model, written with ``y_stride = out_w`` pixels so the output
    lands in its usual pixel-major order (``layer.transposed``).
    """

    def apply(self, program, check_feeds=None):
        R = program.config.rows
        readers = [layer for layer in program.layers if "input" in layer.inputs]
        if len(readers) != 1 or readers[0].kind != "conv" or readers[0].inputs != ["input"]:
            return program
        layer = readers[0]
        geo, node = layer.geometry, layer.node
        w = _conv_weights(program, node)
        n, c, kh, kw = w.shape
        if (node.attrs["group"] != 1 or geo["c_chunks"] != 1
                or (layer.x_pixels, c) != tuple(program.input_view)):  # not through a reshape
            return program
        pack = max((p for p in isa.input_packs(R) if R >> p >= c), default=0)
        if not pack:
            return program
        group = 1 << pack                              # pixels per word
        options = []                                   # (K tiles, transposed); ties keep the image as it is
        if geo["dil_x"] == 1 and kw >= 2:
            options.append((kh * -(-kw // group), False))
        if geo["dil_y"] == 1 and kh >= 2 and self._transposable(program, c, geo):
            options.append((kw * -(-kh // group), True))
        options = [option for option in options if option[0] < kh * kw]
        if not options:
            return program
        tiles = chunks(n, program.config.cols)
        k_tiles, transposed = min(options, key=lambda option: self._cost(program, layer, geo, tiles, *option))
        if transposed:
            w, (kh, kw) = w.transpose(0, 1, 3, 2), (kw, kh)
            geo = _transposed_geometry(geo, layer.y_pixels // geo["out_w"])
            layer.transposed = True
            program.input_layout = "nchw_t"
        groups = -(-kw // group)
        per_pixel = R >> pack                          # C': bytes per pixel
        C = program.config.cols
        slot, channel = np.divmod(np.arange(R), per_pixel)
        layer.tiles = []
        for nt in range(chunks(n, C)):
            tile = np.zeros((kh, groups, R, C), np.int64)
            for col, o in enumerate(range(nt * C, min(n, nt * C + C))):
                for g in range(groups):
                    kx = g * group + slot
                    used = (channel < c) & (kx < kw)
                    tile[:, g, used, col] = w[o][channel[used], :, kx[used]].T
            layer.tiles.append(tile.reshape(-1, C))
        layer.tile_chunk = [0] * len(layer.tiles)
        layer.geometry = {**geo, "kw": groups, "pack": pack}
        layer.k_tiles = k_tiles
        layer.x_chunks = 1
        program.storage["input"] = -(-layer.x_pixels // group)
        program.input_pack = group
        return program

    @staticmethod
    def _transposable(program, c: int, geo: dict) -> bool:
        """Return whether the host can write the input transposed: an image ``[1, C, H, W]`` read by this conv only."""
        shape = tuple(program.input.shape)
        return (len(shape) == 4 and shape[1:] == (c, geo["in_h"], geo["in_w"])
                and program.input_layout in ("nchw", "rows"))

    @staticmethod
    def _cost(program, layer, geo: dict, tiles: int, k_tiles: int, transposed: bool) -> tuple[float, int]:
        """Return (modelled cycles, MATMULs) of one inference of the layer's ``tiles`` column tiles packed this way.

        Transposed, a MATMUL covers at most one column of the model's output, so a short,
        wide output makes many short MATMULs: the cycle model decides. Transposing is
        refused (an infinite cost) when its geometry does not fit the SETCONV fields, its
        output stride the ``y_stride`` field, or its extra MATMULs an eighth of IMEM.
        """
        cfg = program.config
        acc_tile = min(cfg.acc_rows, _COUNT_MAX)
        if not transposed:
            plan = _group_rows(layer.y_pixels, acc_tile, k_tiles, cfg, tiles, conv=True)
            return _modelled_cycles(cfg, plan, k_tiles, conv=True), sum(map(len, plan))
        out_h, out_w = layer.y_pixels // geo["out_w"], geo["out_w"]
        if out_w * layer.y_chunks >= 1 << 16:
            return float("inf"), 0
        try:
            LowerToNetLayers._check_geometry(program, layer.node, _transposed_geometry(geo, out_h))
        except CompileError:
            return float("inf"), 0
        plan = [_column_ranges(out_h, out_w, acc_tile)] * tiles
        normal = [_m_ranges(layer.y_pixels, acc_tile)] * tiles
        if (sum(map(len, plan)) - sum(map(len, normal))) * program.batch > cfg.imem.depth // 8:
            return float("inf"), 0
        return _modelled_cycles(cfg, plan, k_tiles, conv=True), sum(map(len, plan))


def _column_ranges(out_h: int, out_w: int, tile: int) -> list[tuple[int, int]]:
    """Return the MATMUL row ranges of a transposed conv: each covers part of one output column, at most ``tile`` rows.

    Row ``m`` counts pixels of the transposed output (``out_w`` rows of ``out_h``), so the
    model's output column ``x`` is rows ``x * out_h`` to ``x * out_h + out_h - 1``.
    """
    return [(x * out_h + m0, n) for x in range(out_w) for m0, n in _m_ranges(out_h, tile)]


def _transposed_geometry(geo: dict, out_h: int) -> dict:
    """Return a conv's SETCONV geometry over the transposed image (``x`` and ``y`` swapped)."""
    return {**geo, "in_h": geo["in_w"], "in_w": geo["in_h"], "out_w": out_h, "kh": geo["kw"], "kw": geo["kh"],
            "stride_y": geo["stride_x"], "stride_x": geo["stride_y"], "dil_y": geo["dil_x"], "dil_x": geo["dil_y"],
            "pad_t": geo["pad_l"], "pad_l": geo["pad_t"]}


def _conv_weights(program, node) -> np.ndarray:
    """Return a conv node's weights minus their zero points, ``W'`` as int64 ``[n, c/group, kh, kw]``."""
    w = program.graph.constants[node.inputs[1]].astype(np.int64)
    return w - np.asarray(node.attrs["w_zp"], np.int64).reshape(-1, 1, 1, 1)


class PlanNetMemory(NetStage):
    """Place activations in ABUF by liveness over the DAG (first fit, freed space reused); WBUF/PBUF layer after layer."""

    def apply(self, program, check_feeds=None):
        cfg, layers, batch = program.config, program.layers, program.batch
        end = len(layers)
        last_use = {"input": 0}
        first_def = {"input": 0}
        for i, layer in enumerate(layers):
            first_def.setdefault(layer.output, i)
            for name in layer.inputs:
                last_use[name] = i
        last_use[program.output.tensor] = end
        requests = [(name, program.storage[name] * batch, first_def[name], last_use.get(name, first_def[name]))
                    for name in sorted(first_def, key=lambda n: first_def[n])]
        program.abuf = first_fit(requests)
        program.abuf_words = max(program.abuf[n] + w for n, w, _, _ in requests)
        if program.abuf_words > cfg.abuf.depth:  # first fit fragmented ABUF: try ping-ponging bottom and top
            program.abuf = _two_ended_fit(requests, cfg.abuf.depth)
            program.abuf_words = max(program.abuf[n] + w for n, w, _, _ in requests)
        w_addr = p_addr = 0
        for layer in layers:
            layer.w_addr, layer.p_addr = w_addr, p_addr
            layer.tile_w = [w_addr + nt * layer.k_tiles * cfg.rows for nt in range(layer.n_tiles)]
            layer.tile_p = [p_addr + nt * cfg.cols for nt in range(layer.n_tiles)]
            w_addr += layer.n_tiles * layer.k_tiles * cfg.rows if layer.tiles else 0
            p_addr += layer.pbuf_words
        imem = sum(_instruction_count(program, layer) for layer in layers)
        m_tile = max((min(layer.y_pixels * (batch if layer.kind == "fc" else 1), cfg.acc_rows)
                      for layer in layers if layer.tiles), default=0)
        words = dict(imem=imem, abuf=program.abuf_words, wbuf=w_addr, pbuf=p_addr, accbuf=m_tile)
        over = check_fits(program.name, cfg, words, batch, streamable=STREAMABLE)
        program.segments = _plan_segments(program) if over else None
        return program


@dataclass(eq=False)
class _Chunk:
    """Hold a piece of one layer that streams as a unit: some of its column tiles, or the whole layer."""

    layer: NetLayer
    tiles: list[int]        # column tiles (empty for a layer without weights)
    wbuf: int               # words of WBUF
    pbuf: int               # words of PBUF
    imem: int               # instructions (its layer's SETCONV and SYNC included where they fall)


def _layer_chunks(program: NetProgram, layer: NetLayer) -> list[_Chunk]:
    """Split a layer into streamable chunks: one per column tile, or one for a layer without weights."""
    cfg = program.config
    if not layer.tiles:
        return [_Chunk(layer, [], 0, layer.pbuf_words, _instruction_count(program, layer))]
    per_tile = len(_layer_program(program, layer, tiles=[0], setconv=False, sync=False))
    out = [_Chunk(layer, [nt], layer.k_tiles * cfg.rows, cfg.cols, per_tile) for nt in range(layer.n_tiles)]
    out[0].imem += layer.kind != "fc"  # SETCONV
    out[-1].imem += 1                   # SYNC
    return out


@dataclass(eq=False)
class _StreamPlan:
    """Say what stays on chip and how the rest streams: segments of chunks, in program order.

    Layers in ``resident`` keep their weights and parameters at the bottom of WBUF/PBUF for
    the device's lifetime; the other chunks' weights and parameters are written, segment by
    segment, into the regions above (from ``wbuf_base``/``pbuf_base``). With
    ``code_streams`` each segment's program is written at IMEM 0 too; otherwise the whole
    program stays in IMEM and each ``STREAM`` resumes at the next instruction.
    """

    segments: list[list[_Chunk]]
    resident: dict[str, set[int]]  # "wbuf"/"pbuf": id() of the layers whose weights/parameters stay on chip
    code_streams: bool
    wbuf_base: int
    pbuf_base: int


#: What a STREAM pause costs the host link, counted as bytes (a round trip of framed commands).
_PAUSE_COST_BYTES = 256


def _plan_segments(program: NetProgram) -> _StreamPlan:
    """Choose what stays on chip and how the rest streams, trading bytes per run against pauses.

    A bigger streaming region means fewer, larger segments (fewer pauses) but fewer resident
    weights (more bytes per run); the plan minimizing ``bytes + pauses * _PAUSE_COST_BYTES``
    over a few region sizes wins.
    """
    cfg = program.config
    plans = []
    for fraction in (0, 8, 4, 2):  # region: the largest chunk, or 1/8, 1/4, 1/2 of each buffer
        plan = _plan_with_region(program, fraction)
        streamed = sum(cfg.word_bytes(buf) * getattr(c, buf) for seg in plan.segments for c in seg
                       for buf in ("wbuf", "pbuf") if id(c.layer) not in plan.resident[buf])
        streamed += cfg.word_bytes("imem") * sum(c.imem for seg in plan.segments for c in seg) * plan.code_streams
        plans.append((streamed + _PAUSE_COST_BYTES * len(plan.segments), fraction, plan))
    return min(plans, key=lambda p: p[:2])[2]


def _plan_with_region(program: NetProgram, fraction: int) -> _StreamPlan:
    """Keep the largest layers' weights and parameters resident, leaving a streaming region; pack the rest.

    The region is the largest chunk, or ``1/fraction`` of the buffer if that is bigger. A
    segment ends where the next chunk's streamed weights, parameters or (if the program does
    not fit IMEM) instructions would overflow a region.
    """
    cfg = program.config
    chunks_of = {id(layer): _layer_chunks(program, layer) for layer in program.layers}
    all_chunks = [c for layer in program.layers for c in chunks_of[id(layer)]]
    for chunk in all_chunks:
        for buf, n, limit in (("imem", chunk.imem, cfg.imem.depth - 1), ("wbuf", chunk.wbuf, cfg.wbuf.depth),
                              ("pbuf", chunk.pbuf, cfg.pbuf.depth)):
            if n > limit:
                what = f"column tile {chunk.tiles[0]}" if chunk.tiles else "its constants"
                raise DoesNotFitError(
                    f"{program.name}: layer {chunk.layer.name!r} cannot stream: {what} needs "
                    f"{n * cfg.word_bytes(buf):,} bytes of {buf}, {cfg.name} holds {limit * cfg.word_bytes(buf):,}; "
                    f"use a config with a bigger {buf}", {buf: (n * cfg.word_bytes(buf), limit * cfg.word_bytes(buf))})
    resident, kept = {}, {}
    for buf in ("wbuf", "pbuf"):  # weights and parameters: largest layers first, leaving room for one chunk
        depth = getattr(cfg, buf).depth
        room = depth - max(max(getattr(c, buf) for c in all_chunks), depth // fraction if fraction else 0)
        resident[buf], kept[buf] = set(), 0
        for layer in sorted(program.layers, key=lambda layer: -sum(getattr(c, buf) for c in chunks_of[id(layer)])):
            words = sum(getattr(c, buf) for c in chunks_of[id(layer)])
            if kept[buf] + words <= room:
                resident[buf].add(id(layer))
                kept[buf] += words
    instructions = sum(c.imem for c in all_chunks)
    for code_streams in (False, True):
        limits = dict(imem=cfg.imem.depth - 1 if code_streams else 1 << 30, wbuf=cfg.wbuf.depth - kept["wbuf"],
                      pbuf=cfg.pbuf.depth - kept["pbuf"])
        segments: list[list[_Chunk]] = [[]]
        used = dict.fromkeys(limits, 0)
        for chunk in all_chunks:
            need = dict(imem=chunk.imem if code_streams else 0,
                        wbuf=0 if id(chunk.layer) in resident["wbuf"] else chunk.wbuf,
                        pbuf=0 if id(chunk.layer) in resident["pbuf"] else chunk.pbuf)
            if any(used[buf] + n > limits[buf] for buf, n in need.items()):
                segments.append([])
                used = dict.fromkeys(limits, 0)
            segments[-1].append(chunk)
            for buf, n in need.items():
                used[buf] += n
        if code_streams or instructions + len(segments) <= cfg.imem.depth:  # a STREAM per segment, HALT
            return _StreamPlan(segments, resident, code_streams, kept["wbuf"], kept["pbuf"])
    raise AssertionError("unreachable")


def _two_ended_fit(requests, depth: int) -> dict[str, int]:
    """Return addresses like :func:`first_fit`, but alternate the preferred end of ABUF (bottom, top) per request.

    Chains then ping-pong between the two ends instead of fragmenting the bottom; a request
    that does not fit at its preferred end goes to the other.
    """
    placed: dict[str, tuple[int, int, int, int]] = {}
    for i, (name, words, first, last) in enumerate(requests):
        busy = sorted((a, a + size) for a, size, f, l in placed.values() if f <= last and first <= l)
        low = 0
        for start, end in busy:
            if low + words <= start:
                break
            low = max(low, end)
        high = depth - words
        for start, end in sorted(busy, key=lambda b: -b[1]):
            if end <= high:
                if all(e <= high or s >= high + words for s, e in busy):
                    break
            high = min(high, start - words)
        options = [a for a in ((high, low) if i % 2 else (low, high)) if 0 <= a and a + words <= depth]
        placed[name] = (options[0] if options else low, words, first, last)
    return {name: p[0] for name, p in placed.items()}


def _m_ranges(total: int, tile: int) -> list[tuple[int, int]]:
    return [(m0, min(tile, total - m0)) for m0 in range(0, total, tile)]


def _matmul_rows(total: int, tile: int, k_tiles: int, config: HardwareConfig, tapered: bool,
                 conv: bool = False) -> list[tuple[int, int]]:
    """Split ``total`` output rows into MATMULs of at most ``tile`` rows; ``tapered``: end in shrinking ones.

    Before a SYNC or STREAM the last MATMUL's drain is exposed, and with deferred
    requantization (``config.deferred_requant``) it reads its ``count`` rows from ACC
    ``requant_spacing`` cycles apart. When a MATMUL streams longer than the one before it
    drains (``k_tiles > requant_spacing``), MATMULs that shrink towards the end, each small
    enough to drain while the next one streams, hide all drains but the last, small one.
    The split is kept only where the cycle model says it is faster; the smallest MATMUL
    it tries is one weight tile's worth of rows.
    """
    plain = _m_ranges(total, tile)
    spacing, drain = config.requant_spacing, drain_cycles(config)
    if not (tapered and config.deferred_requant and k_tiles > spacing):
        return plain

    def split(last):
        tail, size, left = [], last, total
        while left > 0 and size < tile:
            tail.append(min(size, left))
            left -= tail[-1]
            grown = (k_tiles * size - drain) // spacing  # drains while a MATMUL of `size` rows streams
            if grown <= size:
                break
            size = grown
        counts = ([left % tile] if left % tile else []) + [tile] * (left // tile) + tail[::-1]
        starts = np.cumsum([0, *counts[:-1]])
        return [(int(m0), n) for m0, n in zip(starts, counts)]

    smallest = max(weight_load_cycles(config), -(-drain // (k_tiles - spacing)) + 1)  # grows from here on
    candidates = [split(last) for last in sorted({smallest, 2 * smallest, 4 * smallest}) if last < tile]
    return min([plain, *candidates], key=lambda ranges: _modelled_cycles(config, [ranges], k_tiles, conv))


def _even_ranges(total: int, parts: int) -> list[tuple[int, int]]:
    """Split ``total`` rows into ``parts`` MATMULs whose row counts differ by at most one."""
    size, extra = divmod(total, parts)
    counts = [size + 1] * extra + [size] * (parts - extra)
    return [(int(m0), n) for m0, n in zip(np.cumsum([0, *counts[:-1]]), counts)]


def _group_rows(total: int, tile: int, k_tiles: int, config: HardwareConfig, groups: int,
                conv: bool = False) -> list[list[tuple[int, int]]]:
    """Return the MATMUL row ranges of ``groups`` column groups of ``total`` rows each, in order.

    The candidates, whichever the cycle model says is fastest for the whole layer:

    * full tiles of ``tile`` rows and the rest (:func:`_m_ranges`), or MATMULs of even size
      (:func:`_even_ranges`), from the fewest that fit ``tile`` to three more. With deferred
      requantization a MATMUL drains while the next one streams, and the one after waits
      for that drain: a full tile followed by a short rest leaves the array idle while the
      full tile drains, two halves do not;
    * each of these in every group, or with the layer's last group ending in shrinking
      MATMULs (:func:`_matmul_rows`) instead; or the shrinking MATMULs in every group: a
      group's last full MATMUL drains while the next group's first one streams, and that
      one may be too short to hide it.
    """
    fewest = -(-total // tile)
    bases = [_m_ranges(total, tile)]
    for parts in range(fewest, fewest + 4):
        even = _even_ranges(total, parts)
        if parts <= total and even not in bases:
            bases.append(even)
    tapered = _matmul_rows(total, tile, k_tiles, config, True, conv)
    plans = [[bases[0]] * (groups - 1) + [tapered], [tapered] * groups]  # ties keep the first
    for base in bases[1:]:
        plans += [[base] * (groups - 1) + [tapered], [base] * groups]
    # full tiles in every group is the first plan when shrinking does not pay (_matmul_rows returns them)
    return min(plans, key=lambda plan: _modelled_cycles(config, plan, k_tiles, conv))


def _modelled_cycles(config: HardwareConfig, groups: list[list[tuple[int, int]]], k_tiles: int,
                     conv: bool = False) -> int:
    """Return the modelled cycles of the MATMULs (conv-mode ones with ``conv``) of ``groups`` (row ranges), then a SYNC."""
    model = CycleModel(config)
    for ranges in groups:
        for _, n in ranges:
            model.step(isa.Opcode.MATMUL, n, k_tiles, conv=conv)
    model.step(isa.Opcode.SYNC)
    return model.cycles


def _instruction_count(program, layer) -> int:
    return len(_layer_program(program, layer))


def _layer_program(program: NetProgram, layer: NetLayer, tiles=None, setconv: bool = True,
                   sync: bool = True) -> list[int]:
    """Return the instructions of one layer (addresses as planned so far), ending with a SYNC.

    ``tiles`` limits a layer with weights to some column tiles; ``setconv``/``sync`` drop
    the layer's SETCONV and final SYNC (for a layer split across stream segments).
    """
    cfg, batch = program.config, program.batch
    acc_tile = min(cfg.acc_rows, _COUNT_MAX)
    x = program.abuf.get(layer.inputs[0], 0)
    y = program.abuf.get(layer.output, 0)
    sx, sy = layer.x_chunks, layer.y_chunks
    xs, ys = dict(x_signed=int(layer.x_dtype == np.int8)), dict(y_signed=int(layer.y_dtype == np.int8))
    out = dict(y_zp=layer.y_zp, y_lo=layer.y_lo, y_hi=layer.y_hi)
    insns = []
    tiles = range(layer.n_tiles) if tiles is None else tiles
    if layer.kind == "fc":
        rows = batch * layer.y_pixels
        for nt, ranges in zip(tiles, _group_rows(rows, acc_tile, layer.k_tiles, cfg, len(tiles))):
            for m0, n in ranges:
                insns.append(isa.matmul(**xs, **ys, w_addr=layer.tile_w[nt],
                                        a_addr=x + m0 * sx, a_stride=sx, count=n, k_tiles=layer.k_tiles,
                                        p_addr=layer.tile_p[nt], y_addr=y + m0 * sy + nt, y_stride=sy, **out))
    elif layer.kind == "pool":
        geo = layer.geometry
        insns.append(isa.setconv(**geo, a_stride=sx))
        for b in range(batch):
            for m0, n in _m_ranges(layer.y_pixels, _COUNT_MAX):
                oy0, ox0 = divmod(m0, geo["out_w"])
                a_addr = isa.window_origin(geo, x + b * layer.x_pixels * sx, sx, oy0, ox0)
                insns.append(isa.vector(isa.Vop.MAX, **xs, **ys, a_addr=a_addr, a_stride=sx,
                                        count=n, oy0=oy0, ox0=ox0, y_addr=y + (b * layer.y_pixels + m0) * sy,
                                        y_stride=sy, **out))
    elif layer.kind == "gap":
        insns.append(isa.setconv(**layer.geometry, a_stride=sx))
        for b in range(batch):
            insns.append(isa.vector(isa.Vop.GSUM, **xs, **ys, a_addr=x + b * layer.x_pixels * sx, a_stride=sx,
                                    count=layer.x_pixels, p_addr=layer.p_addr, y_addr=y + b * sy, y_stride=sy,
                                    **out))
    elif layer.kind == "add":
        a, b_ = x, program.abuf.get(layer.inputs[1], 0)
        if layer.swap_operands:
            a, b_ = b_, a
        for m0, n in _m_ranges(batch * layer.y_pixels * sy, _COUNT_MAX):
            insns.append(isa.vector(isa.Vop.ADD, **xs, **ys, a_addr=a + m0, a_stride=1, w_addr=b_ + m0, b_stride=1,
                                    count=n, p_addr=layer.p_addr, y_addr=y + m0, y_stride=1, **out))
    else:  # conv-mode MATMULs, one per (batch item, column tile, row tile)
        geo = layer.geometry
        if setconv:
            insns.append(isa.setconv(**geo, a_stride=sx))
        if layer.transposed:  # one transposed output row (an output column) at a time, written down the column
            out_w = layer.y_pixels // geo["out_w"]   # the model's output width: the transposed output's height
            groups = iter([_column_ranges(geo["out_w"], out_w, acc_tile)] * (batch * len(tiles)))
        else:
            groups = iter(_group_rows(layer.y_pixels, acc_tile, layer.k_tiles, cfg, batch * len(tiles), conv=True))
        # packed taps (PackInputTaps): addresses count pixels, 2**pack of them per ABUF word
        base = x << geo.get("pack", 0)
        for b in range(batch):
            for nt in tiles:
                for m0, n in next(groups):
                    oy0, ox0 = divmod(m0, geo["out_w"])
                    a_addr = isa.window_origin(geo, base + b * layer.x_pixels * sx + layer.tile_chunk[nt], sx,
                                               oy0, ox0)
                    pixel, y_stride = m0, sy
                    if layer.transposed:  # transposed (oy0, ox0) is the model's (ox0, oy0)
                        pixel, y_stride = ox0 * out_w + oy0, out_w * sy
                    insns.append(isa.matmul(
                        conv=1, **xs, **ys, w_addr=layer.tile_w[nt], a_addr=a_addr, a_stride=sx, count=n,
                        k_tiles=layer.k_tiles, p_addr=layer.tile_p[nt], oy0=oy0, ox0=ox0,
                        y_addr=y + (b * layer.y_pixels + pixel) * sy + layer.y_chunk0 + nt, y_stride=y_stride,
                        **out))
    if sync:
        insns.append(isa.sync())
    return insns


class EmitNetProgram(NetStage):
    """Build the IMEM, WBUF and PBUF images: each layer's instructions, a SYNC after each, HALT at the end.

    A streamed program (``program.segments``, a :class:`_StreamPlan`) puts the resident
    layers' weights and parameters at the bottom of WBUF/PBUF and each segment's streamed
    ones in the regions above; each segment's code ends with a ``STREAM`` naming the next
    (resuming at IMEM 0 when the code streams, else at the next instruction) or ``HALT``.
    ``imem``/``wbuf``/``pbuf`` become what ``load`` writes, ``program.stream`` every
    segment's streamed images.
    """

    def apply(self, program, check_feeds=None):
        plan = program.segments
        if plan is None:
            everything = {id(layer) for layer in program.layers}
            plan = _StreamPlan([[_Chunk(layer, list(range(layer.n_tiles)), 0, 0, 0) for layer in program.layers]],
                               dict(wbuf=everything, pbuf=everything), False, 0, 0)
        resident_w, resident_p = [], []
        for layer in program.layers:  # resident weights and parameters: placed once
            self._place(program, layer, range(layer.n_tiles), resident_w if id(layer) in plan.resident["wbuf"] else None,
                        resident_p if id(layer) in plan.resident["pbuf"] else None, 0, 0)
        code, flat, starts, stream = [], [], {}, []
        for k, segment in enumerate(plan.segments):
            wbuf, pbuf, imem = [], [], []
            for chunk in segment:
                layer = chunk.layer
                starts.setdefault(id(layer), len(flat) + len(imem))
                self._place(program, layer, chunk.tiles, None if id(layer) in plan.resident["wbuf"] else wbuf,
                            None if id(layer) in plan.resident["pbuf"] else pbuf, plan.wbuf_base, plan.pbuf_base)
                first = not chunk.tiles or chunk.tiles[0] == 0
                last = not chunk.tiles or chunk.tiles[-1] == layer.n_tiles - 1
                if first:
                    layer.segment = k
                if layer.tiles:
                    layer.w_addr, layer.p_addr = layer.tile_w[chunk.tiles[0]], layer.tile_p[chunk.tiles[0]]
                insns = _layer_program(program, layer, tiles=chunk.tiles, setconv=first, sync=last)
                for word in insns:
                    self._check_fields(program, layer, word)
                imem += insns
            if imem and isa.decode(imem[-1]).opcode == isa.Opcode.SYNC:
                imem.pop()  # the STREAM or HALT drains like it
            if k + 1 < len(plan.segments):
                resume = 0 if plan.code_streams else len(flat) + len(imem) + 1
                imem.append(isa.stream(k + 1, resume))
            else:
                imem.append(isa.halt())
            streamed_code = tuple(imem) if plan.code_streams else ()
            stream.append(StreamSegment(streamed_code, tuple(wbuf), tuple(pbuf), 0, plan.wbuf_base, plan.pbuf_base))
            if k == 0 or not plan.code_streams:
                code += imem
            flat += imem
        first = stream[0]
        program.imem = code
        program.wbuf = resident_w + list(first.wbuf)
        program.pbuf = resident_p + list(first.pbuf)
        program.stream = stream if len(stream) > 1 else []
        program.flat = flat
        order = [starts[id(layer)] for layer in program.layers] + [len(flat)]
        for layer, begin, end in zip(program.layers, order, order[1:]):
            layer.insns = range(begin, end)
        return program

    @staticmethod
    def _place(program, layer, tiles, wbuf, pbuf, wbuf_base, pbuf_base):
        """Append the weights (to ``wbuf``) and parameters (to ``pbuf``) of ``tiles`` of ``layer``; set their addresses.

        ``None`` for an image skips it (those words are placed elsewhere).
        """
        cols, bits = program.config.cols, program.config.weight_bits
        for nt in tiles:
            if wbuf is not None:
                layer.tile_w[nt] = wbuf_base + len(wbuf)
                wbuf += pack_words(layer.tiles[nt], bits)
            if pbuf is not None:
                layer.tile_p[nt] = pbuf_base + len(pbuf)
                pbuf += param_words(layer.bias[nt * cols:(nt + 1) * cols],
                                    layer.multiplier[nt * cols:(nt + 1) * cols], cols)
        if not layer.tiles and pbuf is not None:
            layer.p_addr = pbuf_base + len(pbuf)
            if layer.add_words is not None:
                pbuf += layer.add_words
            elif layer.bias is not None:
                pbuf += param_words(layer.bias, layer.multiplier, len(layer.bias))

    @staticmethod
    def _check_fields(program, layer, word):
        view = isa.decode(word)
        if view.opcode == isa.Opcode.SETCONV:
            return
        for name, bits in _INSN_BITS.items():
            if int(getattr(view, name)) >= 1 << bits:
                raise CompileError(f"{program.name}: layer {layer.name!r} needs {name} beyond its {bits}-bit field")


class ModelNetCycles(NetStage):
    """Give every layer its modelled cycles (:mod:`accel.compiler.cycles`, calibrated on the RTL)."""

    def apply(self, program, check_feeds=None):
        model_layer_cycles(program.config, program.flat, program.layers)
        return program


CONV_PIPELINE: list[NetStage] = [
    CanonicalizeGraph(),
    LowerToNetLayers(),
    FoldWeights(),
    PackInputTaps(),
    PlanNetMemory(),
    EmitNetProgram(),
    ModelNetCycles(),
]
