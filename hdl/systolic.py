"""Hold the weight-stationary systolic array that computes every matrix product of a program."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import HardwareConfig
from .dsp import ProductBank, dsp_family
from .pe import X_WIDTH, ProcessingElement

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """Multiply streamed input rows by a stationary weight tile, loading the next tile meanwhile.

    The array has ``rows x cols`` processing elements (``pe_{r}_{c}``, see
    :class:`~accel.hdl.pe.ProcessingElement`). PE ``(r, c)`` holds weight ``W[r][c]``. For
    each input row ``x`` (``rows`` values along the reduction dimension K) the array
    outputs ``cols`` sums ``y[c] = sum_r x[r] * W[r][c]``, exact in ``acc_width``-bit two's
    complement.

    Weights, double-buffered
    ------------------------
    ``load`` writes one tile row per transfer into the *shadow* tile, row ``r = 0`` first;
    ``rows`` transfers fill it. An ``x`` transfer with ``first = 1`` swaps the shadow tile
    in: it becomes active, for this row and every later one, and the shadow tile is free
    to receive the next tile. The swap travels with that row through the array (a
    wavefront), so rows still in flight finish with the old tile. After reset the active
    tile is all zeros and the shadow tile is empty.

    Timing contract
    ---------------
    "A transfer in cycle ``T``" means ``valid`` and ``ready`` are both high in cycle ``T``
    (sampled by the clock edge that ends it).

    * ``y``: an ``x`` transfer in cycle ``T`` gives exactly one ``y`` transfer in cycle
      ``T + latency``, ``latency = rows + cols + 1``, in order, with the row's ``tag``.
      Cycles without an ``x`` transfer give cycles without ``y.valid``; the array never
      stalls (``y`` is always ready).
    * ``load.ready`` is high exactly while the shadow tile holds fewer than ``rows`` rows.
      It drops in the cycle after the ``rows``-th ``load`` transfer and rises again in
      cycle ``T + 1`` after the ``first = 1`` transfer of cycle ``T``. It depends only on
      internal state, never on ``load.valid`` or on ``x``.
    * ``x.ready = full | ~x.payload.first``, where ``full`` is the registered "shadow tile
      holds ``rows`` rows" state: a ``first = 1`` row waits for a full shadow tile; every
      other row is accepted at once.
    * Bubble-free condition: with tile ``k``'s first row transferred in cycle ``T`` and the
      next tile's ``rows`` weight rows offered from cycle ``T + 1`` on, tile ``k + 1``'s
      first row can transfer in cycle ``T + rows + 1``. Tiles of at least ``rows + 1``
      input rows therefore follow each other with no idle cycle; a shorter tile of
      ``count`` rows costs ``rows + 1 - count`` idle cycles on ``x``.

    Implementation
    --------------
    Inputs are registered on entry. Input row element ``r`` reaches PE ``(r, 0)`` ``r``
    cycles later than element 0 (the skew), and moves one PE to the right per cycle; the
    swap flag runs one cycle ahead of its row so that the PE's multiplier reads a
    registered weight. Each PE registers its product (in a DSP block on the chips: the
    products of all PEs come from one :class:`~accel.hdl.dsp.ProductBank`) and adds it to
    the partial sum from above one cycle later, so rows enter the PEs one cycle earlier
    than the partial sums need them. Partial sums move one PE down per cycle; column
    ``c``'s sum leaves the bottom row ``c`` cycles after column 0's and is delayed by
    ``cols - 1 - c`` cycles (the deskew). Weight rows are skewed the same way, unregistered
    on entry: column ``c`` of a loaded row reaches its PE ``c`` cycles after column 0. With
    the x transfer of a ``first`` row in cycle ``T``, PE ``(r, c)`` swaps at the edge
    ending cycle ``T + r + c``, and a weight row ``r`` loaded in cycle ``L`` is written
    into PE ``(r, c)`` at the edge ending cycle ``L + c``. Every row ``r`` of the tile is
    loaded by ``L <= T - rows + r`` (the tile is full before the swap is accepted), so it
    is written before its swap; the next tile's row ``r`` is loaded at ``L >= T + 1 + r``
    (``load.ready`` rises at ``T + 1``, rows go in order), so it is written after the swap
    has passed. The shadow tile can thus be refilled while the previous swap wavefront is
    still crossing the array.

    Parameters
    ----------
    config : HardwareConfig
        ``rows``, ``cols``, ``weight_bits`` and ``acc_width`` size the array.
    tag_width : int
        Width of the tag carried from each ``x`` row to its ``y`` row.
    dsp_blocks : int or None
        Use at most this many DSP blocks for the products (``None``: one per product, or per
        pair on iCE40); the other PEs multiply in LUTs.

    Members
    -------
    load : ``In(stream.Signature(data.ArrayLayout(signed(weight_bits), cols)))``
        One weight-tile row per transfer, row 0 first; element ``c`` goes to column ``c``.
    x : ``In(stream.Signature(data.StructLayout({"data": data.ArrayLayout(signed(9), rows), "first": 1, "tag": unsigned(tag_width)})))``
        One input row per transfer (all ``rows`` elements at once; the array skews them).
        ``first = 1`` swaps the loaded shadow tile in for this row and the following ones.
    y : ``Out(stream.Signature(data.StructLayout({"data": data.ArrayLayout(signed(acc_width), cols), "tag": unsigned(tag_width)}), always_ready=True))``
        One output row per ``x`` row, ``latency`` cycles later, all columns together.
    """

    def __init__(self, config: HardwareConfig, *, tag_width: int = 18, dsp_blocks: int | None = None):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig, not {config!r}")
        if not isinstance(tag_width, int) or tag_width < 1:
            raise ValueError(f"tag_width must be a positive integer, not {tag_width!r}")
        self._config = config
        self._tag_width = tag_width
        self._dsp_blocks = dsp_blocks
        super().__init__({
            "load": In(stream.Signature(
                data.ArrayLayout(signed(config.weight_bits), config.cols))),
            "x": In(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(X_WIDTH), config.rows),
                "first": 1,
                "tag": unsigned(tag_width),
            }))),
            "y": Out(stream.Signature(data.StructLayout({
                "data": data.ArrayLayout(signed(config.acc_width), config.cols),
                "tag": unsigned(tag_width),
            }), always_ready=True)),
        })

    @property
    def config(self) -> HardwareConfig:
        return self._config

    @property
    def tag_width(self) -> int:
        return self._tag_width

    @property
    def latency(self) -> int:
        """Return the cycles from an ``x`` transfer to its ``y`` transfer: ``rows + cols + 1``."""
        return self._config.rows + self._config.cols + 1

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._config.rows, self._config.cols

        # -- shadow tile bookkeeping -----------------------------------------------------
        loaded = Signal(range(rows + 1))  # weight rows in the shadow tile
        full = Signal()
        m.d.comb += full.eq(loaded == rows)
        load_fire = Signal()
        swap_fire = Signal()
        m.d.comb += [
            self.load.ready.eq(~full),
            self.x.ready.eq(full | ~self.x.payload.first),
            load_fire.eq(self.load.valid & self.load.ready),
            swap_fire.eq(self.x.valid & self.x.ready & self.x.payload.first),
        ]
        with m.If(swap_fire):  # needs full, so it never coincides with load_fire
            m.d.sync += loaded.eq(0)
        with m.Elif(load_fire):
            m.d.sync += loaded.eq(loaded + 1)

        # -- weight rows: skew by column (no entry register, see the docstring) ----------
        col_valid = _delay_taps(m, load_fire, cols - 1, "w_valid")
        col_row = _delay_taps(m, loaded, cols - 1, "w_row")
        col_w = [_delay_taps(m, self.load.payload[c], c, f"w_col{c}", reset_less=True)[c]
                 for c in range(cols)]

        # -- input rows: register, then skew by row --------------------------------------
        in_valid = Signal()
        in_data = Signal.like(self.x.payload.data, reset_less=True)
        in_tag = Signal(self._tag_width)
        m.d.sync += [
            in_valid.eq(self.x.valid & self.x.ready),
            in_data.eq(self.x.payload.data),
            in_tag.eq(self.x.payload.tag),
        ]
        # Row r: the swap flag is delayed r cycles from its transfer, the data r from the
        # entry register (one cycle behind the flag).
        row_swap = _delay_taps(m, swap_fire, rows - 1, "swap")
        row_x = [_delay_taps(m, in_data[r], r, f"x_row{r}", reset_less=True)[r] for r in range(rows)]

        # -- the PE grid, its products packed into one bank of DSP blocks ----------------
        m.submodules.products = bank = ProductBank(
            rows * cols, signed(X_WIDTH), signed(self._config.weight_bits), family=dsp_family(platform),
            max_blocks=self._dsp_blocks)
        pes = [[None] * cols for _ in range(rows)]
        for r in range(rows):
            for c in range(cols):
                pe = ProcessingElement(weight_bits=self._config.weight_bits,
                                       acc_width=self._config.acc_width, own_multiplier=False)
                m.submodules[f"pe_{r}_{c}"] = pes[r][c] = pe
                lane = r * cols + c
                m.d.comb += [bank.a[lane].eq(pe.mul_a), bank.b[lane].eq(pe.mul_b),
                             pe.mul_p.eq(bank.p[lane])]
                if c == 0:
                    m.d.comb += [pe.x.eq(row_x[r]), pe.swap.eq(row_swap[r])]
                else:
                    m.d.comb += [pe.x.eq(pes[r][c - 1].x_out),
                                 pe.swap.eq(pes[r][c - 1].swap_out)]
                if r > 0:
                    m.d.comb += pe.psum_in.eq(pes[r - 1][c].psum_out)
                m.d.comb += [
                    pe.w.eq(col_w[c]),
                    pe.w_load.eq(col_valid[c] & (col_row[c] == r)),
                ]

        # -- outputs: deskew the columns, delay valid and tag to match -------------------
        for c in range(cols):
            bottom = pes[rows - 1][c].psum_out
            m.d.comb += self.y.payload.data[c].eq(
                _delay_taps(m, bottom, cols - 1 - c, f"y_col{c}", reset_less=True)[cols - 1 - c])
        m.d.comb += [
            self.y.valid.eq(_delay_taps(m, in_valid, rows + cols, "y_valid")[rows + cols]),
            self.y.payload.tag.eq(_delay_taps(m, in_tag, rows + cols, "y_tag")[rows + cols]),
        ]
        return m


def _delay_taps(m, value, cycles, name, *, reset_less=False):
    """Return ``[value, value delayed 1 cycle, ..., value delayed cycles cycles]`` (registers).

    ``reset_less`` for data whose valid flag travels beside it (no reset net to them).
    """
    taps = [value]
    for i in range(cycles):
        reg = Signal(value.shape(), name=f"{name}_d{i + 1}", reset_less=reset_less)
        m.d.sync += reg.eq(taps[-1])
        taps.append(reg)
    return taps
