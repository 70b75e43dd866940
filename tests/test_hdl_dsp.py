# amaranth: UnusedElaboratable=no
"""Test the DSP factory: family selection, the generic bank's products, and the primitives chosen.

The primitives' behaviour is checked in Verilator (``tests/sim/test_dsp.py``); here the
generic bank runs in Amaranth's simulator, and the Verilog of the board builds is checked
for the expected number and configuration of DSP blocks.
"""

import re

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Instance, signed
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.icestick import ICEStickPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from accel.config import preset
from accel.hdl.controller import TAG_WIDTH
from accel.hdl.core import AcceleratorCore
from accel.hdl.dsp import ProductBank, dsp_blocks, dsp_family
from accel.hdl.requant import Requantizer
from accel.hdl.systolic import SystolicArray

from .test_hdl_datapath import SEED, simulate


def instances(component, platform=None):
    """Return the Verilog of ``component`` elaborated for ``platform``."""
    return verilog.convert(component, platform=platform, emit_src=False)


def primitives(component, platform=None):
    """Return the type names of the instances in ``component``'s elaborated hierarchy."""
    found = []

    def walk(fragment):
        if isinstance(fragment, Instance):
            found.append(fragment.type)
        for sub, _name, _src in fragment.subfragments:
            walk(sub)

    walk(Fragment.get(component, platform))
    return found


def test_family_follows_the_platform():
    assert dsp_family(None) is None
    assert dsp_family(ICEBreakerPlatform()) == "ice40"
    assert dsp_family(ULX3S_85F_Platform()) == "ecp5"
    assert dsp_family(ICEStickPlatform()) is None  # iCE40 HX: no DSP blocks


def test_generic_bank_registers_exact_products():
    rng = np.random.default_rng([SEED, 7])
    print(f"seed={SEED}")
    cases = [(a, b) for a in (-256, 255, -1, 0) for b in (-256, 255, -1, 0)]
    cases += [tuple(int(v) for v in rng.integers(-256, 256, 2)) for _ in range(300)]

    def make():
        bank = ProductBank(2, signed(9), signed(9))

        async def testbench(ctx):
            previous = None
            for a, b in cases:
                ctx.set(bank.a, [a, -a if a > -256 else 0])
                ctx.set(bank.b, [b, b])
                await ctx.tick()
                got = [ctx.get(bank.p[i]) for i in range(2)]
                assert got == [a * b, (-a if a > -256 else 0) * b], f"seed {SEED}: a={a} b={b}: {got}"
                previous = got
            assert previous is not None

        return bank, [testbench]

    simulate(make)


def test_ice40_packs_two_products_per_sb_mac16():
    text = instances(ProductBank(5, signed(9), signed(8), family="ice40"))
    assert len(re.findall(r"\bSB_MAC16\b", text)) == 3
    for param in ("MODE_8x8", "B_SIGNED", "TOPOUTPUT_SELECT", "BOTOUTPUT_SELECT"):
        assert re.search(rf"\.{param}\(\d*'?[dh]?1\)", text), param
    assert ProductBank(2, signed(9), signed(9), family="ice40").primitive is None  # 9-bit weights: generic


def test_ecp5_uses_one_registered_mult18x18d_per_product():
    text = instances(ProductBank(3, signed(9), signed(9), family="ecp5"))
    assert len(re.findall(r"\bMULT18X18D\b", text)) == 3
    assert len(re.findall(r'\.REG_OUTPUT_CLK\("CLK0"\)', text)) == 3


@pytest.mark.parametrize("name,platform,primitive,count", [
    ("icebreaker", ICEBreakerPlatform, "SB_MAC16", 8),
    ("ulx3s-85f", ULX3S_85F_Platform, "MULT18X18D", 256),  # the array alone: no budget
    ("sim-small", None, None, 0),
])
def test_presets_use_the_chips_dsp_blocks(name, platform, primitive, count):
    found = primitives(SystolicArray(preset(name), tag_width=TAG_WIDTH), platform and platform())
    assert found == [primitive] * count


@pytest.mark.parametrize("name,platform,expected", [
    ("icebreaker", ICEBreakerPlatform, {"SB_MAC16": 8, "SB_SPRAM256KA": 2}),  # WBUF: 16K x 32 bits
    ("ulx3s-85f", ULX3S_85F_Platform, {"MULT18X18D": 156}),  # every block of the LFE5U-85F
    ("ulx3s-85f-8x8", ULX3S_85F_Platform, {"MULT18X18D": 16}),  # the requantizer's; LUT PEs
    ("sim-small", None, {}),
])
def test_core_primitives_per_preset(name, platform, expected):
    found = primitives(AcceleratorCore(preset(name)), platform and platform())
    assert {kind: found.count(kind) for kind in set(found)} == expected


def test_dsp_budget_splits_between_requantizer_and_array():
    platform = ULX3S_85F_Platform()
    assert dsp_blocks(platform) == 156 and dsp_blocks(ICEBreakerPlatform()) == 8 and dsp_blocks(None) is None
    config = preset("ulx3s-85f")
    wanted = Requantizer.dsp_blocks_for(config, "ecp5")
    assert wanted == 4 * config.requant_lanes
    found = primitives(SystolicArray(config, tag_width=TAG_WIDTH, dsp_blocks=156 - wanted), platform)
    assert len(found) == 156 - wanted
    assert len(primitives(Requantizer(config, tag_width=TAG_WIDTH, dsp_blocks=wanted), platform)) == wanted
    assert Requantizer.dsp_blocks_for(preset("icebreaker"), "ice40") == 0  # LUT multipliers on iCE40


@pytest.mark.parametrize("pe_blocks", [0, 40, 1000])
def test_pe_dsp_blocks_caps_the_array_and_leaves_the_requantizer_its_blocks(pe_blocks):
    import dataclasses
    config = dataclasses.replace(preset("ulx3s-85f"), rows=8, cols=8, pe_dsp_blocks=pe_blocks)
    found = primitives(AcceleratorCore(config), ULX3S_85F_Platform())
    rq = Requantizer.dsp_blocks_for(config, "ecp5")
    assert found.count("MULT18X18D") == rq + min(pe_blocks, 64)  # 64 PEs
    assert config.config_id() == dataclasses.replace(config, pe_dsp_blocks=None).config_id()
    with pytest.raises(ValueError, match="pe_dsp_blocks must be a non-negative integer or None, not -1"):
        dataclasses.replace(config, pe_dsp_blocks=-1)


def test_bank_beyond_its_blocks_uses_luts():
    assert len(primitives(ProductBank(5, signed(9), signed(8), family="ice40", max_blocks=1))) == 1
    bank = ProductBank(3, signed(9), signed(9), family="ecp5", max_blocks=2)
    assert bank.blocks == 2 and len(primitives(bank)) == 2
    assert ProductBank(3, signed(9), signed(9), family="ecp5", max_blocks=0).blocks == 0


def test_bank_rejects_bad_arguments():
    with pytest.raises(ValueError, match="count must be a positive integer"):
        ProductBank(0, signed(9), signed(8))
    with pytest.raises(ValueError, match="a_shape must be signed"):
        ProductBank(1, 9, signed(8))
    with pytest.raises(ValueError, match="family must be one of"):
        ProductBank(1, signed(9), signed(8), family="gowin")
    with pytest.raises(ValueError, match="MULT18X18D operands must fit 18 bits"):
        ProductBank(1, signed(24), signed(8), family="ecp5")
    with pytest.raises(ValueError, match="max_blocks must be a non-negative integer"):
        ProductBank(1, signed(9), signed(8), max_blocks=-1)
