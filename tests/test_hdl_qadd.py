# amaranth: UnusedElaboratable=no
"""Check QAddLanes (VECTOR ADD's lanes) in Amaranth's simulator against onnxruntime's QLinearAdd.

Each layer's ``numerics.qlinear_add_recipe`` is written through the ``table`` port (and its
``params`` word sampled with every row); the output bytes must equal both the integer model
``numerics.qlinear_add_by_recipe`` and the onnxruntime-exact ``numerics.qlinear_add``
(``make_rows`` checks that the two agree). The layers, the row driver and the scoreboard
are shared with the Verilator bench ``tests/sim/bench_qadd.py``. ``ACCEL_SEED`` picks the
random seed (default 1); every test prints it.
"""

import numpy as np
import pytest
from amaranth.lib import data

from accel import isa
from accel.config import HardwareConfig, preset
from accel.hdl.qadd import QAddLanes

from .sim.bench_qadd import (AddLayer, AddRow, QAddLayouts, RowDriver, edge_layers, exhaustive_pairs,
                             make_rows, random_cases, random_layer)
from .sim.bench_requant import Scoreboard
from .test_hdl_datapath import SEED, rng_for, simulate, small_config

CONFIG = preset("sim-small")


def test_ports_and_latency():
    qadd = QAddLanes(CONFIG, tag_width=5)
    assert (qadd.spacing, qadd.latency) == (1, 6)
    assert qadd.tag_width == 5 and qadd.config is CONFIG
    assert qadd.i.payload.shape().size == 2 * 8 * CONFIG.rows + 5
    assert qadd.o.payload.shape().size == 8 * CONFIG.rows + 5
    assert qadd.i.signature.always_ready and qadd.o.signature.always_ready
    assert qadd.table.signature.always_ready
    table = qadd.table.payload.shape()
    assert table["addr"].shape.width == 7 and not table["addr"].shape.signed
    assert table["data"].shape.width == 64 and table.size == 71
    assert data.Layout.cast(qadd.params.shape()).size == isa.PARAM_BITS == 64
    assert qadd.y_lo.shape().signed and qadd.y_lo.shape().width == 9
    with pytest.raises(AttributeError):
        qadd.latency = 3
    with pytest.raises(TypeError, match="config must be a HardwareConfig"):
        QAddLanes("sim-small")
    with pytest.raises(ValueError, match="tag_width must be a positive integer"):
        QAddLanes(CONFIG, tag_width=0)


def with_lanes(config, lanes):
    """Return ``config`` with ``qadd_lanes = lanes``."""
    return HardwareConfig.from_dict({**config.to_dict(), "qadd_lanes": lanes})


def run_rows(rows, config=CONFIG, idle=0.0, salt=0):
    """Stream ``rows`` (AddRow, grouped by layer) through QAddLanes with ``RowDriver``; check bytes, tags, latency.

    Each layer's table is written through ``table`` while no row is in flight, and its
    first row may enter in the next cycle. Returns the driver (for its counters).
    """
    layouts = QAddLayouts(config, 18)
    result = {}

    def make():
        qadd = QAddLanes(config)
        rng = np.random.default_rng([SEED, salt])
        ports = {"i__valid": qadd.i.valid, "i__payload": qadd.i.payload.as_value(),
                 "table__valid": qadd.table.valid, "table__payload": qadd.table.payload.as_value(),
                 "params": qadd.params.as_value(), "x_signed": qadd.x_signed, "y_signed": qadd.y_signed,
                 "y_lo": qadd.y_lo, "y_hi": qadd.y_hi}

        async def bench(ctx):
            driver = RowDriver(lambda name, value: ctx.set(ports[name], value), layouts, rng, idle)
            scoreboard = Scoreboard(qadd.latency, SEED)
            for n, row in enumerate(rows):
                driver.send(row, n & layouts.tag_mask)
            cycle = 0
            while driver.queue or scoreboard.pending:
                item = driver.drive()
                if item is not None:
                    scoreboard.expect(cycle, item)
                _, _, o_valid, o_payload = await ctx.tick().sample(qadd.o.valid, qadd.o.payload.as_value())
                if o_valid:
                    scoreboard.observe(cycle, *layouts.o_values(o_payload))
                cycle += 1
                assert cycle < 300 * (len(rows) + 100), f"seed {SEED}: stuck"
            assert scoreboard.checked == len(rows)
            result["driver"] = driver

        return qadd, [bench]

    simulate(make)
    return result["driver"]


def test_edge_layers_match_recipe_and_onnxruntime():
    """Corner codes and random pairs on every targeted layer; per-row clamps."""
    rng = rng_for(0)
    rows = []
    layers = edge_layers()
    for layer in layers:
        lo, hi = layer.code_range()
        corners = np.array([lo, lo + 1, lo + 2, lo + 3, -1 if lo else 1, 0, hi - 2, hi - 1], np.int64)
        a, b = np.meshgrid(corners, corners, indexing="ij")
        ra, rb = random_cases(rng, layer, 8 * CONFIG.rows)
        rows += make_rows(layer, np.concatenate([a.ravel(), ra]), np.concatenate([b.ravel(), rb]),
                          CONFIG.rows, rng)
    recipes = [layer.recipe() for layer in layers]
    # The layers reach every part of the datapath.
    assert {r.tie_even for r in recipes} == {False, True} and {r.x_is_b for r in recipes} == {False, True}
    assert max(r.mult for r in recipes) >= 1 << 12 and max(r.shift for r in recipes) >= 8
    assert min(int(r.table.min()) for r in recipes) < -(1 << 20) and max(int(r.table.max()) for r in recipes) > 1 << 20
    driver = run_rows(rows)
    assert driver.table_writes == len(layers) * isa.ADD_TABLE_WORDS


@pytest.mark.parametrize("layer, tie_even, x_is_b", [
    (AddLayer(0.5, -97, 2.0, 120, 1.0, 59, "int8", True), False, True),  # int8 QDQ, b multiplied
    (AddLayer(0.01, 0, 0.01, 0, 0.02, 0, "uint8", lo=3), True, False),  # q = 3 at a tie goes to 2, then 3
])
def test_exhaustive_layer(layer, tie_even, x_is_b):
    """All 65,536 pairs: a layer whose recipe multiplies b (b on port a), and a ties-to-even one with an odd bound."""
    print(f"seed={SEED}")
    recipe = layer.recipe()
    assert (recipe.tie_even, recipe.x_is_b, layer.swap) == (tie_even, x_is_b, False)
    run_rows(make_rows(layer, *exhaustive_pairs(layer), CONFIG.rows))


def test_random_layers_with_idle_cycles():
    """Random layers of a few rows each, per-row clamps, idle cycles with scrambled inputs."""
    rng = rng_for(1)
    rows = []
    for _ in range(30):
        layer = random_layer(rng)
        rows += make_rows(layer, *random_cases(rng, layer, int(rng.integers(1, 12)) * CONFIG.rows),
                          CONFIG.rows, rng)
    run_rows(rows, idle=0.2, salt=1)


def test_table_changes_between_single_rows():
    """Layers with the same mult and shift but different tables alternate row by row: each row
    enters in the cycle after its table's last write and must see the new table."""
    rng = rng_for(2)
    layers = [AddLayer(0.0311, zp, 0.0203, 9, 0.0412, -3, "int8") for zp in (-5, 40)]
    first, second = (layer.recipe() for layer in layers)
    assert (first.mult, first.shift) == (second.mult, second.shift)
    assert not np.array_equal(first.table, second.table)
    rows = []
    for n in range(12):
        layer = layers[n % 2]
        rows += make_rows(layer, *random_cases(rng, layer, CONFIG.rows), CONFIG.rows)
    driver = run_rows(rows, salt=2)
    assert driver.table_writes == 12 * isa.ADD_TABLE_WORDS


def test_one_lane_config():
    rng = rng_for(4)
    config = small_config(rows=1, cols=1)
    rows = []
    for _ in range(8):
        layer = random_layer(rng)
        rows += make_rows(layer, *random_cases(rng, layer, 10), 1, rng)
    run_rows(rows, config=config, idle=0.1, salt=4)


@pytest.mark.parametrize("lanes", [1, 2])
def test_time_multiplexed_lanes(lanes):
    """qadd_lanes < rows: each row takes rows / qadd_lanes cycles through the lanes, bit-exact."""
    rng = rng_for(5 + lanes)
    config = with_lanes(CONFIG, lanes)
    qadd = QAddLanes(config)
    assert (qadd.spacing, qadd.latency) == (CONFIG.rows // lanes, 5 + CONFIG.rows // lanes)
    rows = []
    for layer in edge_layers()[::3]:
        rows += make_rows(layer, *random_cases(rng, layer, 3 * CONFIG.rows), CONFIG.rows, rng)
    for _ in range(12):
        layer = random_layer(rng)
        rows += make_rows(layer, *random_cases(rng, layer, int(rng.integers(1, 10)) * CONFIG.rows),
                          CONFIG.rows, rng)
    run_rows(rows, config=config, idle=0.2, salt=5 + lanes)


def test_qadd_lanes_must_divide_the_rows():
    base = CONFIG.to_dict()
    assert HardwareConfig.from_dict(base).qadd_lanes == CONFIG.rows  # None: one lane per byte
    assert with_lanes(CONFIG, 2).qadd_spacing == 2
    for bad in (0, 3, 5, -2, 2.0, True, "2"):
        with pytest.raises(ValueError, match=r"qadd_lanes must be a positive divisor of rows \(4\)"):
            with_lanes(CONFIG, bad)
    ids = {with_lanes(CONFIG, n).config_id() for n in (1, 2, 4)}
    assert len(ids) == 3
    assert preset("ulx3s-85f").qadd_lanes == 4 and preset("icebreaker").qadd_lanes == 1


def test_make_rows_ports_padding_and_bounds():
    plain = AddLayer(1.0, 0, 1.0, 0, 1.0, 0, "uint8")
    rows = make_rows(plain, [1, 2, 3, 4, 5], [1, 1, 1, 1, 250], 4)
    assert [r.expected for r in rows] == [[2, 3, 4, 5], [255, 0, 0, 0]]
    assert isinstance(rows[0], AddRow) and rows[1].bounds == (0, 255)
    # x_is_b: the node's b goes on port a (multiplied), a on port b (the table index)
    swapped = AddLayer(0.5, -97, 2.0, 120, 1.0, 59, "int8", True)
    row, = make_rows(swapped, [-128, -1, 0, 127], [5, 6, 7, 8], 4)
    assert (row.a, row.b) == ([5, 6, 7, 8], [-128, -1, 0, 127])
    relu = AddLayer(0.1, 1, 0.2, 2, 0.3, 0, "int8", lo=0)
    row, = make_rows(relu, [-128, -100, 100, 127], [-128, -100, 100, 127], 4)
    assert row.bounds == (0, 127) and row.expected == [0, 0, 98, 125]


def test_params_word_and_table_words():
    """The head word is the recipe's mult, shift and tie_even; entry 2k is word k's low half."""
    recipe = AddLayer(0.0311, -5, 0.0203, 9, 0.0412, -3, "int8").recipe()
    words = isa.add_params(recipe)
    assert len(words) == 1 + isa.ADD_TABLE_WORDS
    head = data.Const(data.Layout.cast(isa.AddParams), words[0])
    assert (head.mult, head.shift, head.tie_even) == (recipe.mult, recipe.shift, int(recipe.tie_even))
    for k in (0, 1, 63, 127):
        low, high = words[1 + k] & 0xFFFF_FFFF, words[1 + k] >> 32
        assert low - (low >> 31 << 32) == recipe.table[2 * k]
        assert high - (high >> 31 << 32) == recipe.table[2 * k + 1]
