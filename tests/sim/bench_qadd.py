# amaranth: UnusedElaboratable=no
"""Check QAddLanes in Verilator against ``accel.numerics.qlinear_add_integer`` (a cocotb bench).

Run it through ``accel.sim.verilator.run`` (see ``test_qadd.py``), not by pytest collection.
``ACCEL_CONFIG`` (``HardwareConfig.to_dict()`` JSON) and ``ACCEL_TAG_WIDTH`` in the
simulator's environment give the design. ``QADD_EXHAUSTIVE_LAYERS`` sets how many layers
(scale/zero-point sets) get all 65,536 (a, b) pairs (default 4); ``QADD_RANDOM_ROWS`` the
number of rows of the random test (default 2000).

A layer (:class:`AddLayer`) holds a QLinearAdd node's scales, zero points, type and clamp;
:func:`add_params_for` turns it into the :class:`accel.isa.AddParams` fields the way
``qlinear_add_integer`` computes its constants. The model is :func:`expected_bytes`;
:func:`edge_layers`, :func:`random_layer`, :func:`exhaustive_pairs` and
:func:`random_cases` make the cases. The Amaranth-simulator tests
(``tests/test_hdl_qadd.py``) import them from here.
"""

import collections
import dataclasses
import json
import os

import cocotb
import numpy as np

from accel import numerics
from accel.config import HardwareConfig
from accel.hdl.qadd import QAddLanes

try:  # imported as tests.sim.bench_qadd (by tests/test_hdl_qadd.py)
    from .bench_requant import Scoreboard, drive_pipeline
except ImportError:  # imported by cocotb under its file name, from this directory
    from bench_requant import Scoreboard, drive_pipeline

CLOCK_PERIOD_NS = 10
F32 = np.float32


def add_params_for(a_scale, a_zp, b_scale, b_zp, c_scale, c_zp, dtype, qdq_s8_to_u8=False, swap=False):
    """Return the ``isa.AddParams`` fields of a QLinearAdd layer (``numerics.qlinear_add_params``)."""
    return numerics.qlinear_add_params(a_scale, a_zp, b_scale, b_zp, c_scale, c_zp, dtype,
                                       qdq_s8_to_u8=qdq_s8_to_u8, swap=swap)


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
        return tuple(int(v) for v in numerics._clamp_bounds((self.lo, self.hi), np.dtype(self.dtype)))

    def params(self):
        return add_params_for(self.a_scale, self.a_zp, self.b_scale, self.b_zp, self.c_scale,
                              self.c_zp, self.dtype, self.qdq_s8_to_u8, self.swap)

    def code_range(self):
        return (-128, 128) if self.signed else (0, 256)


def expected_bytes(layer, port_a, port_b, reference=numerics.qlinear_add_integer):
    """Return the output bytes for the codes on the ``a`` and ``b`` ports (int64 arrays).

    Without ``swap``, the ports carry the node's ``a`` and ``b``. With ``swap`` they carry
    ``b`` and ``a``, and the node's ``a`` is given the shape ORT swaps on: ``(n, 1)``
    against ``(n, 2)``.
    """
    dt = np.dtype(layer.dtype)
    port_a, port_b = np.asarray(port_a).astype(dt), np.asarray(port_b).astype(dt)
    args = (layer.a_scale, layer.a_zp, None, layer.b_scale, layer.b_zp, layer.c_scale,
            layer.c_zp, dt)
    kwargs = {"clamp": (layer.lo, layer.hi), "qdq_s8_to_u8": layer.qdq_s8_to_u8}
    if not layer.swap:
        a, b = port_a, port_b
        if a.size == 1:  # ORT swaps (1,) + (1,); keep the ports' order
            a, b = np.repeat(a, 2), np.repeat(b, 2)
            y = reference(a, *args[:2], b, *args[3:], **kwargs)[:1]
        else:
            y = reference(a, *args[:2], b, *args[3:], **kwargs)
    else:
        a, b = port_b[:, None], np.stack([port_a, port_a], axis=1)
        y = reference(a, *args[:2], b, *args[3:], **kwargs)[:, 0]
    return y.astype(np.int64) & 0xFF


def exhaustive_pairs(layer):
    """Return every (a, b) code pair of the layer's type as two flat int64 arrays."""
    codes = np.arange(*layer.code_range(), dtype=np.int64)
    a, b = np.meshgrid(codes, codes, indexing="ij")
    return a.ravel(), b.ravel()


def random_layer(rng, dtype=None, qdq_s8_to_u8=None):
    """Return a random layer: scales over a wide range, often with a tiny or huge output scale,
    zero points anywhere (often at the type's ends), sometimes a clamp or the swap."""
    dtype = dtype or str(rng.choice(["int8", "uint8"]))
    if qdq_s8_to_u8 is None:
        qdq_s8_to_u8 = dtype == "int8" and bool(rng.random() < 0.5)
    lo_code, hi_code = (-128, 127) if dtype == "int8" else (0, 255)

    def scale(lo=-20, hi=4):
        return float(F32(rng.uniform(1, 2) * 2.0**int(rng.integers(lo, hi))))

    def zp():
        return int(rng.choice([lo_code, hi_code, (lo_code + hi_code + 1) // 2,
                               rng.integers(lo_code, hi_code + 1)]))

    a_scale, b_scale = scale(), scale()
    kind = rng.random()
    if kind < 0.6:    # output range near the inputs' sum: every rounding step matters
        c_scale = float(F32(max(a_scale, b_scale) * rng.uniform(0.3, 4)))
    elif kind < 0.8:  # extreme ratios: |v| >= 2**31, saturation, or everything rounds to 0
        c_scale = scale(-40, 30)
    else:             # powers of two: exact ties
        a_scale, b_scale, c_scale = (float(2.0**int(rng.integers(-8, 2))) for _ in range(3))
    lo = hi = None
    if rng.random() < 0.3:
        lo = int(rng.integers(lo_code, hi_code + 1))
        hi = int(rng.integers(lo, hi_code + 1)) if rng.random() < 0.5 else None
    return AddLayer(a_scale, zp(), b_scale, zp(), c_scale, zp(), dtype, qdq_s8_to_u8,
                    bool(rng.random() < 0.15), lo, hi)


def edge_layers():
    """Return targeted layers: ties, |v| >= 2**31, zero-point extremes, clamps, swap, QDQ."""
    layers = []
    for dtype in ("uint8", "int8"):
        lo_code, hi_code = (-128, 127) if dtype == "int8" else (0, 255)
        qdqs = (False, True) if dtype == "int8" else (False,)
        for qdq in qdqs:
            layers += [
                AddLayer(1.0, 0, 1.0, 0, 1.0, 0, dtype, qdq),                  # plain sum, saturates
                AddLayer(0.5, 0, 0.5, 0, 1.0, 0, dtype, qdq),                  # ties to even
                AddLayer(0.25, 3, 0.75, -1 if dtype == "int8" else 1, 0.5, 7, dtype, qdq),
                AddLayer(1e-3, 0, 1e-3, 0, 1.0, 0, dtype, qdq),                # differs from exact
                AddLayer(1.0, lo_code, 1.0, hi_code, 2.0**-30, 0, dtype, qdq),  # |v| >= 2**31
                AddLayer(1.0, hi_code, 1.0, lo_code, 2.0**-24, hi_code, dtype, qdq),
                AddLayer(3.0, 0, 5.0, 0, 2.0**30, lo_code, dtype, qdq),        # everything -> zp
                AddLayer(2.0**-30, 0, 2.0**20, 0, 2.0**-10, 0, dtype, qdq),    # far-apart terms
                AddLayer(0.1, 1, 0.2, 2, 0.3, 3, dtype, qdq, lo=lo_code + 10, hi=hi_code - 20),
                AddLayer(0.1, 1, 0.2, 2, 0.3, 3, dtype, qdq, swap=True),
                AddLayer(0.02, lo_code, 0.03, hi_code, 0.04, (lo_code + hi_code) // 2, dtype,
                         qdq, lo=5, hi=5),
            ]
    return layers


def random_cases(rng, layer, n):
    """Return ``n`` random (a, b) code pairs of the layer's type."""
    lo, hi = layer.code_range()
    return rng.integers(lo, hi, n), rng.integers(lo, hi, n)


@dataclasses.dataclass
class AddRow:
    """One row of lanes: the port codes, the layer (sampled with the row), the expected bytes."""

    layer: AddLayer
    a: list
    b: list
    expected: list


def make_rows(layer, port_a, port_b, lanes):
    """Cut the cases into rows of ``lanes``, padding the last row with zeros."""
    pad = -len(port_a) % lanes
    port_a = np.concatenate([np.asarray(port_a, np.int64), np.zeros(pad, np.int64)])
    port_b = np.concatenate([np.asarray(port_b, np.int64), np.zeros(pad, np.int64)])
    expected = expected_bytes(layer, port_a, port_b)
    return [AddRow(layer, port_a[i:i + lanes].tolist(), port_b[i:i + lanes].tolist(),
                   expected[i:i + lanes].tolist()) for i in range(0, len(port_a), lanes)]


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
        self.params_layout = qadd.params.shape()
        self._params_cache = {}

    def i_bits(self, row, tag):
        bits = (tag & self.tag_mask) << self.tag_offset
        for lane, (a, b) in enumerate(zip(row.a, row.b)):
            bits |= (a & 0xFF) << (self.a_offset + 8 * lane)
            bits |= (b & 0xFF) << (self.b_offset + 8 * lane)
        return bits

    def noise_row(self, rng):
        """Return random bytes on both ports (for idle cycles), as an :class:`AddRow` without a layer."""
        a, b = rng.integers(0, 256, (2, self.lanes)).tolist()
        return AddRow(None, a, b, None)

    def params_bits(self, layer):
        if layer not in self._params_cache:
            self._params_cache[layer] = self.params_layout.const(layer.params()).as_bits()
        return self._params_cache[layer]

    def o_values(self, bits):
        data = bits >> self.data_offset
        return ([(data >> (8 * lane)) & 0xFF for lane in range(self.lanes)],
                (bits >> self.o_tag_offset) & self.tag_mask)


class RowDriver:
    """Drive one row and its layer's parameters per cycle, with random idle cycles.

    With time-multiplexed lanes (``spacing > 1``) the ``spacing - 1`` cycles after a row are
    idle too, with scrambled row bytes and parameters (the lanes must use the held ones).
    """

    def __init__(self, dut, layouts, rng, idle=0.0):
        self.dut = dut
        self.layouts = layouts
        self.rng = rng
        self.idle = idle
        self.queue = collections.deque()
        self.wait = 0

    def send(self, row, tag):
        self.queue.append((row, tag))

    def drive(self):
        """Set this cycle's inputs; return ``(row, tag, expected)`` entering now, or None."""
        dut = self.dut
        if self.wait or not self.queue or (self.idle and self.rng.random() < self.idle):
            self.wait = max(0, self.wait - 1)
            dut.i__valid.value = 0
            # Scramble the parameters of idle cycles: only valid rows may matter.
            dut.params.value = int(self.rng.integers(0, 2**62)) << 50
            dut.x_signed.value = int(self.rng.integers(0, 2))
            dut.i__payload.value = self.layouts.i_bits(self.layouts.noise_row(self.rng), 0)
            return None
        row, tag = self.queue.popleft()
        self.wait = self.layouts.spacing - 1
        layer = row.layer
        lo, hi = layer.bounds
        dut.i__valid.value = 1
        dut.i__payload.value = self.layouts.i_bits(row, tag)
        dut.params.value = self.layouts.params_bits(layer)
        dut.x_signed.value = layer.signed
        dut.y_signed.value = layer.signed
        dut.y_lo.value = lo & 0x1FF
        dut.y_hi.value = hi & 0x1FF
        return row, tag, row.expected


class QAddBench:
    def __init__(self, dut, seed, idle=0.0):
        self.dut = dut
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.config = HardwareConfig.from_dict(json.loads(os.environ["ACCEL_CONFIG"]))
        self.layouts = QAddLayouts(self.config, int(os.environ.get("ACCEL_TAG_WIDTH", "18")))
        self.driver = RowDriver(dut, self.layouts, self.rng, idle)
        self.scoreboard = Scoreboard(self.layouts.latency, seed)
        self.cycle = 0
        self.rows = 0
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
        seconds = await drive_pipeline(self, limit=100 * (self.rows + 100))
        self.dut._log.info(f"MEASURE qadd {label}: cases={self.cases} rows={self.scoreboard.checked} "
                      f"cycles={self.cycle} latency={self.layouts.latency} wall={seconds:.3f}s")


def exhaustive_layers(rng, count):
    """Return ``count`` layers for the exhaustive test: uint8, int8, int8 QDQ, then random ones."""
    fixed = [AddLayer(0.0123, 131, 0.0077, 117, 0.0191, 122, "uint8", lo=3),
             AddLayer(0.0311, -5, 0.0203, 9, 0.0412, -3, "int8"),
             AddLayer(0.0311, -5, 0.0203, 9, 0.0412, -3, "int8", qdq_s8_to_u8=True)]
    kinds = [("uint8", False), ("int8", False), ("int8", True)]
    extra = [random_layer(rng, *kinds[k % 3]) for k in range(max(0, count - len(fixed)))]
    return (fixed + extra)[:count]


@cocotb.test()
async def test_exhaustive_layers(dut):
    """All 65,536 (a, b) pairs for several layers: uint8, int8 and int8 after the QDQ rewrite."""
    bench = QAddBench(dut, cocotb.RANDOM_SEED)
    for layer in exhaustive_layers(bench.rng, int(os.environ.get("QADD_EXHAUSTIVE_LAYERS", "4"))):
        dut._log.info(f"exhaustive layer: {layer}")
        bench.queue_rows(make_rows(layer, *exhaustive_pairs(layer), bench.config.rows))
    await bench.run("exhaustive")


@cocotb.test()
async def test_edge_and_random_layers(dut):
    """Targeted layers, then a new random layer every few rows, with idle cycles."""
    bench = QAddBench(dut, cocotb.RANDOM_SEED, idle=0.1)
    lanes = bench.config.rows
    for layer in edge_layers():
        bench.queue_rows(make_rows(layer, *random_cases(bench.rng, layer, 64 * lanes), lanes))
    n = int(os.environ.get("QADD_RANDOM_ROWS", "2000"))
    while n > 0:
        layer = random_layer(bench.rng)
        count = int(bench.rng.integers(1, 5))
        bench.queue_rows(make_rows(layer, *random_cases(bench.rng, layer, count * lanes), lanes))
        n -= count
    await bench.run("random")
