"""Build the memory images and the program of a planned :class:`GemmProgram`.

* :class:`LayoutWeights`: the WBUF image (every layer's weight tiles, ``docs/isa.md``
  layout) and the PBUF image (bias' and requantization multiplier per output channel);
* :class:`EmitProgram`: the IMEM image. Per layer, one MATMUL per (column tile, row tile)
  over all K tiles; a SYNC between layers, so a layer reads only finished results; a HALT at
  the end. The whole network runs from one RUN, with no host round trips between layers.
"""

from __future__ import annotations

from amaranth.lib import data

from .. import isa
from .errors import CompileError
from .gemm import GemmProgram, Stage
from .layout import chunks, pack_words, param_words, weight_tiles

__all__ = ["LayoutWeights", "EmitProgram"]


class LayoutWeights(Stage):
    """Build the WBUF and PBUF images from each layer's ``W'``, ``bias'`` and multipliers."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        cfg = program.config
        program.wbuf, program.pbuf = [], []
        for layer in program.layers:
            program.wbuf += pack_words(weight_tiles(layer.weight, cfg.rows, cfg.cols), cfg.weight_bits)
            program.pbuf += param_words(layer.bias, layer.multiplier, layer.tiling.n_tiles * cfg.cols)
        return program


# Instruction fields whose width limits what a program can address.
_FIELD_BITS = {name: data.Layout.cast(isa.Insn)[name].width
               for name in ("w_addr", "a_addr", "a_stride", "count", "k_tiles", "acc_addr", "p_addr", "y_addr",
                            "y_stride")}


class EmitProgram(Stage):
    """Emit the IMEM image: MATMULs per layer, SYNC between layers, HALT at the end."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        cfg = program.config
        program.imem = []
        for i, layer in enumerate(program.layers):
            start, t = len(program.imem), layer.tiling
            x_stride, y_stride = chunks(layer.K, cfg.rows), chunks(layer.N, cfg.cols)
            for nt in range(t.n_tiles):
                for m0, count in t.m_ranges():
                    fields = dict(
                        x_signed=int(layer.x_signed), y_signed=int(layer.y_signed),
                        w_addr=layer.w_addr + nt * t.k_tiles * cfg.rows,
                        a_addr=layer.x_addr + m0 * x_stride, a_stride=x_stride, count=count, k_tiles=t.k_tiles,
                        acc_addr=0, p_addr=layer.p_addr + nt * cfg.cols,
                        y_addr=layer.y_addr + m0 * y_stride + nt, y_stride=y_stride,
                        y_zp=layer.y_zp, y_lo=layer.y_lo, y_hi=layer.y_hi)
                    self._check_fields(program, layer, fields)
                    program.imem.append(isa.matmul(**fields))
            program.imem.append(isa.sync() if i < len(program.layers) - 1 else isa.halt())
            layer.insns = range(start, len(program.imem))
        return program

    @staticmethod
    def _check_fields(program, layer, fields):
        for name, bits in _FIELD_BITS.items():
            if fields[name] >= 1 << bits:
                raise CompileError(f"{program.name}: node {layer.name!r} ({layer.op}) needs {name}={fields[name]}, "
                                   f"beyond the {bits}-bit instruction field; config {program.config.name!r} has "
                                   f"buffers larger than the ISA can address")
