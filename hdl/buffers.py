"""Map the on-chip buffers to the chip's memories, as ``BufferSpec.kind`` asks.

:func:`buffer_ports` builds one buffer of the core and returns its read and write port:

* ``kind = "spram"`` on an iCE40 UltraPlus (:func:`accel.hdl.dsp.dsp_family` is
  ``"ice40"``) and for a buffer that is never read and written in the same cycle: a
  :class:`SpramBuffer` of ``SB_SPRAM256KA`` blocks (16K x 16 bits each, single-ported);
* everything else: a generic :class:`amaranth.lib.memory.Memory` with one synchronous read
  port and one write port, which Yosys maps to block RAM (EBR) or LUT RAM. ``"ebr"``,
  ``"lutram"`` and ``"auto"`` leave the choice to Yosys's inference; simulation (no
  platform) always uses this generic memory.

TODO: the ``icebreaker`` preset's ABUF asks for SPRAM, but the controller reads input rows
and writes requantized rows in the same cycles, so it needs an arbitration stage (a write
FIFO that stalls reads, or two banks) with its stalls in the cycle model; until then it
stays a generic memory, which does not fit the UP5K's EBR.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, Shape, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import Out

from ..config import BufferSpec
from .dsp import dsp_family

__all__ = ["SPRAM_DEPTH", "SPRAM_WIDTH", "SpramBuffer", "PairedReadBuffer", "buffer_ports"]

SPRAM_DEPTH = 16384  #: words of one SB_SPRAM256KA
SPRAM_WIDTH = 16     #: bits of one SB_SPRAM256KA word


class SpramBuffer(wiring.Component):
    """Hold ``depth`` words of ``shape`` in iCE40 ``SB_SPRAM256KA`` blocks behind one read and one write port.

    The blocks are single-ported: a cycle may read (``read.en``) or write (``write.en``), not
    both; a write in a reading cycle wins and the read returns an undefined word. Words wider
    than 16 bits take blocks side by side; more than 16K words take banks of blocks selected
    by the upper address bits. Reads are synchronous like a memory read port: the data
    appears the cycle after ``read.en`` and holds until the next read, except that a write
    leaves it undefined.

    Members
    -------
    read : ``Out(ReadPort.Signature(addr_width=depth_bits, shape=shape))``
        The read port, memory side (like a :class:`~amaranth.lib.memory.ReadPort`).
    write : ``Out(WritePort.Signature(addr_width=depth_bits, shape=shape))``
        The write port, memory side.
    """

    def __init__(self, depth: int, shape):
        spec = BufferSpec(depth)  # validates the depth
        shape = Shape.cast(shape)
        self._depth = spec.depth
        self._shape = shape
        super().__init__({
            "read": Out(ReadPort.Signature(addr_width=spec.addr_bits, shape=shape)),
            "write": Out(WritePort.Signature(addr_width=spec.addr_bits, shape=shape)),
        })

    @property
    def blocks(self) -> int:
        """Return how many SB_SPRAM256KA blocks the buffer takes."""
        return self._banks * self._slices

    @property
    def _banks(self) -> int:
        return max(1, self._depth // SPRAM_DEPTH)

    @property
    def _slices(self) -> int:
        return -(-self._shape.width // SPRAM_WIDTH)

    def elaborate(self, platform):
        m = Module()
        low_bits = min(14, (self._depth - 1).bit_length())
        wdata = Signal(self._slices * SPRAM_WIDTH)
        writing = Signal()
        address = Signal(len(self.read.addr))
        m.d.comb += [
            wdata.eq(self.write.data), writing.eq(self.write.en.any()),
            address.eq(Mux(writing, self.write.addr, self.read.addr)),
        ]
        # The bank a read came from selects the data the cycle after.
        read_bank = Signal(range(self._banks))
        if self._banks > 1:
            with m.If(self.read.en & ~writing):
                m.d.sync += read_bank.eq(address[14:])
        chosen = Signal(self._slices * SPRAM_WIDTH)
        for bank in range(self._banks):
            selected = (address[14:] == bank) if self._banks > 1 else Const(1)
            out = Signal(self._slices * SPRAM_WIDTH, name=f"bank{bank}_data")
            for s in range(self._slices):
                m.submodules[f"spram_{bank}_{s}"] = _spram(
                    address=address[:low_bits], data_in=wdata[s * SPRAM_WIDTH:(s + 1) * SPRAM_WIDTH],
                    write=writing & selected, select=(writing | self.read.en) & selected,
                    data_out=out[s * SPRAM_WIDTH:(s + 1) * SPRAM_WIDTH])
            with m.If(read_bank == bank):
                m.d.comb += chosen.eq(out)
        m.d.comb += self.read.data.eq(chosen[:self._shape.width])
        return m


class PairedReadBuffer(wiring.Component):
    """Hold ``depth`` words in two banks by address parity; a read returns the word and the next one.

    Bank 0 holds the even words, bank 1 the odd ones, each at ``address >> 1``. A read of
    ``addr`` reads bank ``addr & 1`` at ``addr >> 1`` and the other bank at the next word's
    index, so ``read.data`` is word ``addr`` and ``read_next`` word ``addr + 1`` (modulo
    ``depth``), both the cycle after ``read.en`` and held until the next read. Writes go
    to one bank. The banks are generic memories of half the depth (the same block RAM as
    one memory of the full depth); the controller's packed-tap reads use the next word
    (``docs/isa.md``, SETCONV ``pack``).

    Members
    -------
    read : ``Out(ReadPort.Signature(addr_width=depth_bits, shape=shape))``
        The read port, memory side.
    read_next : ``Out(shape)``
        The word after the one ``read`` returns.
    write : ``Out(WritePort.Signature(addr_width=depth_bits, shape=shape))``
        The write port, memory side.
    """

    def __init__(self, depth: int, shape):
        spec = BufferSpec(depth)
        if depth < 2:
            raise ValueError(f"a paired-read buffer needs at least 2 words, not {depth}")
        shape = Shape.cast(shape)
        self._depth = spec.depth
        self._shape = shape
        super().__init__({
            "read": Out(ReadPort.Signature(addr_width=spec.addr_bits, shape=shape)),
            "read_next": Out(shape),
            "write": Out(WritePort.Signature(addr_width=spec.addr_bits, shape=shape)),
        })

    def elaborate(self, platform):
        m = Module()
        half = self._depth // 2
        addr = self.read.addr
        odd = Signal()  # the parity of the last read's address
        with m.If(self.read.en):
            m.d.sync += odd.eq(addr[0])
        data = []
        for bank in (0, 1):
            mem = memory.Memory(shape=self._shape, depth=half, init=[])
            m.submodules[f"bank{bank}"] = mem
            write, read = mem.write_port(), mem.read_port()
            # the even bank holds word addr + 1 when addr is odd: index (addr + 1) >> 1
            index = (addr + 1) >> 1 if bank == 0 else addr >> 1
            m.d.comb += [
                read.addr.eq(index), read.en.eq(self.read.en),
                write.addr.eq(self.write.addr >> 1), write.data.eq(self.write.data),
                write.en.eq(self.write.en & (self.write.addr[0] == bank)),
            ]
            data.append(read.data)
        m.d.comb += [
            self.read.data.eq(Mux(odd, data[1], data[0])),
            self.read_next.eq(Mux(odd, data[0], data[1])),
        ]
        return m


def _spram(*, address, data_in, write, select, data_out):
    """Return one SB_SPRAM256KA, always powered and awake, all four nibbles written together."""
    return Instance(
        "SB_SPRAM256KA",
        i_ADDRESS=address, i_DATAIN=data_in, i_MASKWREN=0b1111, i_WREN=write,
        i_CHIPSELECT=select, i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
        o_DATAOUT=data_out)


def buffer_ports(m, name: str, spec: BufferSpec, shape, platform, *, single_port: bool,
                 transparent: bool = False, extra_reads: int = 0):
    """Add buffer ``name`` to module ``m``; return its ``(read, write, extra)`` ports.

    ``single_port`` says the buffer is never read and written in the same cycle (so SPRAM
    may hold it); ``transparent`` makes a generic memory's first read port transparent to
    its write port (SPRAM is never used then). ``extra`` is a list of ``extra_reads`` more
    read ports, not transparent (Yosys maps each read port to its own copy of the blocks).
    """
    if spec.kind == "spram" and single_port and not transparent and not extra_reads and dsp_family(platform) == "ice40":
        m.submodules[name] = buf = SpramBuffer(spec.depth, shape)
        return buf.read, buf.write, []
    mem = memory.Memory(shape=shape, depth=spec.depth, init=[])
    m.submodules[name] = mem
    write = mem.write_port()
    read = mem.read_port(transparent_for=(write,) if transparent else ())
    return read, write, [mem.read_port() for _ in range(extra_reads)]
