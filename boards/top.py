"""Put the accelerator core on a board: clock, UART host link, status LEDs, and a Verilator harness.

The composition, in :meth:`BoardTop.elaborate`::

    uart pin -> UartRx -> RX FIFO -> link.i   link.core_i -> core.i
    uart pin <- UartTx <------------ link.o   link.core_o <- core.o

``link`` is the pluggable host-link stage: a factory called as ``link(config)`` that
returns a component with these members (directions from the link's side):

* ``i: In(stream.Signature(8))``: bytes received from the host (after the RX FIFO);
* ``o: Out(stream.Signature(8))``: bytes to send to the host (into the UART transmitter);
* ``core_i: Out(stream.Signature(8))``: request bytes for the core's ``i`` stream
  (the raw host-link protocol of ``docs/isa.md``);
* ``core_o: In(stream.Signature(8))``: the core's reply bytes (its ``o`` stream).

:class:`~accel.hdl.link.FramedLink` (the default) carries the raw protocol in checksummed
frames (``docs/protocol.md``); it may also have ``core_busy: In(1)`` and ``core_reset: Out(1)``,
which the top wires to the core's busy flag and reset. :class:`RawLink` passes the raw
protocol straight through (``link=RawLink``).

``sim=True`` builds the same top without a platform: no PLL, no pins; the ``sync`` domain
comes from outside and the UART lines and LEDs are ports, so Verilator can run it.
:func:`board_sim_harness` wraps that top with a host-side UART pair, so a testbench moves
bytes at stream level (the harness has the core's ``i``/``o`` stream ports).
"""

from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, Instance, Module, ResetInserter, ResetSignal, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..config import HardwareConfig
from ..errors import BoardError
from ..hdl.core import AcceleratorCore
from ..hdl.link import FramedLink
from ..hdl.uart import UartRx, UartTx, check_divisor
from .board import Board, get_board, uart_settings
from .pll import Ecp5Pll, Ice40Pll, PllSettings, pll_settings

__all__ = ["LED_ROLES", "RawLink", "BoardTop", "BoardSimHarness", "board_sim_harness"]

#: The status LEDs, in the order of the sim-mode ``leds`` port's bits.
LED_ROLES = ("heartbeat", "busy", "done", "error")


class RawLink(wiring.Component):
    """Pass the raw host-link byte protocol straight between the UART and the core.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes from the host.
    o : ``Out(stream.Signature(8))``
        Bytes to the host.
    core_i : ``Out(stream.Signature(8))``
        Request bytes for the core (``i`` unchanged).
    core_o : ``In(stream.Signature(8))``
        The core's reply bytes (sent on ``o`` unchanged).
    """

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    core_i: Out(stream.Signature(8))
    core_o: In(stream.Signature(8))

    def __init__(self, config: HardwareConfig | None = None):
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        wiring.connect(m, wiring.flipped(self.i), wiring.flipped(self.core_i))
        wiring.connect(m, wiring.flipped(self.core_o), wiring.flipped(self.o))
        return m


class BoardTop(wiring.Component):
    """Run the accelerator core on a board, reached over the board's USB-UART bridge.

    On a platform, the top defines the ``sync`` domain: the board's oscillator through the
    family's PLL (:func:`~accel.boards.pll.pll_settings` for ``config.clock_hz``), held in
    reset until the PLL locks. The UART divisor comes from the achieved clock and ``baud``
    (validated by :func:`~accel.boards.board.uart_settings`). LEDs show a 1 Hz heartbeat,
    a running program (``busy``), a finished run (``done``) and a UART error (``error``:
    a framing error or an RX overrun since reset).

    Parameters
    ----------
    config : HardwareConfig
    board : str or Board
        ``icebreaker`` or ``ulx3s-85f``.
    baud : int, optional
        Line rate on a platform (default: the board's ``default_baud``).
    link : callable, optional
        The host-link stage factory (see the module documentation); :class:`~accel.hdl.link.FramedLink` by default.
    sim : bool
        Build without PLL and pins; then ``divisor`` (clocks per bit) is required.
    divisor : int, optional
        The UART divisor in sim mode.
    rx_fifo_depth : int
        Bytes buffered between the UART receiver and the link (absorbs short stalls of the
        core; the host must still wait for a ``RUN``'s reply before sending more).

    Members (``sim=True`` only; a platform top has no ports)
    -------
    uart_rx : ``In(1)``
        The host's transmit line (idle 1).
    uart_tx : ``Out(1)``
        The line to the host (idle 1).
    leds : ``Out(4)``
        Status LEDs in :data:`LED_ROLES` order.
    """

    def __init__(self, config: HardwareConfig, board, *, baud: int | None = None, link=FramedLink,
                 sim: bool = False, divisor: int | None = None, rx_fifo_depth: int = 16):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig, not {config!r}")
        if not callable(link):
            raise TypeError(f"link must be a factory called as link(config), not {link!r}")
        if not isinstance(rx_fifo_depth, int) or rx_fifo_depth < 2:
            raise ValueError(f"rx_fifo_depth must be an integer of at least 2, not {rx_fifo_depth!r}")
        self._config = config
        self._board = get_board(board)
        self._link = link
        self._sim = bool(sim)
        self._rx_fifo_depth = rx_fifo_depth
        if self._sim:
            if divisor is None:
                raise BoardError("a simulated board top needs an explicit UART divisor (clocks per bit)")
            if baud is not None:
                raise BoardError("a simulated board top takes divisor=, not baud=")
            self._pll = None
            self._divisor = divisor
            self._baud = None
            members = {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1), "leds": Out(len(LED_ROLES))}
        else:
            if divisor is not None:
                raise BoardError("a board top derives its UART divisor from baud=; divisor= is for sim=True")
            self._pll = pll_settings(self._board.family, self._board.clock_hz, config.clock_hz)
            self._baud = self._board.default_baud if baud is None else baud
            self._divisor, self._baud_error = uart_settings(self._board, round(self._pll.f_out_hz), self._baud)
            members = {}
        check_divisor(self._divisor)  # fail now, not at elaboration
        super().__init__(members)

    @property
    def config(self) -> HardwareConfig:
        return self._config

    @property
    def board(self) -> Board:
        return self._board

    @property
    def sim(self) -> bool:
        return self._sim

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def baud(self) -> int | None:
        """Return the requested line rate (None in sim mode)."""
        return self._baud

    @property
    def pll(self) -> PllSettings | None:
        """Return the PLL settings (None in sim mode)."""
        return self._pll

    @property
    def clock_hz(self) -> float:
        """Return the core clock: the PLL's achieved output, or ``config.clock_hz`` in sim mode."""
        return self._config.clock_hz if self._pll is None else self._pll.f_out_hz

    def elaborate(self, platform):
        m = Module()
        c = self._config

        # -- the composition: UART <-> link <-> core ----------------------------------------
        core = AcceleratorCore(c)
        m.submodules.uart_rx = uart_rx = UartRx(self._divisor)
        m.submodules.uart_tx = uart_tx = UartTx(self._divisor)
        m.submodules.rx_fifo = rx_fifo = SyncFIFOBuffered(width=8, depth=self._rx_fifo_depth)
        m.submodules.link = link = self._link(c)
        # A link that can reset the core (FramedLink) gets it in a ResetInserter, and its busy flag.
        # On ECP5 the core runs in its own domain on the same clock, whose reset (the domain's
        # or the link's) goes through a DCCA onto a global network: nextpnr promotes only
        # clocks, and a reset in general routing to every flip-flop of the core costs routing.
        if not self._sim and self._board.family == "ecp5":
            m.domains.core = ClockDomain("core")
            core_reset = Signal()
            reset = ResetSignal("sync")
            if hasattr(link, "core_reset"):
                reset = reset | link.core_reset
            m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")), core_reset.eq(reset)]
            m.submodules.core_reset_buffer = Instance("DCCA", i_CLKI=core_reset, i_CE=1,
                                                      o_CLKO=ResetSignal("core"))
            m.submodules.core = DomainRenamer("core")(core)
        elif hasattr(link, "core_reset"):
            m.submodules.core = ResetInserter(link.core_reset)(core)
        else:
            m.submodules.core = core
        if hasattr(link, "core_busy"):
            m.d.comb += link.core_busy.eq(core.busy)
        wiring.connect(m, uart_rx.o, rx_fifo.w_stream)
        wiring.connect(m, rx_fifo.r_stream, link.i)
        wiring.connect(m, link.o, uart_tx.i)
        wiring.connect(m, link.core_i, core.i)
        wiring.connect(m, core.o, link.core_o)

        # -- status ----------------------------------------------------------------------
        half_second = max(1, int(self.clock_hz) // 2)
        beat = Signal(range(half_second))
        heartbeat = Signal()
        with m.If(beat == half_second - 1):
            m.d.sync += [beat.eq(0), heartbeat.eq(~heartbeat)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)
        status = {"heartbeat": heartbeat, "busy": core.busy, "done": core.done,
                  "error": uart_rx.framing_error | (uart_rx.overruns != 0)}

        if self._sim:
            m.d.comb += [uart_rx.rx.eq(self.uart_rx), self.uart_tx.eq(uart_tx.tx)]
            m.d.comb += [self.leds[n].eq(status[role]) for n, role in enumerate(LED_ROLES)]
            return m
        if platform is None:
            raise BoardError("a board top needs a platform to elaborate; use sim=True to simulate it")

        # -- clock and reset ---------------------------------------------------------------
        m.domains.sync = ClockDomain("sync")
        clk_pin = platform.request(platform.default_clk, 0, dir="-")
        if self._board.family == "ice40":
            m.submodules.pll = pll = Ice40Pll(self._pll, clk_pin)
        else:
            m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk_pin)
            m.submodules.pll = pll = Ecp5Pll(self._pll)
            m.d.comb += pll.clk_in.eq(clk_buffer.i)
        clk = Signal()
        m.d.comb += [clk.eq(pll.clk_out), ClockSignal("sync").eq(clk)]
        platform.add_clock_constraint(clk, self._pll.f_out_hz)
        m.submodules.reset_sync = ResetSynchronizer(~pll.locked, domain="sync")

        # -- pins --------------------------------------------------------------------------
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [uart_rx.rx.eq(rx_buffer.i), tx_buffer.o.eq(uart_tx.tx)]
        for role, name, number in self._board.leds:
            m.submodules[f"led_{role}"] = led = io.Buffer("o", platform.request(name, number, dir="-"))
            m.d.comb += led.o.eq(status[role])
        return m


class BoardSimHarness(wiring.Component):
    """Drive a ``sim=True`` :class:`BoardTop`'s UART pins from a host-side UART pair.

    The harness has the core's own stream ports, so a byte-level host-link driver (such
    as :class:`accel.sim.rtl_host.HostLinkDriver`) runs it unchanged; every byte crosses
    both UARTs and the top's link stage.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes the host sends (the host UART transmitter's input).
    o : ``Out(stream.Signature(8))``
        Bytes the host receives (the host UART receiver's output).
    leds : ``Out(4)``
        The top's status LEDs (:data:`LED_ROLES`).
    """

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    leds: Out(len(LED_ROLES))

    def __init__(self, top: BoardTop):
        if not isinstance(top, BoardTop) or not top.sim:
            raise TypeError(f"top must be a BoardTop built with sim=True, not {top!r}")
        self._top = top
        super().__init__()

    @property
    def top(self) -> BoardTop:
        return self._top

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = self._top
        m.submodules.host_tx = host_tx = UartTx(top.divisor)
        m.submodules.host_rx = host_rx = UartRx(top.divisor)
        wiring.connect(m, wiring.flipped(self.i), host_tx.i)
        wiring.connect(m, host_rx.o, wiring.flipped(self.o))
        m.d.comb += [top.uart_rx.eq(host_tx.tx), host_rx.rx.eq(top.uart_tx), self.leds.eq(top.leds)]
        return m


def board_sim_harness(board, config: HardwareConfig, *, divisor: int, link=FramedLink, **top_options) -> BoardSimHarness:
    """Return the simulation harness of ``board``'s top for ``config``: host UART pair + ``BoardTop(sim=True)``."""
    return BoardSimHarness(BoardTop(config, board, sim=True, divisor=divisor, link=link, **top_options))
