# amaranth: UnusedElaboratable=no
"""Run the QAddLanes cocotb bench (``bench_qadd.py``) on Verilator.

The design is converted to Verilog, built by ``accel.sim.verilator.build`` (cached) and
checked against ``numerics.qlinear_add_by_recipe`` and the onnxruntime-exact
``numerics.qlinear_add``, each layer's table written through the ``table`` port first:
all 65,536 (a, b) pairs for several layers (a recipe multiplying ``b``, ties to even, a
fused ReLU, int8, int8 after the QDQ s8->u8 rewrite, ORT's operand swap), then targeted
and random layers with per-row clamps and idle cycles. With fewer lanes than bytes
(``qadd_lanes``), fewer exhaustive layers and the random rows, a row every
``rows / qadd_lanes`` cycles. ``ACCEL_SEED`` picks the random seed (default 1); the test
prints it and the bench's measurements.
"""

import json
import os
import re
from pathlib import Path

import pytest

from accel import isa
from accel.config import HardwareConfig, preset
from accel.hdl.qadd import QAddLanes
from accel.sim import verilator

HERE = Path(__file__).parent
SEED = int(os.environ.get("ACCEL_SEED", "1"))
TAG_WIDTH = 18


@pytest.mark.parametrize("lanes, exhaustive, random_rows", [(4, 6, 2000), (2, 1, 1000), (1, 1, 500)])
def test_qadd_bench(sim_cache_root, live_output, lanes, exhaustive, random_rows):
    config = HardwareConfig.from_dict({**preset("sim-small").to_dict(), "qadd_lanes": lanes})
    spacing = config.rows // lanes
    with live_output():
        handle = verilator.build(QAddLanes(config, tag_width=TAG_WIDTH),
                                 f"datapath_qadd_{config.rows}" + (f"_lanes{lanes}" if spacing > 1 else ""),
                                 cache_root=sim_cache_root)
    env = {"ACCEL_CONFIG": json.dumps(config.to_dict()), "ACCEL_TAG_WIDTH": str(TAG_WIDTH),
           "QADD_EXHAUSTIVE_LAYERS": str(exhaustive), "QADD_RANDOM_ROWS": str(random_rows)}
    result = verilator.run(handle, HERE / "bench_qadd.py", seed=SEED, extra_env=env)
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == ["test_exhaustive_layers",
                                              "test_edge_and_random_layers"]
    assert all(t.passed for t in result.tests)
    lines = re.findall(r"MEASURE (.*)", result.log_file.read_text())
    fields = [dict(re.findall(r"(\w+)=([\d.]+)", line)) for line in lines]
    assert len(fields) == 2
    exhaustive_run, random_run = fields
    assert int(exhaustive_run["cases"]) == exhaustive * 65536
    assert int(exhaustive_run["table_writes"]) == exhaustive * isa.ADD_TABLE_WORDS
    assert int(random_run["cases"]) >= random_rows * config.rows
    assert int(random_run["table_writes"]) >= 20 * isa.ADD_TABLE_WORDS
    for run in fields:
        assert int(run["rows"]) * config.rows == int(run["cases"])
        assert int(run["latency"]) == 5 + spacing
    for line in lines:
        print(line)
