"""Define accel's instruction set, parameter words and host-link commands, once for everyone.

The HDL decodes instructions through views of :data:`Insn`, the compiler encodes them with
:func:`encode`, and the emulator decodes the same bits with :func:`decode`. ``docs/isa.md``
has the bit table. Field meanings (see ``docs/isa.md`` for the exact semantics):

``MATMUL``: for ``kt`` in ``0..k_tiles-1``, load the weight tile ``WBUF[w_addr + kt*rows ..
+rows-1]`` into the array, then stream the ``rows`` input rows ``ABUF[a_addr + kt + m*a_stride]``
(``m`` in ``0..count-1``) through it, accumulating ``cols`` sums per row in
``ACC[acc_addr + m]``. After the last tile each row's sums get the per-channel bias and
requantization from ``PBUF[p_addr .. p_addr+cols-1]``, ``y_zp``, the clamp ``[y_lo, y_hi]``,
and land in ``ABUF[y_addr + m*y_stride]``.
"""

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

__all__ = [
    "INSN_BITS", "PARAM_BITS", "Opcode", "Vop", "Insn", "ConvGeometry", "AddParams", "ParamWord", "Memory",
    "Command", "ACK", "NACK", "PAUSED", "IDENT_MAGIC", "encode", "decode", "matmul", "sync", "halt", "setconv", "vector",
    "add_params", "add_recipe", "ADD_TABLE_WORDS", "param_word", "stream", "ADDR_BITS",
    "window_steps", "window_origin", "window_addresses", "input_packs",
    "pack_values", "unpack_values",
]

INSN_BITS = 256
PARAM_BITS = 64
#: Width of ABUF address fields and steps; address arithmetic is modulo ``2**ADDR_BITS``.
ADDR_BITS = 20

ACK = 0xA5
NACK = 0x5A
IDENT_MAGIC = b"ACCL"


class Opcode(enum.Enum, shape=4):
    """Name the operations the controller executes."""

    NOP = 0
    MATMUL = 1
    SYNC = 2     # wait until every result of earlier instructions is written
    HALT = 3     # end of program: stop the cycle counter and report done
    SETCONV = 4  # load the convolution/pooling geometry registers (a ConvGeometry word)
    VECTOR = 5   # an element-wise or pooling operation on ABUF words (see Vop)
    STREAM = 6   # wait like SYNC, then pause until the host has written stream segment `count`


class Vop(enum.Enum, shape=2):
    """Name the vector operations (``VECTOR`` instructions)."""

    MAX = 0   # window max pooling with the geometry registers
    GSUM = 1  # sum `count` pixels per byte lane, then requantize (global average pool)
    ADD = 2   # onnxruntime's QLinearAdd per byte lane of two word streams


class Insn(data.Struct):
    """Lay out one 256-bit instruction word (fields unused by an opcode are zero)."""

    opcode: Opcode
    x_signed: unsigned(1)   # ABUF input bytes are int8 (1) or uint8 (0)
    y_signed: unsigned(1)   # results are int8 (1) or uint8 (0)
    _reserved0: unsigned(2)
    w_addr: unsigned(24)    # WBUF word address of the first weight tile
    a_addr: unsigned(ADDR_BITS)  # ABUF word of row 0, K-chunk 0 (conv/pool: window_origin)
    a_stride: unsigned(16)  # ABUF words between input rows
    count: unsigned(16)     # input rows per weight tile (M)
    k_tiles: unsigned(16)   # weight tiles to accumulate over (K / rows, rounded up)
    acc_addr: unsigned(16)  # ACC word of row 0
    p_addr: unsigned(16)    # PBUF word of output channel 0 of this column tile
    y_addr: unsigned(20)    # ABUF word address of output row 0
    y_stride: unsigned(16)  # ABUF words between output rows
    y_zp: signed(9)         # output zero point
    y_lo: signed(9)         # clamp low (fused ReLU/Clip), within the output type
    y_hi: signed(9)         # clamp high
    conv: unsigned(1)       # MATMUL: input rows come from the im2col address generator
    oy0: unsigned(12)       # conv/pool: output row of this instruction's first output pixel
    ox0: unsigned(12)       # conv/pool: output column of this instruction's first output pixel
    vop: Vop                # VECTOR: which operation
    b_stride: unsigned(16)  # VECTOR ADD: ABUF words between rows of the second operand (at w_addr)
    _reserved1: unsigned(INSN_BITS - 238)


class ConvGeometry(data.Struct):
    """Lay out a SETCONV instruction: the geometry registers conv-mode MATMUL and VECTOR MAX use."""

    opcode: Opcode
    in_h: unsigned(12)      # input height
    in_w: unsigned(12)      # input width (pixels per input row)
    out_w: unsigned(12)     # output width (output pixels per output row)
    kh: unsigned(5)         # kernel height
    kw: unsigned(5)         # kernel width
    stride_y: unsigned(4)
    stride_x: unsigned(4)
    dil_y: unsigned(4)
    dil_x: unsigned(4)
    pad_t: unsigned(5)      # padding rows above the input
    pad_l: unsigned(5)      # padding columns left of the input
    c_chunks: unsigned(8)   # ABUF words per pixel read by one kernel tap (channel chunks)
    x_pad: signed(9)        # the byte value of padded positions (the input zero point)
    # ABUF address steps, modulo 2**ADDR_BITS, computed by the compiler (window_steps) so
    # the hardware only adds. With the layer's a_stride = ABUF words per pixel:
    step_x: unsigned(ADDR_BITS)    # stride_x*a_stride: to the next output pixel's window in a row
    step_row: unsigned(ADDR_BITS)  # stride_y*in_w*a_stride - (out_w-1)*step_x: a row's last window to the next row's first
    tap_x: unsigned(ADDR_BITS)     # dil_x*a_stride: to the next kernel column
    tap_row: unsigned(ADDR_BITS)   # dil_y*in_w*a_stride - (kw-1)*tap_x: a kernel row's last tap to the next row's first
    # Packed taps (HW_REVISION 8): log2 of the input pixels per ABUF word (0: a pixel takes
    # whole words). With pack = p > 0 the input holds 2**p pixels of R >> p bytes per word,
    # addresses and steps count pixels, and a K tile is 2**p consecutive pixels of one
    # kernel row (kw counts those groups); conv-mode MATMUL only.
    pack: unsigned(3)
    _reserved: unsigned(INSN_BITS - 96 - 4 * ADDR_BITS)


def input_packs(rows: int) -> list[int]:
    """Return the SETCONV ``pack`` values an array of ``rows`` rows supports: ``p`` with ``2**p`` dividing ``rows``.

    With ``pack = p`` an ABUF word holds ``2**p`` pixels of ``rows >> p`` bytes; the field
    is 3 bits wide. The HDL builds one rotation per value, the compiler picks among them and
    the emulator refuses the others.
    """
    return [p for p in range(8) if rows % (1 << p) == 0]


class AddParams(data.Struct):
    """Lay out the first PBUF word of one VECTOR ADD: a QLinearAdd layer's integer recipe.

    The word is followed by the recipe's table, ``ADD_TABLE_WORDS`` PBUF words of two
    int32 entries each (entry ``2k`` in the low half of word ``k``). Per byte lane, with
    ``x`` the ``a`` operand's byte and ``t`` the ``b`` operand's byte (``x`` read as int8 or
    uint8 per ``x_signed``): ``w = x * mult + table[t]``, ``q = w >> shift`` (floor), minus
    one if ``tie_even`` and the shifted-out bits are zero and ``q`` is odd, then clamped to
    ``[y_lo, y_hi]`` and the output type (``numerics.AddRecipe``, ``docs/numerics.md``
    section 7).
    """

    mult: unsigned(24)
    shift: unsigned(5)
    tie_even: unsigned(1)
    _reserved: unsigned(PARAM_BITS - 30)


#: PBUF words of a VECTOR ADD's table (256 int32 entries, two per word).
ADD_TABLE_WORDS = 128


class ParamWord(data.Struct):
    """Lay out one output channel's parameters: int32 bias and the float32 multiplier as mantissa * 2**exponent."""

    bias: signed(32)
    mantissa: unsigned(24)  # 2**23 <= mantissa < 2**24
    exponent: signed(8)     # multiplier = mantissa * 2**exponent


class Memory(enum.Enum, shape=8):
    """Number the memories the host link can read and write."""

    IMEM = 0
    WBUF = 1
    ABUF = 2
    PBUF = 3
    ACCBUF = 4

    @property
    def config_field(self) -> str:
        return self.name.lower()


class Command(enum.Enum, shape=8):
    """Number the commands of the raw host byte stream (``docs/isa.md``, host link)."""

    WRITE = 0x01   # mem u8, addr u32, count u32, then count words -> ACK
    READ = 0x02    # mem u8, addr u32, count u32 -> count words
    RUN = 0x03     # run from PC 0 -> ACK 0 0 once the program halts, PAUSED seg u16 at a STREAM
    STATUS = 0x04  # -> status u8, cycles u64
    IDENT = 0x05   # -> "ACCL", config id u64, hw revision u8, rows u8, cols u8
    RESUME = 0x06  # continue a run paused at STREAM -> like RUN


#: First byte of a RUN/RESUME reply when the run paused at a ``STREAM`` (then the segment, u16).
PAUSED = 0xA6


assert data.Layout.cast(Insn).size == INSN_BITS
assert data.Layout.cast(ConvGeometry).size == INSN_BITS
assert data.Layout.cast(ParamWord).size == PARAM_BITS
assert data.Layout.cast(AddParams).size == PARAM_BITS


def encode(**fields) -> int:
    """Return the bits of one instruction; missing fields are zero."""
    return Insn.const(fields).as_bits()


def decode(bits: int) -> data.Const:
    """Return a view of one instruction's fields (``.opcode``, ``.w_addr``, ...; ``ConvGeometry`` for SETCONV)."""
    opcode_bits = bits & 0xF  # the opcode is bits 0-3 of every instruction layout
    if opcode_bits == Opcode.SETCONV.value:
        return data.Const(data.Layout.cast(ConvGeometry), bits)
    return data.Const(data.Layout.cast(Insn), bits)


def setconv(*, a_stride: int | None = None, **fields) -> int:
    """Return a SETCONV instruction loading the geometry registers.

    With ``a_stride`` (ABUF words per input pixel) the address steps are computed from the
    geometry (:func:`window_steps`); without it they are taken from ``fields`` (zero if absent).
    """
    if a_stride is not None:
        fields = {**fields, **window_steps(fields, a_stride)}
    return ConvGeometry.const({"opcode": Opcode.SETCONV, **fields}).as_bits()


def window_steps(geometry: dict, a_stride: int) -> dict:
    """Return a SETCONV's ABUF address steps ``step_x, step_row, tap_x, tap_row`` (modulo ``2**ADDR_BITS``).

    ``geometry`` holds ``in_w, out_w, kw, stride_y, stride_x, dil_y, dil_x`` (and ``pack``);
    ``a_stride`` is the ABUF words per input pixel of the layer's conv-mode MATMULs or
    VECTOR MAX, 1 with packed taps (``pack > 0``), where addresses count pixels and one
    tap group is ``dil_x << pack`` pixels from the next.
    """
    g, mask = geometry, (1 << ADDR_BITS) - 1
    step_x, tap_x = g["stride_x"] * a_stride, (g["dil_x"] << g.get("pack", 0)) * a_stride
    return {"step_x": step_x & mask,
            "step_row": (g["stride_y"] * g["in_w"] * a_stride - (g["out_w"] - 1) * step_x) & mask,
            "tap_x": tap_x & mask,
            "tap_row": (g["dil_y"] * g["in_w"] * a_stride - (g["kw"] - 1) * tap_x) & mask}


def window_origin(geometry: dict, base: int, a_stride: int, oy0: int, ox0: int) -> int:
    """Return the ``a_addr`` of a conv-mode MATMUL or VECTOR MAX starting at output pixel ``(oy0, ox0)``.

    ``base`` is the ABUF word of input pixel ``(0, 0)``, chunk 0. The result is the word of
    the window's corner tap ``(0, 0)`` of pixel ``(oy0, ox0)``, which may lie in the padding
    (modulo ``2**ADDR_BITS``).
    """
    g = geometry
    iy0, ix0 = oy0 * g["stride_y"] - g["pad_t"], ox0 * g["stride_x"] - g["pad_l"]
    return (base + (iy0 * g["in_w"] + ix0) * a_stride) & ((1 << ADDR_BITS) - 1)


def window_addresses(geometry, a_addr: int, ox0: int, m, ky, kx):
    """Return the ABUF words (before the chunk ``cc``) of rows ``m`` at taps ``(ky, kx)``, as the hardware steps them.

    ``geometry`` has the SETCONV fields as attributes; rows ``m`` count output pixels from
    ``(oy0, ox0)`` along the row, wrapping at ``out_w``. NumPy broadcasting applies to
    ``m``, ``ky`` and ``kx``; results are modulo ``2**ADDR_BITS``.
    """
    g = geometry
    m, ky, kx = (np.asarray(v, np.int64) for v in (m, ky, kx))
    rows, ox = np.divmod(ox0 + m, g.out_w)
    row_step = g.step_row + (g.out_w - 1) * g.step_x     # one output row, as steps add up
    tap_row = g.tap_row + (g.kw - 1) * g.tap_x            # one kernel row
    offset = rows * row_step + (ox - ox0) * g.step_x + ky * tap_row + kx * g.tap_x
    return (a_addr + offset) & ((1 << ADDR_BITS) - 1)


def vector(vop, **fields) -> int:
    """Return a VECTOR instruction."""
    return encode(opcode=Opcode.VECTOR, vop=vop, **fields)


def add_params(recipe) -> list[int]:
    """Return the ``1 + ADD_TABLE_WORDS`` PBUF words of one VECTOR ADD from a ``numerics.AddRecipe``."""
    head = AddParams.const({"mult": recipe.mult, "shift": recipe.shift,
                            "tie_even": int(recipe.tie_even)}).as_bits()
    entries = [int(v) & 0xFFFF_FFFF for v in recipe.table]
    return [head] + [entries[2 * k] | entries[2 * k + 1] << 32 for k in range(ADD_TABLE_WORDS)]


def add_recipe(words) -> "numerics.AddRecipe":
    """Decode the ``1 + ADD_TABLE_WORDS`` PBUF words of one VECTOR ADD (the inverse of :func:`add_params`).

    The multiplied operand is the instruction's ``a`` operand, so ``x_is_b`` is False.
    """
    from . import numerics
    head = data.Const(data.Layout.cast(AddParams), int(words[0]))
    entries = [int(w) >> half & 0xFFFF_FFFF for w in words[1:1 + ADD_TABLE_WORDS] for half in (0, 32)]
    table = np.array([e - (1 << 32) if e >> 31 else e for e in entries], np.int64)
    return numerics.AddRecipe(int(head.mult), int(head.shift), bool(head.tie_even), False, table)


def matmul(**fields) -> int:
    """Return a MATMUL instruction."""
    return encode(opcode=Opcode.MATMUL, **fields)


def sync() -> int:
    """Return a SYNC instruction."""
    return encode(opcode=Opcode.SYNC)


def stream(segment: int, resume_pc: int) -> int:
    """Return a STREAM instruction: drain, pause for stream segment ``segment``, then go on at ``resume_pc``."""
    return encode(opcode=Opcode.STREAM, count=segment, a_addr=resume_pc)


def halt() -> int:
    """Return a HALT instruction."""
    return encode(opcode=Opcode.HALT)


def param_word(bias: int, mantissa: int, exponent: int) -> int:
    """Return the bits of one output channel's parameter word."""
    return ParamWord.const({"bias": int(bias), "mantissa": int(mantissa), "exponent": int(exponent)}).as_bits()


def pack_values(values, bits: int) -> int:
    """Pack integers (two's complement, ``bits`` each, element 0 lowest) into one word."""
    word, mask = 0, (1 << bits) - 1
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def unpack_values(word: int, count: int, bits: int, signed_values: bool = True) -> list[int]:
    """Unpack ``count`` integers of ``bits`` bits from a word (element 0 lowest)."""
    out, mask = [], (1 << bits) - 1
    for i in range(count):
        v = (word >> (i * bits)) & mask
        if signed_values and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out
