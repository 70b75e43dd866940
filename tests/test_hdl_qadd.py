# amaranth: UnusedElaboratable=no
"""Check QAddLanes (VECTOR ADD's lanes) in Amaranth's simulator against onnxruntime's QLinearAdd.

The model (``numerics.qlinear_add_integer``, and ``numerics.qlinear_add`` for the float32
definition), the parameter derivation ``add_params_for`` and the case generators are
shared with the Verilator bench ``tests/sim/bench_qadd.py``. ``ACCEL_SEED`` picks the
random seed (default 1); every test prints it.
"""

import numpy as np
import pytest
from amaranth.lib import data

from accel import numerics
from accel.config import HardwareConfig, preset
from accel.hdl.qadd import QAddLanes

from .sim.bench_qadd import (AddLayer, AddRow, QAddLayouts, add_params_for, edge_layers,
                             expected_bytes, make_rows, random_cases, random_layer)
from .test_hdl_datapath import SEED, rng_for, simulate, small_config

CONFIG = preset("sim-small")


def test_ports_and_latency():
    qadd = QAddLanes(CONFIG, tag_width=5)
    assert qadd.latency == 22 and qadd.tag_width == 5 and qadd.config is CONFIG
    assert qadd.i.payload.shape().size == 2 * 8 * CONFIG.rows + 5
    assert qadd.o.payload.shape().size == 8 * CONFIG.rows + 5
    assert qadd.i.signature.always_ready and qadd.o.signature.always_ready
    assert data.Layout.cast(qadd.params.shape()).size == 128
    assert qadd.y_lo.shape().signed and qadd.y_lo.shape().width == 9
    with pytest.raises(AttributeError):
        qadd.latency = 3
    with pytest.raises(TypeError, match="config must be a HardwareConfig"):
        QAddLanes("sim-small")
    with pytest.raises(ValueError, match="tag_width must be a positive integer"):
        QAddLanes(CONFIG, tag_width=0)


def test_add_params_for_reproduces_the_integer_recipe_constants():
    params = add_params_for(0.5, 0, 0.25, 0, 1.0, 0, "uint8")
    assert params == {"rx_mant": 2**23, "rx_exp": -24, "ry_mant": 2**23, "ry_exp": -25,
                      "fixed_mant": 0, "fixed_exp": -149, "shift": 0, "kernel_signed": 0}
    assert add_params_for(0.5, 0, 0.25, 0, 1.0, 0, "int8")["kernel_signed"] == 1
    qdq = add_params_for(0.5, -3, 0.25, 4, 1.0, 2, "int8", qdq_s8_to_u8=True)
    assert qdq["shift"] == 128 and qdq["kernel_signed"] == 0
    # fixed = zc - fma(rx, zx, ry * zy) = 130 - (125 * 0.5 + 132 * 0.25) = 34.5
    assert qdq["fixed_mant"] * 2.0**qdq["fixed_exp"] == 34.5
    swapped = add_params_for(0.5, 0, 0.25, 0, 1.0, 0, "uint8", swap=True)
    assert (swapped["rx_exp"], swapped["ry_exp"]) == (-25, -24)


def with_lanes(config, lanes):
    """Return ``config`` with ``qadd_lanes = lanes``."""
    return HardwareConfig.from_dict({**config.to_dict(), "qadd_lanes": lanes})


def run_rows(rows, config=CONFIG, idle=0.0, scramble_seed=0):
    """Stream ``rows`` (AddRow) through QAddLanes, checking bytes, tags and latency.

    Rows enter ``qadd.spacing`` cycles apart (at the earliest); the cycles in between carry
    scrambled bytes and parameters, which time-multiplexed lanes must ignore.
    """
    layouts = QAddLayouts(config, 18)

    def make():
        qadd = QAddLanes(config)
        rng = np.random.default_rng([SEED, scramble_seed])

        async def scrambled_tick(ctx):
            ctx.set(qadd.i.valid, 0)
            ctx.set(qadd.i.payload.as_value(), layouts.i_bits(layouts.noise_row(rng), 0))
            ctx.set(qadd.params.as_value(), int(rng.integers(0, 2**62)) << 60)
            ctx.set(qadd.x_signed, int(rng.integers(0, 2)))
            await ctx.tick()

        async def driver(ctx):
            for n, row in enumerate(rows):
                if n:
                    for _ in range(qadd.spacing - 1):
                        await scrambled_tick(ctx)
                while idle and rng.random() < idle:  # idle: scrambled parameters
                    await scrambled_tick(ctx)
                layer = row.layer
                lo, hi = layer.bounds
                ctx.set(qadd.i.valid, 1)
                ctx.set(qadd.i.payload.as_value(), layouts.i_bits(row, n))
                ctx.set(qadd.params.as_value(), layouts.params_bits(layer))
                ctx.set(qadd.x_signed, layer.signed)
                ctx.set(qadd.y_signed, layer.signed)
                ctx.set(qadd.y_lo, lo)
                ctx.set(qadd.y_hi, hi)
                await ctx.tick()
            ctx.set(qadd.i.valid, 0)

        async def monitor(ctx):
            sent, seen, cycle = [], 0, 0
            while seen < len(rows):
                _, _, i_valid, i_tag, o_valid, o_payload = await ctx.tick().sample(
                    qadd.i.valid, qadd.i.payload.tag, qadd.o.valid, qadd.o.payload.as_value())
                if i_valid:
                    sent.append((cycle, i_tag))
                if o_valid:
                    in_cycle, tag = sent[seen]
                    data, got_tag = layouts.o_values(o_payload)
                    row = rows[tag]
                    where = f"seed {SEED}: row {tag} {row}"
                    assert cycle - in_cycle == qadd.latency, where
                    assert got_tag == tag, where
                    assert data == row.expected, f"{where}: got {data}"
                    seen += 1
                cycle += 1

        return qadd, [driver, monitor]

    simulate(make)


def test_targeted_rows_match_integer_and_float_models():
    """Hand-picked pairs on every edge layer; the float32 definition agrees with the model."""
    rng = rng_for(0)
    rows = []
    for layer in edge_layers():
        lo, hi = layer.code_range()
        corners = np.array([lo, lo + 1, -1 if lo else 1, 0, hi - 2, hi - 1], np.int64)
        a, b = np.meshgrid(corners, corners, indexing="ij")
        ra, rb = random_cases(rng, layer, 12)
        a, b = np.concatenate([a.ravel(), ra]), np.concatenate([b.ravel(), rb])
        assert np.array_equal(expected_bytes(layer, a, b),
                              expected_bytes(layer, a, b, numerics.qlinear_add))
        rows += make_rows(layer, a, b, CONFIG.rows)
    run_rows(rows)


def test_random_layers_every_row_with_idle_cycles():
    """A new random layer (type, QDQ, clamp, swap) on every row; parameters sampled with it."""
    rng = rng_for(1)
    rows = []
    for _ in range(300):
        layer = random_layer(rng)
        rows += make_rows(layer, *random_cases(rng, layer, CONFIG.rows), CONFIG.rows)
    run_rows(rows, idle=0.2, scramble_seed=1)


def test_ties_and_rounding_extremes():
    """Exact halves (power-of-two scales) and outputs at |v| >= 2**31 and just below it."""
    rng = rng_for(2)
    rows = []
    for dtype, qdq in (("uint8", False), ("int8", False), ("int8", True)):
        for k in range(-3, 4):
            # v = (a + b) / 2**k: halves at k = 1, quarters at k = 2 ...
            layer = AddLayer(1.0, 0, 1.0, 0, 2.0**k, 0, dtype, qdq)
            rows += make_rows(layer, *random_cases(rng, layer, 4 * CONFIG.rows), CONFIG.rows)
        for c_scale in (2.0**-23, 2.0**-24, 2.0**-30, 2.0**-31, 2.0**-32):
            layer = AddLayer(1.0, 0, 1.0, 0, c_scale, 0, dtype, qdq)
            rows += make_rows(layer, *random_cases(rng, layer, 4 * CONFIG.rows), CONFIG.rows)
        for k in range(8, 27, 2):
            # v = a/2 + b * 2**-k: an odd a is a tie, broken (or not) by a low bit of b
            layer = AddLayer(0.5, 0, 2.0**-k, 0, 1.0, 0, dtype, qdq)
            rows += make_rows(layer, *random_cases(rng, layer, 4 * CONFIG.rows), CONFIG.rows)
    for row in rows:  # the float32 definition agrees
        assert row.expected == expected_bytes(row.layer, row.a, row.b,
                                              numerics.qlinear_add).tolist()
    run_rows(rows)


def test_swap_matches_broadcast_qlinear_add():
    """ORT swaps a (1,) + b (n,): the hardware reads b on port a with add_params_for(swap=True)."""
    rng = rng_for(3)
    rows = []
    for dtype, qdq in (("uint8", False), ("int8", False), ("int8", True)):
        layer = random_layer(rng, dtype, qdq)
        layer = AddLayer(layer.a_scale, layer.a_zp, layer.b_scale, layer.b_zp, layer.c_scale,
                         layer.c_zp, dtype, qdq, swap=True)
        lo, hi = layer.code_range()
        b = rng.integers(lo, hi, 4 * CONFIG.rows)
        for a_value in rng.integers(lo, hi, 3):
            want = numerics.qlinear_add(np.array([a_value], dtype), layer.a_scale, layer.a_zp,
                                        b.astype(dtype), layer.b_scale, layer.b_zp,
                                        layer.c_scale, layer.c_zp, dtype,
                                        qdq_s8_to_u8=qdq).astype(np.int64) & 0xFF
            port_b = np.full_like(b, a_value)
            assert np.array_equal(expected_bytes(layer, b, port_b), want)
            rows += make_rows(layer, b, port_b, CONFIG.rows)
    run_rows(rows)


def test_one_lane_config():
    rng = rng_for(4)
    config = small_config(rows=1, cols=1)
    rows = []
    for _ in range(40):
        layer = random_layer(rng)
        rows += make_rows(layer, *random_cases(rng, layer, 2), 1)
    run_rows(rows, config=config)


@pytest.mark.parametrize("lanes", [1, 2])
def test_time_multiplexed_lanes(lanes):
    """qadd_lanes < rows: each row takes rows / qadd_lanes cycles through the lanes, bit-exact."""
    rng = rng_for(5 + lanes)
    config = with_lanes(CONFIG, lanes)
    qadd = QAddLanes(config)
    assert (qadd.spacing, qadd.latency) == (CONFIG.rows // lanes, 21 + CONFIG.rows // lanes)
    rows = []
    for layer in edge_layers():
        rows += make_rows(layer, *random_cases(rng, layer, 3 * CONFIG.rows), CONFIG.rows)
    for _ in range(60):
        layer = random_layer(rng)
        rows += make_rows(layer, *random_cases(rng, layer, CONFIG.rows), CONFIG.rows)
    run_rows(rows, config=config, idle=0.2, scramble_seed=5 + lanes)


def test_qadd_lanes_must_divide_the_rows():
    base = CONFIG.to_dict()
    assert HardwareConfig.from_dict(base).qadd_lanes == CONFIG.rows  # None: one lane per byte
    assert with_lanes(CONFIG, 2).qadd_spacing == 2
    for bad in (0, 3, 5, -2, 2.0, True, "2"):
        with pytest.raises(ValueError, match=r"qadd_lanes must be a positive divisor of rows \(4\)"):
            with_lanes(CONFIG, bad)
    ids = {with_lanes(CONFIG, n).config_id() for n in (1, 2, 4)}
    assert len(ids) == 3
    assert preset("ulx3s-85f").qadd_lanes == 2


def test_add_row_padding():
    layer = AddLayer(1.0, 0, 1.0, 0, 1.0, 0, "uint8")
    rows = make_rows(layer, [1, 2, 3, 4, 5], [1, 1, 1, 1, 250], 4)
    assert [r.expected for r in rows] == [[2, 3, 4, 5], [255, 0, 0, 0]]
    assert isinstance(rows[0], AddRow)
