"""Share the time-multiplexing of pipeline lanes over the elements of a row.

The requantizer (``config.requant_lanes`` lanes for ``cols`` columns) and the QLinearAdd
lanes (``config.qadd_lanes`` lanes for ``rows`` bytes) serve a row of ``n`` elements with
``lanes`` identical pipelines, ``spacing = n / lanes`` cycles per row: lane ``j`` takes
element ``p * lanes + j`` in the ``p``-th cycle of the row. :func:`multiplex_lanes` feeds
the lanes and :func:`collect_lanes` reassembles their outputs; with ``spacing = 1`` both
are plain wiring.

The row's side band (valid, tag and whatever its stages need) is a ``data.StructLayout``
signal with at least a ``valid`` field (a row enters) and a ``phase`` field
(``range(spacing)``), which the unit registers along its stages.
"""

from amaranth.hdl import Mux, Signal
from amaranth.lib import data

__all__ = ["multiplex_lanes", "collect_lanes"]


def multiplex_lanes(m, feed, rows: dict, lanes: int):
    """Return ``(side, rows)``: this cycle's side band and row elements as the lanes see them.

    ``feed`` is the side band of the row entering now (``feed.valid``; its ``phase`` is 0)
    and ``rows`` maps names to the entering row's ``data.ArrayLayout`` views of ``n``
    elements each. With ``spacing = n / lanes > 1``, the lanes take elements
    ``0 .. lanes-1`` straight from the entering row, and the later ones wait in holding
    registers that shift down by ``lanes`` elements per cycle. In the ``spacing - 1``
    cycles after a row entered, ``side`` is the held side band with ``phase`` set to the
    cycle's phase (``valid`` stays high), and the views show the held elements; the inputs
    are ignored then (a new row must not enter before). Elements ``0 .. lanes-1`` of the
    returned views are the lanes' inputs.
    """
    length = {view.shape().length for view in rows.values()}
    if len(length) != 1:
        raise ValueError(f"the rows must have the same number of elements, not {sorted(length)}")
    spacing = length.pop() // lanes
    if spacing == 1:
        return feed, rows
    # `phase` is the next cycle's phase (0: no row in progress).
    phase = Signal(range(spacing), name="phase")
    held = Signal(feed.shape(), name="held")
    held_rows = {name: Signal(len(view.as_value()), name=f"held_{name}") for name, view in rows.items()}
    with m.If(feed.valid):
        m.d.sync += [held.eq(feed), phase.eq(1)]
        m.d.sync += [held_rows[name].eq(view.as_value() >> len(view.as_value()) // spacing)
                     for name, view in rows.items()]
    with m.Elif(phase != 0):
        m.d.sync += phase.eq(Mux(phase == spacing - 1, 0, phase + 1))
        m.d.sync += [held_rows[name].eq(held_rows[name] >> len(view.as_value()) // spacing)
                     for name, view in rows.items()]
    muxed = Signal(feed.shape(), name="muxed")
    with m.If(feed.valid):
        m.d.comb += muxed.eq(feed)
    with m.Elif(phase != 0):
        m.d.comb += [muxed.eq(held), muxed.phase.eq(phase)]
    return muxed, {name: data.View(view.shape(), Mux(feed.valid, view.as_value(), held_rows[name]))
                   for name, view in rows.items()}


def collect_lanes(m, outputs, last, row):
    """Drive the output ``row`` (an ``ArrayLayout`` view) from the lanes' ``outputs``; return the row's valid.

    ``outputs[j]`` is lane ``j``'s result register and ``last`` the side band registered
    with them. Element ``p * lanes + j`` of the row is lane ``j``'s result of phase ``p``:
    the results of the row's earlier phases wait in registers for its last phase's, then
    the row leaves in one cycle, when the returned value is high.
    """
    lanes = len(outputs)
    spacing = row.shape().length // lanes
    for p in range(spacing):
        for j in range(lanes):
            element = p * lanes + j
            if p == spacing - 1:
                m.d.comb += row[element].eq(outputs[j])
            else:
                kept = Signal.like(outputs[j], name=f"out{element}")
                with m.If(last.valid & (last.phase == p)):
                    m.d.sync += kept.eq(outputs[j])
                m.d.comb += row[element].eq(kept)
    return last.valid & (last.phase == spacing - 1)
