# amaranth: UnusedElaboratable=no
"""Check SystolicArray in Verilator against NumPy matrix products (a cocotb bench).

Run it through ``accel.sim.verilator.run`` (see ``test_datapath.py``), not by pytest
collection. The simulator's environment gives the design: ``ACCEL_CONFIG`` is the
``HardwareConfig.to_dict()`` JSON and ``ACCEL_TAG_WIDTH`` the tag width.

The bench is built from a :class:`StreamDriver` per input stream (with random idle
cycles), an :class:`OutputMonitor` on ``y``, a model (:func:`random_matmul` and
:func:`tile_matmul`, NumPy) and a :class:`Scoreboard` that checks every output row's
values, tag and latency, and finally the products re-assembled from the tiles. Each cycle
the inputs change just after the falling clock edge and everything is sampled in the
read-only phase before the next rising edge, so "a transfer in cycle n" is exact.

The module also serves the Amaranth-simulator tests (``tests/test_hdl_datapath.py``),
which import the model from here.
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

from accel.config import HardwareConfig
from accel.hdl.systolic import SystolicArray

CLOCK_PERIOD_NS = 10
X_MIN, X_MAX = -256, 255  # the array's 9-bit signed inputs


@dataclasses.dataclass
class Tile:
    """One weight tile and the input rows streamed through it (``first`` on row 0)."""

    weights: np.ndarray   # rows x cols
    inputs: np.ndarray    # count x rows
    expected: np.ndarray  # count x cols: inputs @ weights, wrapped to acc_width
    matmul: int = 0       # which product this tile belongs to
    n_tile: int = 0       # its column tile
    k_tile: int = 0       # its reduction tile


def wrap(values, bits):
    """Return integers wrapped to ``bits``-bit two's complement (NumPy int64 in, out)."""
    values = np.asarray(values, np.int64)
    return (values + (1 << (bits - 1))) % (1 << bits) - (1 << (bits - 1))


def random_matmul(rng, config, max_m=None):
    """Return a random ``(x[M, K], w[K, N])``; K and N are rarely multiples of the array's size."""
    rows, cols = config.rows, config.cols
    m = int(rng.integers(1, (max_m or 2 * (rows + cols)) + 1))
    k = int(rng.integers(1, 3 * rows + 2))
    n = int(rng.integers(1, 2 * cols + 2))
    w_min, w_max = -(1 << (config.weight_bits - 1)), (1 << (config.weight_bits - 1)) - 1
    x = rng.integers(X_MIN, X_MAX + 1, (m, k))
    x[rng.random((m, k)) < 0.1] = X_MIN
    x[rng.random((m, k)) < 0.1] = X_MAX
    w = rng.integers(w_min, w_max + 1, (k, n))
    w[rng.random((k, n)) < 0.1] = w_min
    w[rng.random((k, n)) < 0.1] = w_max
    return x, w


def tile_matmul(x, w, config, matmul=0):
    """Split ``x @ w`` into weight-stationary tiles, zero-padding K and N to the array's size."""
    rows, cols = config.rows, config.cols
    (m, k), n = x.shape, w.shape[1]
    k_tiles, n_tiles = -(-k // rows), -(-n // cols)
    xp = np.zeros((m, k_tiles * rows), np.int64)
    xp[:, :k] = x
    wp = np.zeros((k_tiles * rows, n_tiles * cols), np.int64)
    wp[:k, :n] = w
    tiles = []
    for nt in range(n_tiles):
        for kt in range(k_tiles):
            wt = wp[kt * rows:(kt + 1) * rows, nt * cols:(nt + 1) * cols]
            xt = xp[:, kt * rows:(kt + 1) * rows]
            tiles.append(Tile(wt, xt, wrap(xt @ wt, config.acc_width), matmul, nt, kt))
    return tiles


def assemble(tiles, outputs, shape, config):
    """Return the products re-assembled from per-tile output rows: sums over K tiles."""
    result = np.zeros(shape, np.int64)
    for tile, rows_out in zip(tiles, outputs):
        block = result[:, tile.n_tile * config.cols:(tile.n_tile + 1) * config.cols]
        block += np.asarray(rows_out, np.int64)[:, :block.shape[1]]
    return result


class ArrayLayouts:
    """Pack and unpack the array's stream payloads with the component's own layouts."""

    def __init__(self, config, tag_width):
        array = SystolicArray(config, tag_width=tag_width)
        self.load = array.load.payload.shape()
        self.x = array.x.payload.shape()
        self.y = array.y.payload.shape()
        self.latency = array.latency
        self.tag_mask = (1 << tag_width) - 1

    def load_bits(self, weights_row):
        return self.load.const([int(v) for v in weights_row]).as_bits()

    def x_bits(self, inputs_row, first, tag):
        return self.x.const({"data": [int(v) for v in inputs_row], "first": int(first),
                             "tag": tag & self.tag_mask}).as_bits()

    def y_values(self, bits):
        view = data.Const(self.y, bits)
        return [int(v) for v in view.data], int(view.tag)


class StreamDriver:
    """Drive one valid/ready stream from a queue, holding each payload until it transfers.

    Before each new payload, the driver stays idle for a cycle with probability ``idle``
    (then tries again), like cocotbext-axi's pause generators.
    """

    def __init__(self, dut, name, rng, idle=0.0):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.rng = rng
        self.idle = idle
        self.queue = collections.deque()
        self.current = None
        self.idle_cycles = 0

    def send(self, bits, item):
        self.queue.append((bits, item))

    def drive(self):
        """Set valid and payload for this cycle (just after a falling edge)."""
        if self.current is None and self.queue:
            if self.idle and self.rng.random() < self.idle:
                self.idle_cycles += 1
            else:
                self.current = self.queue.popleft()
                self.payload.value = self.current[0]
        self.valid.value = int(self.current is not None)

    def sample(self):
        """Return the item transferred in this cycle, or None (call in the read-only phase)."""
        if self.current is not None and int(self.ready.value):
            item, self.current = self.current[1], None
            return item
        return None

    @property
    def busy(self):
        return self.current is not None or bool(self.queue)


class OutputMonitor:
    """Record every ``y`` transfer (``y`` is always ready) with its cycle."""

    def __init__(self, dut, layouts):
        self.valid = dut.y__valid
        self.payload = dut.y__payload
        self.layouts = layouts

    def sample(self):
        if int(self.valid.value):
            return self.layouts.y_values(self.payload.value.to_unsigned())
        return None


class Scoreboard:
    """Check each output row against the one expected from the x transfer ``latency`` earlier."""

    def __init__(self, latency, seed):
        self.latency = latency
        self.seed = seed
        self.pending = collections.deque()
        self.outputs = collections.defaultdict(list)  # tile index -> output rows
        self.checked = 0

    def expect(self, cycle, item):
        self.pending.append((cycle, item))

    def observe(self, cycle, data, tag):
        assert self.pending, f"seed {self.seed}: unexpected output in cycle {cycle}: {data}"
        x_cycle, (tile_index, row, expected, want_tag) = self.pending.popleft()
        where = f"seed {self.seed}: tile {tile_index} row {row} (x in cycle {x_cycle})"
        assert cycle - x_cycle == self.latency, (
            f"{where}: output in cycle {cycle}, latency {cycle - x_cycle} != {self.latency}")
        assert tag == want_tag, f"{where}: tag {tag}, expected {want_tag}"
        assert data == expected, f"{where}: y={data}, expected {expected}"
        self.outputs[tile_index].append(data)
        self.checked += 1


class ArrayBench:
    """Stream tiles through the array and check every output; record transfer cycles."""

    def __init__(self, dut, seed, idle_x=0.0, idle_load=0.0):
        self.dut = dut
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.config = HardwareConfig.from_dict(json.loads(os.environ["ACCEL_CONFIG"]))
        self.layouts = ArrayLayouts(self.config, int(os.environ.get("ACCEL_TAG_WIDTH", "18")))
        self.load = StreamDriver(dut, "load", self.rng, idle_load)
        self.x = StreamDriver(dut, "x", self.rng, idle_x)
        self.monitor = OutputMonitor(dut, self.layouts)
        self.scoreboard = Scoreboard(self.layouts.latency, seed)
        self.tiles = []
        self.first_cycles = []  # cycle of each tile's first-row x transfer
        self.load_cycles = []   # cycle of each load transfer
        self.x_cycles = 0       # cycles with an x transfer
        self.cycle = 0
        dut._log.info(f"array bench: {self.config.rows}x{self.config.cols}, "
                      f"COCOTB_RANDOM_SEED={os.environ.get('COCOTB_RANDOM_SEED')}, "
                      f"test seed={seed}")

    def queue_tiles(self, tiles):
        for tile in tiles:
            index = len(self.tiles)
            self.tiles.append(tile)
            for weights_row in tile.weights:
                self.load.send(self.layouts.load_bits(weights_row), ("load", index))
            for row, (inputs_row, expected) in enumerate(zip(tile.inputs, tile.expected)):
                tag = (index << 8 | row) & self.layouts.tag_mask
                self.x.send(self.layouts.x_bits(inputs_row, row == 0, tag),
                            (index, row, [int(v) for v in expected], tag))

    async def start(self):
        """Start the clock and reset, leaving us just after a falling edge."""
        dut = self.dut
        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        dut.rst.value = 1
        dut.load__valid.value = 0
        dut.x__valid.value = 0
        await FallingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

    async def run(self):
        """Run until every queued row has come out; return the wall time in seconds."""
        started = time.perf_counter()
        limit = 50 * (sum(len(t.inputs) + len(t.weights) for t in self.tiles) + 100)
        while self.load.busy or self.x.busy or self.scoreboard.pending:
            assert self.cycle < limit, f"seed {self.seed}: no progress after {limit} cycles"
            self.load.drive()
            self.x.drive()
            await ReadOnly()
            if self.load.sample() is not None:
                self.load_cycles.append(self.cycle)
            item = self.x.sample()
            if item is not None:
                self.x_cycles += 1
                if item[1] == 0:
                    self.first_cycles.append(self.cycle)
                self.scoreboard.expect(self.cycle, item)
            output = self.monitor.sample()
            if output is not None:
                self.scoreboard.observe(self.cycle, *output)
            await FallingEdge(self.dut.clk)
            self.cycle += 1
        assert self.scoreboard.checked == sum(len(t.inputs) for t in self.tiles)
        return time.perf_counter() - started

    def check_products(self, problems):
        """Re-assemble each product from its tiles' outputs and compare it with NumPy."""
        for index, (x, w) in enumerate(problems):
            mine = [i for i, t in enumerate(self.tiles) if t.matmul == index]
            got = assemble([self.tiles[i] for i in mine],
                           [self.scoreboard.outputs[i] for i in mine],
                           (x.shape[0], -(-w.shape[1] // self.config.cols) * self.config.cols),
                           self.config)
            want = wrap(x @ w, self.config.acc_width)
            assert np.array_equal(wrap(got[:, :w.shape[1]], self.config.acc_width), want), (
                f"seed {self.seed}: product {index} ({x.shape} @ {w.shape}) differs")

    def report(self, name, seconds):
        cycles = self.cycle
        self.dut._log.info(
            f"MEASURE {name}: cycles={cycles} rows={self.scoreboard.checked} "
            f"x_cycles={self.x_cycles} tiles={len(self.tiles)} latency={self.layouts.latency} "
            f"wall={seconds:.3f}s speed={cycles / seconds:.0f}cycles/s")


async def run_problems(dut, idle_x, idle_load, count, max_m=None):
    bench = ArrayBench(dut, cocotb.RANDOM_SEED, idle_x, idle_load)
    problems = [random_matmul(bench.rng, bench.config, max_m) for _ in range(count)]
    for index, (x, w) in enumerate(problems):
        bench.queue_tiles(tile_matmul(x, w, bench.config, index))
    await bench.start()
    seconds = await bench.run()
    bench.check_products(problems)
    return bench, seconds


@cocotb.test()
async def test_random_idle_cycles(dut):
    """Random products with random idle cycles on x and load (valid toggling)."""
    bench, seconds = await run_problems(dut, idle_x=0.3, idle_load=0.4, count=12)
    assert bench.x.idle_cycles and bench.load.idle_cycles
    bench.report("random_idle", seconds)


@cocotb.test()
async def test_back_to_back_tiles(dut):
    """With both streams always offered, tile k+1 starts max(count_k, rows + 1) cycles after tile k.

    Also checks the load timing: the next tile's first weight row transfers in the cycle
    right after the current tile's first input row.
    """
    bench, seconds = await run_problems(dut, idle_x=0.0, idle_load=0.0, count=12)
    rows = bench.config.rows
    counts = [len(t.inputs) for t in bench.tiles]
    for k in range(1, len(bench.tiles)):
        gap = bench.first_cycles[k] - bench.first_cycles[k - 1]
        assert gap == max(counts[k - 1], rows + 1), (
            f"seed {bench.seed}: tile {k - 1} of {counts[k - 1]} rows took {gap} cycles")
        loads = bench.load_cycles[k * rows:(k + 1) * rows]
        assert loads == list(range(bench.first_cycles[k - 1] + 1,
                                   bench.first_cycles[k - 1] + 1 + rows)), (
            f"seed {bench.seed}: tile {k} weight rows loaded in cycles {loads}")
    bubbles = sum(max(0, rows + 1 - c) for c in counts[:-1])
    idle = bench.first_cycles[-1] - bench.first_cycles[0] - sum(counts[:-1])
    assert idle == bubbles
    bench.dut._log.info(f"MEASURE bubbles: {idle} idle x cycles between {len(counts)} tiles "
                        f"of {counts} rows (rows + 1 = {rows + 1})")
    bench.report("back_to_back", seconds)


@cocotb.test()
async def test_long_tiles_have_no_bubbles(dut):
    """Tiles of 64..256 rows stream with zero idle cycles on x; also measures simulation speed."""
    bench = ArrayBench(dut, cocotb.RANDOM_SEED)
    problems = []
    for index in range(4):
        x, w = random_matmul(bench.rng, bench.config)
        x = bench.rng.integers(X_MIN, X_MAX + 1, (int(bench.rng.integers(64, 257)), x.shape[1]))
        problems.append((x, w))
        bench.queue_tiles(tile_matmul(x, w, bench.config, index))
    await bench.start()
    seconds = await bench.run()
    bench.check_products(problems)
    span = bench.first_cycles[-1] - bench.first_cycles[0]
    assert span == sum(len(t.inputs) for t in bench.tiles[:-1]), (
        f"seed {bench.seed}: {span - sum(len(t.inputs) for t in bench.tiles[:-1])} bubbles")
    bench.report("long_tiles", seconds)
