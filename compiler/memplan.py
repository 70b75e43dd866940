"""Place every tensor, weight tile and parameter word in the accelerator's buffers.

Policy:

* ABUF holds the model input, every intermediate activation and the output, each as a
  matrix of ``M = batch * rows`` rows of ``ceil(features / R)`` words. A tensor is live
  from the layer that writes it (the host, for the input) to the last layer that reads it
  (the host, for the output). Tensors are placed in order, each at the lowest address
  where it overlaps no tensor live at the same time (first fit by liveness): in a chain
  the activations ping-pong between two regions and reuse the input's space.
* WBUF holds each layer's weight tiles, layer after layer: column tile ``nt``, K tile
  ``kt`` at ``w_addr + (nt * k_tiles + kt) * R``.
* PBUF holds each layer's parameter words, ``n_tiles * C`` per layer.
* IMEM holds one MATMUL per (column tile, row tile), a SYNC after each layer and a HALT;
  ACCBUF holds one row tile.

A model that does not fit raises :class:`DoesNotFitError` naming the bytes needed and
available in every buffer.
"""

from __future__ import annotations

from .errors import DoesNotFitError
from .gemm import GemmProgram, Stage
from .layout import chunks

__all__ = ["PlanMemory", "first_fit", "check_fits", "STREAMABLE", "BUFFERS"]

BUFFERS = ("imem", "abuf", "wbuf", "pbuf", "accbuf")


def first_fit(requests: list[tuple[str, int, int, int]]) -> dict[str, int]:
    """Return the address of each ``(name, words, first step, last step)`` request, lowest first, avoiding live overlaps."""
    placed: dict[str, tuple[int, int, int, int]] = {}
    for name, words, first, last in requests:
        busy = sorted((addr, addr + size) for addr, size, other_first, other_last in placed.values()
                      if other_first <= last and first <= other_last)
        addr = 0
        for start, end in busy:
            if addr + words <= start:
                break
            addr = max(addr, end)
        placed[name] = (addr, words, first, last)
    return {name: p[0] for name, p in placed.items()}


class PlanMemory(Stage):
    """Assign ABUF, WBUF and PBUF addresses to every layer and check everything fits the config."""

    def apply(self, program: GemmProgram) -> GemmProgram:
        cfg, layers = program.config, program.layers
        last = len(layers)  # the host reads the output after the last layer
        requests = [(layers[0].x, layers[0].tiling.M * chunks(layers[0].K, cfg.rows), 0, 0)]
        for i, layer in enumerate(layers):
            requests.append((layer.y, layer.tiling.M * chunks(layer.N, cfg.cols), i, last if i == last - 1 else i + 1))
        abuf = first_fit(requests)
        w_addr = p_addr = 0
        for layer in layers:
            layer.x_addr, layer.y_addr = abuf[layer.x], abuf[layer.y]
            layer.w_addr, layer.p_addr = w_addr, p_addr
            w_addr += layer.tiling.n_tiles * layer.tiling.k_tiles * cfg.rows
            p_addr += layer.tiling.n_tiles * cfg.cols
        program.abuf_words = max(abuf[name] + words for name, words, _, _ in requests)
        words = dict(imem=sum(layer.tiling.matmuls for layer in layers) + len(layers), abuf=program.abuf_words,
                     wbuf=w_addr, pbuf=p_addr, accbuf=max(layer.tiling.m_tile for layer in layers))
        check_fits(program.name, cfg, words, program.batch)
        return program


#: Buffers whose contents the conv back end can stream segment by segment during a run.
STREAMABLE = frozenset({"imem", "wbuf", "pbuf"})


def check_fits(name: str, config, words: dict[str, int], batch: int, streamable=frozenset()) -> set[str]:
    """Return the ``streamable`` buffers that ``words`` overflows; raise :class:`DoesNotFitError` for any other.

    The message names every buffer over its capacity (bytes needed and available, worst
    first), the ones that fit, and what to change.
    """
    needs = {buf: (words[buf] * config.word_bytes(buf), config.capacity_bytes(buf)) for buf in BUFFERS}
    over = sorted((buf for buf in BUFFERS if words[buf] > getattr(config, buf).depth),
                  key=lambda buf: -needs[buf][0] / needs[buf][1])  # worst first
    if set(over) <= set(streamable):
        return set(over)
    too_big = "; ".join(f"{buf} {needs[buf][0]:,} bytes, {config.name} has {needs[buf][1]:,}" for buf in over)
    fits = ", ".join(f"{buf} {needs[buf][0]:,} of {needs[buf][1]:,} bytes" for buf in BUFFERS if buf not in over)
    hint = "use a config with bigger buffers"
    if set(over) & {"abuf", "accbuf"}:
        hint = ("activations and accumulators stay on chip (the program, weights and parameters can stream); "
                + hint + (" or a smaller batch" if batch > 1 else ""))
    raise DoesNotFitError(f"{name} needs {too_big} (fits: {fits}); {hint}", needs)
