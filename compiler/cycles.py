"""Model how many clock cycles the accelerator spends on a program.

One model for everyone: the compiler uses it for the per-layer statistics in the artifact
and ``accel report``, and the emulator uses it for the cycle count ``STATUS`` returns, so
the two always agree. It follows the controller's pipeline (``hdl/controller.py``,
``docs/architecture.md``): a front end that fetches and dispatches one instruction every
``FETCH_CYCLES``, ``CONTEXTS`` MATMULs in flight at once, a weight sequencer that loads the
next tile into the array's shadow registers while the current tile streams, and an input
sequencer that streams one row per cycle.

With ``R = rows``, ``C = cols`` and ``L = R + 1`` (loading one weight tile: ``R`` WBUF rows,
then the swap), MATMUL ``i`` of ``count`` rows and ``k_tiles`` tiles:

* is fetched ``FETCH_CYCLES`` after MATMUL ``i - 1`` was dispatched (or after the start,
  RUN or the last SYNC);
* loads its first weight tile in ``L`` cycles, once fetched and once the previous MATMUL's
  last tile has swapped in (its first row entered the array);
* is dispatched once fetched and, with ``CONTEXTS`` MATMULs in flight, once the oldest has
  drained and handed its context over (its last row + ``drain + SYNC_CYCLES``);
* streams its first row at the latest of these and the previous MATMUL's last row, then
  ``D = (k_tiles - 1) * max(count, L) + count`` cycles to its last row.

``SYNC`` and ``HALT`` end ``drain = R + C + DRAIN_STAGES`` cycles after the last MATMUL's
last row (input skew across the rows, output skew across the columns, accumulate,
requantizer pipeline, write-back), plus ``SYNC_CYCLES``; with nothing in flight they take
``SYNC_CYCLES``. ``NOP`` takes ``FETCH_CYCLES``.

The constants reproduce, cycle for cycle, what the RTL reports through ``STATUS``: probes
on 3x3 and 4x4 arrays (1 to 16 back-to-back MATMULs of 1 to 24 rows and 1 to 8 K tiles,
mixed sequences, SYNC, HALT, NOP; ``tests/test_backend.py`` keeps them) and whole compiled
models. Utilization is useful MACs over ``cycles * R * C``.

Convolution and vector instructions (ISA additions of issue 4) are modelled, not yet
calibrated against RTL:

* a conv-mode MATMUL (``conv = 1``) costs exactly what a plain MATMUL of the same
  ``count`` and ``k_tiles`` costs (the im2col address generator is assumed to keep up);
* ``SETCONV`` costs ``FETCH_CYCLES`` like a NOP (the compiler emits it after a SYNC);
* a ``VECTOR`` implies a SYNC (the drain of every MATMUL in flight), then reads one ABUF
  word per cycle (:func:`vector_reads`) and ends ``VECTOR_LATENCY`` cycles after its last
  read (compare/add pipeline, requantizer, write-back).
"""

from __future__ import annotations

from ..config import HardwareConfig
from ..isa import Opcode

__all__ = ["FETCH_CYCLES", "SYNC_CYCLES", "DRAIN_STAGES", "CONTEXTS", "VECTOR_LATENCY", "weight_load_cycles",
           "drain_cycles", "vector_reads", "CycleModel"]

FETCH_CYCLES = 2   # fetch and decode one instruction
SYNC_CYCLES = 3    # a SYNC or HALT with nothing in flight
DRAIN_STAGES = 9   # beyond the array's skew: accumulate, requantizer pipeline, write-back
CONTEXTS = 2       # MATMULs in flight at once (the controller's instruction contexts)
VECTOR_LATENCY = 8  # TODO: modelled, not yet calibrated against RTL (no VECTOR unit in hdl/ yet)
# TODO: re-measure these when the controller's pipeline changes (probe programs in tests/test_backend.py).


def weight_load_cycles(config: HardwareConfig) -> int:
    """Return the cycles to load one weight tile into the array's shadow registers."""
    return config.rows + 1


def drain_cycles(config: HardwareConfig) -> int:
    """Return the cycles from a MATMUL's last input row entering the array to its results in ABUF."""
    return config.rows + config.cols + DRAIN_STAGES


def vector_reads(vop, count: int, c_chunks: int = 1, kh: int = 1, kw: int = 1) -> int:
    """Return the ABUF words a VECTOR instruction reads (modelled at one per cycle).

    ``MAX`` reads every tap of every chunk of every output pixel (taps in the padding are
    counted too: the address generator still steps over them), ``GSUM`` every chunk of
    every pixel, ``ADD`` two words per row.
    """
    from ..isa import Vop
    vop = Vop(vop)
    if vop == Vop.MAX:
        return count * c_chunks * kh * kw
    if vop == Vop.GSUM:
        return count * c_chunks
    return 2 * count


class CycleModel:
    """Count modelled cycles over a stream of executed instructions.

    Call :meth:`step` once per instruction in execution order; it returns the cycles that
    instruction adds (for a MATMUL, how much later its first row enters the array than the
    previous one's; for SYNC/HALT, the rest of the drain), and :attr:`cycles` holds the
    running total: at HALT, the cycles of the whole RUN.
    """

    def __init__(self, config: HardwareConfig):
        self.config = config
        self.cycles = 0
        self._dispatched = 0  # when the front end dispatched the last MATMUL (or the segment started)
        self._flight: list[tuple[int, int]] = []  # (last row, last tile's first row) of the MATMULs in flight

    def step(self, opcode: Opcode, count: int = 0, k_tiles: int = 0, reads: int = 0) -> int:
        """Advance over one instruction; ``reads`` is a VECTOR's :func:`vector_reads`."""
        cfg, before = self.config, self.cycles
        if opcode == Opcode.MATMUL:
            load = weight_load_cycles(cfg)
            if not self._flight:
                self._dispatched = self.cycles
            fetched = self._dispatched + FETCH_CYCLES
            dispatch, weights, start = fetched, fetched + load, fetched + load
            if self._flight:
                last_row, last_tile = self._flight[-1]
                weights = max(fetched, last_tile) + load
                if len(self._flight) == CONTEXTS:
                    dispatch = max(fetched, self._flight[0][0] + drain_cycles(cfg) + SYNC_CYCLES)
                start = max(weights, dispatch, last_row)
            end = start + (k_tiles - 1) * max(count, load) + count
            self._dispatched = dispatch
            self._flight = [*self._flight, (end, end - count)][-CONTEXTS:]
            self.cycles = start
        elif opcode in (Opcode.SYNC, Opcode.HALT):
            done = self._flight[-1][0] + drain_cycles(cfg) if self._flight else self.cycles
            self.cycles, self._flight = done + SYNC_CYCLES, []
        elif opcode == Opcode.VECTOR:  # modelled, not yet calibrated against RTL
            done = self._flight[-1][0] + drain_cycles(cfg) if self._flight else self.cycles
            self.cycles, self._flight = done + FETCH_CYCLES + reads + VECTOR_LATENCY, []
        else:
            self.cycles += FETCH_CYCLES  # TODO: a NOP between MATMULs is not measured; the compiler emits none
        return self.cycles - before
