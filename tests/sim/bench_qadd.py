# amaranth: UnusedElaboratable=no
"""Check QAddLanes in Verilator against ``numerics.qlinear_add_by_recipe`` and ``numerics.qlinear_add`` (a cocotb bench).

Run it through ``accel.sim.verilator.run`` (see ``test_qadd.py``), not by pytest collection.
``ACCEL_CONFIG`` (``HardwareConfig.to_dict()`` JSON) and ``ACCEL_TAG_WIDTH`` in the
simulator's environment give the design. ``QADD_EXHAUSTIVE_LAYERS`` sets how many layers
(scale/zero-point sets) get all 65,536 (a, b) pairs (default 6); ``QADD_RANDOM_ROWS`` the
number of rows of the random test (default 2000).

A layer (:class:`AddLayer`) holds a QLinearAdd node's scales, zero points, type, clamp,
QDQ rewrite and operand swap; :meth:`AddLayer.recipe` is its
``numerics.qlinear_add_recipe``. :func:`make_rows` turns the node's operand codes into
rows for the ports (the recipe's multiplied operand on port ``a``, the table index on port
``b``) with the expected bytes, and checks that the integer model
(``numerics.qlinear_add_by_recipe``) and the onnxruntime-exact ``numerics.qlinear_add``
agree on every case. :class:`RowDriver` drives rows, table writes (before each layer's
rows, while no row is in flight) and scrambled idle cycles through a ``poke(name, value)``
function, so the Amaranth-simulator tests (``tests/test_hdl_qadd.py``) use it too, with
:class:`Scoreboard` checking bytes, tags and latency.
"""

import collections
import dataclasses
import functools
import json
import os

import cocotb
import numpy as np

from accel import isa, numerics
from accel.config import HardwareConfig
from accel.hdl.qadd import QAddLanes

try:  # imported as tests.sim.bench_qadd (by tests/test_hdl_qadd.py)
    from .bench_requant import Scoreboard, drive_pipeline
except ImportError:  # imported by cocotb under its file name, from this directory
    from bench_requant import Scoreboard, drive_pipeline

F32 = np.float32


@dataclasses.dataclass(frozen=True)
class AddLayer:
    """One QLinearAdd node: scales, zero points, type, clamp, QDQ rewrite and operand swap."""

    a_scale: float
    a_zp: int
    b_scale: float
    b_zp: int
    c_scale: float
    c_zp: int
    dtype: str = "uint8"
    qdq_s8_to_u8: bool = False
    swap: bool = False
    lo: int | None = None
    hi: int | None = None

    @property
    def signed(self):
        return int(self.dtype == "int8")

    @property
    def bounds(self):
        """Return the node's output bounds (the type's limits narrowed by the clamp)."""
        return numerics._clamp_bounds((self.lo, self.hi), np.dtype(self.dtype))

    def recipe(self) -> numerics.AddRecipe:
        """Return the layer's ``numerics.qlinear_add_recipe`` (raises ``ValueError`` if none fits)."""
        return _recipe(self)

    def code_range(self):
        return (-128, 128) if self.signed else (0, 256)


@functools.lru_cache(maxsize=None)
def _recipe(layer):
    return numerics.qlinear_add_recipe(layer.a_scale, layer.a_zp, layer.b_scale, layer.b_zp, layer.c_scale,
                                       layer.c_zp, layer.dtype, (layer.lo, layer.hi),
                                       qdq_s8_to_u8=layer.qdq_s8_to_u8, swap=layer.swap)


def reference_values(layer, a, b):
    """Return ``numerics.qlinear_add`` (onnxruntime) of the node's codes ``a``, ``b`` (int64).

    With ``swap``, ``a`` is given the shape ORT swaps on: ``(n, 1)`` against ``(n, 2)``;
    without it, a single pair is repeated (ORT swaps ``(1,) + (1,)``).
    """
    dt = np.dtype(layer.dtype)
    a, b = np.asarray(a).astype(dt), np.asarray(b).astype(dt)

    def run(a, b):
        return numerics.qlinear_add(a, layer.a_scale, layer.a_zp, b, layer.b_scale, layer.b_zp, layer.c_scale,
                                    layer.c_zp, dt, (layer.lo, layer.hi), qdq_s8_to_u8=layer.qdq_s8_to_u8)

    if layer.swap:
        y = run(a[:, None], np.stack([b, b], axis=1))[:, 0]
    elif a.size == 1:
        y = run(np.repeat(a, 2), np.repeat(b, 2))[:1]
    else:
        y = run(a, b)
    return y.astype(np.int64)


def recipe_values(layer, port_a, port_b):
    """Return ``numerics.qlinear_add_by_recipe`` of the port codes (``x`` on ``a``, ``t`` on ``b``) (int64)."""
    return numerics.qlinear_add_by_recipe(np.asarray(port_a, np.int64), np.asarray(port_b, np.int64),
                                          layer.recipe(), *layer.bounds)


def to_ports(layer, a, b):
    """Return the port codes ``(port_a, port_b)`` of the node's codes: ``(b, a)`` if the recipe's ``x_is_b``."""
    return (b, a) if layer.recipe().x_is_b else (a, b)


@dataclasses.dataclass
class AddRow:
    """One row: the port codes, the layer (its table must be loaded), the row's bounds, the expected bytes."""

    layer: AddLayer
    a: list
    b: list
    bounds: tuple
    expected: list


def make_rows(layer, a, b, width, rng=None):
    """Cut the node's codes ``a``, ``b`` into rows of ``width`` (the last one padded with zeros).

    Asserts that the integer model (on the port codes) and onnxruntime's (on the node's
    codes) agree on every case. With ``rng`` and a layer without a clamp, half the rows get
    random narrower output bounds (``y_lo``, ``y_hi`` are sampled with the row, and
    clamping both models' results again is the same as clamping once).
    """
    pad = -len(a) % width
    a = np.concatenate([np.asarray(a, np.int64), np.zeros(pad, np.int64)])
    b = np.concatenate([np.asarray(b, np.int64), np.zeros(pad, np.int64)])
    port_a, port_b = to_ports(layer, a, b)
    want = recipe_values(layer, port_a, port_b)
    onnx = reference_values(layer, a, b)
    assert np.array_equal(want, onnx), (f"{layer}: the recipe and onnxruntime differ at pairs "
                                        f"{[(a[k], b[k]) for k in np.flatnonzero(want != onnx)[:5]]}")
    qmin, qmax = layer.bounds
    rows = []
    for i in range(0, len(a), width):
        bounds = (qmin, qmax)
        if rng is not None and layer.lo is None and layer.hi is None and rng.random() < 0.5:
            lo = int(rng.integers(qmin, qmax + 1))
            bounds = (lo, int(rng.integers(lo, qmax + 1)))
        expected = (np.clip(want[i:i + width], *bounds) & 0xFF).tolist()
        rows.append(AddRow(layer, port_a[i:i + width].tolist(), port_b[i:i + width].tolist(), bounds, expected))
    return rows


def exhaustive_pairs(layer):
    """Return every (a, b) code pair of the layer's type as two flat int64 arrays."""
    codes = np.arange(*layer.code_range(), dtype=np.int64)
    a, b = np.meshgrid(codes, codes, indexing="ij")
    return a.ravel(), b.ravel()


def random_cases(rng, layer, n):
    """Return ``n`` random (a, b) code pairs of the layer's type."""
    lo, hi = layer.code_range()
    return rng.integers(lo, hi, n), rng.integers(lo, hi, n)


def random_layer(rng, dtype=None, qdq_s8_to_u8=None):
    """Return a random layer that has a recipe: random float32 scales (often an output scale
    near the inputs', sometimes extreme ratios or powers of two, which make ties), zero
    points anywhere (often at the type's ends), sometimes a clamp (a fused ReLU) or the swap."""
    dtype = dtype or str(rng.choice(["int8", "uint8"]))
    if qdq_s8_to_u8 is None:
        qdq_s8_to_u8 = dtype == "int8" and bool(rng.random() < 0.5)
    lo_code, hi_code = (-128, 127) if dtype == "int8" else (0, 255)

    def scale(lo=-20, hi=4):
        return float(F32(rng.uniform(1, 2) * 2.0**int(rng.integers(lo, hi))))

    def zp():
        return int(rng.choice([lo_code, hi_code, (lo_code + hi_code + 1) // 2,
                               rng.integers(lo_code, hi_code + 1)]))

    for _ in range(200):
        a_scale, b_scale = scale(), scale()
        kind = rng.random()
        if kind < 0.6:    # output range near the inputs' sum: every rounding step matters
            c_scale = float(F32(max(a_scale, b_scale) * rng.uniform(0.3, 4)))
        elif kind < 0.8:  # extreme ratios: large multipliers, saturation, or everything rounds to 0
            c_scale = scale(-30, 20)
        else:             # powers of two: exact ties
            a_scale, b_scale, c_scale = (float(2.0**int(rng.integers(-8, 2))) for _ in range(3))
        c_zp = zp()
        lo = hi = None
        if rng.random() < 0.3:
            lo = c_zp if rng.random() < 0.5 else int(rng.integers(lo_code, hi_code + 1))  # a ReLU, or any clamp
            hi = int(rng.integers(lo, hi_code + 1)) if rng.random() < 0.5 else None
        layer = AddLayer(a_scale, zp(), b_scale, zp(), c_scale, c_zp, dtype, qdq_s8_to_u8,
                         bool(rng.random() < 0.15), lo, hi)
        try:
            layer.recipe()
        except ValueError:  # no recipe fits the hardware's widths (the compiler rejects these)
            continue
        return layer
    raise AssertionError("no random layer with a recipe in 200 tries")


def edge_layers():
    """Return targeted layers: saturation, ties to even, large multipliers and shifts, the
    multiplied operand on b (``x_is_b``), zero-point extremes, clamps, swap, QDQ."""
    layers = []
    for dtype in ("uint8", "int8"):
        lo_code, hi_code = (-128, 127) if dtype == "int8" else (0, 255)
        mid = (lo_code + hi_code + 1) // 2
        for qdq in ((False, True) if dtype == "int8" else (False,)):
            layers += [
                AddLayer(1.0, 0, 1.0, 0, 1.0, 0, dtype, qdq),                  # plain sum, saturates
                AddLayer(0.5, 0, 0.5, 0, 1.0, 0, dtype, qdq),                  # ties to even
                AddLayer(0.01, 0, 0.01, 0, 0.02, 0, dtype, qdq),               # ties to even
                AddLayer(0.5, 0, 0.5, 0, 1.0, 0, dtype, qdq, lo=lo_code + 3),  # a tie just below an odd bound
                AddLayer(0.25, 3, 0.75, -1 if dtype == "int8" else 1, 0.5, 7, dtype, qdq),
                AddLayer(1e-3, 0, 1e-3, 0, 1.0, 0, dtype, qdq),
                AddLayer(3.0, 0, 5.0, 0, 2.0**30, lo_code, dtype, qdq),        # everything -> zp
                AddLayer(2.0**-30, 0, 2.0**20, 0, 2.0**-10, 0, dtype, qdq),    # far-apart terms
                AddLayer(1.0, 0, 1.0, 0, 2.0**-8, mid, dtype, qdq),            # mult 256
                AddLayer(2.0**-20, 0, 1.0, hi_code, 2.0**-19, 0, dtype, qdq),  # x_is_b, mult 2**19
                AddLayer(0.7, 3, 0.0013, 5, 0.0011, 7, dtype, qdq),
                AddLayer(0.1, 1, 0.2, 2, 0.3, 3, dtype, qdq, lo=lo_code + 10, hi=hi_code - 20),
                AddLayer(0.1, 1, 0.2, 2, 0.3, mid, dtype, qdq, lo=mid),          # fused ReLU
                AddLayer(0.1, 1, 0.2, 2, 0.3, 3, dtype, qdq, swap=True),
                AddLayer(0.02, lo_code, 0.03, hi_code, 0.04, mid, dtype, qdq, lo=5, hi=5),
            ]
    layers.append(AddLayer(0.5, -97, 2.0, 120, 1.0, 59, "int8", True))   # x_is_b without swap
    return layers


def exhaustive_layers(rng, count):
    """Return ``count`` layers for the exhaustive test: x_is_b, ties with an odd clamp bound, a fused ReLU, int8,
    QDQ, swap, then random ones."""
    fixed = [AddLayer(0.5, -97, 2.0, 120, 1.0, 59, "int8", True),          # x_is_b (not swapped)
             AddLayer(0.01, 0, 0.01, 0, 0.02, 0, "uint8", lo=3),             # tie_even, an odd ReLU bound
             AddLayer(0.0123, 131, 0.0077, 117, 0.0191, 122, "uint8", lo=122),  # fused ReLU
             AddLayer(0.0311, -5, 0.0203, 9, 0.0412, -3, "int8"),
             AddLayer(0.0311, -5, 0.0203, 9, 0.0412, -3, "int8", qdq_s8_to_u8=True),
             AddLayer(0.1, 1, 0.2, 2, 0.3, 3, "int8", swap=True)]
    kinds = [("uint8", False), ("int8", False), ("int8", True)]
    extra = [random_layer(rng, *kinds[k % 3]) for k in range(max(0, count - len(fixed)))]
    return (fixed + extra)[:count]


class QAddLayouts:
    """Pack and unpack QAddLanes' ports with the component's own layouts (integer shifts, for speed)."""

    def __init__(self, config, tag_width):
        qadd = QAddLanes(config, tag_width=tag_width)
        self.lanes = config.rows
        self.latency = qadd.latency
        self.spacing = qadd.spacing
        self.tag_mask = (1 << tag_width) - 1
        i_layout = qadd.i.payload.shape()
        self.a_offset, self.b_offset = i_layout["a"].offset, i_layout["b"].offset
        self.tag_offset = i_layout["tag"].offset
        o_layout = qadd.o.payload.shape()
        self.data_offset, self.o_tag_offset = o_layout["data"].offset, o_layout["tag"].offset
        t_layout = qadd.table.payload.shape()
        self.addr_offset, self.word_offset = t_layout["addr"].offset, t_layout["data"].offset
        self.i_width, self.table_width = i_layout.size, t_layout.size
        self._words = {}

    def i_bits(self, a, b, tag):
        bits = (tag & self.tag_mask) << self.tag_offset
        for lane, (x, t) in enumerate(zip(a, b)):
            bits |= (x & 0xFF) << (self.a_offset + 8 * lane)
            bits |= (t & 0xFF) << (self.b_offset + 8 * lane)
        return bits

    def words(self, layer):
        """Return the layer's ``isa.add_params`` words: the ``params`` word, then the table words."""
        if layer not in self._words:
            self._words[layer] = isa.add_params(layer.recipe())
        return self._words[layer]

    def table_bits(self, addr, word):
        return addr << self.addr_offset | word << self.word_offset

    def o_values(self, bits):
        data = bits >> self.data_offset
        return ([(data >> (8 * lane)) & 0xFF for lane in range(self.lanes)],
                (bits >> self.o_tag_offset) & self.tag_mask)


class RowDriver:
    """Drive QAddLanes one cycle per :meth:`drive` call through ``poke(port_name, value)``.

    Port names are the Verilog ones (``i__valid``, ``table__payload``, ``y_lo`` ...); ``y_lo``
    and ``y_hi`` are poked as signed integers. Before the rows of a layer whose table is not
    loaded, the driver waits until no row is in flight (the last one left ``o`` in an
    earlier cycle), writes the 128 table words (with random idle cycles between them), and
    lets the row enter as early as the cycle after the last write. Rows enter ``spacing``
    cycles apart at the earliest; idle cycles carry scrambled rows and parameters, which
    must not matter.
    """

    def __init__(self, poke, layouts, rng, idle=0.0):
        self.poke = poke
        self.layouts = layouts
        self.rng = rng
        self.idle = idle
        self.queue = collections.deque()
        self.writes = collections.deque()
        self.loaded = self.loading = None
        self.cycle = 0
        self.wait = 0
        self.last_exit = -1   # the cycle the last row in flight leaves on o
        self.table_writes = 0

    def send(self, row, tag):
        self.queue.append((row, tag))

    def _scramble(self):
        rng, poke = self.rng, self.poke
        poke("i__valid", 0)
        poke("i__payload", random_bits(rng, self.layouts.i_width))
        poke("params", random_bits(rng, isa.PARAM_BITS))
        poke("x_signed", int(rng.integers(0, 2)))
        poke("y_signed", int(rng.integers(0, 2)))
        poke("y_lo", int(rng.integers(-256, 256)))
        poke("y_hi", int(rng.integers(-256, 256)))
        poke("table__payload", random_bits(rng, self.layouts.table_width))

    def drive(self):
        """Set this cycle's inputs; return ``(row, tag, expected)`` entering now, or None."""
        cycle = self.cycle
        self.cycle += 1
        self.poke("table__valid", 0)
        if self.queue and self.queue[0][0].layer != self.loaded and not self.writes:
            self.loading = self.queue[0][0].layer
            self.writes.extend(enumerate(self.layouts.words(self.loading)[1:]))
        if self.writes:
            self._scramble()
            self.wait = 0
            if cycle > self.last_exit and not (self.idle and self.rng.random() < self.idle):
                addr, word = self.writes.popleft()
                self.poke("table__valid", 1)
                self.poke("table__payload", self.layouts.table_bits(addr, word))
                self.table_writes += 1
                if not self.writes:
                    self.loaded = self.loading
            return None
        if self.wait or not self.queue or (self.idle and self.rng.random() < self.idle):
            self.wait = max(0, self.wait - 1)
            self._scramble()
            return None
        row, tag = self.queue.popleft()
        self.wait = self.layouts.spacing - 1
        self.last_exit = cycle + self.layouts.latency
        layer = row.layer
        self.poke("i__valid", 1)
        self.poke("i__payload", self.layouts.i_bits(row.a, row.b, tag))
        self.poke("params", self.layouts.words(layer)[0])
        self.poke("x_signed", layer.signed)
        self.poke("y_signed", layer.signed)
        self.poke("y_lo", row.bounds[0])
        self.poke("y_hi", row.bounds[1])
        return row, tag, row.expected


def random_bits(rng, width):
    """Return a random ``width``-bit integer."""
    return int.from_bytes(rng.bytes((width + 7) // 8), "little") & ((1 << width) - 1)


def cocotb_poke(dut):
    """Return a ``poke`` for :class:`RowDriver` that sets the DUT's ports (masked to their widths)."""
    def poke(name, value):
        handle = getattr(dut, name)
        handle.value = value & ((1 << len(handle)) - 1)
    return poke


class QAddBench:
    def __init__(self, dut, seed, idle=0.0):
        self.dut = dut
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.config = HardwareConfig.from_dict(json.loads(os.environ["ACCEL_CONFIG"]))
        self.layouts = QAddLayouts(self.config, int(os.environ.get("ACCEL_TAG_WIDTH", "18")))
        self.driver = RowDriver(cocotb_poke(dut), self.layouts, self.rng, idle)
        self.scoreboard = Scoreboard(self.layouts.latency, seed)
        self.cycle = 0
        self.rows = 0
        self.layers = 0
        dut._log.info(f"qadd bench: {self.config.qadd_lanes} lanes for {self.config.rows} bytes, COCOTB_RANDOM_SEED="
                      f"{os.environ.get('COCOTB_RANDOM_SEED')}, test seed={seed}")

    @property
    def cases(self):
        return self.rows * self.config.rows

    def queue_rows(self, rows):
        for row in rows:
            self.driver.send(row, self.rows & self.layouts.tag_mask)
            self.rows += 1

    async def run(self, label):
        self.dut.table__valid.value = 0
        seconds = await drive_pipeline(self, limit=300 * (self.rows + 100))
        self.dut._log.info(f"MEASURE qadd {label}: cases={self.cases} rows={self.scoreboard.checked} "
                           f"table_writes={self.driver.table_writes} cycles={self.cycle} "
                           f"latency={self.layouts.latency} wall={seconds:.3f}s")


@cocotb.test()
async def test_exhaustive_layers(dut):
    """All 65,536 (a, b) pairs for several layers: x_is_b, ties, a fused ReLU, int8, QDQ, swap."""
    bench = QAddBench(dut, cocotb.RANDOM_SEED)
    for layer in exhaustive_layers(bench.rng, int(os.environ.get("QADD_EXHAUSTIVE_LAYERS", "6"))):
        recipe = layer.recipe()
        dut._log.info(f"exhaustive layer: {layer}: mult={recipe.mult} shift={recipe.shift} "
                      f"tie_even={recipe.tie_even} x_is_b={recipe.x_is_b}")
        bench.queue_rows(make_rows(layer, *exhaustive_pairs(layer), bench.config.rows))
    await bench.run("exhaustive")


@cocotb.test()
async def test_edge_and_random_layers(dut):
    """Targeted layers, then random layers of a few dozen rows each, per-row clamps, idle cycles."""
    bench = QAddBench(dut, cocotb.RANDOM_SEED, idle=0.1)
    lanes = bench.config.rows
    for layer in edge_layers():
        bench.queue_rows(make_rows(layer, *random_cases(bench.rng, layer, 16 * lanes), lanes, bench.rng))
    n = int(os.environ.get("QADD_RANDOM_ROWS", "2000"))
    while n > 0:
        layer = random_layer(bench.rng)
        count = int(bench.rng.integers(1, 60))
        bench.queue_rows(make_rows(layer, *random_cases(bench.rng, layer, count * lanes), lanes, bench.rng))
        n -= count
    await bench.run("random")
