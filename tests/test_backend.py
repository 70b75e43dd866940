"""The back end: each stage keeps the golden model's results, tiling and memory plan, and compile errors."""

import dataclasses

import numpy as np
import pytest

import accel
from accel import isa, zoo
from accel.compiler.backend import PIPELINE, compile_model, compile_program
from accel.compiler.errors import CompileError, DoesNotFitError
from accel.compiler.gemm import GemmProgram
from accel.compiler.memplan import first_fit
from accel.config import BufferSpec, HardwareConfig, preset
from accel.sim.golden import run_graph

from .fc_models import qdq_fc_chain, qlinear_matmul_chain

SEED = 20261128


def custom_config(r, accbuf=256, weight_bits=9, acc_width=32, name=None):
    return HardwareConfig(name=name or f"custom-{r}x{r}", rows=r, cols=r, imem=BufferSpec(1024), abuf=BufferSpec(4096),
                          wbuf=BufferSpec(8192), accbuf=BufferSpec(accbuf), pbuf=BufferSpec(1024),
                          weight_bits=weight_bits, acc_width=acc_width)


def feeds_for(model, rng):
    spec = model.inputs[0]
    return {spec.name: rng.normal(0, 1.5, spec.shape).astype(np.float32)}


def stage(name):
    return next(s for s in PIPELINE if s.name == name)


def start(model, config, batch=1):
    return GemmProgram(name="m", graph=model.graph, config=config, batch=batch)


def golden_int_rows(program, feeds):
    env = run_graph(program.graph, feeds, keep=True)
    first, last = program.layers[0], program.layers[-1]
    return (env[program.input.tensor].reshape(first.rows, first.K),
            env[program.output.tensor].reshape(last.rows, last.N))


CHAINS = [
    dict(widths=[13, 21, 9, 5]),
    dict(widths=[7, 4], x_dtype=np.uint8),
    dict(widths=[40, 33, 17], x_dtype=np.uint8, w_dtype=np.uint8, w_zp=100),
    dict(widths=[24, 16, 10], per_channel=True, transpose_b=True),
    dict(widths=[9, 30, 3], x_dtype=np.uint8, w_dtype=np.uint8, w_zp=77, per_channel=True, relu=False),
]


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: "-".join(map(str, c["widths"])) + f"-{len(c)}")
def test_rewriting_stages_keep_the_golden_results(chain):
    """Pass tests: the golden model before each rewrite equals the program's semantics after it."""
    print(f"seed {SEED}")
    rng = np.random.default_rng(SEED)
    model = accel.load_model(qdq_fc_chain(**chain, seed=SEED))
    feeds = feeds_for(model, rng)
    program = stage("LowerToGemmChain").apply(start(model, preset("sim-small")))
    program.done.append("LowerToGemmChain")
    program.verify()
    assert [layer.name for layer in program.layers] == [f"fc{i}" for i in range(len(chain["widths"]) - 1)]
    x, expected = golden_int_rows(program, feeds)
    assert np.array_equal(program.run(x), expected)

    program = stage("SubtractWeightZeroPoint").apply(program)
    program.done.append("SubtractWeightZeroPoint")
    program.verify()
    assert all(not layer.w_zp.any() for layer in program.layers)  # the weight zero point is gone
    assert np.array_equal(program.run(x), expected)

    before = [(layer.bias.copy(), layer.x_zp) for layer in program.layers]
    program = stage("FoldInputZeroPointIntoBias").apply(program)
    program.done.append("FoldInputZeroPointIntoBias")
    program.verify()
    for layer, (bias, x_zp) in zip(program.layers, before):  # the input zero point is gone, into the bias
        assert layer.x_zp == 0 and np.array_equal(layer.bias, bias - x_zp * layer.weight.sum(axis=0))
    assert np.array_equal(program.run(x), expected)


@pytest.mark.parametrize("config", ["sim-small", "ulx3s-85f", "custom-3x3"])
def test_whole_pipeline_checks_every_stage(config):
    config = custom_config(3) if config == "custom-3x3" else preset(config)
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    for chain in CHAINS:
        model = accel.load_model(qdq_fc_chain(**chain, seed=SEED))
        seen = []
        compile_program(model, config, batch=2, check_feeds=feeds_for(model, rng), dump=lambda name, p: seen.append(name))
        assert seen == [s.name for s in PIPELINE]


def test_bias_folding_follows_the_isa_contract():
    """bias' = bias - x_zp * sum_k W'[k, n], with W' = W - w_zp (docs/isa.md)."""
    model = accel.load_model(qdq_fc_chain([10, 6], x_dtype=np.uint8, w_dtype=np.uint8, w_zp=90, seed=SEED))
    node = model.graph.compute_nodes()[0]
    w, bias = model.graph.constants[node.inputs[1]].astype(np.int64), model.graph.constants[node.inputs[2]]
    program = compile_program(model, preset("sim-small"))
    w_prime = w - 90
    assert np.array_equal(program.layers[0].weight, w_prime)
    assert np.array_equal(program.layers[0].bias, bias - node.attrs["x_zp"] * w_prime.sum(axis=0))


def test_tiling_and_program_shape():
    """One MATMUL per (column tile, row tile), SYNC between layers, HALT at the end."""
    config = custom_config(4, accbuf=4)  # ACC depth 4: batch 10 needs row tiles of 4, 4, 2
    model = accel.load_model(qdq_fc_chain([13, 21, 9, 5], seed=SEED))
    program = compile_program(model, config, batch=10)
    tilings = [(layer.tiling.k_tiles, layer.tiling.n_tiles, layer.tiling.m_ranges()) for layer in program.layers]
    assert tilings == [(4, 6, [(0, 4), (4, 4), (8, 2)]), (6, 3, [(0, 4), (4, 4), (8, 2)]),
                       (3, 2, [(0, 4), (4, 4), (8, 2)])]
    ops = [isa.decode(w).opcode for w in program.imem]
    assert ops == [isa.Opcode.MATMUL] * 18 + [isa.Opcode.SYNC] + [isa.Opcode.MATMUL] * 9 + [isa.Opcode.SYNC] \
        + [isa.Opcode.MATMUL] * 6 + [isa.Opcode.HALT]
    first = isa.decode(program.imem[1])  # layer 0, column tile 0, row tile 1
    layer = program.layers[0]
    assert (first.count, first.k_tiles, first.a_addr, first.a_stride) == (4, 4, layer.x_addr + 4 * 4, 4)
    assert (first.y_addr, first.y_stride, first.w_addr, first.p_addr) == (layer.y_addr + 4 * 6, 6, 0, 0)
    tile1 = isa.decode(program.imem[3])  # column tile 1
    assert (tile1.w_addr, tile1.p_addr, tile1.y_addr) == (4 * 4, 4, layer.y_addr + 1)


def test_memory_plan_reuses_abuf_by_liveness():
    assert first_fit([("in", 10, 0, 0), ("a", 4, 0, 1), ("b", 6, 1, 2), ("c", 20, 2, 3)]) == \
        {"in": 0, "a": 10, "b": 0, "c": 6}
    model = accel.load_model(zoo.build("fc_autoencoder", "qdq_channel"))
    program = compile_program(model, preset("sim-small"), stages=PIPELINE[:6])
    regions = [(layer.x_addr, layer.y_addr) for layer in program.layers]
    # input 160 words at 0; activations ping-pong between two regions behind it
    assert regions[0] == (0, 160) and regions[1] == (160, 0) and regions[2] == (0, 32) and regions[3] == (32, 0)
    assert program.abuf_words == 160 + 160 - 96  # the output (160 words) reuses the input's space
    for layer in program.layers:
        assert layer.x_addr + layer.tiling.M * -(-layer.K // 4) <= layer.y_addr or \
            layer.y_addr + layer.tiling.M * -(-layer.N // 4) <= layer.x_addr


def test_artifact_metadata():
    path = zoo.build("mlp_37_53_19", "qdq_channel")
    model = accel.load_model(path)
    config = preset("sim-small")
    art = compile_model(model, config, batch=3)
    data = open(path, "rb").read()
    assert art.source_onnx == data and art.source_name == path.stem and art.batch == 3 and art.dynamic_batch
    import hashlib
    assert art.source_sha256 == hashlib.sha256(data).hexdigest()
    assert art.compiler_version == accel.__version__ and art.config_hash == config.config_hash
    (inp,), (out,) = art.inputs, art.outputs
    assert (inp.name, inp.shape, inp.dtype, inp.rows, inp.features, inp.stride) == ("input", (1, 37), "float32", 1, 37, 10)
    assert inp.quant["dtype"] == "int8" and inp.quant["axis"] is None and len(inp.quant["scale"]) == 1
    assert (out.name, out.shape, out.features, out.stride) == ("output", (1, 19), 19, 5)
    assert [(layer["M"], layer["K"], layer["N"], layer["macs"]) for layer in art.layers] == \
        [(3, 37, 53, 3 * 37 * 53), (3, 53, 19, 3 * 53 * 19)]
    for layer in art.layers:
        assert 0 < layer["utilization"] <= 1
        assert layer["utilization"] == layer["macs"] / (layer["cycles"] * 16)
    assert len(art.pbuf) == 56 + 20 and len(art.wbuf) == 14 * 10 * 4 + 5 * 14 * 4


# Cycles the RTL reports through STATUS for small programs on sim-small (4x4), measured with
# accel.sim.rtl: (MATMUL count, k_tiles) per instruction, "S" for SYNC, "N" for NOP, then HALT.
RTL_CYCLES = [  # re-measured for the 9-stage requantizer (one more drain cycle)
    ([], 3), (["S"], 6), (["N"], 5), ([(1, 1)], 29), ([(1, 2)], 34), ([(1, 4)], 44), ([(4, 2)], 37), ([(8, 2)], 44),
    ([(8, 4)], 60), ([(16, 1)], 44), ([(16, 4)], 92), ([(1, 1)] * 2, 34), ([(8, 2)] * 2, 60), ([(1, 4)] * 4, 104),
    ([(1, 1), "S", (1, 1)], 58), ([(1, 1)] * 3, 51), ([(1, 1)] * 4, 58), ([(1, 1)] * 8, 102), ([(1, 1)] * 16, 190),
    ([(6, 1)] * 4, 68), ([(8, 1)] * 16, 247), ([(24, 1)] * 16, 412), ([(2, 2)] * 16, 241), ([(1, 8)] * 16, 664),
    ([(2, 3)] * 8, 154), ([(1, 4), (1, 1), (1, 1), (1, 1)], 73), ([(1, 1), (8, 1), (1, 1), (1, 1)], 63),
    ([(2, 2)] * 4 + [(1, 1)] * 4, 117),
]


@pytest.mark.parametrize("program, cycles", RTL_CYCLES, ids=str)
def test_cycle_model_matches_the_rtl(program, cycles):
    from accel.compiler.cycles import CycleModel
    model = CycleModel(preset("sim-small"))
    for insn in program:
        if insn in ("S", "N"):
            model.step(isa.Opcode.SYNC if insn == "S" else isa.Opcode.NOP)
        else:
            model.step(isa.Opcode.MATMUL, *insn)
    model.step(isa.Opcode.HALT)
    assert model.cycles == cycles


# -- compile errors ---------------------------------------------------------------------------


def test_model_too_big_names_every_buffer():
    # Weights, parameters and program stream (tests/test_streaming.py); activations must fit ABUF.
    model = accel.load_model(zoo.build("fc_autoencoder", "qdq_channel"))
    tiny = dataclasses.replace(preset("icebreaker"), name="tiny-abuf", abuf=BufferSpec(4))
    with pytest.raises(DoesNotFitError) as info:
        compile_model(model, tiny)
    message = str(info.value)
    assert message.startswith("fc_autoencoder_qdq_channel_aint8_wint8_s0_b8848f4c01 needs abuf 896 bytes, "
                              "tiny-abuf has 16; "), message
    assert "activations and accumulators stay on chip" in message
    assert "fits: accbuf" in message or "accbuf" in message
    assert set(info.value.needs) == {"imem", "abuf", "wbuf", "pbuf", "accbuf"}
    assert info.value.needs["abuf"] == (896, 16)
    # a batch too big for ABUF says so, too
    small = accel.load_model(zoo.build("mlp_37_53_19", "qdq_tensor"))
    with pytest.raises(DoesNotFitError, match=r"needs abuf .* smaller batch"):
        compile_model(small, preset("icebreaker"), batch=2000)


def test_weights_that_do_not_fit_weight_bits():
    model = accel.load_model(qdq_fc_chain([10, 6, 4], x_dtype=np.uint8, w_dtype=np.uint8, w_zp=100, seed=SEED))
    with pytest.raises(CompileError, match=r"node 'fc0' \(matmul\): channel \d+ has weight zero point 100") as info:
        compile_model(model, preset("icebreaker"))
    assert "8-bit signed weights of config 'icebreaker'" in str(info.value)
    compile_model(model, preset("sim-small"))  # 9-bit weights hold any W'
    symmetric = accel.load_model(qdq_fc_chain([10, 6, 4], x_dtype=np.uint8, w_dtype=np.uint8, w_zp=128, seed=SEED))
    compile_model(symmetric, preset("icebreaker"))


def test_accumulator_overflow_names_the_node():
    config = custom_config(4, acc_width=24)
    model = accel.load_model(qdq_fc_chain([1500, 4], x_dtype=np.uint8, w_dtype=np.uint8, w_zp=128, seed=SEED))
    with pytest.raises(CompileError, match=r"node 'fc0' \(matmul\): with K=1500 .* 24-bit accumulators"):
        compile_model(model, config)
    compile_model(model, custom_config(4))


def test_regrouping_reshape_and_branches_are_refused():
    model = accel.load_model(qlinear_matmul_chain([[1, 8], [8, 8], [4, 3]], reshape_to=[2, 4], seed=SEED))
    with pytest.raises(CompileError, match=r"node 'regroup' \(reshape\) regroups the rows \[1, 8\] as \[2, 4\]"):
        compile_model(model, preset("sim-small"))
    from .test_cli import two_input_model
    with pytest.raises(CompileError, match=r"one input and one output; this one has inputs \['a', 'b'\]"):
        compile_model(accel.load_model(two_input_model()), preset("sim-small"))


def test_bad_batch():
    model = accel.load_model(qdq_fc_chain([4, 3], seed=SEED))
    for batch in (0, -1, 1.5):
        with pytest.raises(CompileError, match="batch must be a positive integer"):
            compile_model(model, preset("sim-small"), batch=batch)
