"""Simulate the device end of the framed host link in Verilator, reached through :mod:`accel.driver`.

Two simulated devices speak the wire protocol of ``docs/protocol.md``:

* ``link``: :class:`LinkedCore`, the :class:`~accel.hdl.link.FramedLink` in front of the
  core, at stream level (one byte per cycle, no UART). Fast; for the fault-injection tests.
* ``board``: the board top-level of :mod:`accel.boards` in its simulation harness, UART
  included, with the FramedLink as its host-link stage (the ``board-sim`` device).

Both run in one resident simulator (:class:`accel.sim.rtl.RtlTarget`'s machinery, with its
``exchange`` transactions); :class:`SimTransport` turns that into an
:class:`accel.driver.Transport` whose time is simulated time.
"""


from amaranth.hdl import Module, ResetInserter
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import HardwareConfig, preset
from ..driver import LinkDevice, Transport
from ..errors import DeviceError
from ..hdl.core import AcceleratorCore
from ..hdl.link import MAX_PAYLOAD, FramedLink
from .rtl import RtlTarget

__all__ = ["LinkedCore", "SimTransport", "LinkSimDevice", "BoardSimDevice", "SIM_TIMEOUT_BITS"]

#: The link timeout in simulation: 2**12 cycles keeps retries cheap to simulate.
SIM_TIMEOUT_BITS = 12


class LinkedCore(wiring.Component):
    """Put a :class:`FramedLink` in front of ``AcceleratorCore(config)``; the link can reset the core.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Frame bytes from the host.
    o : ``Out(stream.Signature(8))``
        Frame bytes to the host.
    busy : ``Out(1)``
        The core is running a program.
    """

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    busy: Out(1)

    def __init__(self, config: HardwareConfig, timeout_bits: int = SIM_TIMEOUT_BITS):
        self._config = config
        self._timeout_bits = timeout_bits
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = FramedLink(timeout_bits=self._timeout_bits)
        core = AcceleratorCore(self._config)
        m.submodules.core = core = ResetInserter(link.core_reset)(core)
        wiring.connect(m, wiring.flipped(self.i), link.i)
        wiring.connect(m, link.o, wiring.flipped(self.o))
        wiring.connect(m, link.core_i, core.i)
        wiring.connect(m, core.o, link.core_o)
        m.d.comb += [link.core_busy.eq(core.busy), self.busy.eq(core.busy)]
        return m


class SimTransport(Transport):
    """Carry bytes to a simulated device and back; time is the simulation's clock.

    ``write`` queues bytes; ``read`` plays them in and returns what comes back until
    ``timeout`` simulated seconds pass without a byte moving.
    """

    def __init__(self, target: RtlTarget, clock_hz: int, name: str):
        self.target = target
        self.clock_hz = clock_hz
        self.name = name
        self._pending = bytearray()
        self.cycles = 0

    def _cycles(self, seconds: float) -> int:
        return max(1, int(seconds * self.clock_hz))

    def write(self, data: bytes) -> None:
        self._pending += data

    def read(self, n: int, timeout: float) -> bytes:
        request, self._pending = bytes(self._pending), bytearray()
        reply, cycles, _ = self.target.exchange(request, n, self._cycles(timeout))
        self.cycles += cycles
        return reply

    def drain(self, quiet: float) -> bytes:
        return self.read(1 << 30, quiet)

    def elapsed(self) -> float:
        return self.cycles / self.clock_hz

    def close(self) -> None:
        self.target.close()


def _config_for(board: str | None, config) -> HardwareConfig:
    if config is None:
        if board is None:
            raise DeviceError("board-sim: name a board (board='icebreaker') or a config")
        matches = [c for c in (preset(n) for n in ("icebreaker", "ulx3s-85f")) if c.board == board]
        if not matches:
            raise DeviceError(f"board-sim: unknown board {board!r}; supported: icebreaker, ulx3s-85f")
        return matches[0]
    return preset(config) if isinstance(config, str) else config


class LinkSimDevice(LinkDevice):
    """Run artifacts on :class:`LinkedCore` in Verilator through the framed link (no UART)."""

    name = "link-sim"

    def __init__(self, config="sim-small", batch: int = 1, timeout_bits: int = SIM_TIMEOUT_BITS,
                 cache_root=None, **options):
        config = _config_for(None, config)
        target = RtlTarget(config, cache_root=cache_root, top="accel_linked_core",
                           factory=lambda c: LinkedCore(c, timeout_bits), variant=f"timeout{timeout_bits}")
        transport = SimTransport(target, config.clock_hz, self.name)
        # Replies start within the link timeout (a NACK for a truncated frame) plus a frame's replay.
        options.setdefault("timeout", 1.5 * ((1 << timeout_bits) + MAX_PAYLOAD) / config.clock_hz)
        super().__init__(transport, config=config, batch=batch, **options)


class BoardSimDevice(LinkDevice):
    """Run artifacts on a board top-level in Verilator, UART pins included (the ``board-sim`` device).

    The design is :func:`accel.boards.board_sim_harness`: the board's top in sim mode (no
    PLL, no pins) with the FramedLink, driven through a host-side UART pair, so every byte
    crosses both UARTs at ``baud`` (default: the board's). ``divisor`` sets clocks per bit
    directly instead (faster tests); ``config`` defaults to the board's preset.
    """

    def __init__(self, board: str = "icebreaker", config=None, batch: int = 1, *, baud: int | None = None,
                 divisor: int | None = None, timeout_bits: int = SIM_TIMEOUT_BITS, cache_root=None, **options):
        from ..boards import board_sim_harness, get_board
        from ..hdl.uart import uart_divisor

        config = _config_for(board, config)
        if divisor is None:
            baud = get_board(board).default_baud if baud is None else baud
            divisor, error = uart_divisor(config.clock_hz, baud)
            if abs(error) > 0.02:
                raise DeviceError(f"board-sim: {baud:,} baud is {error:+.1%} off at {config.clock_hz / 1e6:g} MHz "
                                  f"(divisor {divisor}); pick a baud rate that divides the clock")
        elif baud is not None:
            raise DeviceError("board-sim: give baud= or divisor=, not both")
        self.name = f"board-sim:{board}"
        self.divisor = divisor

        def factory(c):
            return board_sim_harness(board, c, divisor=divisor,
                                     link=lambda cc: FramedLink(cc, timeout_bits=timeout_bits))
        target = RtlTarget(config, cache_root=cache_root, top=f"board_sim_{board.replace('-', '_')}",
                           factory=factory, variant=f"divisor{divisor}-timeout{timeout_bits}")
        transport = SimTransport(target, config.clock_hz, self.name)
        # Replies start within the link timeout plus a frame's replay; their bytes come 10 bits apart.
        options.setdefault("timeout", 1.5 * ((1 << timeout_bits) + MAX_PAYLOAD + 40 * divisor) / config.clock_hz)
        super().__init__(transport, config=config, batch=batch, **options)
