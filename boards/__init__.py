"""Hold the thin board top-levels (iCEBreaker, ULX3S-85F), their clocking and the Verilator harness.

:mod:`.board` describes the boards (:data:`BOARDS`), :mod:`.pll` computes PLL settings and
instantiates the PLL primitives, :mod:`.top` assembles :class:`BoardTop` (UART, host-link
stage, core, LEDs) and the simulation harness. ``accel build`` and ``accel flash``
(:mod:`accel.build`, :mod:`accel.flash`) turn a top into a bitstream and program it.
"""

from .board import BOARDS, MAX_BAUD_ERROR, Board, board_names, get_board, uart_settings
from .pll import PllSettings, pll_settings
from .top import LED_ROLES, BoardSimHarness, BoardTop, RawLink, board_sim_harness

__all__ = ["BOARDS", "MAX_BAUD_ERROR", "Board", "board_names", "get_board", "uart_settings", "PllSettings",
           "pll_settings", "LED_ROLES", "BoardSimHarness", "BoardTop", "RawLink", "board_sim_harness"]
