# amaranth: UnusedElaboratable=no
"""Check the datapath components in Amaranth's simulator: PE, systolic array, requantizer.

The models (PE registers, tiled NumPy products, ``numerics.requantize_integer`` with the
bias) and the case generators are shared with the Verilator benches in ``tests/sim``.
``ACCEL_SEED`` picks the random seed (default 1); every test prints it.
"""

import contextlib
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import signed
from amaranth.lib import wiring
from amaranth.sim import Simulator

from accel.config import BufferSpec, HardwareConfig, preset
from accel.hdl.pe import Multiplier, ProcessingElement, multiplier
from accel.hdl.requant import Requantizer
from accel.hdl.systolic import SystolicArray

from .sim.bench_pe import PeModel, random_inputs
from .sim.bench_requant import RequantRow, edge_rows, expected_bytes, expected_float, random_rows
from .sim.bench_systolic import X_MAX, X_MIN, assemble, random_matmul, tile_matmul, wrap

SEED = int(os.environ.get("ACCEL_SEED", "1"))


def small_config(rows=3, cols=3, **overrides):
    """Return a non-preset config: by default 3x3, 8-bit weights, 24-bit accumulators."""
    fields = dict(name=f"test-{rows}x{cols}", rows=rows, cols=cols, imem=BufferSpec(64),
                  abuf=BufferSpec(256), wbuf=BufferSpec(256), accbuf=BufferSpec(64),
                  pbuf=BufferSpec(64), acc_width=24, weight_bits=8)
    fields.update(overrides)
    return HardwareConfig(**fields)


ARRAY_CONFIGS = [preset("sim-small"), small_config(), small_config(rows=1, cols=1),
                 small_config(rows=2, cols=2, acc_width=32, weight_bits=9)]


# -- simulation helpers -----------------------------------------------------------------


async def stream_put(ctx, stream, payload):
    """Offer ``payload`` on ``stream`` until it transfers; leave ``valid`` low after it."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    ready = 0
    while not ready:  # like `ctx.tick().until(ready)`, which leaves noise when a test fails
        _, _, ready = await ctx.tick().sample(stream.ready)
    ctx.set(stream.valid, 0)


def _run(dut, testbenches, vcd_path=None):
    sim = Simulator(dut)
    sim.add_clock(1e-8, if_exists=True)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    if vcd_path is None:
        sim.run()
    else:
        with sim.write_vcd(str(vcd_path)):
            sim.run()


def simulate(make):
    """Run the simulation ``make()`` returns as ``(dut, testbenches)`` on a 100 MHz clock.

    If it fails, build it again with ``make()`` (which must start from a fresh state and
    the same seed), run it with a VCD writer, print where the VCD went and re-raise.
    """
    dut, testbenches = make()
    try:
        _run(dut, testbenches)
    except Exception:
        label = os.environ.get("PYTEST_CURRENT_TEST", "simulation").split(" ")[0]
        vcd_dir = Path(__file__).resolve().parents[1] / ".cache" / "vcd"
        vcd_dir.mkdir(parents=True, exist_ok=True)
        vcd_path = vcd_dir / (re.sub(r"[^A-Za-z0-9_.-]", "-", label.rsplit("/", 1)[-1]) + ".vcd")
        dut, testbenches = make()
        with contextlib.suppress(Exception):
            _run(dut, testbenches, vcd_path)
        print(f"waveform of the failing simulation: {vcd_path}")
        raise


def rng_for(*salt):
    """Return a NumPy generator for this test, seeded from SEED and ``salt``; print the seed."""
    print(f"seed={SEED}")
    return np.random.default_rng([SEED, *salt])


# -- processing element -----------------------------------------------------------------


def test_multiplier_factory_returns_an_exact_component():
    mul = multiplier(signed(9), signed(9))
    assert isinstance(mul, Multiplier) and isinstance(mul, wiring.Component)
    assert mul.p.shape().width == 18 and mul.p.shape().signed

    async def testbench(ctx):
        for a, b in [(-256, -256), (-256, 255), (255, 255), (0, -1), (-1, -1)]:
            ctx.set(mul.a, a)
            ctx.set(mul.b, b)
            assert ctx.get(mul.p) == a * b

    simulate(lambda: (mul, [testbench]))


def test_pe_swaps_one_cycle_ahead_and_wraps():
    pe = ProcessingElement(weight_bits=9, acc_width=32)

    async def cycle(ctx, x=0, swap=0, psum_in=0, w=0, w_load=0):
        for port, value in (("x", x), ("swap", swap), ("psum_in", psum_in), ("w", w),
                            ("w_load", w_load)):
            ctx.set(getattr(pe, port), value)
        await ctx.tick()
        return ctx.get(pe.x_out), ctx.get(pe.swap_out), ctx.get(pe.psum_out)

    async def testbench(ctx):
        # The product is registered: psum_out adds the product of the previous cycle's x.
        assert await cycle(ctx, x=5, psum_in=9) == (5, 0, 9)            # active weight 0
        await cycle(ctx, w=-256, w_load=1)                              # shadow only
        assert (await cycle(ctx, x=3, psum_in=1, swap=1))[2] == 1       # swap: not yet active
        assert (await cycle(ctx, x=-256, psum_in=1))[2] == 1            # 3 * 0 from the last cycle
        assert (await cycle(ctx, x=255, psum_in=1))[2] == 65537         # -256 * -256
        assert (await cycle(ctx, x=-256, psum_in=2**31 - 1))[2] == 2**31 - 1 - 65280
        assert (await cycle(ctx, psum_in=2**31 - 1))[2] == -2**31 + 65535  # wraps
        # swap and load on one edge: active takes the old shadow
        await cycle(ctx, w=7, w_load=1)
        await cycle(ctx, swap=1, w=-5, w_load=1)
        assert await cycle(ctx, x=3, swap=1) == (3, 1, 0)
        assert (await cycle(ctx, x=3))[2] == 21
        assert (await cycle(ctx))[2] == -15

    simulate(lambda: (pe, [testbench]))


@pytest.mark.parametrize("weight_bits,acc_width", [(9, 32), (8, 24)])
def test_pe_random_cycles_match_the_model(weight_bits, acc_width):
    rng = rng_for(weight_bits)
    py_rng = random.Random(int(rng.integers(2**32)))
    inputs = [random_inputs(py_rng, weight_bits, acc_width) for _ in range(1500)]

    def make():
        pe = ProcessingElement(weight_bits=weight_bits, acc_width=acc_width)
        model = PeModel(weight_bits, acc_width)

        async def testbench(ctx):
            for n, (x, swap, psum_in, w, w_load) in enumerate(inputs):
                for port, value in zip(("x", "swap", "psum_in", "w", "w_load"), inputs[n]):
                    ctx.set(getattr(pe, port), value)
                await ctx.tick()
                got = (ctx.get(pe.x_out), ctx.get(pe.swap_out), ctx.get(pe.psum_out))
                assert got == model.step(x, swap, psum_in, w, w_load), f"seed {SEED}, cycle {n}"

        return pe, [testbench]

    simulate(make)


def test_pe_rejects_bad_widths():
    with pytest.raises(ValueError, match="weight_bits must be"):
        ProcessingElement(weight_bits=1)
    with pytest.raises(ValueError, match="acc_width must be"):
        ProcessingElement(weight_bits=9, acc_width=12)


# -- systolic array ---------------------------------------------------------------------


def test_array_ports_and_latency():
    config = preset("sim-small")
    array = SystolicArray(config, tag_width=7)
    assert array.latency == config.rows + config.cols + 1 == 9
    assert array.tag_width == 7 and array.config is config
    assert array.load.payload.shape().size == config.cols * config.weight_bits
    assert array.x.payload.shape().size == config.rows * 9 + 1 + 7
    assert array.y.payload.shape().size == config.cols * config.acc_width + 7
    assert array.y.signature.always_ready
    assert SystolicArray(small_config()).latency == 7
    with pytest.raises(AttributeError):
        array.latency = 3
    with pytest.raises(TypeError, match="config must be a HardwareConfig"):
        SystolicArray("sim-small")
    with pytest.raises(ValueError, match="tag_width must be a positive integer"):
        SystolicArray(config, tag_width=0)


def run_array(config, tiles, idle=0.0, idle_seed=0):
    """Stream ``tiles`` through a SystolicArray; return what the monitor recorded.

    Returns ``(outputs, first_cycles, load_cycles)``: each tile's output rows, the cycle of
    each tile's first x transfer, and the cycle of every load transfer. Every output row is
    checked against the tile's expected rows, its tag and the latency on the way. With
    ``idle``, each transfer is preceded by 1-3 idle cycles with that probability.
    """
    total = sum(len(t.inputs) for t in tiles)
    record = {}

    def make():
        array = SystolicArray(config)
        rng = np.random.default_rng([SEED, idle_seed])
        outputs = record["outputs"] = [[] for _ in tiles]
        first_cycles = record["first_cycles"] = []
        load_cycles = record["load_cycles"] = []

        async def idle_cycles(ctx):
            if idle and rng.random() < idle:
                for _ in range(int(rng.integers(1, 4))):
                    await ctx.tick()

        async def load_driver(ctx):
            for tile in tiles:
                for weights_row in tile.weights:
                    await idle_cycles(ctx)
                    await stream_put(ctx, array.load, [int(v) for v in weights_row])

        async def x_driver(ctx):
            for index, tile in enumerate(tiles):
                for row, inputs_row in enumerate(tile.inputs):
                    await idle_cycles(ctx)
                    await stream_put(ctx, array.x, {"data": [int(v) for v in inputs_row],
                                                    "first": int(row == 0),
                                                    "tag": index << 8 | row})

        async def monitor(ctx):
            sent, seen, cycle = [], 0, 0
            while seen < total:
                _, _, x_fire, x_first, x_tag, load_fire, y_valid, y = await ctx.tick().sample(
                    array.x.valid & array.x.ready, array.x.payload.first, array.x.payload.tag,
                    array.load.valid & array.load.ready, array.y.valid, array.y.payload)
                if load_fire:
                    load_cycles.append(cycle)
                if x_fire:
                    sent.append((cycle, x_tag))
                    if x_first:
                        first_cycles.append(cycle)
                if y_valid:
                    x_cycle, tag = sent[seen]
                    index, row = tag >> 8, tag & 0xFF
                    where = f"seed {SEED}: tile {index} row {row}"
                    assert cycle - x_cycle == array.latency, where
                    assert y.tag == tag, where
                    got = [int(v) for v in y.data]
                    assert got == tiles[index].expected[row].tolist(), where
                    outputs[index].append(got)
                    seen += 1
                cycle += 1

        return array, [load_driver, x_driver, monitor]

    simulate(make)
    return record["outputs"], record["first_cycles"], record["load_cycles"]


@pytest.mark.parametrize("config", ARRAY_CONFIGS, ids=lambda c: c.name)
def test_array_back_to_back_tiles_match_numpy(config):
    rng = rng_for(config.rows, 1)
    problems = [random_matmul(rng, config) for _ in range(5)]
    tiles = [t for i, (x, w) in enumerate(problems) for t in tile_matmul(x, w, config, i)]
    outputs, first_cycles, load_cycles = run_array(config, tiles)

    rows = config.rows
    counts = [len(t.inputs) for t in tiles]
    for k in range(1, len(tiles)):
        assert first_cycles[k] - first_cycles[k - 1] == max(counts[k - 1], rows + 1)
        # load.ready rises the cycle after the previous tile's first row transferred
        assert load_cycles[k * rows] == first_cycles[k - 1] + 1
    for index, (x, w) in enumerate(problems):
        mine = [i for i, t in enumerate(tiles) if t.matmul == index]
        n_padded = -(-w.shape[1] // config.cols) * config.cols
        got = assemble([tiles[i] for i in mine], [outputs[i] for i in mine],
                       (x.shape[0], n_padded), config)
        assert np.array_equal(wrap(got[:, :w.shape[1]], config.acc_width),
                              wrap(x @ w, config.acc_width))


@pytest.mark.parametrize("config", ARRAY_CONFIGS, ids=lambda c: c.name)
def test_array_with_idle_cycles_matches_numpy(config):
    rng = rng_for(config.rows, 2)
    tiles = []
    for index in range(4):
        x, w = random_matmul(rng, config, max_m=12)
        tiles += tile_matmul(x, w, config, index)
    run_array(config, tiles, idle=0.4, idle_seed=config.rows)


def test_array_long_tiles_have_no_bubbles():
    config = preset("sim-small")
    rng = rng_for(3)
    tiles = []
    for index in range(3):
        x, w = random_matmul(rng, config)
        x = rng.integers(X_MIN, X_MAX + 1, (40, x.shape[1]))
        tiles += tile_matmul(x, w, config, index)
    _, first_cycles, _ = run_array(config, tiles)
    assert first_cycles[-1] - first_cycles[0] == sum(len(t.inputs) for t in tiles[:-1])


# -- requantizer ------------------------------------------------------------------------


def test_requantizer_ports_and_latency():
    config = preset("sim-small")
    requant = Requantizer(config, tag_width=5)
    assert requant.latency == 9 and requant.spacing == 1 and requant.tag_width == 5
    shared = Requantizer(HardwareConfig.from_dict({**config.to_dict(), "requant_lanes": 1}))
    assert shared.spacing == 4 and shared.latency == 12
    assert requant.i.payload.shape().size == config.cols * config.acc_width + 5
    assert requant.o.payload.shape().size == config.cols * 8 + 5
    assert requant.params.shape().size == config.cols * 64
    assert requant.i.signature.always_ready and requant.o.signature.always_ready
    with pytest.raises(TypeError, match="config must be a HardwareConfig"):
        Requantizer(None)


def test_requant_lanes_must_divide_the_columns():
    base = preset("sim-small").to_dict()
    assert HardwareConfig.from_dict(base).requant_lanes == 4  # None: one lane per column
    assert HardwareConfig.from_dict({**base, "requant_lanes": 2}).requant_spacing == 2
    assert preset("icebreaker").requant_spacing == 4
    for bad in (0, 3, 8, 2.0, True):
        with pytest.raises(ValueError, match=r"requant_lanes must be a positive divisor of cols \(4\)"):
            HardwareConfig.from_dict({**base, "requant_lanes": bad})
    ids = {HardwareConfig.from_dict({**base, "requant_lanes": n}).config_id() for n in (1, 2, 4)}
    assert len(ids) == 3


def run_requantizer(config, rows, idle=0.2, idle_seed=0):
    """Feed ``rows`` (one per ``spacing`` cycles, with idle cycles) and return the output bytes per row.

    Each row comes with its own parameters; idle cycles carry other rows' parameters, so
    only what is sampled with a valid row may matter. Latency and tags are checked.
    """
    got = []

    def make():
        requant = Requantizer(config)
        rng = np.random.default_rng([SEED, idle_seed])
        got.clear()

        def set_row(ctx, row, tag):
            ctx.set(requant.i.payload, {"acc": row.acc, "tag": tag})
            ctx.set(requant.params, row.params())
            ctx.set(requant.y_zp, row.zp)
            ctx.set(requant.y_lo, row.lo)
            ctx.set(requant.y_hi, row.hi)
            ctx.set(requant.y_signed, row.y_signed)

        async def driver(ctx):
            for tag, row in enumerate(rows):
                while idle and rng.random() < idle:
                    ctx.set(requant.i.valid, 0)
                    set_row(ctx, rows[int(rng.integers(len(rows)))], 0)
                    await ctx.tick()
                ctx.set(requant.i.valid, 1)
                set_row(ctx, row, tag)
                await ctx.tick()
                for _ in range(requant.spacing - 1):  # time-multiplexed lanes: the row's other cycles
                    ctx.set(requant.i.valid, 0)
                    set_row(ctx, rows[int(rng.integers(len(rows)))], 0)
                    await ctx.tick()
            ctx.set(requant.i.valid, 0)

        async def monitor(ctx):
            cycle, entered = 0, []
            while len(got) < len(rows):
                _, _, i_valid, o_valid, o = await ctx.tick().sample(
                    requant.i.valid, requant.o.valid, requant.o.payload)
                if i_valid:
                    entered.append(cycle)
                if o_valid:
                    assert cycle - entered[len(got)] == requant.latency
                    assert o.tag == len(got)
                    got.append([int(v) for v in o.data])
                cycle += 1

        return requant, [driver, monitor]

    simulate(make)
    return got


REQUANT_CONFIGS = [preset("sim-small"), small_config(rows=2, cols=2),
                   HardwareConfig.from_dict({**preset("sim-small").to_dict(), "requant_lanes": 1}),
                   small_config(rows=4, cols=4, requant_lanes=2), small_config(rows=3, cols=3, requant_lanes=1)]


def requant_id(config):
    return f"{config.cols}cols-{config.requant_lanes}lanes-acc{config.acc_width}"


@pytest.mark.parametrize("config", REQUANT_CONFIGS, ids=requant_id)
def test_requantizer_edge_cases_match_numerics(config):
    rng = rng_for(config.cols, 4)
    rows = edge_rows(rng, config.cols, config.acc_width)
    got = run_requantizer(config, rows, idle_seed=config.cols)
    for row, out in zip(rows, got):
        assert out == expected_bytes(row) == expected_float(row), f"seed {SEED}: {row}"


@pytest.mark.parametrize("config", REQUANT_CONFIGS, ids=requant_id)
def test_requantizer_random_rows_match_numerics(config):
    rng = rng_for(config.cols, 5)
    rows = random_rows(rng, 1200 // config.cols, config.cols, config.acc_width)
    got = run_requantizer(config, rows, idle_seed=config.cols)
    for row, out in zip(rows, got):
        assert out == expected_bytes(row) == expected_float(row), f"seed {SEED}: {row}"
    # About half the cases land inside the output range, where every rounding matters.
    inside = sum(b not in ((128, 127) if row.y_signed else (0, 255))
                 for row, out in zip(rows, got) for b in out)
    assert inside > 0.4 * len(rows) * config.cols


def test_requantizer_zero_and_saturation_at_the_extremes():
    """Check a few hand-computed outputs, including both ends of the exponent range."""
    config = small_config(rows=2, cols=2, acc_width=32)
    f32 = np.float32
    m_max = np.nextafter(f32(256), f32(0))
    rows = [
        RequantRow([0, 0], [0, 0], [f32(1), f32(1)], 1, -7, -128, 127),         # y = zp
        RequantRow([2**31 - 1, -2**31], [0, 0], [m_max, m_max], 1, 0, -128, 127),
        RequantRow([2**31 - 1, -2**31], [0, 0], [m_max, m_max], 0, 0, 0, 255),
        RequantRow([2**31 - 1, -2**31], [0, 0], [f32(2.0**-40)] * 2, 1, 5, -128, 127),
        RequantRow([5, -5], [0, 0], [f32(0.5), f32(0.5)], 1, 0, -128, 127),       # ties to even
        RequantRow([7, -7], [0, 0], [f32(0.5), f32(0.5)], 1, 0, -128, 127),
        RequantRow([2**31 - 1, 1], [1, 0], [f32(2.0**-31)] * 2, 1, 0, -128, 127),  # wraps to -2**31
        RequantRow([300, -300], [0, 0], [f32(1), f32(1)], 1, 0, -3, 4),            # clamp
    ]
    got = run_requantizer(config, rows, idle=0)
    assert got == [[249, 249], [127, 128], [255, 0], [5, 5], [2, 254], [4, 252], [255, 0],
                   [4, 253]]
    assert got == [expected_bytes(r) for r in rows]

