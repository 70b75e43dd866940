# amaranth: UnusedElaboratable=no
"""Check Requantizer in Verilator against ``accel.numerics.requantize_integer`` (a cocotb bench).

Run it through ``accel.sim.verilator.run`` (see ``test_datapath.py``), not by pytest
collection. ``ACCEL_CONFIG`` (``HardwareConfig.to_dict()`` JSON) and ``ACCEL_TAG_WIDTH``
in the simulator's environment give the design. ``REQUANT_RANDOM_ROWS`` sets the number
of random rows (default 3000, ``cols`` cases each).

Every row carries its own per-lane parameters and its own output type, zero point and
clamp, changed every cycle: the requantizer samples them with the row. The model is
:func:`expected_bytes`; :func:`edge_rows` and :func:`random_rows` make the cases. The
Amaranth-simulator tests (``tests/test_hdl_datapath.py``) import them from here.
"""

import collections
import dataclasses
import json
import os
import time

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly

from accel import numerics
from accel.config import HardwareConfig
from accel.hdl.requant import Requantizer

CLOCK_PERIOD_NS = 10
F32 = np.float32
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


@dataclasses.dataclass
class RequantRow:
    """One row of requantizer inputs: per-lane accumulators and parameters, per-row scalars."""

    acc: list          # cols accumulators (acc_width-bit signed)
    bias: list         # cols int32 biases
    multiplier: list   # cols float32 multipliers in [2**-40, 2**8)
    y_signed: int
    zp: int
    lo: int
    hi: int

    @property
    def dtype(self):
        return np.int8 if self.y_signed else np.uint8

    def params(self):
        """Return the per-lane ``ParamWord`` values (bias, mantissa, exponent)."""
        mantissa, exponent = numerics.decompose_multiplier(np.array(self.multiplier, F32))
        return [{"bias": int(b), "mantissa": int(m), "exponent": int(e)}
                for b, m, e in zip(self.bias, mantissa, exponent)]


def wrap32(values):
    values = np.asarray(values, np.int64)
    return (values + 2**31) % 2**32 - 2**31


def expected_bytes(row):
    """Return the output bytes of ``row``: ``requantize_integer`` of ``acc + bias`` (int32 wrap)."""
    v = wrap32(np.asarray(row.acc, np.int64) + np.asarray(row.bias, np.int64))
    y = numerics.requantize_integer(v, np.array(row.multiplier, F32), row.zp, row.dtype,
                                    clamp=(row.lo, row.hi))
    return [int(b) for b in y.astype(np.int64) & 0xFF]


def expected_float(row):
    """Return the same bytes from the float32 definition ``numerics.requantize``."""
    v = wrap32(np.asarray(row.acc, np.int64) + np.asarray(row.bias, np.int64))
    y = numerics.requantize(v, np.array(row.multiplier, F32), row.zp, row.dtype,
                            clamp=(row.lo, row.hi))
    return [int(b) for b in y.astype(np.int64) & 0xFF]


def _acc_range(acc_width):
    return -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1


def _random_magnitudes(rng, n, max_bits):
    """Return signed integers whose magnitudes are spread evenly over bit lengths 0..max_bits."""
    bits = rng.integers(0, max_bits + 1, n)
    mag = rng.integers(0, 2**62, n) >> (62 - bits)
    return np.where(rng.random(n) < 0.5, -mag, mag)


def random_multipliers(rng, n, lo_exp=-40, hi_exp=8):
    """Return float32 multipliers log-uniform in [2**lo_exp, 2**hi_exp), all mantissas."""
    exps = rng.integers(lo_exp, hi_exp, n)
    mant = rng.integers(2**23, 2**24, n)
    return [F32(int(m) * 2.0**(int(e) - 23)) for m, e in zip(mant, exps)]


def random_scalars(rng):
    """Return a random (y_signed, zp, lo, hi) valid for requantize_integer."""
    y_signed = int(rng.integers(0, 2))
    qmin, qmax = (-128, 127) if y_signed else (0, 255)
    zp = int(rng.choice([qmin, qmax, 0 if y_signed else 128, rng.integers(qmin, qmax + 1)]))
    lo, hi = qmin, qmax
    if rng.random() < 0.3:  # a fused ReLU or Clip
        lo = zp if rng.random() < 0.5 else int(rng.integers(qmin, qmax + 1))
        hi = qmax if rng.random() < 0.5 else int(rng.integers(lo, qmax + 1))
    return y_signed, zp, lo, hi


def random_rows(rng, n, cols, acc_width=32):
    """Return ``n`` random rows: accumulators and biases over every magnitude, any multiplier.

    The multiplier's exponent is often chosen so that ``acc * M`` lands near the output
    range, where every rounding step matters.
    """
    acc_min, acc_max = _acc_range(acc_width)
    rows = []
    for _ in range(n):
        acc = np.clip(_random_magnitudes(rng, cols, acc_width), acc_min, acc_max)
        bias = np.where(rng.random(cols) < 0.3, 0, _random_magnitudes(rng, cols, 31))
        bias = np.clip(bias, INT32_MIN, INT32_MAX)
        mult = random_multipliers(rng, cols)
        v = wrap32(acc + bias)
        for c in range(cols):
            if rng.random() < 0.6 and v[c] != 0:
                # aim |v * M| at 2**0 .. 2**9
                target = int(rng.integers(0, 10)) - int(np.abs(v[c])).bit_length()
                target = min(max(target, -40), 7)
                mult[c] = random_multipliers(rng, 1, target, target + 1)[0]
        rows.append(RequantRow([int(a) for a in acc], [int(b) for b in bias], mult,
                               *random_scalars(rng)))
    return rows


def edge_rows(rng, cols, acc_width=32):
    """Return rows of edge cases: all three roundings' ties, the int32 and multiplier extremes,
    saturation both ways, zero points at their extremes, both output types and clamps."""
    acc_min, acc_max = _acc_range(acc_width)
    cases = []  # (acc, bias, multiplier)

    def add(accs, mults, biases=0):
        accs, mults, biases = np.broadcast_arrays(np.asarray(accs, np.int64),
                                                  np.asarray(mults, F32),
                                                  np.asarray(biases, np.int64))
        cases.extend(zip(accs.ravel().tolist(), biases.ravel().tolist(), mults.ravel().tolist()))

    # 1. float32(v) ties beyond 2**24: (odd) * 2**(s-1) and neighbours, in the accumulator
    #    or in the bias (a value beyond acc_width moves into the bias, see the end)
    for s in range(1, 9):
        base = (np.arange(2**23, 2**23 + 6, dtype=np.int64) * 2 + 1) << (s - 1)
        base = base[base <= INT32_MAX]
        for d in (-1, 0, 1):
            for sign in (1, -1):
                add(sign * (base + d), F32(2.0**-20))
                add(0, F32(2.0**-30), sign * (base + d))
    add([acc_max, acc_min, acc_max - 1, acc_min + 1, 0, 1, -1], F32(2.0**-20))
    add(0, F32(2.0**-24), [INT32_MAX, INT32_MIN, INT32_MAX - 127, INT32_MIN + 64])
    # 2. product ties (mantissa products needing all 48 bits)
    add(np.arange(-40, 40) * 2501, F32(1 + 2.0**-23) * F32(2.0**-12))
    add(np.arange(2**23 - 20, 2**23 + 20), (F32(1) + F32(3 * 2.0**-23)) * F32(2.0**-20))
    # 3. final ties: v * 2**-k exactly j + 1/2, for every shift the datapath rounds at
    for k in range(1, 41):
        a = (np.arange(-6, 6) * 2 + 1).astype(np.int64) << (k - 1)
        a = a[(a >= INT32_MIN) & (a <= INT32_MAX)]
        add(0, F32(2.0**-k), a)
    # 4. multiplier extremes: e = -63 (2**-40) and e = -16 (largest, all-ones mantissa)
    m_max = np.nextafter(F32(2.0**8), F32(0))
    for m in (F32(2.0**-40), m_max, np.nextafter(F32(2.0**-20), F32(0)), F32(2.0**-16)):
        add([0, 1, -1, 255, -256, 65536, -65536, acc_max, acc_min], m)
        add(0, m, [INT32_MAX, INT32_MIN])
    # 5. int32 wrap-around of acc + bias
    add([acc_max, acc_min, acc_max, acc_min], F32(2.0**-24), [INT32_MAX, INT32_MIN, 1, -1])

    rows = []
    scalar_sets = [(1, -128, -128, 127), (1, 127, -128, 127), (1, 0, -128, 127),
                   (0, 0, 0, 255), (0, 255, 0, 255), (0, 128, 0, 255),
                   (1, -20, -20, 127), (1, 3, -5, 9), (0, 17, 17, 200), (1, 0, 7, 7)]
    for scalars in scalar_sets:
        for start in range(0, len(cases), cols):
            chunk = cases[start:start + cols]
            chunk += [(0, 0, F32(0.5))] * (cols - len(chunk))
            acc, bias, mult = zip(*chunk)
            rows.append(RequantRow(list(acc), list(bias), [F32(m) for m in mult], *scalars))
    # Per-lane different parameters inside one row: rotate the cases by one lane.
    for start in range(0, len(cases) - cols, 5 * cols):
        chunk = cases[start + 1:start + 1 + cols]
        acc, bias, mult = zip(*chunk)
        rows.append(RequantRow(list(acc), list(bias), [F32(m) for m in mult],
                               *random_scalars(rng)))
    for row in rows:  # keep the accumulators in range, moving the excess into the bias
        for c, a in enumerate(row.acc):
            if not acc_min <= a <= acc_max:
                clipped = max(acc_min, min(acc_max, a))
                row.bias[c] = int(wrap32(row.bias[c] + a - clipped))
                row.acc[c] = clipped
    return rows


class RequantLayouts:
    """Pack and unpack the requantizer's ports with the component's own layouts."""

    def __init__(self, config, tag_width):
        requant = Requantizer(config, tag_width=tag_width)
        self.i = requant.i.payload.shape()
        self.o = requant.o.payload.shape()
        self.params = requant.params.shape()
        self.latency = requant.latency
        self.tag_mask = (1 << tag_width) - 1

    def i_bits(self, row, tag):
        return self.i.const({"acc": row.acc, "tag": tag & self.tag_mask}).as_bits()

    def params_bits(self, row):
        return self.params.const(row.params()).as_bits()

    def o_values(self, bits):
        view = data.Const(self.o, bits)
        return [int(v) for v in view.data], int(view.tag)


class RowDriver:
    """Drive one row and all its parameters per cycle, with random idle cycles."""

    def __init__(self, dut, layouts, rng, idle=0.0):
        self.dut = dut
        self.layouts = layouts
        self.rng = rng
        self.idle = idle
        self.queue = collections.deque()

    def send(self, row, item):
        self.queue.append((row, item))

    def drive(self):
        """Set this cycle's inputs; return the item entering now, or None."""
        dut = self.dut
        if not self.queue or (self.idle and self.rng.random() < self.idle):
            dut.i__valid.value = 0
            # Scramble the parameters of idle cycles: only valid rows may matter.
            dut.params.value = int(self.rng.integers(0, 2**62))
            dut.y_zp.value = int(self.rng.integers(-256, 256)) & 0x1FF
            return None
        row, item = self.queue.popleft()
        dut.i__valid.value = 1
        dut.i__payload.value = self.layouts.i_bits(row, item[1])
        dut.params.value = self.layouts.params_bits(row)
        dut.y_zp.value = row.zp & 0x1FF
        dut.y_lo.value = row.lo & 0x1FF
        dut.y_hi.value = row.hi & 0x1FF
        dut.y_signed.value = row.y_signed
        return item


class Scoreboard:
    """Check each output row against the model, its tag and the fixed latency."""

    def __init__(self, latency, seed):
        self.latency = latency
        self.seed = seed
        self.pending = collections.deque()
        self.checked = 0

    def expect(self, cycle, item):
        self.pending.append((cycle, item))

    def observe(self, cycle, data, tag):
        assert self.pending, f"seed {self.seed}: unexpected output in cycle {cycle}"
        in_cycle, (row, want_tag, expected) = self.pending.popleft()
        where = f"seed {self.seed}: row entered in cycle {in_cycle}: {row}"
        assert cycle - in_cycle == self.latency, f"{where}: latency {cycle - in_cycle}"
        assert tag == want_tag, f"{where}: tag {tag}, expected {want_tag}"
        assert data == expected, f"{where}: bytes {data}, expected {expected}"
        self.checked += 1


class RequantBench:
    def __init__(self, dut, seed, idle=0.0):
        self.dut = dut
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.config = HardwareConfig.from_dict(json.loads(os.environ["ACCEL_CONFIG"]))
        self.layouts = RequantLayouts(self.config, int(os.environ.get("ACCEL_TAG_WIDTH", "18")))
        self.driver = RowDriver(dut, self.layouts, self.rng, idle)
        self.scoreboard = Scoreboard(self.layouts.latency, seed)
        self.cycle = 0
        self.cases = 0
        dut._log.info(f"requant bench: {self.config.cols} lanes, acc_width "
                      f"{self.config.acc_width}, COCOTB_RANDOM_SEED="
                      f"{os.environ.get('COCOTB_RANDOM_SEED')}, test seed={seed}")

    def queue_rows(self, rows):
        for row in rows:
            tag = (self.cases // self.config.cols) & self.layouts.tag_mask
            self.driver.send(row, (row, tag, expected_bytes(row)))
            self.cases += self.config.cols

    async def run(self):
        seconds = await drive_pipeline(self, limit=100 * (self.cases + 100))
        self.dut._log.info(f"MEASURE requant: cases={self.cases} rows={self.scoreboard.checked} "
                           f"cycles={self.cycle} latency={self.layouts.latency} wall={seconds:.3f}s")


async def drive_pipeline(bench, limit: int) -> float:
    """Reset the DUT, then drive ``bench.driver`` and check ``o`` until the scoreboard is done; return wall seconds.

    ``bench`` has ``dut``, ``driver``, ``scoreboard``, ``layouts``, ``cycle`` and ``seed``; ``limit``
    bounds the cycles so a stuck pipeline fails instead of hanging.
    """
    dut = bench.dut
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    dut.i__valid.value = 0
    await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    started = time.perf_counter()
    while bench.driver.queue or bench.scoreboard.pending:
        item = bench.driver.drive()
        await ReadOnly()
        if item is not None:
            bench.scoreboard.expect(bench.cycle, item)
        if int(dut.o__valid.value):
            bench.scoreboard.observe(bench.cycle, *bench.layouts.o_values(dut.o__payload.value.to_unsigned()))
        await FallingEdge(dut.clk)
        bench.cycle += 1
        assert bench.cycle < limit, f"seed {bench.seed}: stuck"
    return time.perf_counter() - started


@cocotb.test()
async def test_edge_cases(dut):
    """Ties of all three roundings, extremes of acc, bias and multiplier, zero points, clamps."""
    bench = RequantBench(dut, cocotb.RANDOM_SEED)
    bench.queue_rows(edge_rows(bench.rng, bench.config.cols, bench.config.acc_width))
    await bench.run()


@cocotb.test()
async def test_random_rows(dut):
    """Random accumulators, biases and per-lane multipliers, new scalars every row, idle cycles."""
    bench = RequantBench(dut, cocotb.RANDOM_SEED, idle=0.1)
    n = int(os.environ.get("REQUANT_RANDOM_ROWS", "3000"))
    bench.queue_rows(random_rows(bench.rng, n, bench.config.cols, bench.config.acc_width))
    await bench.run()
    assert bench.cases >= 10_000 or n * bench.config.cols < 10_000
