"""The instruction-level emulator: emu == golden == onnxruntime on compiled models, and the ISA semantics."""

import functools

import numpy as np
import onnx
import pytest

import accel
from accel import isa, numerics, zoo
from accel.compiler.backend import compile_model
from accel.compiler.layout import pack_words, param_words, unpack_param_words, unpack_words
from accel.config import HW_REVISION, BufferSpec, HardwareConfig, preset
from accel.runtime import Ident, Read, Run, Status, Write
from accel.sim.emulator import EmulatorDevice, EmulatorTarget

from .fc_models import digits_cnn_head, ort_run, qdq_fc_chain

SEED = 4242
VARIANTS = ["qdq_tensor", "qdq_channel", "qop_tensor", "qop_channel"]


def custom_config(r):
    return HardwareConfig(name=f"custom-{r}x{r}", rows=r, cols=r, imem=BufferSpec(1024), abuf=BufferSpec(4096),
                          wbuf=BufferSpec(131072), accbuf=BufferSpec(64), pbuf=BufferSpec(2048))


CONFIGS = {"sim-small": preset("sim-small"), "ulx3s-85f": preset("ulx3s-85f"), "custom-3x3": custom_config(3),
           "custom-8x8": custom_config(8)}


@functools.cache
def loaded(name, variant):
    path = zoo.build(name, variant)
    return path, accel.load_model(path)


def check_engines(path, model, config, batch, x):
    """Assert emu == golden == onnxruntime element for element; return the emu device."""
    art = compile_model(model, config, batch=batch)
    emu = accel.open_device("emu").load(art)
    y_emu = emu.run(x)
    y_golden = accel.open_device("golden").load(model).run(x)
    y_ort = ort_run(path, x)
    assert y_emu.dtype == y_ort.dtype and y_emu.shape == y_ort.shape
    assert np.array_equal(y_golden, y_ort), "golden differs from onnxruntime"
    assert np.array_equal(y_emu, y_golden), f"emu differs in {np.count_nonzero(y_emu != y_golden)} elements"
    # the emulator counts exactly the cycles the compiler modelled
    assert emu.last_cycles == [sum(layer["cycles"] for layer in art.layers)] * -(-len(x) // batch)
    return emu


@pytest.mark.parametrize("variant", VARIANTS)
def test_mlp_37_53_19(variant):
    print(f"seed {SEED}")
    path, model = loaded("mlp_37_53_19", variant)
    x = np.random.default_rng(SEED).standard_normal((7, 37), dtype=np.float32)
    check_engines(path, model, CONFIGS["sim-small"], 1, x)
    check_engines(path, model, CONFIGS["sim-small"], 3, x)  # 3 + 3 + 1: the last run is partly filler


@pytest.mark.parametrize("config", ["ulx3s-85f", "custom-3x3", "custom-8x8"])
def test_mlp_37_53_19_on_other_arrays(config):
    print(f"seed {SEED}")
    path, model = loaded("mlp_37_53_19", "qdq_channel")
    x = np.random.default_rng(SEED).standard_normal((7, 37), dtype=np.float32)
    check_engines(path, model, CONFIGS[config], 1, x)
    check_engines(path, model, CONFIGS[config], 3, x)


@pytest.mark.parametrize("variant", VARIANTS)
def test_digits_mlp_all_test_images(variant):
    path, model = loaded("digits_mlp", variant)
    x = zoo.digits_dataset()[2].reshape(-1, 64)
    assert len(x) == 360
    check_engines(path, model, CONFIGS["sim-small"], 1, x)
    check_engines(path, model, CONFIGS["custom-8x8"], 40, x)


@pytest.mark.parametrize("variant", ["qdq_channel", "qop_channel"])
def test_fc_autoencoder(variant):
    print(f"seed {SEED}")
    path, model = loaded("fc_autoencoder", variant)
    x = np.random.default_rng(SEED).standard_normal((5, 640), dtype=np.float32)
    check_engines(path, model, CONFIGS["sim-small"], 1, x)
    check_engines(path, model, CONFIGS["custom-3x3"], 3, x)


@pytest.mark.parametrize("variant", ["qdq_tensor", "qop_channel"])
def test_digits_cnn_classifier_head(variant, tmp_path):
    """The Gemm head of the digits CNN, extracted from the Flatten output, on the 360 test images."""
    path, head, x = digits_cnn_head(variant, tmp_path)
    model = accel.load_model(head)
    check_engines(head, model, CONFIGS["sim-small"], 1, x)
    check_engines(head, model, CONFIGS["custom-8x8"], 3, x[:50])
    # and the head's logits are the full CNN's
    assert np.array_equal(accel.open_device("golden").load(model).run(x), ort_run(path, zoo.digits_dataset()[2]))


@pytest.mark.parametrize("chain", [dict(x_dtype=np.uint8, w_dtype=np.uint8, w_zp=100),
                                   dict(x_dtype=np.uint8, w_dtype=np.uint8, w_zp=77, per_channel=True),
                                   dict(per_channel=True, transpose_b=True, relu=False)])
def test_hand_built_chains_with_9_bit_weights(chain, tmp_path):
    print(f"seed {SEED}")
    path = tmp_path / "chain.onnx"
    onnx.save(qdq_fc_chain([30, 17, 9, 12], seed=SEED, **chain), path)
    x = np.random.default_rng(SEED).normal(0, 1.5, (9, 30)).astype(np.float32)
    for config in ("sim-small", "custom-3x3"):
        check_engines(path, accel.load_model(path), CONFIGS[config], 4, x)


# -- the ISA, instruction by instruction ------------------------------------------------------


def test_ident_status_and_memory_round_trip():
    cfg = preset("sim-small")
    target = EmulatorTarget(cfg)
    info, status = target.execute([Ident(), Status()])
    assert (info.config_id, info.hw_revision, info.rows, info.cols) == (cfg.config_id(), HW_REVISION, 4, 4)
    assert status == (0, 0)
    rng = np.random.default_rng(SEED)
    words = {isa.Memory.WBUF: pack_words(rng.integers(-256, 256, (5, 4)), 9),
             isa.Memory.ABUF: pack_words(rng.integers(0, 256, (5, 4)), 8),
             isa.Memory.ACCBUF: pack_words(rng.integers(-2**31, 2**31, (5, 4)), 32),
             isa.Memory.PBUF: param_words(rng.integers(-1000, 1000, 5), np.full(5, 0.01, np.float32), 5),
             isa.Memory.IMEM: [isa.halt(), isa.sync()]}
    for mem, w in words.items():
        assert target.execute([Write(mem, 7, tuple(w)), Read(mem, 7, len(w))]) == [None, w]


def run_program(cfg, program, wbuf=(), abuf=(), pbuf=()):
    target = EmulatorTarget(cfg)
    ops = [Write(isa.Memory.IMEM, 0, tuple(program))]
    ops += [Write(mem, 0, tuple(words)) for mem, words in ((isa.Memory.WBUF, wbuf), (isa.Memory.ABUF, abuf),
                                                          (isa.Memory.PBUF, pbuf)) if words]
    target.execute(ops + [Run()])
    return target


def test_matmul_semantics_with_two_k_tiles():
    """One MATMUL: k_tiles accumulated, bias and requantization per channel, clamp, ACC holds the partial sums."""
    cfg = preset("sim-small")
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    x = rng.integers(-128, 128, (3, 8))        # three rows of K = 8: two K chunks
    w = rng.integers(-256, 256, (8, 4))        # two weight tiles of 4 rows
    bias = rng.integers(-5000, 5000, 4)
    multiplier = np.array([0.003, 0.01, 0.02, 0.0071], np.float32)
    abuf = pack_words(x.reshape(6, 4), 8)      # row m at words 2m, 2m + 1 (stride 2)
    program = [isa.matmul(x_signed=1, y_signed=1, w_addr=0, a_addr=0, a_stride=2, count=3, k_tiles=2, acc_addr=5,
                          p_addr=0, y_addr=10, y_stride=1, y_zp=-7, y_lo=-100, y_hi=90), isa.halt()]
    target = run_program(cfg, program, wbuf=pack_words(w, 9), abuf=abuf, pbuf=param_words(bias, multiplier, 4))
    acc = x @ w + bias
    expected = numerics.requantize(acc, multiplier, -7, np.int8, (-100, 90))
    got = unpack_words(target.execute([Read(isa.Memory.ABUF, 10, 3)])[0], 4, 8, signed=True)
    assert np.array_equal(got, expected)
    partial = unpack_words(target.execute([Read(isa.Memory.ACCBUF, 5, 3)])[0], 4, 32, signed=True)
    assert np.array_equal(partial, x[:, :4] @ w[:4])
    status, cycles = target.execute([Status()])[0]
    assert status == 2 and cycles == (2 + 5) + 5 + 3 + (3 + 4 + 4 + 10)  # docs in accel.compiler.cycles


def test_uint8_inputs_and_outputs():
    cfg = custom_config(3)
    rng = np.random.default_rng(SEED)
    x, w = rng.integers(0, 256, (2, 3)), rng.integers(-100, 100, (3, 3))
    program = [isa.matmul(x_signed=0, y_signed=0, count=2, k_tiles=1, a_stride=1, y_addr=2, y_stride=1, y_zp=128,
                          y_lo=0, y_hi=255), isa.halt()]
    mult = np.full(3, 0.004, np.float32)
    target = run_program(cfg, program, wbuf=pack_words(w, 9), abuf=pack_words(x, 8),
                         pbuf=param_words(np.zeros(3, np.int64), mult, 3))
    got = unpack_words(target.execute([Read(isa.Memory.ABUF, 2, 2)])[0], 3, 8, signed=False)
    assert np.array_equal(got, numerics.requantize(x @ w, mult, 128, np.uint8))


def matmul(**fields):
    base = dict(x_signed=1, y_signed=1, count=1, k_tiles=1, a_stride=1, y_stride=1, y_lo=-128, y_hi=127)
    return isa.matmul(**{**base, **fields})


PARAMS = param_words(np.zeros(4, np.int64), np.full(4, 0.01, np.float32), 4)


@pytest.mark.parametrize("program, message", [
    ([matmul(a_addr=0, y_addr=1), matmul(a_addr=1, y_addr=2), isa.halt()],
     "MATMUL at IMEM 1 reads ABUF 1, which an earlier MATMUL writes with no SYNC in between"),
    ([matmul(a_addr=0, y_addr=0), isa.halt()], "MATMUL at IMEM 0 writes ABUF 0, which it also reads"),
    ([matmul(a_addr=16383, count=2, y_addr=5), isa.halt()], "runs past its depth 16384"),
    ([matmul(y_addr=5, p_addr=4), isa.halt()], "PBUF word 4 holds no valid multiplier"),
    ([matmul(y_addr=5, y_zp=200), isa.halt()], "y_zp 200 and clamp"),
    ([matmul(y_addr=5, count=0), isa.halt()], "count 0 must be 1..1024"),
    ([isa.sync()] * 1024, "ran past the end of IMEM"),
    ([isa.sync(), 7], "IMEM 1 holds opcode 7, which is not an instruction"),
])
def test_programs_the_emulator_refuses(program, message):
    with pytest.raises(accel.DeviceError, match=message.replace("[", r"\[").replace(".", r"\.")):
        run_program(preset("sim-small"), program, pbuf=PARAMS)


def test_sync_makes_results_visible():
    target = run_program(preset("sim-small"), [matmul(a_addr=0, y_addr=1), isa.sync(), matmul(a_addr=1, y_addr=2),
                                               isa.halt()], wbuf=pack_words(np.eye(4, dtype=np.int64) * 100, 9),
                         abuf=pack_words([[1, 2, 3, 4]], 8), pbuf=PARAMS)
    got = unpack_words(target.execute([Read(isa.Memory.ABUF, 1, 2)])[0], 4, 8, signed=True)
    assert np.array_equal(got, [[1, 2, 3, 4], [1, 2, 3, 4]])  # x * 100 * 0.01, twice


# -- shared layouts -----------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 9, 24, 32])
def test_word_packing_matches_the_isa_helpers(bits):
    rng = np.random.default_rng(SEED)
    values = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (6, 5))
    words = pack_words(values, bits)
    assert words == [isa.pack_values(row, bits) for row in values]
    assert np.array_equal(unpack_words(words, 5, bits, signed=True), values)
    assert [isa.unpack_values(w, 5, bits) for w in words] == values.tolist()


def test_param_words_match_the_isa_struct():
    bias = np.array([-(2**31), 17, 2**31 - 1])
    multiplier = np.array([2.0**-40, 0.0123, 255.9], np.float32)
    words = param_words(bias, multiplier, 4)
    mantissa, exponent = numerics.decompose_multiplier(multiplier)
    from amaranth.lib import data
    for i in range(3):
        view = data.Const(data.Layout.cast(isa.ParamWord), words[i])
        assert (view.bias, view.mantissa, view.exponent) == (bias[i], mantissa[i], exponent[i])
    b, m, e = unpack_param_words(words)
    assert np.array_equal(b[:3], bias) and np.array_equal(m[:3], mantissa) and np.array_equal(e[:3], exponent)
    assert np.ldexp(float(m[3]), int(e[3])) == 1.0 and b[3] == 0  # padding channel: bias 0, multiplier 1


def test_emu_device_is_registered():
    device = accel.open_device("emu", config="icebreaker")
    assert isinstance(device, EmulatorDevice) and device.name == "emu" and device.config.name == "icebreaker"
