# amaranth: UnusedElaboratable=no
"""Run the datapath's cocotb benches on Verilator: PE, systolic array, requantizer.

Each design is converted to Verilog, built by ``accel.sim.verilator.build`` (cached) and
checked by a bench in this directory (``bench_pe.py``, ``bench_systolic.py``,
``bench_requant.py``). ``ACCEL_SEED`` picks the random seed (default 1); every test
prints it, and the benches log the measurements that these tests print (latency, idle
cycles between tiles, simulation speed).
"""

import json
import os
import re
from pathlib import Path

import pytest

from accel.config import BufferSpec, HardwareConfig, preset
from accel.hdl.pe import ProcessingElement
from accel.hdl.requant import Requantizer
from accel.hdl.systolic import SystolicArray
from accel.sim import verilator

HERE = Path(__file__).parent
SEED = int(os.environ.get("ACCEL_SEED", "1"))
TAG_WIDTH = 18

CONFIG_3X3 = HardwareConfig(
    name="test-3x3", rows=3, cols=3, imem=BufferSpec(64), abuf=BufferSpec(256),
    wbuf=BufferSpec(256), accbuf=BufferSpec(64), pbuf=BufferSpec(64),
    acc_width=24, weight_bits=8)




def build(component, name, sim_cache_root, live_output):
    with live_output():
        return verilator.build(component, name, cache_root=sim_cache_root)


def design_env(config):
    return {"ACCEL_CONFIG": json.dumps(config.to_dict()), "ACCEL_TAG_WIDTH": str(TAG_WIDTH)}


def measurements(result):
    """Return the ``MEASURE`` lines the bench logged."""
    return re.findall(r"MEASURE (.*)", result.log_file.read_text())


def test_pe_bench(sim_cache_root, live_output):
    handle = build(ProcessingElement(weight_bits=9, acc_width=32), "datapath_pe",
                   sim_cache_root, live_output)
    result = verilator.run(handle, HERE / "bench_pe.py", seed=SEED,
                           extra_env={"PE_WEIGHT_BITS": "9", "PE_ACC_WIDTH": "32"})
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == [
        "test_extreme_products", "test_load_and_swap_on_one_edge", "test_random_cycles"]
    assert all(t.passed for t in result.tests)


@pytest.mark.parametrize("config", [preset("sim-small"), CONFIG_3X3], ids=lambda c: c.name)
def test_systolic_array_bench(config, sim_cache_root, live_output):
    array = SystolicArray(config, tag_width=TAG_WIDTH)
    name = f"datapath_systolic_{config.rows}x{config.cols}"
    handle = build(array, name, sim_cache_root, live_output)
    result = verilator.run(handle, HERE / "bench_systolic.py", seed=SEED,
                           extra_env=design_env(config))
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == [
        "test_random_idle_cycles", "test_back_to_back_tiles", "test_long_tiles_have_no_bubbles"]
    assert all(t.passed for t in result.tests)
    lines = measurements(result)
    assert len(lines) == 4
    assert all(f"latency={config.rows + config.cols + 1} " in line
               for line in lines if "latency=" in line)
    for line in lines:
        print(f"{config.name}: {line}")


def test_requantizer_bench(sim_cache_root, live_output):
    config = preset("sim-small")
    handle = build(Requantizer(config, tag_width=TAG_WIDTH), "datapath_requant_4",
                   sim_cache_root, live_output)
    result = verilator.run(handle, HERE / "bench_requant.py", seed=SEED,
                           extra_env={**design_env(config), "REQUANT_RANDOM_ROWS": "3000"})
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == ["test_edge_cases", "test_random_rows"]
    assert all(t.passed for t in result.tests)
    lines = measurements(result)
    cases = [int(n) for n in re.findall(r"cases=(\d+)", " ".join(lines))]
    assert len(cases) == 2 and cases[1] >= 10_000
    for line in lines:
        print(line)
