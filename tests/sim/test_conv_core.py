# amaranth: UnusedElaboratable=no
"""Test the convolution, pooling and element-wise instructions of AcceleratorCore on the RTL.

Hand-built programs (``isa.setconv``, ``isa.matmul(conv=1, ...)``, ``isa.vector``) run on
the ``rtl`` engine (:class:`accel.sim.rtl.RtlTarget`) for ``sim-small`` (4x4) and a small
8x8 config, compared bit-exact with ``core_model.CoreModel`` (written from
``docs/isa.md``) and with the instruction-level emulator
(:class:`accel.sim.emulator.EmulatorTarget`). The model's im2col is itself checked against a plain MATMUL over an
explicitly built im2col matrix. ``ACCEL_SEED`` picks the random seed (default 1).
"""

import os
from dataclasses import dataclass

import numpy as np
import pytest

from accel import isa, numerics
from accel.compiler.cycles import vector_cycles
from accel.config import BufferSpec, HardwareConfig, preset
from accel.runtime import Read, Run, Status, Write
from accel.sim.emulator import EmulatorTarget

from .bench_qadd import random_layer, reference_values, to_ports
from .core_model import CoreModel, pack, unpack

SEED = int(os.environ.get("ACCEL_SEED", "1"))
# Cycles measured on the RTL (see the controller's and the vector unit's docstrings).
SETCONV_CYCLES, HALT_CYCLES = 2, 3
CONV_PREP_CYCLES = 2          # a conv-mode MATMUL's address constants, hidden behind a previous MATMUL


def max_cycles(count, c_chunks, kh, kw):
    return count * c_chunks * kh * kw + 9


def gsum_cycles(count, c_chunks, rows):
    return c_chunks * (max(count, rows - 1) + 2) + 17


def add_cycles(count, spacing=1):
    """``spacing``: ``rows / qadd_lanes``; the recipe's 129 PBUF words, a row every ``max(2, spacing)`` cycles,
    ``5 + spacing`` stages."""
    return (count - 1) * max(2, spacing) + 147 + spacing
SMALL = preset("sim-small")
WIDE = HardwareConfig(name="test-conv-8x8", rows=8, cols=8, imem=BufferSpec(256), abuf=BufferSpec(4096),
                      wbuf=BufferSpec(8192), accbuf=BufferSpec(256), pbuf=BufferSpec(256))
CONFIGS = {"sim-small": SMALL, "8x8": WIDE}
# Time-multiplexed QLinearAdd lanes: a row every 2 cycles (as with one lane per byte) and every 4.
LANES = {f"sim-small-qadd{n}": HardwareConfig.from_dict({**SMALL.to_dict(), "name": f"sim-small-qadd{n}",
                                                         "qadd_lanes": n}) for n in (2, 1)}


@pytest.fixture(scope="module", params=list(CONFIGS))
def target(request, open_core):
    with open_core(CONFIGS[request.param]) as t:
        yield t


@pytest.fixture(scope="module", params=list(LANES))
def lanes_target(request, open_core):
    with open_core(LANES[request.param]) as t:
        yield t


@pytest.fixture(scope="module")
def small_target(open_core):
    with open_core(SMALL) as t:
        yield t


def run_both(target, writes, program, reads):
    """Run a program on the target and on a fresh model; assert the reads agree; return the cycles."""
    config = target.config
    model = CoreModel(config)
    writes = list(writes) + [Write(isa.Memory.IMEM, 0, tuple(program + [isa.halt()]))]
    for op in writes:
        model.write(op.mem, op.addr, op.words)
    model.run()
    target.execute(writes)
    results = target.execute([Run(), Status()] + list(reads))
    status, cycles = results[1]
    assert status == 0b10, f"STATUS after RUN: {status:#04x}"
    emulator = EmulatorTarget(config)
    emulator.execute(writes)
    emulated = emulator.execute([Run(), Status()] + list(reads))
    for engine, replies in (("rtl", results), ("emu", emulated)):
        for op, got in zip(reads, replies[2:]):
            expected = model.read(op.mem, op.addr, op.count)
            bad = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
            assert not bad, (f"seed {SEED} {engine}: {op.mem.name} word {op.addr + bad[0]} (of {len(bad)} wrong): "
                             f"got {got[bad[0]]:#x}, expected {expected[bad[0]]:#x}")
    print(f"cycles: rtl {cycles}, emulator's model {emulated[1][1]}")
    return cycles


def random_bytes(rng, shape, signed):
    return rng.integers(-128, 128, shape) if signed else rng.integers(0, 256, shape)


def tensor_words(x, rows):
    """Lay out ``x[H, W, C]`` pixel-major with ``ceil(C / rows)`` words per pixel (padding bytes random)."""
    h, w, ch = x.shape
    s = -(-ch // rows)
    padded = np.zeros((h, w, s * rows), np.int64)
    padded[..., :ch] = x
    padded[..., ch:] = 0x5A
    return pack(padded.reshape(h * w * s, rows), 8)


@dataclass
class Conv:
    """Describe one (possibly grouped) convolution placed in the memories."""

    writes: list
    program: list
    y_addr: int
    y_words: int
    out_h: int
    out_w: int
    macs: int


def place_conv(config, rng, *, in_hw, c, n, k, stride=(1, 1), dil=(1, 1), pads=(0, 0, 0, 0), groups=1,
               x_signed=True, y_signed=True, a_addr=0, y_addr=None, w_addr=0, p_addr=0, pieces=1,
               clamp=None):
    """Lay out a random conv ``[in_h, in_w, c] -> [out_h, out_w, n]`` and its program.

    ``pads`` is (top, left, bottom, right); each group's channels start on a chunk boundary
    (``c // groups`` and ``n // groups`` multiples of ``rows`` when ``groups > 1``).
    ``pieces`` splits each column tile's output pixels over that many MATMULs (so later
    pieces start mid-row, ``ox0 != 0``).
    """
    rows, cols = config.rows, config.cols
    (in_h, in_w), (kh, kw), (sy, sx), (dy, dx) = in_hw, k, stride, dil
    pad_t, pad_l, pad_b, pad_r = pads
    out_h = (in_h + pad_t + pad_b - dy * (kh - 1) - 1) // sy + 1
    out_w = (in_w + pad_l + pad_r - dx * (kw - 1) - 1) // sx + 1
    cg, ng = c // groups, n // groups
    s_in = -(-c // rows) if groups == 1 else groups * -(-cg // rows)
    cch = -(-cg // rows)
    n_tiles = -(-ng // cols)
    s_out = groups * n_tiles
    k_tiles = kh * kw * cch
    count = out_h * out_w
    if y_addr is None:
        y_addr = a_addr + in_h * in_w * s_in
    x = random_bytes(rng, (in_h, in_w, groups, cch * rows), x_signed)
    x_zp = int(rng.integers(-20, 21)) if x_signed else int(rng.integers(0, 60))
    writes = [Write(isa.Memory.ABUF, a_addr, tuple(pack(x.reshape(-1, rows), 8)))]
    geometry = dict(in_h=in_h, in_w=in_w, out_w=out_w, kh=kh, kw=kw, stride_y=sy, stride_x=sx,
                    dil_y=dy, dil_x=dx, pad_t=pad_t, pad_l=pad_l, c_chunks=cch, x_pad=x_zp)
    program = [isa.setconv(**geometry, a_stride=s_in)]
    lo, hi = clamp if clamp is not None else ((-128, 127) if y_signed else (0, 255))
    w_next, p_next = w_addr, p_addr
    bounds = np.linspace(0, count, pieces + 1).astype(int)
    assert count <= config.accbuf.depth or pieces > 1
    for grp in range(groups):
        w = rng.integers(-255, 256, (kh, kw, cch * rows, n_tiles * cols))
        w[:, :, cg:, :] = 0
        w[..., ng:] = 0
        tiles = w.reshape(k_tiles * rows, n_tiles, cols).transpose(1, 0, 2).reshape(-1, cols)
        writes.append(Write(isa.Memory.WBUF, w_next, tuple(pack(tiles, config.weight_bits))))
        spread = np.sqrt(kh * kw * cg) * 128 * 128
        mantissa, exponent = numerics.decompose_multiplier(
            (rng.uniform(0.5, 2.0, n_tiles * cols) * 100 / spread).astype(np.float32))
        bias = rng.integers(-(1 << 16), 1 << 16, n_tiles * cols)
        writes.append(Write(isa.Memory.PBUF, p_next, tuple(
            isa.param_word(int(b), int(mm), int(e)) for b, mm, e in zip(bias, mantissa, exponent))))
        y_zp = int(rng.integers(-20, 21)) if y_signed else int(rng.integers(0, 60))
        for nt in range(n_tiles):
            for first, last in zip(bounds[:-1], bounds[1:]):
                oy0, ox0 = divmod(int(first), out_w)
                program.append(isa.matmul(
                    conv=1, x_signed=int(x_signed), y_signed=int(y_signed),
                    w_addr=w_next + nt * k_tiles * rows, a_stride=s_in,
                    a_addr=isa.window_origin(geometry, a_addr + grp * cch, s_in, oy0, ox0),
                    count=int(last - first), k_tiles=k_tiles, acc_addr=0, p_addr=p_next + nt * cols,
                    y_addr=y_addr + first * s_out + grp * n_tiles + nt, y_stride=s_out,
                    oy0=oy0, ox0=ox0, y_zp=y_zp, y_lo=lo, y_hi=hi))
        w_next += n_tiles * k_tiles * rows
        p_next += n_tiles * cols
    return Conv(writes, program, y_addr, count * s_out, out_h, out_w, count * kh * kw * cg * n)


CONV_CASES = {
    # name: keyword arguments of place_conv
    "3x3-pad1": dict(in_hw=(6, 5), c=3, n=5, k=(3, 3), pads=(1, 1, 1, 1)),
    "stride2-asym-pads": dict(in_hw=(9, 8), c=6, n=4, k=(3, 3), stride=(2, 2), pads=(0, 1, 2, 0),
                              x_signed=False, y_signed=False),
    "stride-2x1-dilation2": dict(in_hw=(9, 10), c=5, n=7, k=(3, 2), stride=(2, 1), dil=(2, 2), pads=(2, 1, 1, 2)),
    "10x4-kernel": dict(in_hw=(12, 6), c=2, n=3, k=(10, 4), pads=(1, 2, 0, 1), x_signed=False, y_signed=True),
    "c-chunks-3-pieces": dict(in_hw=(5, 7), c=9 * 2 + 1, n=3, k=(2, 3), pads=(0, 1, 1, 1), pieces=4,
                              clamp=(0, 100)),
    "1x1-stride2": dict(in_hw=(7, 7), c=5, n=9, k=(1, 1), stride=(2, 2)),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matmul_bit_exact(target, case):
    config = target.config
    kwargs = dict(CONV_CASES[case])
    if config.rows > 4 and case == "c-chunks-3-pieces":
        kwargs["c"] = 2 * config.rows + 3
    rng = np.random.default_rng([SEED, len(case), config.rows])
    conv = place_conv(config, rng, a_addr=17, w_addr=40, p_addr=5, **kwargs)
    cycles = run_both(target, conv.writes, conv.program, [Read(isa.Memory.ABUF, conv.y_addr, conv.y_words)])
    print(f"seed={SEED} {config.name} {case}: {conv.out_h}x{conv.out_w} outputs, {cycles} cycles")


def test_grouped_conv_by_a_addr_offsets(target):
    config = target.config
    rows = config.rows
    rng = np.random.default_rng([SEED, 11, rows])
    conv = place_conv(config, rng, in_hw=(6, 6), c=3 * rows, n=3 * rows, k=(3, 3), pads=(1, 1, 1, 1), groups=3,
                      a_addr=3, w_addr=0, p_addr=0, pieces=2)
    run_both(target, conv.writes, conv.program, [Read(isa.Memory.ABUF, conv.y_addr, conv.y_words)])


def test_model_im2col_matches_an_explicit_gemm():
    """Check the model's conv addressing against a plain MATMUL over a host-built im2col matrix."""
    rng = np.random.default_rng([SEED, 12])
    conv = place_conv(SMALL, rng, in_hw=(7, 6), c=6, n=4, k=(3, 2), stride=(2, 1), dil=(1, 2),
                      pads=(1, 2, 0, 1), a_addr=0, pieces=3)
    model = CoreModel(SMALL)
    for op in conv.writes:
        model.write(op.mem, op.addr, op.words)
    geometry = isa.decode(conv.program[0])
    rows, s = SMALL.rows, 2
    x = np.array(model.read(isa.Memory.ABUF, 0, 7 * 6 * s), dtype=object)
    x = unpack(x, rows, 8, True).reshape(7, 6, s * rows)
    out_h, out_w = conv.out_h, conv.out_w
    im2col = np.zeros((out_h * out_w, 3 * 2 * s * rows), np.int64)
    for oy in range(out_h):
        for ox in range(out_w):
            for ky in range(3):
                for kx in range(2):
                    iy, ix = oy * 2 + ky - 1, ox + 2 * kx - 2
                    inside = 0 <= iy < 7 and 0 <= ix < 6
                    tap = (ky * 2 + kx) * s * rows
                    im2col[oy * out_w + ox, tap:tap + s * rows] = x[iy, ix] if inside else geometry.x_pad
    im2col_addr = 2000
    model.write(isa.Memory.ABUF, im2col_addr, pack(im2col.reshape(-1, rows), 8))
    plain = []
    for bits in conv.program[1:]:
        insn = isa.decode(bits)
        fields = {name: getattr(insn, name) for name in ("x_signed", "y_signed", "w_addr", "count", "k_tiles",
                                                         "p_addr", "y_zp", "y_lo", "y_hi", "y_stride")}
        first = insn.oy0 * out_w + insn.ox0
        plain.append(isa.matmul(**fields, a_addr=im2col_addr + first * 6 * s, a_stride=6 * s,
                                y_addr=insn.y_addr + 3000))
    model.write(isa.Memory.IMEM, 0, conv.program + plain + [isa.halt()])
    model.run()
    assert model.read(isa.Memory.ABUF, conv.y_addr, conv.y_words) == \
        model.read(isa.Memory.ABUF, conv.y_addr + 3000, conv.y_words)


# -- VECTOR ------------------------------------------------------------------------------------

POOL_CASES = {
    # name: (in_hw, c, k, stride, pads, signed, pieces, clamp)
    "2x2-stride2": ((8, 6), 5, (2, 2), (2, 2), (0, 0, 0, 0), True, 1, (-128, 127)),
    "3x3-stride2-pad1": ((7, 9), 9, (3, 3), (2, 2), (1, 1, 1, 1), False, 3, (0, 255)),
    "3x2-asym-pads-relu": ((5, 6), 3, (3, 2), (1, 1), (2, 0, 0, 1), True, 2, (0, 100)),
}


@pytest.mark.parametrize("case", POOL_CASES)
def test_vector_max_bit_exact(target, case):
    config = target.config
    rows = config.rows
    (in_h, in_w), ch, (kh, kw), (sy, sx), (pad_t, pad_l, pad_b, pad_r), signed, pieces, (lo, hi) = POOL_CASES[case]
    rng = np.random.default_rng([SEED, len(case), 21])
    out_h = (in_h + pad_t + pad_b - kh) // sy + 1
    out_w = (in_w + pad_l + pad_r - kw) // sx + 1
    s = -(-ch // rows)
    x = random_bytes(rng, (in_h, in_w, ch), signed)
    a_addr, y_addr, count = 9, 1500, out_h * out_w
    geometry = dict(in_h=in_h, in_w=in_w, out_w=out_w, kh=kh, kw=kw, stride_y=sy, stride_x=sx,
                    dil_y=1, dil_x=1, pad_t=pad_t, pad_l=pad_l, c_chunks=s, x_pad=77)
    program = [isa.setconv(**geometry, a_stride=s)]
    bounds = np.linspace(0, count, pieces + 1).astype(int)
    for first, last in zip(bounds[:-1], bounds[1:]):
        oy0, ox0 = divmod(int(first), out_w)
        program.append(isa.vector(isa.Vop.MAX, x_signed=int(signed), y_signed=int(signed),
                                  a_addr=isa.window_origin(geometry, a_addr, s, oy0, ox0),
                                  a_stride=s, count=int(last - first), y_addr=y_addr + int(first) * s, y_stride=s,
                                  oy0=oy0, ox0=ox0, y_lo=lo, y_hi=hi))
    cycles = run_both(target, [Write(isa.Memory.ABUF, a_addr, tuple(tensor_words(x, rows)))], program,
                      [Read(isa.Memory.ABUF, y_addr, count * s)])
    # Cross-check the model with a direct NumPy max pool (padding as -inf).
    padded = np.full((in_h + pad_t + pad_b, in_w + pad_l + pad_r, ch), -1000)
    padded[pad_t:pad_t + in_h, pad_l:pad_l + in_w] = x
    direct = np.array([[padded[oy * sy:oy * sy + kh, ox * sx:ox * sx + kw].max(axis=(0, 1))
                        for ox in range(out_w)] for oy in range(out_h)]).clip(lo, hi)
    assert cycles == SETCONV_CYCLES + HALT_CYCLES + sum(
        max_cycles(int(last - first), s, kh, kw) for first, last in zip(bounds[:-1], bounds[1:]))
    got = target.execute([Read(isa.Memory.ABUF, y_addr, count * s)])[0]
    got = unpack(got, rows, 8, signed).reshape(out_h, out_w, s * rows)[..., :ch]
    assert np.array_equal(got, direct)
    print(f"seed={SEED} {config.name} MAX {case}: {count} pixels x {s} chunks x {kh * kw} taps in {cycles} cycles")


@pytest.mark.parametrize("pixels", [64, 200, 1024])
def test_vector_gsum_bit_exact(target, pixels):
    config = target.config
    rows = config.rows
    rng = np.random.default_rng([SEED, pixels, 31])
    ch = 3 * rows - 1
    s = -(-ch // rows)
    signed = pixels != 200
    x = random_bytes(rng, (pixels, 1, ch), signed)
    x_zp = int(rng.integers(-10, 11)) if signed else int(rng.integers(0, 40))
    x_scale, y_scale = np.float32(rng.uniform(0.01, 0.1)), np.float32(rng.uniform(0.005, 0.05))
    multiplier = np.float32(x_scale / np.float32(y_scale * np.float32(pixels)))
    mantissa, exponent = numerics.decompose_multiplier(np.full(s * rows, multiplier, np.float32))
    params = tuple(isa.param_word(-x_zp * pixels, int(mm), int(e)) for mm, e in zip(mantissa, exponent))
    a_addr, y_addr, p_addr = 30, 3900, 40
    y_zp = int(rng.integers(-5, 6)) if signed else 7
    program = [isa.setconv(c_chunks=s),
               isa.vector(isa.Vop.GSUM, x_signed=int(signed), y_signed=int(signed), a_addr=a_addr, a_stride=s,
                          count=pixels, p_addr=p_addr, y_addr=y_addr, y_zp=y_zp,
                          y_lo=-128 if signed else 0, y_hi=127 if signed else 255)]
    writes = [Write(isa.Memory.ABUF, a_addr, tuple(tensor_words(x, rows))), Write(isa.Memory.PBUF, p_addr, params)]
    cycles = run_both(target, writes, program, [Read(isa.Memory.ABUF, y_addr, s)])
    assert cycles == SETCONV_CYCLES + gsum_cycles(pixels, s, rows) + HALT_CYCLES
    # Cross-check the model against numerics' requantization of the exact sums.
    sums = x.reshape(pixels, ch).sum(axis=0) - x_zp * pixels
    direct = numerics.requantize_integer(sums, np.full(ch, multiplier, np.float32), y_zp,
                                         np.int8 if signed else np.uint8)
    got = unpack(target.execute([Read(isa.Memory.ABUF, y_addr, s)])[0], rows, 8, signed).reshape(-1)[:ch]
    assert np.array_equal(got, direct)
    print(f"seed={SEED} {config.name} GSUM over {pixels} pixels x {s} chunks in {cycles} cycles")


@pytest.mark.parametrize("layer_seed", range(4))
def test_vector_add_bit_exact(target, layer_seed):
    check_vector_add(target, layer_seed, 37 + 20 * layer_seed)


@pytest.mark.parametrize("layer_seed", range(2))
def test_vector_add_time_multiplexed_lanes(lanes_target, layer_seed):
    """qadd_lanes < rows: the same results, a row every max(2, rows / qadd_lanes) cycles."""
    check_vector_add(lanes_target, 10 + layer_seed, [1, 29][layer_seed])


def check_vector_add(target, layer_seed, count):
    """Run one VECTOR ADD of ``count`` rows; check it against the model, the emulator and onnxruntime's arithmetic."""
    config = target.config
    rows = config.rows
    rng = np.random.default_rng([SEED, layer_seed, 61])
    layer = random_layer(rng, dtype=["int8", "uint8"][layer_seed % 2])
    recipe = layer.recipe()
    a = rng.integers(*layer.code_range(), (count, rows))
    b = rng.integers(*layer.code_range(), (count, rows))
    x, t = to_ports(layer, a, b)   # the hardware multiplies its a operand
    a_addr, b_addr, y_addr, p_addr = 100, 600, 1200, 77
    a_stride, b_stride, y_stride = 2, 3, 1 + layer_seed % 2
    writes = [Write(isa.Memory.ABUF, a_addr + i * a_stride, (word,)) for i, word in enumerate(pack(x, 8))]
    writes += [Write(isa.Memory.ABUF, b_addr + i * b_stride, (word,)) for i, word in enumerate(pack(t, 8))]
    writes.append(Write(isa.Memory.PBUF, p_addr, tuple(isa.add_params(recipe))))
    lo, hi = layer.bounds
    program = [isa.vector(isa.Vop.ADD, x_signed=layer.signed, y_signed=layer.signed, a_addr=a_addr,
                          a_stride=a_stride, w_addr=b_addr, b_stride=b_stride, count=count, p_addr=p_addr,
                          y_addr=y_addr, y_stride=y_stride, y_lo=lo, y_hi=hi)]
    reads = [Read(isa.Memory.ABUF, y_addr + i * y_stride, 1) for i in range(count)]
    cycles = run_both(target, writes, program, reads)
    assert cycles == add_cycles(count, config.qadd_spacing) + HALT_CYCLES
    assert cycles == vector_cycles(config, isa.Vop.ADD, count) + HALT_CYCLES
    got = [w for (w,) in target.execute(reads)]
    want = reference_values(layer, a.reshape(-1), b.reshape(-1)).reshape(count, rows)  # onnxruntime's arithmetic
    assert np.array_equal(unpack(got, rows, 8, bool(layer.signed)), want), f"seed={SEED} {layer}"
    print(f"seed={SEED} {config.name} ADD {count} rows in {cycles} cycles ({layer}, recipe mult {recipe.mult} "
          f"shift {recipe.shift} tie_even {recipe.tie_even} x_is_b {recipe.x_is_b})")


def test_conv_pool_gsum_chain(target):
    """Run conv -> max pool -> conv -> global sum with no explicit SYNC before the VECTORs."""
    config = target.config
    rows = config.rows
    rng = np.random.default_rng([SEED, 41])
    conv = place_conv(config, rng, in_hw=(8, 8), c=rows + 1, n=rows + 2, k=(3, 3), pads=(1, 1, 1, 1),
                      a_addr=0, y_addr=500, w_addr=0, p_addr=0)
    s = -(-(rows + 2) // rows)
    program = list(conv.program)
    pool = dict(in_h=8, in_w=8, out_w=4, kh=2, kw=2, stride_y=2, stride_x=2, dil_y=1, dil_x=1, pad_t=0, pad_l=0,
                c_chunks=s)
    program += [isa.setconv(**pool, a_stride=s),
                isa.vector(isa.Vop.MAX, x_signed=1, y_signed=1, a_addr=isa.window_origin(pool, 500, s, 0, 0),
                           a_stride=s, count=16, y_addr=800,
                           y_stride=s, y_lo=-128, y_hi=127),
                isa.setconv(c_chunks=s),
                isa.vector(isa.Vop.GSUM, x_signed=1, y_signed=1, a_addr=800, a_stride=s, count=16, p_addr=0,
                           y_addr=900, y_zp=3, y_lo=-128, y_hi=127)]
    run_both(target, conv.writes, program,
             [Read(isa.Memory.ABUF, 500, conv.y_words), Read(isa.Memory.ABUF, 800, 16 * s),
              Read(isa.Memory.ABUF, 900, s)])


# -- timing ----------------------------------------------------------------------------------------


def test_conv_3x3_32x32x16_utilization(small_target):
    """Measure a 3x3, pad 1 conv over a 32x32x16 input to 16 channels on 4x4."""
    rng = np.random.default_rng([SEED, 51])
    conv = place_conv(SMALL, rng, in_hw=(32, 32), c=16, n=16, k=(3, 3), pads=(1, 1, 1, 1), a_addr=0)
    cycles = run_both(small_target, conv.writes, conv.program, [Read(isa.Memory.ABUF, conv.y_addr, conv.y_words)])
    ideal = conv.macs / (SMALL.rows * SMALL.cols)
    # test_core's formula for MATMULs (each further one adds k_tiles * max(count, R + 1)),
    # plus the SETCONV and the first conv MATMUL's preparation.
    R, C, count, k_tiles = SMALL.rows, SMALL.cols, 1024, 36
    matmuls = 4 * k_tiles * max(count, R + 1) - (max(count, R + 1) - count) + 2 * R + C + 16
    assert cycles == SETCONV_CYCLES + CONV_PREP_CYCLES + matmuls
    print(f"seed={SEED} conv 3x3 32x32x16->16 on 4x4: {cycles} cycles, ideal {ideal:.0f}, "
          f"utilization {ideal / cycles:.4f}")
    assert ideal / cycles > 0.99
