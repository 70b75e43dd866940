# amaranth: UnusedElaboratable=no
"""Run the QAddLanes cocotb bench (``bench_qadd.py``) on Verilator.

The design is converted to Verilog, built by ``accel.sim.verilator.build`` (cached) and
checked against ``numerics.qlinear_add_integer``: all 65,536 (a, b) pairs for several
layers (uint8, int8, int8 after the QDQ s8->u8 rewrite), then targeted and random layers
changing from row to row. ``ACCEL_SEED`` picks the random seed (default 1); the test
prints it and the bench's measurements.
"""

import json
import os
import re
from pathlib import Path

from accel.config import preset
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


def test_qadd_bench(sim_cache_root, live_output):
    config = preset("sim-small")
    with live_output():
        handle = verilator.build(QAddLanes(config, tag_width=TAG_WIDTH),
                                 f"datapath_qadd_{config.rows}", cache_root=sim_cache_root,
                                 extra_args=BUILD_ARGS)
    env = {"ACCEL_CONFIG": json.dumps(config.to_dict()), "ACCEL_TAG_WIDTH": str(TAG_WIDTH),
           "QADD_EXHAUSTIVE_LAYERS": str(EXHAUSTIVE_LAYERS), "QADD_RANDOM_ROWS": "2000"}
    result = verilator.run(handle, HERE / "bench_qadd.py", seed=SEED, extra_env=env)
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == ["test_exhaustive_layers",
                                              "test_edge_and_random_layers"]
    assert all(t.passed for t in result.tests)
    lines = re.findall(r"MEASURE (.*)", result.log_file.read_text())
    cases = [int(n) for n in re.findall(r"cases=(\d+)", " ".join(lines))]
    assert len(cases) == 2 and cases[0] == EXHAUSTIVE_LAYERS * 65536 and cases[1] >= 8000
    assert all("latency=22 " in line for line in lines)
    for line in lines:
        print(line)
