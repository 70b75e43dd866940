# amaranth: UnusedElaboratable=no
"""Test AcceleratorCore end to end: host link, memories, MATMUL programs and timing.

Three ways in, one reference (``core_model.CoreModel``, written from ``docs/isa.md``):

* the ``rtl`` engine (:class:`accel.sim.rtl.RtlTarget`): one long-lived Verilator
  simulation of the ``sim-small`` core shared by this module's tests;
* a cocotb bench (``bench_core.py``) through ``accel.sim.verilator.run``, with random idle
  cycles and backpressure on both byte streams;
* Amaranth's simulator, on a tiny config, for a quick check without Verilator.

``ACCEL_SEED`` picks the random seed (default 1); tests print it. The GEMM tests print
cycles and utilization (MACs / (rows * cols * cycles)).
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

import accel
from accel import isa
from accel.config import HW_REVISION, BufferSpec, HardwareConfig, preset
from accel.errors import DeviceError
from accel.hdl.core import AcceleratorCore
from accel.hdl.requant import Requantizer
from accel.hdl.systolic import SystolicArray
from accel.runtime import Ident, Read, Run, Status, Write, parse_reply, reply_length, request_bytes
from accel.sim import verilator
from accel.sim.rtl import RtlDevice, RtlTarget, build_core

from .core_model import CoreModel, place_gemm

HERE = Path(__file__).parent
SEED = int(os.environ.get("ACCEL_SEED", "1"))
CONFIG = preset("sim-small")
R, C = CONFIG.rows, CONFIG.cols

# Measured on the RTL (see test_single_matmul_cycles): a lone MATMUL followed by HALT takes
# count + (k_tiles - 1) * max(count, R + 1) + OVERHEAD cycles from RUN to HALT.
OVERHEAD = (SystolicArray(CONFIG).latency + Requantizer(CONFIG).latency  # results drain
            + R + 1             # first weight tile: WBUF read latency, then rows rows
            + 5)                # fetch, decode, dispatch, input read latency, HALT


@pytest.fixture(scope="module")
def core_build(sim_cache_root, live_output):
    with live_output():
        return build_core(CONFIG, sim_cache_root)


@pytest.fixture(scope="module")
def target(core_build, sim_cache_root):
    with RtlTarget(CONFIG, cache_root=sim_cache_root, timeout=300) as t:
        yield t


def run_program(target, gemms, program, extra_reads=()):
    """Load the GEMMs and the program into the target and a fresh model, run both; return (results, model, cycles)."""
    model = CoreModel(CONFIG)
    writes = [Write(mem, addr, tuple(words)) for g in gemms for mem, addr, words in g.writes]
    writes.append(Write(isa.Memory.IMEM, 0, tuple(program)))
    for op in writes:
        model.write(op.mem, op.addr, op.words)
    model.run()
    reads = [Read(isa.Memory.ABUF, g.y_addr, g.y_words) for g in gemms]
    reads += [Read(isa.Memory.ACCBUF, g.acc_addr, g.count) for g in gemms if g.k_tiles > 1]
    reads += list(extra_reads)
    target.execute(writes)
    results = target.execute([Run(), Status()] + reads)
    status, cycles = results[1]
    assert status == 0b10, f"STATUS after RUN: {status:#04x}, expected done"
    for op, got in zip(reads, results[2:]):
        expected = model.read(op.mem, op.addr, op.count)
        bad = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
        assert not bad, (f"seed {SEED}: {op.mem.name} word {op.addr + bad[0]} (of {len(bad)} wrong): "
                         f"got {got[bad[0]]:#x}, expected {expected[bad[0]]:#x}")
    return results, model, cycles


# -- host link ---------------------------------------------------------------------------


def test_bench_with_random_stalls(core_build):
    result = verilator.run(core_build, HERE / "bench_core.py", seed=SEED,
                           extra_env={"ACCEL_CONFIG": json.dumps(CONFIG.to_dict())})
    print(f"seed={SEED}")
    assert [t.name for t in result.tests] == [
        "test_ident_and_unknown_commands", "test_stream_pauses_and_resumes", "test_memory_round_trips",
        "test_matmul_program"]


def test_ident_reports_the_config(target):
    info = target.execute([Ident()])[0]
    assert (info.config_id, info.hw_revision, info.rows, info.cols) == (CONFIG.config_id(), HW_REVISION, R, C)


@pytest.mark.parametrize("mem", list(isa.Memory), ids=lambda m: m.name)
def test_write_read_round_trip(target, mem):
    rng = np.random.default_rng([SEED, mem.value])
    bits = {isa.Memory.IMEM: isa.INSN_BITS, isa.Memory.WBUF: CONFIG.wbuf_word_bits,  # WBUF: 36 bits
            isa.Memory.ABUF: CONFIG.abuf_word_bits, isa.Memory.PBUF: isa.PARAM_BITS,
            isa.Memory.ACCBUF: CONFIG.acc_word_bits}[mem]
    nbytes = CONFIG.word_bytes(mem.config_field)
    depth = getattr(CONFIG, mem.config_field).depth
    # Random bytes fill every bit of the host word; the bits past the memory's width read back as 0.
    words = [int.from_bytes(rng.bytes(nbytes), "little") for _ in range(37)]
    addr = int(rng.integers(0, depth - 37))
    got = target.execute([Write(mem, addr, tuple(words)), Read(mem, addr, 37), Read(mem, addr + 10, 1)])
    print(f"seed={SEED} {mem.name}: {bits} bits in {nbytes} bytes, {target.last_cycles} cycles")
    assert got[1] == [w & ((1 << bits) - 1) for w in words]
    assert got[2] == [words[10] & ((1 << bits) - 1)]


def test_unknown_command_gets_nack(target):
    for command in (0x00, 0x07, 0x42, 0xFF):
        assert target.transact(bytes([command]), 1) == bytes([isa.NACK])
    assert target.execute([Ident()])[0].config_id == CONFIG.config_id()


def test_status_before_and_after_run(target):
    target.execute([Write(isa.Memory.IMEM, 0, (isa.encode(opcode=isa.Opcode.NOP), isa.halt()))])
    (status, cycles), _, (status2, cycles2) = target.execute([Status(), Run(), Status()])
    assert status & 1 == 0
    assert status2 == 0b10 and cycles2 == 5  # NOP 2 + HALT 3


# -- MATMUL ------------------------------------------------------------------------------

CASES = {
    # name: (M, K, N, x_signed, y_signed, clamp)
    "ragged-k-n": (7, 13, 10, True, True, None),
    "count-1-k-tiles-6": (1, 24, 5, False, True, None),
    "count-2": (2, 9, 4, True, False, None),
    "count-5": (5, 12, 4, True, True, None),
    "count-300": (300, 10, 6, False, False, None),
    "uint8-clamp": (9, 16, 12, False, False, (10, 200)),
    "int8-clamp": (6, 7, 9, True, True, (-5, 90)),
}


@pytest.mark.parametrize("case", CASES)
def test_matmul_bit_exact(target, case):
    m, k, n, x_signed, y_signed, clamp = CASES[case]
    rng = np.random.default_rng([SEED, len(case), m, k, n])
    g = place_gemm(CONFIG, rng, m, k, n, a_addr=50, w_addr=1000, p_addr=100, y_addr=4000, acc_addr=30,
                   x_signed=x_signed, y_signed=y_signed, clamp=clamp)
    _, _, cycles = run_program(target, [g], g.instructions + [isa.halt()])
    print(f"seed={SEED} {case}: {g.count} rows x {g.k_tiles} K tiles x {g.n_tiles} N tiles in {cycles} cycles")


def test_layers_with_sync(target):
    """Chain three GEMMs (each reads the previous one's output after a SYNC), mixed signedness."""
    rng = np.random.default_rng([SEED, 3])
    first = place_gemm(CONFIG, rng, 6, 19, 10, a_addr=0, w_addr=0, p_addr=0, y_addr=200,
                       x_signed=True, y_signed=False)
    second = place_gemm(CONFIG, rng, 6, 10, 7, a_addr=200, w_addr=500, p_addr=64, y_addr=300, acc_addr=100,
                        x_signed=False, y_signed=True, clamp=(-128, 100), write_x=False)
    third = place_gemm(CONFIG, rng, 6, 7, 5, a_addr=300, w_addr=900, p_addr=128, y_addr=400, acc_addr=200,
                       x_signed=True, y_signed=True, write_x=False)
    program = (first.instructions + [isa.sync()] + second.instructions + [isa.sync()]
               + third.instructions + [isa.halt()])
    _, _, cycles = run_program(target, [first, second, third], program)
    print(f"seed={SEED}: {len(program)} instructions in {cycles} cycles")


def test_accumulators_shared_by_back_to_back_instructions(target):
    """Let many short MATMULs reuse one ACC region with no SYNC between them (read-after-write)."""
    rng = np.random.default_rng([SEED, 4])
    gemms = [place_gemm(CONFIG, rng, count, 4 * k_tiles, 3, a_addr=20 * i, w_addr=64 * i, p_addr=8 * i,
                        y_addr=2000 + 10 * i, acc_addr=7, x_signed=bool(i % 2), y_signed=bool(i % 3))
             for i, (count, k_tiles) in enumerate([(1, 3), (2, 2), (1, 1), (3, 4), (1, 5), (6, 2)])]
    program = [insn for g in gemms for insn in g.instructions] + [isa.halt()]
    _, _, cycles = run_program(target, gemms, program)
    print(f"seed={SEED}: {len(program)} instructions in {cycles} cycles")


# -- timing --------------------------------------------------------------------------------


def _matmul(count, k_tiles):
    return isa.matmul(x_signed=1, y_signed=1, w_addr=0, a_addr=0, a_stride=k_tiles, count=count, k_tiles=k_tiles,
                      y_addr=8000, y_stride=1, p_addr=0, y_lo=-128, y_hi=127)


def _cycles(target, program):
    target.execute([Write(isa.Memory.IMEM, 0, tuple(program + [isa.halt()])),
                    Write(isa.Memory.PBUF, 0, (isa.param_word(0, 1 << 23, -30),) * C)])
    return target.execute([Run(), Status()])[1][1]


def test_single_matmul_cycles(target):
    assert _cycles(target, []) == 3
    for count in (1, 2, R, R + 1, 8, 64):
        for k_tiles in (1, 2, 5):
            expected = count + (k_tiles - 1) * max(count, R + 1) + OVERHEAD
            assert _cycles(target, [_matmul(count, k_tiles)]) == expected, (count, k_tiles)


def test_back_to_back_matmuls_overlap(target):
    """A following MATMUL costs only its streaming, k_tiles * max(count, rows + 1) cycles, once it is long enough.

    Two instructions can be in flight (two contexts): the third waits until the first has
    written back, which stalls instructions shorter than the drain (about R + C + 13 cycles).
    A SYNC between two MATMULs costs exactly a full drain: the same as two separate runs.
    """
    drain = OVERHEAD - R - 1
    for count, k_tiles in ((1, 1), (1, 3), (5, 4), (8, 3), (20, 1), (64, 2)):
        streaming = k_tiles * max(count, R + 1)
        one = _cycles(target, [_matmul(count, k_tiles)])
        four = _cycles(target, [_matmul(count, k_tiles)] * 4)
        if streaming >= drain:
            assert four - one == 3 * streaming, (count, k_tiles, one, four)
        else:
            assert 3 * streaming <= four - one <= 3 * drain, (count, k_tiles, one, four)
        synced = _cycles(target, [_matmul(count, k_tiles), isa.sync(), _matmul(count, k_tiles)])
        assert synced == 2 * one, (count, k_tiles, one, synced)


@pytest.mark.parametrize("m,k,n", [(64, 64, 64), (128, 128, 128), (256, 128, 128), (128, 256, 256)],
                         ids=lambda v: str(v))
def test_gemm_utilization(target, m, k, n):
    rng = np.random.default_rng([SEED, m, k, n])
    kc, nc = -(-k // R), -(-n // C)
    g = place_gemm(CONFIG, rng, m, k, n, a_addr=0, w_addr=0, p_addr=0, y_addr=m * kc)
    assert m * kc + m * nc <= CONFIG.abuf.depth
    started = time.perf_counter()
    _, _, cycles = run_program(target, [g], g.instructions + [isa.halt()])
    ideal = g.macs / (R * C)
    utilization = ideal / cycles
    print(f"seed={SEED} GEMM {m}x{k}x{n} on {R}x{C}: {cycles} cycles, ideal {ideal:.0f}, "
          f"utilization {utilization:.4f} ({time.perf_counter() - started:.1f} s with the model)")
    assert cycles <= ideal + OVERHEAD + nc * 1  # at most a cycle per instruction beyond streaming
    assert utilization > 0.99


# -- the rtl engine ----------------------------------------------------------------------------


def test_rtl_device_runs_a_model_bit_exact(sim_cache_root):
    from tests.fc_models import qdq_fc_chain

    model = accel.load_model(qdq_fc_chain([20, 17, 9], seed=SEED))
    x = np.random.default_rng(SEED).standard_normal((3, 1, 20)).astype(np.float32)
    expected = accel.open_device("golden").load(model).run(x)
    with accel.open_device("rtl", config="sim-small", cache_root=sim_cache_root) as device:
        assert isinstance(device, RtlDevice) and device.name == "rtl"
        got = device.load(model).run(x)
        print(f"seed={SEED}: STATUS cycles per run {device.last_cycles}")
        assert len(device.last_cycles) == 3 and all(c > 0 for c in device.last_cycles)
    assert np.array_equal(got, expected)


def test_rtl_target_with_random_stalls(core_build, sim_cache_root):
    """Drive the rtl engine's own byte player with random idle cycles and backpressure."""
    rng = np.random.default_rng([SEED, 6])
    with RtlTarget(CONFIG, cache_root=sim_cache_root, idle=0.4, backpressure=0.4, seed=SEED) as target:
        g = place_gemm(CONFIG, rng, 9, 14, 7, a_addr=0, w_addr=0, p_addr=0, y_addr=500, acc_addr=2)
        run_program(target, [g], g.instructions + [isa.halt()])
        words = tuple(int(w) for w in rng.integers(0, 1 << 36, 20))
        assert target.execute([Write(isa.Memory.WBUF, 7, words), Read(isa.Memory.WBUF, 7, 20)])[1] == list(words)


def _gone(pid, wait: float = 15.0):
    """Return whether process ``pid`` has exited (a zombie its parent has not reaped yet counts), within ``wait`` s."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def test_a_hung_core_times_out_with_a_device_error(core_build, sim_cache_root):
    target = RtlTarget(CONFIG, cache_root=sim_cache_root, max_cycles=5_000)
    pid = target.sim_pid
    # IMEM is all NOP after reset: the program never halts.
    with pytest.raises(DeviceError, match="stopped answering: no byte moved for 5000 cycles"):
        target.execute([Run()])
    with pytest.raises(DeviceError, match="unusable"):
        target.execute([Ident()])
    target.close()
    assert _gone(pid)
    assert (target.run_dir / "sim.log").is_file()  # kept for the error message
    shutil.rmtree(target.run_dir)


def test_a_dead_simulator_is_a_device_error(core_build, sim_cache_root):
    target = RtlTarget(CONFIG, cache_root=sim_cache_root, timeout=60)
    os.kill(target.sim_pid, signal.SIGKILL)  # the simulator this test started
    with pytest.raises(DeviceError, match="simulator (closed the connection|exited)"):
        target.execute([Ident()])
    target.close()
    shutil.rmtree(target.run_dir)


def test_close_ends_the_simulator(core_build, sim_cache_root):
    target = RtlTarget(CONFIG, cache_root=sim_cache_root)
    pid, run_dir = target.sim_pid, target.run_dir
    target.close()
    target.close()  # idempotent
    assert _gone(pid)
    assert not run_dir.exists()  # no waves: nothing worth keeping
    with pytest.raises(DeviceError, match="closed"):
        target.execute([Ident()])


def test_waves_record_an_fst(core_build, sim_cache_root, live_output):
    if os.environ.get("WAVES", "").strip().lower() in ("0", "no", "n", "off", "false", "disable"):
        pytest.skip("WAVES=0 in the environment switches waves off")
    with live_output():
        target = RtlTarget(CONFIG, cache_root=sim_cache_root, waves=True)
    assert target.build.waves
    target.execute([Write(isa.Memory.IMEM, 0, (isa.halt(),)), Run()])
    target.close()
    waves = target.run_dir / "dump.fst"
    assert waves.is_file() and waves.stat().st_size > 1000
    shutil.rmtree(target.run_dir)


# -- Amaranth's simulator --------------------------------------------------------------------

TINY = HardwareConfig(name="test-tiny", rows=4, cols=4, imem=BufferSpec(16), abuf=BufferSpec(128),
                      wbuf=BufferSpec(128), accbuf=BufferSpec(16), pbuf=BufferSpec(32))


async def stream_put(ctx, stream, value):
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, value)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def test_core_in_amaranth_sim():
    rng = np.random.default_rng([SEED, 5])
    g = place_gemm(TINY, rng, 5, 9, 6, a_addr=0, w_addr=0, p_addr=0, y_addr=64, acc_addr=3,
                   x_signed=True, y_signed=False)
    program = g.instructions + [isa.halt()]
    ops = [Write(mem, addr, tuple(words)) for mem, addr, words in g.writes]
    ops += [Write(isa.Memory.IMEM, 0, tuple(program)), Ident(), Run(), Status(),
            Read(isa.Memory.ABUF, g.y_addr, g.y_words), Read(isa.Memory.ACCBUF, 3, 5)]
    model = CoreModel(TINY)
    for op in ops[:len(g.writes) + 1]:
        model.write(op.mem, op.addr, op.words)
    model.run()
    dut = AcceleratorCore(TINY)
    results = []

    async def testbench(ctx):
        for op in ops:
            for byte in request_bytes(op, TINY):
                await stream_put(ctx, dut.i, byte)
            reply = bytes([await stream_get(ctx, dut.o) for _ in range(reply_length(op, TINY))])
            results.append(parse_reply(op, TINY, reply))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    print(f"seed={SEED}: STATUS {results[-3]}")
    assert results[-5].config_id == TINY.config_id()
    assert results[-2] == model.read(isa.Memory.ABUF, g.y_addr, g.y_words)
    assert results[-1] == model.read(isa.Memory.ACCBUF, 3, 5)
