# amaranth: UnusedElaboratable=no
"""Check the board tops: PLL settings (against icepll/ecppll), UART rate checks, elaboration, and IDENT over the UART.

The PLL searches are compared with the YoWASP builds of ``icepll`` and ``ecppll`` run live.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from accel.boards import (BOARDS, BoardSimHarness, BoardTop, RawLink, board_sim_harness, get_board,
                          pll_settings, uart_settings)
from accel.boards.pll import ecp5_pll_settings, ice40_pll_settings
from accel.config import BufferSpec, HardwareConfig
from accel.errors import AccelError, BoardError
from accel.runtime import Ident, parse_reply, reply_length, request_bytes

BIN = Path(sys.executable).parent


def tiny_config(clock_hz=30_000_000):
    """Return a small config (fast to elaborate and simulate) with the given clock."""
    return HardwareConfig(name="tiny", rows=2, cols=2, imem=BufferSpec(64), abuf=BufferSpec(64), wbuf=BufferSpec(64),
                          accbuf=BufferSpec(64), pbuf=BufferSpec(64), acc_width=24, weight_bits=8, clock_hz=clock_hz)


# -- PLL settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mhz", ["30", "25", "48", "16", "42", "60"])
def test_ice40_pll_matches_icepll(mhz):
    out = subprocess.run([BIN / "yowasp-icepll", "-i", "12", "-o", mhz, "-q", "-f", "-"], capture_output=True,
                         text=True, check=True).stdout
    expected = {k: int(v) for k, v in re.findall(r"// (DIVR|DIVF|DIVQ|FILTER_RANGE) =\s*(\d+)", out)}
    achieved = float(re.search(r"Achieved output frequency:\s*([\d.]+)", out).group(1))
    settings = ice40_pll_settings(12_000_000, int(float(mhz) * 1e6))
    assert settings.params == expected
    assert round(settings.f_out_hz / 1e6, 3) == achieved


@pytest.mark.parametrize("mhz", ["125", "100", "65", "37.5", "48", "50"])
def test_ecp5_pll_matches_ecppll(mhz):
    out = subprocess.run([BIN / "yowasp-ecppll", "-i", "25", "-o", mhz, "-f", "/dev/null"], capture_output=True,
                         text=True, check=True).stdout
    expected = {"CLKI_DIV": int(re.search(r"Refclk divisor: (\d+)", out).group(1)),
                "CLKFB_DIV": int(re.search(r"Feedback divisor: (\d+)", out).group(1)),
                "CLKOP_DIV": int(re.search(r"clkout0 divisor: (\d+)", out).group(1))}
    achieved = float(re.search(r"clkout0 frequency: ([\d.]+) MHz", out).group(1))
    settings = ecp5_pll_settings(25_000_000, int(float(mhz) * 1e6))
    assert settings.params == expected
    assert settings.f_out_hz / 1e6 == pytest.approx(achieved, abs=1e-3)


def test_pll_settings_bypass_and_refusals():
    assert pll_settings("ice40", 12_000_000, 12_000_000).bypass
    assert pll_settings("ecp5", 25_000_000, 125_000_000).params == {"CLKI_DIV": 1, "CLKFB_DIV": 5, "CLKOP_DIV": 5}
    with pytest.raises(BoardError, match=r"closest ecp5 PLL output to 48 MHz is 46.8750 MHz \(-2.3%\)"):
        pll_settings("ecp5", 25_000_000, 48_000_000)
    with pytest.raises(BoardError, match="no PLL model for FPGA family 'gowin'; supported: ice40, ecp5"):
        pll_settings("gowin", 27_000_000, 50_000_000)


# -- UART rates ------------------------------------------------------------------------------------


def test_uart_settings_accept_and_refuse_rates():
    ice, ulx = get_board("icebreaker"), get_board("ulx3s-85f")
    assert uart_settings(ice, 30_000_000, 3_000_000) == (10, 0.0)
    divisor, error = uart_settings(ulx, 125_000_000, 3_000_000)
    assert divisor == 42 and abs(error) < 0.01
    with pytest.raises(BoardError, match=r"above the ulx3s-85f bridge's limit \(FT231X: 3,000,000 baud\)"):
        uart_settings(ulx, 125_000_000, 6_000_000)
    with pytest.raises(BoardError, match=r"above the icebreaker bridge's limit \(FT2232H.*12,000,000 baud\)"):
        uart_settings(ice, 30_000_000, 12_000_001)
    with pytest.raises(BoardError, match="needs 2.50 clocks per bit at 30 MHz; the UART needs at least 4"):
        uart_settings(ice, 30_000_000, 12_000_000)
    with pytest.raises(BoardError, match=r"baud 2,200,000 at 30 MHz is -2.60% off with divisor 14"):
        uart_settings(ice, 30_000_000, 2_200_000)
    with pytest.raises(BoardError, match="baud must be a positive integer, not 0"):
        uart_settings(ice, 30_000_000, 0)


def test_unknown_board_is_one_line_naming_the_supported_ones():
    with pytest.raises(AccelError, match=r"^unknown board 'arty'; supported: icebreaker, ulx3s-85f$"):
        get_board("arty")


# -- tops ------------------------------------------------------------------------------------------


def test_top_constructor_checks():
    config = tiny_config()
    with pytest.raises(BoardError, match="needs an explicit UART divisor"):
        BoardTop(config, "icebreaker", sim=True)
    with pytest.raises(ValueError, match="divisor must be an integer of at least 4"):
        BoardTop(config, "icebreaker", sim=True, divisor=3)
    with pytest.raises(TypeError, match="link must be a factory"):
        BoardTop(config, "icebreaker", link=RawLink(config))
    with pytest.raises(BoardError, match="above the ulx3s-85f bridge's limit"):
        BoardTop(config, "ulx3s-85f", baud=4_000_000)
    top = BoardTop(config, "icebreaker", baud=1_000_000)
    assert (top.divisor, top.baud, top.clock_hz, top.pll.params["DIVF"]) == (30, 1_000_000, 30e6, 79)
    assert dict(top.signature.members) == {}
    sim_top = BoardTop(config, "icebreaker", sim=True, divisor=4)
    assert set(sim_top.signature.members) == {"uart_rx", "uart_tx", "leds"}
    with pytest.raises(TypeError, match="top must be a BoardTop built with sim=True"):
        BoardSimHarness(top)


def _prepare(board_name, config):
    board = get_board(board_name)
    plan = board.platform().build(BoardTop(config, board), name="top", do_build=False)
    return plan.files


def test_icebreaker_top_elaborates_with_pll_uart_and_leds():
    files = _prepare("icebreaker", tiny_config(30_000_000))
    rtlil = files["top.il"]
    assert "SB_PLL40_PAD" in rtlil and "\\DIVF 7'1001111" in rtlil  # DIVF = 79: 12 -> 30 MHz
    pcf = files["top.pcf"]
    for pin in ("6", "9", "35", "11", "37"):  # uart rx/tx, clk12, red/green LEDs
        assert re.search(rf"set_io \S+ {pin}\n", pcf + "\n"), pin
    assert re.search(r"set_frequency \S+ 30\.0", pcf), pcf


def test_ulx3s_top_elaborates_with_pll_uart_and_leds():
    files = _prepare("ulx3s-85f", tiny_config(125_000_000))
    rtlil = files["top.il"]
    assert "EHXPLLL" in rtlil and "\\CLKOP_DIV 5" in rtlil
    # the core's reset (the domain's or the link's) reaches it through a DCCA, on a global network
    assert re.search(r"cell \\DCCA \\core_reset_buffer\n\s+connect \\CLKI \\core_reset \[0\]\n\s+connect \\CE 1'1\n"
                     r"\s+connect \\CLKO \\core_rst\n", rtlil)
    lpf = files["top.lpf"]
    for site in ("M1", "L4", "G2", "B2"):  # uart rx/tx, clk25, LED 0
        assert f'SITE "{site}"' in lpf, site
    assert re.search(r"FREQUENCY NET \S+ 125000000\.0 HZ", lpf), lpf


def test_ident_over_the_uart_in_amaranth_sim():
    """Send IDENT through the harness's host UART; the reply (15 bytes over TX) names the config."""
    config = tiny_config()
    harness = board_sim_harness("icebreaker", config, divisor=4, link=RawLink)
    assert isinstance(harness, BoardSimHarness) and set(harness.signature.members) == {"i", "o", "leds"}
    request = request_bytes(Ident(), config)
    got = []

    async def host(ctx):
        for byte in request:
            ctx.set(harness.i.valid, 1)
            ctx.set(harness.i.payload, byte)
            await ctx.tick().until(harness.i.ready)
        ctx.set(harness.i.valid, 0)

    async def receiver(ctx):
        ctx.set(harness.o.ready, 1)
        for _ in range(40 * 40):
            _, _, valid, payload = await ctx.tick().sample(harness.o.valid, harness.o.payload)
            if valid:
                got.append(payload)
                if len(got) == reply_length(Ident(), config):
                    break
        assert ctx.get(harness.leds) >> 3 == 0  # no UART error

    sim = Simulator(harness)
    sim.add_clock(1e-8)
    sim.add_testbench(host)
    sim.add_testbench(receiver)
    sim.run()
    info = parse_reply(Ident(), config, bytes(got))
    assert (info.config_id, info.rows, info.cols) == (config.config_id(), 2, 2)


def test_boards_are_described_consistently():
    for name, board in BOARDS.items():
        platform = board.platform()
        assert board.name == name and board.clock_hz in (12_000_000, 25_000_000)
        for _role, resource, number in board.leds:
            platform.lookup(resource, number)
        platform.lookup("uart", 0)
