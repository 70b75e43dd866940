# amaranth: UnusedElaboratable=no
"""Run the QAddLanes cocotb bench (``bench_qadd.py``) on Verilator.

The design is converted to Verilog, built by ``accel.sim.verilator.build`` (cached) and
checked against ``numerics.qlinear_add_integer``: all 65,536 (a, b) pairs for several
layers (uint8, int8, int8 after the QDQ s8->u8 rewrite), then targeted and random layers
changing from row to row; with fewer lanes than bytes (``qadd_lanes``), one exhaustive
layer and the random rows, a row every ``rows / qadd_lanes`` cycles. ``ACCEL_SEED`` picks the random seed (default 1); the test
prints it and the bench's measurements.
"""

import json
import os
import re
from pathlib import Path

import pytest

from accel.config import HardwareConfig, preset
from accel.hdl.qadd import QAddLanes
from accel.sim import verilator

HERE = Path(__file__).parent
SEED = int(os.environ.get("ACCEL_SEED", "1"))
TAG_WIDTH = 18
EXHAUSTIVE_LAYERS = 4
# The design's C++ model is large (two FMA8 datapaths per lane); at the default -Os the
# compiler needs about 3 minutes for it, at -O0 about 15 s. The bench's time goes to
# Python per cycle anyway.
BUILD_ARGS = ("-CFLAGS", "-O0")


@pytest.mark.parametrize("lanes", [4, 2])
def test_qadd_bench(sim_cache_root, live_output, lanes):
    config = HardwareConfig.from_dict({**preset("sim-small").to_dict(), "qadd_lanes": lanes})
    spacing = config.rows // lanes
    exhaustive = EXHAUSTIVE_LAYERS if spacing == 1 else 1
    with live_output():
        handle = verilator.build(QAddLanes(config, tag_width=TAG_WIDTH),
                                 f"datapath_qadd_{config.rows}" + (f"_lanes{lanes}" if spacing > 1 else ""),
                                 cache_root=sim_cache_root, extra_args=BUILD_ARGS)
    env = {"ACCEL_CONFIG": json.dumps(config.to_dict()), "ACCEL_TAG_WIDTH": str(TAG_WIDTH),
           "QADD_EXHAUSTIVE_LAYERS": str(exhaustive), "QADD_RANDOM_ROWS": "2000"}
    result = verilator.run(handle, HERE / "bench_qadd.py", seed=SEED, extra_env=env)
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == ["test_exhaustive_layers",
                                              "test_edge_and_random_layers"]
    assert all(t.passed for t in result.tests)
    lines = re.findall(r"MEASURE (.*)", result.log_file.read_text())
    cases = [int(n) for n in re.findall(r"cases=(\d+)", " ".join(lines))]
    assert len(cases) == 2 and cases[0] == exhaustive * 65536 and cases[1] >= 8000
    assert all(f"latency={21 + spacing} " in line for line in lines)
    for line in lines:
        print(line)
