"""Define the one frozen hardware configuration that the HDL, compiler, emulator and driver share.

A :class:`HardwareConfig` fixes the systolic array's shape, the on-chip buffers, the
accumulator width, the clock target and the board. It is passed explicitly everywhere,
never read from a global. :meth:`HardwareConfig.config_id` is a stable 64-bit hash of
everything that changes the hardware's behaviour; the hardware reports it in its ID
register and every compiled artifact records it, so software can tell which hardware it
talks to and refuse programs built for another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

__all__ = ["HW_REVISION", "BufferSpec", "HardwareConfig", "PRESETS", "preset", "preset_names"]

# Bump when the hardware's behaviour or the ISA changes, so old artifacts are refused.
HW_REVISION = 9  # 9: packed taps on arrays whose rows are not a power of two

BUFFER_KINDS = ("auto", "lutram", "ebr", "spram")


@dataclass(frozen=True)
class BufferSpec:
    """Describe one on-chip buffer: how many words it holds and what memory it maps to."""

    depth: int
    kind: str = "auto"

    def __post_init__(self):
        if not isinstance(self.depth, int) or self.depth < 1 or self.depth & (self.depth - 1):
            raise ValueError(f"buffer depth must be a positive power of two, not {self.depth!r}")
        if self.kind not in BUFFER_KINDS:
            raise ValueError(f"buffer kind must be one of {BUFFER_KINDS}, not {self.kind!r}")

    @property
    def addr_bits(self) -> int:
        return max(1, (self.depth - 1).bit_length())


@dataclass(frozen=True)
class HardwareConfig:
    """Describe one accelerator build.

    ``rows`` x ``cols`` is the systolic array (weight-stationary: ``rows`` is the reduction
    dimension K, ``cols`` the output channels N). Buffers are in words:

    * ``imem``: the program, one instruction per word;
    * ``abuf``: activations, one word = ``rows`` bytes (a K-chunk of one input row, or a
      ``cols``-wide chunk of one output row; ``rows == cols``);
    * ``wbuf``: weights, one word = ``cols`` values of ``weight_bits`` bits (one row of a
      weight tile, zero point already subtracted);
    * ``accbuf``: int accumulators, one word = ``cols`` x ``acc_width`` bits;
    * ``pbuf``: per-output-channel parameters (bias, requantization multiplier), one per word.

    ``requant_lanes`` is the number of requantizer lanes (``None``: one per column). With
    fewer lanes than columns the lanes are time-multiplexed: a row of results takes
    ``requant_spacing = cols / requant_lanes`` cycles, so the last K tile of a ``MATMUL``
    streams one row every ``requant_spacing`` cycles (``compiler/cycles.py``).

    ``qadd_lanes`` is the number of QLinearAdd lanes of ``VECTOR ADD`` (``None``: one per
    byte of an ABUF word, ``rows``). With fewer, a word takes ``qadd_spacing = rows /
    qadd_lanes`` passes through the lanes, one per cycle.

    ``pe_dsp_blocks`` caps the DSP blocks a board build gives the PEs (``None``: all the chip
    has left after the requantizer); the other PEs multiply in LUTs. Results and cycles do
    not depend on it, so like ``clock_hz`` it is not part of :meth:`config_id`.
    """

    name: str
    rows: int
    cols: int
    imem: BufferSpec
    abuf: BufferSpec
    wbuf: BufferSpec
    accbuf: BufferSpec
    pbuf: BufferSpec
    acc_width: int = 32
    weight_bits: int = 9
    clock_hz: int = 50_000_000
    board: str | None = None
    requant_lanes: int | None = None
    qadd_lanes: int | None = None
    pe_dsp_blocks: int | None = None

    def __post_init__(self):
        for field in ("rows", "cols"):
            value = getattr(self, field)
            if not isinstance(value, int) or not 1 <= value <= 64:
                raise ValueError(f"{field} must be an integer from 1 to 64, not {value!r}")
        if self.rows != self.cols:
            # TODO: rectangular arrays need an output re-layout between layers (rows-wide
            # input chunks vs cols-wide output chunks); until then the array is square.
            raise ValueError(f"rows and cols must be equal (square array), not {self.rows}x{self.cols}")
        if self.acc_width not in (24, 32):
            raise ValueError(f"acc_width must be 24 or 32, not {self.acc_width!r}")
        if self.weight_bits not in (8, 9):
            raise ValueError(f"weight_bits must be 8 or 9, not {self.weight_bits!r}")
        if not isinstance(self.clock_hz, int) or self.clock_hz <= 0:
            raise ValueError(f"clock_hz must be a positive integer, not {self.clock_hz!r}")
        if self.requant_lanes is None:
            object.__setattr__(self, "requant_lanes", self.cols)
        if (not isinstance(self.requant_lanes, int) or isinstance(self.requant_lanes, bool)
                or self.requant_lanes < 1 or self.cols % self.requant_lanes):
            raise ValueError(f"requant_lanes must be a positive divisor of cols ({self.cols}), "
                             f"not {self.requant_lanes!r}")
        if self.pe_dsp_blocks is not None and (not isinstance(self.pe_dsp_blocks, int)
                                               or isinstance(self.pe_dsp_blocks, bool) or self.pe_dsp_blocks < 0):
            raise ValueError(f"pe_dsp_blocks must be a non-negative integer or None, not {self.pe_dsp_blocks!r}")
        if self.qadd_lanes is None:
            object.__setattr__(self, "qadd_lanes", self.rows)
        if (not isinstance(self.qadd_lanes, int) or isinstance(self.qadd_lanes, bool)
                or self.qadd_lanes < 1 or self.rows % self.qadd_lanes):
            raise ValueError(f"qadd_lanes must be a positive divisor of rows ({self.rows}), "
                             f"not {self.qadd_lanes!r}")

    # -- derived sizes -------------------------------------------------------------------
    @property
    def abuf_word_bits(self) -> int:
        return self.rows * 8

    @property
    def wbuf_word_bits(self) -> int:
        return self.cols * self.weight_bits

    @property
    def acc_word_bits(self) -> int:
        return self.cols * self.acc_width

    def word_bytes(self, memory: str) -> int:
        """Return how many bytes one word of ``memory`` takes on the host link."""
        from .isa import INSN_BITS, PARAM_BITS
        bits = {"imem": INSN_BITS, "abuf": self.abuf_word_bits, "wbuf": self.wbuf_word_bits,
                "accbuf": self.acc_word_bits, "pbuf": PARAM_BITS}[memory]
        return (bits + 7) // 8

    def capacity_bytes(self, memory: str) -> int:
        """Return a buffer's capacity in host bytes."""
        return getattr(self, memory).depth * self.word_bytes(memory)

    @property
    def requant_spacing(self) -> int:
        """Return the cycles the requantizer spends on one row: ``cols / requant_lanes``."""
        return self.cols // self.requant_lanes

    @property
    def deferred_requant(self) -> bool:
        """Return whether the last K tile's rows are accumulated first and requantized later (``requant_spacing > 1``).

        With time-multiplexed requantizer lanes the rows of a MATMUL's last K tile are summed
        into ACC at one row per cycle like the other tiles, and a drainer feeds them from
        ACC to the requantizer, one row every ``requant_spacing`` cycles, while the next
        MATMUL streams. ACC is then split into two halves, one per instruction context.
        """
        return self.requant_spacing > 1

    @property
    def acc_rows(self) -> int:
        """Return the most rows one MATMUL may accumulate: the ACC depth, half of it with deferred requantization."""
        return self.accbuf.depth // 2 if self.deferred_requant else self.accbuf.depth

    @property
    def qadd_spacing(self) -> int:
        """Return the cycles the QLinearAdd lanes spend on one ABUF word: ``rows / qadd_lanes``."""
        return self.rows // self.qadd_lanes

    @property
    def macs_per_cycle(self) -> int:
        return self.rows * self.cols

    # -- identity ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HardwareConfig":
        data = dict(data)
        for key in ("imem", "abuf", "wbuf", "accbuf", "pbuf"):
            data[key] = BufferSpec(**data[key])
        return cls(**data)

    def config_id(self) -> int:
        """Return the stable 64-bit hash of everything that defines the hardware's behaviour."""
        identity = self.to_dict()
        identity.pop("name")
        identity.pop("clock_hz")  # the clock changes timing, not results
        identity.pop("pe_dsp_blocks")  # the DSP mapping changes area and timing, not results
        identity["hw_revision"] = HW_REVISION
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).digest()
        return int.from_bytes(digest[:8], "little")

    @property
    def config_hash(self) -> str:
        return f"{self.config_id():016x}"

    def describe(self) -> str:
        return (f"{self.name}: {self.rows}x{self.cols} array, abuf {self.capacity_bytes('abuf') // 1024} KiB, "
                f"wbuf {self.capacity_bytes('wbuf') // 1024} KiB, {self.clock_hz / 1e6:g} MHz, id {self.config_hash}")


PRESETS: dict[str, HardwareConfig] = {
    # Small and fast to simulate, with buffers big enough for the MLPerf Tiny FC models.
    "sim-small": HardwareConfig(
        name="sim-small", rows=4, cols=4,
        imem=BufferSpec(1024), abuf=BufferSpec(16384), wbuf=BufferSpec(131072),
        accbuf=BufferSpec(1024), pbuf=BufferSpec(2048), clock_hz=50_000_000),
    # iCE40 UP5K: 16 PEs on 8 SB_MAC16 (two 8x8 products each), big buffers in the 128 KiB SPRAM,
    # one requantizer lane for the four columns (a lane is about 2,500 LUT4s without DSPs), one
    # QLinearAdd lane (about 940 LUT4 and 4 EBR for its table): a VECTOR ADD row every 4 cycles.
    "icebreaker": HardwareConfig(
        name="icebreaker", rows=4, cols=4,
        imem=BufferSpec(256, "ebr"), abuf=BufferSpec(16384, "spram"), wbuf=BufferSpec(16384, "spram"),
        accbuf=BufferSpec(256, "ebr"), pbuf=BufferSpec(256, "ebr"),
        weight_bits=8, clock_hz=30_000_000, board="icebreaker", requant_lanes=1, qadd_lanes=1),
    # ECP5-85F: a 16x16 array (ResNet-8's and DS-CNN's 16/32/64 channels fill it), 256 products on
    # the 156 MULT18X18D plus LUT multipliers. Buffers in the 208 EBR (18 Kbit each): ABUF 16K x 128
    # bits (128 EBR, so MobileNetV1-0.25's activations fit), WBUF 4K x 144 (36; weights beyond it
    # stream), ACCBUF 512 x 512 (2 x 15: a second copy for the deferred requantization's read port),
    # IMEM 512 x 256 (8), PBUF 1K x 64 (4): 206 with the add tables. Four requantizer lanes (16 DSPs;
    # 140 PEs on DSPs): a row every 4 cycles, drained from ACC while the next MATMUL streams. Yosys
    # counts with 16 / 8 / 4 requantizer lanes: about 90,000 / 76,500 / 69,700 LUT4 + 2 x CCU2C. Four
    # QLinearAdd lanes (about 1,400 LUT4 and 2 EBR each for the table recipe): a VECTOR ADD row every
    # 4 cycles (eight lanes, every 2, did not leave EBR for the second ACC copy).
    "ulx3s-85f": HardwareConfig(
        name="ulx3s-85f", rows=16, cols=16,
        imem=BufferSpec(512, "ebr"), abuf=BufferSpec(16384, "ebr"), wbuf=BufferSpec(4096, "ebr"),
        accbuf=BufferSpec(512, "ebr"), pbuf=BufferSpec(1024, "ebr"),
        clock_hz=125_000_000, board="ulx3s-85f", qadd_lanes=4, requant_lanes=4),
    # ECP5-85F, the configuration that places and routes today: an 8x8 array with its PEs in
    # LUTs (pe_dsp_blocks=0: with PEs on MULT18X18D no ulx3s variant, 8x8 included, routed;
    # docs/architecture.md, "ECP5 timing"), the four requantizer lanes' 16 blocks on DSPs,
    # the ulx3s-85f buffers at 8 columns (ABUF 16K x 64 bits: every model fits), 30 MHz.
    "ulx3s-85f-8x8": HardwareConfig(
        name="ulx3s-85f-8x8", rows=8, cols=8,
        imem=BufferSpec(512, "ebr"), abuf=BufferSpec(16384, "ebr"), wbuf=BufferSpec(4096, "ebr"),
        accbuf=BufferSpec(512, "ebr"), pbuf=BufferSpec(1024, "ebr"),
        clock_hz=30_000_000, board="ulx3s-85f", qadd_lanes=4, requant_lanes=4, pe_dsp_blocks=0),
}


def preset_names() -> list[str]:
    """Return the names of the built-in configurations."""
    return list(PRESETS)


def preset(name: str) -> HardwareConfig:
    """Return a built-in configuration by name."""
    from .errors import AccelError
    try:
        return PRESETS[name]
    except KeyError:
        raise AccelError(f"unknown config {name!r}; presets: {', '.join(PRESETS)}") from None
