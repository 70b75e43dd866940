"""Describe the supported boards: platform, FPGA family, clock, host UART bridge, LEDs and programmer.

:data:`BOARDS` maps each board name (the ``--board`` of ``accel build`` / ``accel flash``)
to a :class:`Board`. :func:`uart_settings` turns a baud rate into the UART divisor for a
clock and refuses rates the bridge or the divisor cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BoardError
from ..hdl.uart import MIN_DIVISOR, uart_divisor

__all__ = ["Board", "BOARDS", "board_names", "get_board", "uart_settings", "MAX_BAUD_ERROR"]

#: Largest relative baud error accepted on the board's side (8N1 tolerates about 4.5% in total).
MAX_BAUD_ERROR = 0.02


@dataclass(frozen=True)
class Board:
    """Describe one board.

    ``family`` selects the PLL (``ice40``: SB_PLL40_PAD, ``ecp5``: EHXPLLL) and the names
    of the resources in nextpnr's report. ``leds`` maps each status LED (``heartbeat``,
    ``busy``, ``done``, ``error``) to an amaranth-boards resource ``(name, number)``;
    ``extra_resources`` names a platform attribute with resources to add first (the
    iCEBreaker's snap-off LED PMOD). ``programmer_board`` is openFPGALoader's ``-b`` name;
    ``bitstream_suffix`` is the file ``accel flash`` programs. ``resources`` lists the chip's
    resources as ``(label, nextpnr bel type, Yosys cell type, total)``.
    """

    name: str
    platform_module: str
    platform_class: str
    family: str
    chip: str
    bridge: str
    max_baud: int
    default_baud: int
    leds: tuple[tuple[str, str, int], ...]
    programmer_board: str
    bitstream_suffix: str
    resources: tuple[tuple[str, str, str, int], ...]
    extra_resources: str | None = None

    def platform(self):
        """Return a fresh amaranth-boards platform instance for this board."""
        import importlib
        platform = getattr(importlib.import_module(self.platform_module), self.platform_class)()
        if self.extra_resources:
            platform.add_resources(getattr(platform, self.extra_resources))
        return platform

    @property
    def clock_hz(self) -> int:
        """Return the board's oscillator frequency (the PLL's input)."""
        platform = self.platform()
        return int(platform.default_clk_frequency)


BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker", platform_module="amaranth_boards.icebreaker", platform_class="ICEBreakerPlatform",
        family="ice40", chip="iCE40 UP5K", bridge="FT2232H (second channel)", max_baud=12_000_000,
        default_baud=3_000_000,
        # Main board: green = heartbeat, red = error. Snap-off PMOD (if fitted): busy, done.
        leds=(("heartbeat", "led_g", 0), ("error", "led_r", 0), ("busy", "led_g", 1), ("done", "led_g", 2)),
        programmer_board="icebreaker", bitstream_suffix="bin", extra_resources="break_off_pmod",
        resources=(("LC", "ICESTORM_LC", "SB_LUT4", 5280), ("DSP", "ICESTORM_DSP", "SB_MAC16", 8),
                   ("EBR", "ICESTORM_RAM", "SB_RAM40_4K", 30), ("SPRAM", "ICESTORM_SPRAM", "SB_SPRAM256KA", 4))),
    "ulx3s-85f": Board(
        name="ulx3s-85f", platform_module="amaranth_boards.ulx3s", platform_class="ULX3S_85F_Platform",
        family="ecp5", chip="ECP5 LFE5U-85F", bridge="FT231X", max_baud=3_000_000, default_baud=3_000_000,
        leds=(("heartbeat", "led", 0), ("busy", "led", 1), ("done", "led", 2), ("error", "led", 7)),
        programmer_board="ulx3s", bitstream_suffix="bit",
        resources=(("LUT", "TRELLIS_COMB", "LUT4", 83640), ("DSP", "MULT18X18D", "MULT18X18D", 156),
                   ("EBR", "DP16KD", "DP16KD", 208))),
}


def board_names() -> list[str]:
    """Return the names of the supported boards."""
    return list(BOARDS)


def get_board(name) -> Board:
    """Return the :class:`Board` called ``name`` (a :class:`Board` passes through)."""
    if isinstance(name, Board):
        return name
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise BoardError(f"unknown board {name!r}; supported: {', '.join(BOARDS)}") from None


def uart_settings(board: Board, clock_hz: int, baud: int) -> tuple[int, float]:
    """Return ``(divisor, relative error)`` for ``baud`` at ``clock_hz`` on ``board``, or raise :class:`BoardError`.

    The rate must be within what the board's USB-UART bridge does, the divisor at least
    :data:`~accel.hdl.uart.MIN_DIVISOR` clocks per bit, and the achieved rate within
    :data:`MAX_BAUD_ERROR` of the request.
    """
    if not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0:
        raise BoardError(f"baud must be a positive integer, not {baud!r}")
    if baud > board.max_baud:
        raise BoardError(f"baud {baud:,} is above the {board.name} bridge's limit ({board.bridge}: "
                         f"{board.max_baud:,} baud)")
    divisor, error = uart_divisor(clock_hz, baud)
    if divisor < MIN_DIVISOR:
        raise BoardError(f"baud {baud:,} needs {clock_hz / baud:.2f} clocks per bit at {clock_hz / 1e6:g} MHz; "
                         f"the UART needs at least {MIN_DIVISOR} (max {clock_hz // MIN_DIVISOR:,} baud)")
    if abs(error) >= MAX_BAUD_ERROR:
        raise BoardError(f"baud {baud:,} at {clock_hz / 1e6:g} MHz is {error:+.2%} off with divisor {divisor}; "
                         f"pick a rate within {MAX_BAUD_ERROR:.0%} of clock/divisor")
    return divisor, error
