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
  written its results and handed its context over (``+ SYNC_CYCLES``);
* streams its first row at the latest of these and the previous MATMUL's last row, then
  ``D = (k_tiles - 1) * max(count, L) + count`` cycles to its last row;
* has its results written ``drain = R + C + DRAIN_STAGES + S - 1`` cycles after its last row
  (input skew across the rows, output skew across the columns, accumulate, requantizer
  pipeline, write-back; ``S = config.requant_spacing``). With ``S > 1`` the requantization
  is deferred (``config.deferred_requant``): the drainer reads its first row from ACC
  ``R + C + DRAIN_READ`` cycles after the last row, or once the previous MATMUL's rows are
  all read, then a row every ``S`` cycles, and its results are written
  ``DRAIN_STAGES + S - 1`` cycles after the last read.

``SYNC``, ``HALT`` and ``STREAM`` end when the last MATMUL's results are written, plus
``SYNC_CYCLES``; with nothing in flight they take ``SYNC_CYCLES``. ``NOP`` takes
``FETCH_CYCLES``.

The constants reproduce, cycle for cycle, what the RTL reports through ``STATUS``: probes
on 3x3 and 4x4 arrays (1 to 16 back-to-back MATMULs of 1 to 24 rows and 1 to 8 K tiles,
mixed sequences, SYNC, HALT, NOP; ``tests/test_backend.py`` keeps them) and whole compiled
models. Utilization is useful MACs over ``cycles * R * C``.

Convolution and vector instructions, measured on the RTL (``tests/sim/test_conv_core.py``):

* a conv-mode MATMUL (``conv = 1``) costs what a plain MATMUL of the same ``count`` and
  ``k_tiles`` costs, except that its fetch takes ``CONV_SETUP`` more cycles (``PREP``, its
  address constants, between decode and dispatch). That shows when nothing is in flight
  before it, and when the front end is what the MATMUL waits for (short MATMULs; until
  2026-12-08 the model charged it only in the first case, and 4 back-to-back conv
  MATMULs of 4 rows on 8x8 took 2 cycles more on the RTL than modelled);
* ``SETCONV`` costs ``FETCH_CYCLES``;
* a ``VECTOR`` implies a SYNC (the drain of every MATMUL in flight), then takes
  :func:`vector_cycles`.
"""

from __future__ import annotations

from ..config import HardwareConfig
from ..isa import Opcode

__all__ = ["FETCH_CYCLES", "SYNC_CYCLES", "DRAIN_STAGES", "CONTEXTS", "CONV_SETUP", "weight_load_cycles",
           "drain_cycles", "vector_cycles", "CycleModel", "model_layer_cycles"]

FETCH_CYCLES = 2   # fetch and decode one instruction
SYNC_CYCLES = 3    # a SYNC or HALT with nothing in flight
DRAIN_STAGES = 10  # beyond the array's skew: accumulate, requantizer pipeline (9 stages), write-back
CONTEXTS = 2       # MATMULs in flight at once (the controller's instruction contexts)
CONV_SETUP = 2     # a conv-mode MATMUL precomputes its address constants between decode and dispatch
DRAIN_READ = 2     # deferred requantization: from the last row's skew through the array to its first ACC read
# TODO: re-measure these when the controller's pipeline changes (probe programs in tests/test_backend.py).


def weight_load_cycles(config: HardwareConfig) -> int:
    """Return the cycles to load one weight tile into the array's shadow registers."""
    return config.rows + 1


def drain_cycles(config: HardwareConfig) -> int:
    """Return the cycles from a MATMUL's last input row entering the array to its results in ABUF."""
    return config.rows + config.cols + DRAIN_STAGES + config.requant_spacing - 1  # the requantizer's latency


def vector_cycles(config: HardwareConfig, vop, count: int, c_chunks: int = 1, kh: int = 1, kw: int = 1) -> int:
    """Return a VECTOR instruction's cycles from its fetch to the next fetch, with nothing in flight before it.

    Measured on the RTL (``tests/sim/test_conv_core.py``): ``MAX`` steps over every tap of
    every chunk of every output pixel (taps in the padding too), ``GSUM`` sums at least
    ``rows - 1`` cycles per chunk while the parameters load (``rows`` with shared
    requantizer lanes, ``requant_spacing > 1``), ``ADD`` loads its recipe (``1 +
    isa.ADD_TABLE_WORDS`` PBUF words, one per cycle), reads two words per row into the
    QLinearAdd lanes, a row every ``max(2, S)`` cycles with ``S = config.qadd_spacing``
    (``rows / qadd_lanes``), and drains their ``5 + S`` stages.
    """
    from ..isa import Vop
    vop = Vop(vop)
    if vop == Vop.MAX:
        return count * c_chunks * kh * kw + 9
    if vop == Vop.GSUM:
        # a chunk waits for its rows parameter words: rows - 1 cycles, one more with shared requantizer lanes
        floor = config.rows - 1 + (config.requant_spacing > 1)
        return c_chunks * (max(count, floor) + 2) + 17 + config.requant_spacing - 1
    spacing = config.qadd_spacing
    return (count - 1) * max(2, spacing) + 147 + spacing


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
        # (last row, last tile's first row, results written) of the MATMULs in flight
        self._flight: list[tuple[int, int, int]] = []
        self._drain_free = 0  # deferred requantization: when the drainer may read the next context's first row
        self._geometry = None  # the last SETCONV (for VECTOR MAX/GSUM cycles)

    def execute(self, insn) -> int:
        """Advance over one decoded instruction (:func:`accel.isa.decode`), keeping the SETCONV geometry."""
        if insn.opcode == Opcode.SETCONV:
            self._geometry = insn
            return self.step(Opcode.SETCONV)
        vector = 0
        if insn.opcode == Opcode.VECTOR:
            g = self._geometry
            c_chunks, kh, kw = (1, 1, 1) if g is None else (int(g.c_chunks), int(g.kh), int(g.kw))
            vector = vector_cycles(self.config, insn.vop, int(insn.count), c_chunks, kh, kw)
        return self.step(insn.opcode, int(insn.count), int(insn.k_tiles), vector, conv=bool(insn.conv))

    def step(self, opcode: Opcode, count: int = 0, k_tiles: int = 0, vector: int = 0, conv: bool = False) -> int:
        """Advance over one instruction; ``vector`` is a VECTOR's :func:`vector_cycles`."""
        cfg, before = self.config, self.cycles
        if opcode == Opcode.MATMUL:
            load, spacing = weight_load_cycles(cfg), cfg.requant_spacing
            if not self._flight:
                self._dispatched = self.cycles
            fetched = self._dispatched + FETCH_CYCLES + (CONV_SETUP if conv else 0)  # conv: PREP after the decode
            dispatch, weights, start = fetched, fetched + load, fetched + load
            if self._flight:
                last_row, last_tile, _ = self._flight[-1]
                weights = max(fetched, last_tile) + load
                if len(self._flight) == CONTEXTS:
                    dispatch = max(fetched, self._flight[0][2] + SYNC_CYCLES)
                start = max(weights, dispatch, last_row)
            end = start + (k_tiles - 1) * max(count, load) + count
            if cfg.deferred_requant:
                # the drainer reads the first row once the last one is in ACC and the previous
                # context's rows are all read, then a row every `spacing` cycles
                first_read = max(end + cfg.rows + cfg.cols + DRAIN_READ, self._drain_free)
                last_read = first_read + (count - 1) * spacing
                self._drain_free = last_read + spacing
                written = last_read + DRAIN_STAGES + spacing - 1  # the ACC read, requantizer, write-back
            else:
                written = end + drain_cycles(cfg)
            self._dispatched = dispatch
            self._flight = [*self._flight, (end, end - count, written)][-CONTEXTS:]
            self.cycles = start
        elif opcode in (Opcode.SYNC, Opcode.HALT, Opcode.STREAM):  # STREAM: a SYNC, then a pause not counted
            done = self._flight[-1][2] if self._flight else self.cycles
            self.cycles, self._flight = done + SYNC_CYCLES, []
        elif opcode == Opcode.VECTOR:
            done = self._flight[-1][2] + SYNC_CYCLES if self._flight else self.cycles
            self.cycles, self._flight = done + vector, []
        else:
            self.cycles += FETCH_CYCLES  # TODO: a NOP between MATMULs is not measured; the compiler emits none
        return self.cycles - before


def model_layer_cycles(config: HardwareConfig, imem: list[int], layers) -> None:
    """Set every layer's ``cycles``: its instructions (``layer.insns``, IMEM addresses) walked in program order."""
    from ..isa import decode
    model = CycleModel(config)
    for layer in layers:
        before = model.cycles
        for addr in layer.insns:
            model.execute(decode(imem[addr]))
        layer.cycles = model.cycles - before
