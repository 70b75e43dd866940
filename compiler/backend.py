"""Compile a canonical model into an :class:`~accel.artifact.Artifact` for one hardware config.

The back end is one list of named stages, :data:`PIPELINE`, each small, each rewriting or
annotating a :class:`~accel.compiler.gemm.GemmProgram`; after every stage
:meth:`GemmProgram.verify` checks the invariants of the stages done so far:

==============================  =================================================================
stage                           does
==============================  =================================================================
``LowerToGemmChain``            canonical graph -> chain of GEMM layers; quantize/dequantize
                                become the host-side input/output boundaries
``SubtractWeightZeroPoint``     ``W' = W - w_zp``; ``W'`` must fit ``config.weight_bits``
``FoldInputZeroPointIntoBias``  ``bias' = bias - x_zp * sum_k W'[k, n]``
``CheckAccumulatorRange``       every partial sum fits ``config.acc_width``
``TileLayers``                  K, N and M tiles per layer
``PlanMemory``                  ABUF regions by liveness, WBUF/PBUF bases; or DoesNotFitError
``LayoutWeights``               WBUF and PBUF images
``EmitProgram``                 IMEM: MATMULs, SYNC between layers, HALT
``ModelCycles``                 modelled cycles per layer (:mod:`accel.compiler.cycles`)
==============================  =================================================================

``compile_model(model, config, batch, check_feeds=...)`` also runs the chain's reference
semantics (:meth:`GemmProgram.run`) after every stage against the golden model, which
bisects a wrong result to one stage; ``dump=`` receives the program after each stage.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from ..artifact import Artifact, TensorPlacement
from ..config import HardwareConfig, preset
from .convnet import CONV_PIPELINE, NetLayer, NetProgram, needs_conv_backend
from .cycles import model_layer_cycles
from .emit import EmitProgram, LayoutWeights
from .errors import CompileError, DoesNotFitError
from .gemm import Boundary, GemmLayer, GemmProgram, Stage
from .layout import chunks
from .lowering import CheckAccumulatorRange, FoldInputZeroPointIntoBias, LowerToGemmChain, SubtractWeightZeroPoint
from .memplan import STREAMABLE, PlanMemory
from .passes import PassMismatch
from .tiling import TileLayers

__all__ = ["compile_model", "compile_program", "PIPELINE", "ModelCycles", "CompileError", "DoesNotFitError"]


class ModelCycles(Stage):
    """Give every layer its modelled cycles: its MATMULs and the SYNC or HALT after them."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        model_layer_cycles(program.config, program.imem, program.layers)
        return program


PIPELINE: list[Stage] = [
    LowerToGemmChain(),
    SubtractWeightZeroPoint(),
    FoldInputZeroPointIntoBias(),
    CheckAccumulatorRange(),
    TileLayers(),
    PlanMemory(),
    LayoutWeights(),
    EmitProgram(),
    ModelCycles(),
]


def compile_program(model, config: HardwareConfig, batch: int = 1, *, stages: list[Stage] | None = None,
                    check_feeds: dict | None = None, dump=None) -> GemmProgram:
    """Run ``stages`` (default :data:`PIPELINE`) on ``model`` and return the :class:`GemmProgram`.

    With ``check_feeds`` (one inference's inputs) the golden model runs on the canonical
    graph and the program's reference semantics after every stage; a difference raises
    :class:`PassMismatch` naming the stage. ``dump(stage_name, program)`` is called after
    every stage.
    """
    if isinstance(config, str):
        config = preset(config)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise CompileError(f"batch must be a positive integer, not {batch!r}")
    if needs_conv_backend(model.graph):
        return _compile_net(model, config, batch, stages, check_feeds, dump)
    program = GemmProgram(name=_model_label(model), graph=model.graph, config=config, batch=batch)
    reference = None
    for stage in PIPELINE if stages is None else stages:
        try:
            program = stage.apply(program)
        except DoesNotFitError as exc:
            # Only the conv back end streams weights; it compiles FC chains as well.
            if stages is not None or _over(exc.needs) - STREAMABLE:
                raise
            return _compile_net(model, config, batch, None, check_feeds, dump)
        program.done.append(stage.name)
        program.verify()
        if dump is not None:
            dump(stage.name, program)
        if check_feeds is not None and program.layers:
            reference = reference or _golden_rows(program, check_feeds)
            if not np.array_equal(program.run(reference[0]), reference[1]):
                raise PassMismatch(f"{stage.name} changed the output of {program.name!r}")
    return program


def _over(needs: dict) -> set[str]:
    """Return the buffers a :class:`DoesNotFitError`'s ``needs`` overflows."""
    return {buf for buf, (need, have) in needs.items() if need > have}


def _compile_net(model, config, batch, stages, check_feeds, dump) -> NetProgram:
    """Run the conv back end's stages (:data:`accel.compiler.convnet.CONV_PIPELINE`)."""
    program = NetProgram(name=_model_label(model), graph=model.graph, config=config, batch=batch)
    for stage in CONV_PIPELINE if stages is None else stages:
        program = stage.apply(program, check_feeds)
        program.done.append(stage.name)
        program.verify()
        if dump is not None:
            dump(stage.name, program)
    return program


def _net_artifact(program: NetProgram, model) -> Artifact:
    cfg, source = program.config, _source_bytes(model)
    (in_rows, in_features), (out_rows, out_features) = program.input_view, program.output_view
    inputs = [TensorPlacement(name=program.input.name, shape=tuple(program.input.shape), dtype=program.input.dtype,
                              quant=program.input.quant, addr=program.abuf[program.input.tensor], rows=in_rows,
                              features=in_features, stride=chunks(in_features, cfg.rows),
                              layout=program.input_layout, pack=program.input_pack)]
    outputs = [TensorPlacement(name=program.output.name, shape=tuple(program.output.shape),
                               dtype=program.output.dtype, quant=program.output.quant,
                               addr=program.abuf[program.output.tensor], rows=out_rows, features=out_features,
                               stride=chunks(out_features, cfg.rows))]
    return Artifact(
        config=cfg, imem=program.imem, wbuf=program.wbuf, pbuf=program.pbuf, stream=program.stream,
        inputs=inputs, outputs=outputs,
        batch=program.batch, layers=[_net_layer_stats(program, layer) for layer in program.layers],
        source_name=program.name, source_sha256=hashlib.sha256(source).hexdigest() if source else "",
        compiler_version=_compiler_version(), dynamic_batch=program.dynamic_batch, source_onnx=source)


def _net_layer_stats(program: NetProgram, layer: NetLayer) -> dict:
    cfg, batch = program.config, program.batch
    macs = layer.macs * batch
    k = layer.k_tiles * cfg.rows if layer.tiles else layer.x_chunks * cfg.rows
    n = layer.n_tiles * cfg.cols if layer.tiles else layer.y_chunks * cfg.rows
    words = lambda name, per: [program.abuf[name], per * batch]  # noqa: E731
    return dict(
        name=layer.name, op=layer.op, kind=layer.kind, M=batch * layer.y_pixels, K=k, N=n, macs=macs,
        cycles=layer.cycles, utilization=macs / (layer.cycles * cfg.macs_per_cycle),
        tiles=dict(k=layer.k_tiles, n=layer.n_tiles, m=batch), instructions=len(layer.insns),
        abuf=dict(x=words(layer.inputs[0], program.storage[layer.inputs[0]]),
                  y=words(layer.output, program.storage[layer.output])),
        wbuf=[layer.w_addr, layer.n_tiles * layer.k_tiles * cfg.rows], pbuf=[layer.p_addr, layer.pbuf_words],
        segment=layer.segment)


def compile_model(model, config: HardwareConfig, batch: int = 1, **options) -> Artifact:
    """Compile a fully-connected ``model`` (:class:`accel.Model`) for ``config`` into an :class:`Artifact`.

    ``batch`` inferences run per RUN. Raises :class:`CompileError` naming the node and op
    for models the accelerator cannot run, and :class:`DoesNotFitError` with the bytes
    needed and available per buffer for models too big for ``config``. ``options`` go to
    :func:`compile_program`.
    """
    program = compile_program(model, config, batch, **options)
    if isinstance(program, NetProgram):
        return _net_artifact(program, model)
    source = _source_bytes(model)
    return Artifact(
        config=program.config, imem=program.imem, wbuf=program.wbuf, pbuf=program.pbuf,
        inputs=[_placement(program.input, program.layers[0].x_addr, program.layers[0].rows, program.layers[0].K,
                           program.config)],
        outputs=[_placement(program.output, program.layers[-1].y_addr, program.layers[-1].rows,
                            program.layers[-1].N, program.config)],
        batch=program.batch, layers=[_layer_stats(layer, program.config) for layer in program.layers],
        source_name=program.name, source_sha256=hashlib.sha256(source).hexdigest() if source else "",
        compiler_version=_compiler_version(), dynamic_batch=program.dynamic_batch, source_onnx=source)


def _golden_rows(program: GemmProgram, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
    """Return the program's integer input rows and the golden model's integer output rows for one inference."""
    from ..sim.golden import run_graph
    env = run_graph(program.graph, feeds, keep=True)
    first, last = program.layers[0], program.layers[-1]
    return env[program.input.tensor].reshape(first.rows, first.K), env[program.output.tensor].reshape(last.rows, last.N)


def _placement(boundary: Boundary, addr: int, rows: int, features: int, config: HardwareConfig) -> TensorPlacement:
    return TensorPlacement(name=boundary.name, shape=tuple(boundary.shape), dtype=boundary.dtype,
                           quant=boundary.quant, addr=addr, rows=rows, features=features,
                           stride=chunks(features, config.rows))


def _layer_stats(layer: GemmLayer, config: HardwareConfig) -> dict:
    t = layer.tiling
    macs = t.M * layer.K * layer.N
    return dict(
        name=layer.name, op=layer.op, M=t.M, K=layer.K, N=layer.N, macs=macs, cycles=layer.cycles,
        utilization=macs / (layer.cycles * config.macs_per_cycle),
        tiles=dict(k=t.k_tiles, n=t.n_tiles, m=t.m_tiles), instructions=len(layer.insns),
        abuf=dict(x=[layer.x_addr, t.M * chunks(layer.K, config.rows)], y=[layer.y_addr, t.M * chunks(layer.N, config.cols)]),
        wbuf=[layer.w_addr, t.n_tiles * t.k_tiles * config.rows], pbuf=[layer.p_addr, t.n_tiles * config.cols])


def _model_label(model) -> str:
    source = getattr(model, "source", "") or ""
    if source and os.path.isfile(source):
        return os.path.splitext(os.path.basename(source))[0]
    return model.graph.name


def _source_bytes(model) -> bytes:
    data = getattr(model, "onnx_bytes", None)
    if data:
        return bytes(data)
    source = getattr(model, "source", "")
    if source and os.path.isfile(source):
        with open(source, "rb") as f:
            return f.read()
    return b""


def _compiler_version() -> str:
    from .. import __version__
    return __version__
