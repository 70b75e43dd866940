"""Derive a board's core clock from its oscillator: PLL settings computed in Python, and the PLL primitives.

:func:`pll_settings` searches the divider space of the family's PLL the way ``icepll``
(iCE40 ``SB_PLL40``) and ``ecppll`` (ECP5 ``EHXPLLL``) do and returns the closest
achievable output frequency; :class:`Ice40Pll` and :class:`Ecp5Pll` instantiate the
primitive with those settings. When the requested clock equals the oscillator, no PLL is
used (``PllSettings.bypass``).
"""

from dataclasses import dataclass, field

from amaranth.hdl import Const, Instance, Module
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from ..errors import BoardError

__all__ = ["MAX_CLOCK_ERROR", "PllSettings", "pll_settings", "ice40_pll_settings", "ecp5_pll_settings", "Ice40Pll", "Ecp5Pll"]

#: Largest relative clock error accepted from a PLL search (the report shows the achieved clock).
MAX_CLOCK_ERROR = 0.01


@dataclass(frozen=True)
class PllSettings:
    """Hold one PLL solution: the family, input and achieved output frequency, and the primitive's dividers."""

    family: str
    f_in_hz: int
    f_out_hz: float
    params: dict = field(default_factory=dict)

    @property
    def bypass(self) -> bool:
        """Return whether the oscillator drives the core directly (no PLL)."""
        return not self.params

    def describe(self) -> str:
        if self.bypass:
            return f"no PLL: {self.f_in_hz / 1e6:g} MHz oscillator"
        dividers = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.f_in_hz / 1e6:g} MHz -> {self.f_out_hz / 1e6:.4f} MHz ({dividers})"


def ice40_pll_settings(f_in_hz: int, f_out_hz: int) -> PllSettings:
    """Return the ``SB_PLL40`` settings (SIMPLE feedback) whose output is closest to ``f_out_hz``.

    The search is ``icepll``'s: PFD 10-133 MHz, VCO 533-1066 MHz, DIVR 0-15, DIVF 0-127,
    DIVQ 1-6, the first of equally close outputs. The result is not checked against the
    request (:func:`pll_settings` does that).
    """
    best = None
    for divr in range(16):
        f_pfd = f_in_hz / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f_out = f_vco / (1 << divq)
                error = abs(f_out - f_out_hz)
                if best is None or error < best[0]:
                    best = (error, f_out, divr, divf, divq, f_pfd)
    if best is None:
        raise BoardError(f"no iCE40 PLL setting runs from a {f_in_hz / 1e6:g} MHz input (10-133 MHz)")
    _, f_out, divr, divf, divq, f_pfd = best
    filter_range = next(n for n, limit in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, float("inf")), 1)
                        if f_pfd < limit)
    return PllSettings("ice40", f_in_hz, f_out, {"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                                 "FILTER_RANGE": filter_range})


def ecp5_pll_settings(f_in_hz: int, f_out_hz: int) -> PllSettings:
    """Return the ``EHXPLLL`` settings (CLKOP feedback) whose CLKOP is closest to ``f_out_hz``.

    The limits and the choice are those of ``ecppll``: PFD 3.125-400 MHz, VCO 400-800 MHz,
    output 10-400 MHz, CLKI_DIV 1-128, CLKFB_DIV 1-80, CLKOP_DIV 1-128; among equally close
    outputs, the VCO nearest 600 MHz. CLKOP is shifted by half a period (CPHASE = DIV / 2),
    as ecppll does. The result is not checked against the request (:func:`pll_settings` does that).
    """
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in_hz / clki_div
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            f_out = f_pfd * clkfb_div
            if not 10e6 <= f_out <= 400e6:
                continue
            error = abs(f_out - f_out_hz)
            for clkop_div in range(1, 129):
                f_vco = f_out * clkop_div
                if not 400e6 <= f_vco <= 800e6:
                    continue
                # Like ecppll: the smallest error, then the VCO closest to 600 MHz.
                if best is None or (error, abs(f_vco - 600e6)) < (best[0], abs(best[5] - 600e6)):
                    best = (error, f_out, clki_div, clkfb_div, clkop_div, f_vco)
    if best is None:
        raise BoardError(f"no ECP5 PLL setting reaches {f_out_hz / 1e6:g} MHz from {f_in_hz / 1e6:g} MHz "
                         f"(outputs 10-400 MHz)")
    _, f_out, clki_div, clkfb_div, clkop_div, _ = best
    return PllSettings("ecp5", f_in_hz, f_out, {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div,
                                                "CLKOP_DIV": clkop_div})


def pll_settings(family: str, f_in_hz: int, f_out_hz: int) -> PllSettings:
    """Return the PLL settings of ``family`` (``ice40`` or ``ecp5``) for ``f_in_hz`` -> ``f_out_hz``.

    Raises :class:`BoardError` when the closest output is more than :data:`MAX_CLOCK_ERROR` off.
    """
    if f_in_hz == f_out_hz:
        return PllSettings(family, f_in_hz, float(f_in_hz))
    solvers = {"ice40": ice40_pll_settings, "ecp5": ecp5_pll_settings}
    if family not in solvers:
        raise BoardError(f"no PLL model for FPGA family {family!r}; supported: {', '.join(solvers)}")
    settings = solvers[family](f_in_hz, f_out_hz)
    error = settings.f_out_hz / f_out_hz - 1
    if abs(error) > MAX_CLOCK_ERROR:
        raise BoardError(f"the closest {family} PLL output to {f_out_hz / 1e6:g} MHz is "
                         f"{settings.f_out_hz / 1e6:.4f} MHz ({error:+.1%}); pick a reachable clock_hz")
    return settings


class Ice40Pll(wiring.Component):
    """Run an iCE40 ``SB_PLL40_PAD`` on the oscillator's package pin (or pass the pin through when bypassed).

    Members
    -------
    clk_out : ``Out(1)``
        The generated clock (global buffer).
    locked : ``Out(1)``
        The PLL has locked (always 1 when bypassed).
    """

    clk_out: Out(1)
    locked: Out(1)

    def __init__(self, settings: PllSettings, pin):
        if settings.family != "ice40":
            raise ValueError(f"settings must be for the ice40 family, not {settings.family!r}")
        self._settings = settings
        self._pin = pin
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        s = self._settings
        if s.bypass:
            m.submodules.clk_buffer = buffer = io.Buffer("i", self._pin)
            m.d.comb += [self.clk_out.eq(buffer.i), self.locked.eq(1)]
            return m
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=Const(s.params["DIVR"], 4),
            p_DIVF=Const(s.params["DIVF"], 7),
            p_DIVQ=Const(s.params["DIVQ"], 3),
            p_FILTER_RANGE=Const(s.params["FILTER_RANGE"], 3),
            io_PACKAGEPIN=self._pin.io,
            i_RESETB=Const(1),
            i_BYPASS=Const(0),
            o_PLLOUTGLOBAL=self.clk_out,
            o_LOCK=self.locked,
        )
        return m


class Ecp5Pll(wiring.Component):
    """Run an ECP5 ``EHXPLLL`` from ``clk_in`` with CLKOP feedback (or pass ``clk_in`` through when bypassed).

    Members
    -------
    clk_in : ``In(1)``
        The oscillator.
    clk_out : ``Out(1)``
        The generated clock (CLKOP).
    locked : ``Out(1)``
        The PLL has locked (always 1 when bypassed).
    """

    clk_in: In(1)
    clk_out: Out(1)
    locked: Out(1)

    def __init__(self, settings: PllSettings):
        if settings.family != "ecp5":
            raise ValueError(f"settings must be for the ecp5 family, not {settings.family!r}")
        self._settings = settings
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        s = self._settings
        if s.bypass:
            m.d.comb += [self.clk_out.eq(self.clk_in), self.locked.eq(1)]
            return m
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{s.f_in_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{s.f_out_hz / 1e6:.6g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=s.params["CLKI_DIV"], p_CLKFB_DIV=s.params["CLKFB_DIV"],
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=s.params["CLKOP_DIV"],
            p_CLKOP_CPHASE=s.params["CLKOP_DIV"] // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_RST=Const(0), i_STDBY=Const(0), i_CLKI=self.clk_in, i_CLKFB=self.clk_out,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1), i_PHASESTEP=Const(1),
            i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
            o_CLKOP=self.clk_out, o_LOCK=self.locked,
        )
        return m
