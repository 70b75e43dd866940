"""Serve the raw host-link byte protocol of ``docs/isa.md``: memory access, RUN, STATUS and IDENT.

:class:`HostInterface` parses commands from an 8-bit byte stream and answers on another.
It reaches the memories through one generic word port (:class:`HostMemorySignature`) that
:class:`accel.hdl.core.AcceleratorCore` decodes to the five memories; the core gives that
port to the host only while the controller is idle, which is always the case while the
host interface is not waiting for a ``RUN`` to finish.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import HW_REVISION, HardwareConfig
from ..isa import ACK, IDENT_MAGIC, INSN_BITS, NACK, PARAM_BITS, PAUSED, Command, Memory

__all__ = ["HostMemorySignature", "HostInterface", "memory_word_bits"]

#: Longest fixed reply: IDENT is "ACCL", config id u64, revision u8, rows u8, cols u8.
_REPLY_BYTES = 15
#: WRITE and READ headers: mem u8, addr u32, count u32.
_HEADER_BYTES = 9


def memory_word_bits(config: HardwareConfig) -> dict[Memory, int]:
    """Return the word width in bits of each host-visible memory."""
    return {
        Memory.IMEM: INSN_BITS,
        Memory.WBUF: config.wbuf_word_bits,
        Memory.ABUF: config.abuf_word_bits,
        Memory.PBUF: PARAM_BITS,
        Memory.ACCBUF: config.acc_word_bits,
    }


def _addr_bits(config: HardwareConfig) -> int:
    return max(getattr(config, mem.config_field).addr_bits for mem in Memory)


class HostMemorySignature(wiring.Signature):
    """Describe the host interface's word port into the memories (host side is the initiator).

    Members
    -------
    mem : ``Out(Memory)``
        The memory addressed; held for a whole command.
    addr : ``Out(addr_bits)``
        Word address, wide enough for the deepest memory; the core drops the high bits.
    re : ``Out(1)``
        Read enable. ``rdata`` holds the word from the cycle after, until the next ``re``.
    rdata : ``In(word_bits)``
        Read data of ``mem``, zero-extended to the widest word.
    we : ``Out(1)``
        Write ``wdata`` (truncated to the memory's width) at ``addr`` on this clock edge.
    wdata : ``Out(word_bits)``
    """

    def __init__(self, config: HardwareConfig):
        self._word_bits = max(memory_word_bits(config).values())
        self._addr_bits = _addr_bits(config)
        super().__init__({
            "mem": Out(Memory),
            "addr": Out(self._addr_bits),
            "re": Out(1),
            "rdata": In(self._word_bits),
            "we": Out(1),
            "wdata": Out(self._word_bits),
        })

    @property
    def word_bits(self) -> int:
        return self._word_bits

    @property
    def addr_bits(self) -> int:
        return self._addr_bits



class HostInterface(wiring.Component):
    """Execute host-link commands from a byte stream and send their replies.

    ``WRITE``/``READ`` move ``count`` words of ``config.word_bytes(mem)`` bytes each,
    least significant byte first; bits past the word width are ignored on write and read
    as zero. Addresses wrap modulo the memory's depth. A ``WRITE``/``READ`` naming no
    memory gets ``0x5A`` right after its header (no data bytes are consumed or sent).
    ``RUN`` pulses ``start`` and answers ``0xA5 0 0`` on the controller's ``halted``
    pulse, or ``0xA6 segment`` (u16) once it is ``paused`` at a ``STREAM``; ``RESUME``
    pulses ``resume`` and answers the same way (``0x5A 0 0`` when nothing is paused).
    Unknown command bytes get ``0x5A``. Throughput is one byte per cycle in both
    directions, also across word boundaries.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Request bytes from the host. ``ready`` depends only on the state.
    o : ``Out(stream.Signature(8))``
        Reply bytes to the host.
    bus : ``Out(HostMemorySignature(config))``
        Word access to the memories.
    start : ``Out(1)``
        One-cycle pulse that starts the controller at PC 0.
    resume : ``Out(1)``
        One-cycle pulse that continues a run paused at a ``STREAM``.
    busy : ``In(1)``
        The controller is running.
    paused : ``In(1)``
        The controller waits at a ``STREAM`` (``busy`` stays high).
    segment : ``In(16)``
        The stream segment the paused ``STREAM`` asks for.
    halted : ``In(1)``
        One-cycle pulse from the controller when a run completes (HALT after drain).
    cycles : ``In(64)``
        The controller's cycle count of the last (or current) run.
    """

    def __init__(self, config: HardwareConfig):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig, not {config!r}")
        self._config = config
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "bus": Out(HostMemorySignature(config)),
            "start": Out(1),
            "resume": Out(1),
            "busy": In(1),
            "paused": In(1),
            "segment": In(16),
            "halted": In(1),
            "cycles": In(64),
        })

    @property
    def config(self) -> HardwareConfig:
        return self._config

    def ident_reply(self) -> int:
        """Return the IDENT reply as an integer, first byte least significant."""
        c = self._config
        payload = IDENT_MAGIC + c.config_id().to_bytes(8, "little") + bytes([HW_REVISION, c.rows, c.cols])
        assert len(payload) == _REPLY_BYTES
        return int.from_bytes(payload, "little")

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bus = self.bus
        word_bits = self.bus.signature.word_bits
        max_bytes = (word_bits + 7) // 8
        nbytes_of = {mem: (bits + 7) // 8 for mem, bits in memory_word_bits(c).items()}

        header = Signal(_HEADER_BYTES * 8)
        count = Signal(range(_HEADER_BYTES + 1))       # header bytes seen
        command = Signal(Command, init=Command.WRITE)
        mem = Signal(Memory)
        addr = Signal(32)
        words = Signal(32)                             # words still to receive / fetch
        word = Signal(max_bytes * 8)                   # WRITE: word being assembled
        byte_index = Signal(range(max_bytes + 1))
        write_pending = Signal()
        out_index = Signal(range(max_bytes))           # READ: byte of bus.rdata being sent
        reply = Signal(_REPLY_BYTES * 8)
        reply_left = Signal(range(_REPLY_BYTES + 1))
        ran = Signal()                                 # a run has completed since reset

        nbytes = Signal(range(max_bytes + 1))
        with m.Switch(mem):
            for which, n in nbytes_of.items():
                with m.Case(which):
                    m.d.comb += nbytes.eq(n)

        header_mem = header[0:8]
        header_addr = header[8:40]
        header_count = header[40:72]

        m.d.comb += [
            bus.mem.eq(mem),
            bus.addr.eq(addr),
            bus.wdata.eq(word),
            bus.we.eq(write_pending),
        ]
        with m.If(write_pending):
            m.d.sync += [addr.eq(addr + 1), write_pending.eq(0)]

        def send(value, length):
            m.d.sync += [reply.eq(value), reply_left.eq(length)]
            m.next = "REPLY"

        def fetch():
            m.d.comb += bus.re.eq(1)
            m.d.sync += [addr.eq(addr + 1), words.eq(words - 1)]

        with m.FSM(init="CMD"):
            with m.State("CMD"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += command.as_value().eq(self.i.payload)
                    with m.Switch(self.i.payload):
                        with m.Case(Command.WRITE, Command.READ):
                            m.d.sync += count.eq(0)
                            m.next = "HEADER"
                        with m.Case(Command.RUN):
                            m.next = "RUN_START"
                        with m.Case(Command.RESUME):
                            with m.If(self.paused):
                                m.next = "RESUME_START"
                            with m.Else():
                                send(NACK, 3)
                        with m.Case(Command.STATUS):
                            send(Cat(self.busy, ran, self.paused, Const(0, 5), self.cycles), 9)
                        with m.Case(Command.IDENT):
                            send(self.ident_reply(), _REPLY_BYTES)
                        with m.Default():
                            send(NACK, 1)

            with m.State("HEADER"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [header.eq(Cat(header[8:], self.i.payload)), count.eq(count + 1)]
                    with m.If(count == _HEADER_BYTES - 1):
                        m.next = "DISPATCH"

            with m.State("DISPATCH"):
                m.d.sync += [mem.as_value().eq(header_mem), addr.eq(header_addr), words.eq(header_count),
                             byte_index.eq(0)]
                with m.If(header_mem > max(x.value for x in Memory)):
                    send(NACK, 1)
                with m.Elif(command == Command.WRITE):
                    with m.If(header_count == 0):
                        send(ACK, 1)
                    with m.Else():
                        m.next = "WRITE_DATA"
                with m.Else():
                    with m.If(header_count == 0):
                        m.next = "CMD"
                    with m.Else():
                        m.next = "READ_FETCH"

            with m.State("WRITE_DATA"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [word.word_select(byte_index, 8).eq(self.i.payload),
                                 byte_index.eq(byte_index + 1)]
                    with m.If(byte_index == nbytes - 1):
                        m.d.sync += [write_pending.eq(1), byte_index.eq(0), words.eq(words - 1)]
                        with m.If(words == 1):
                            m.next = "WRITE_FLUSH"

            with m.State("WRITE_FLUSH"):
                # The last word is written on this clock edge; acknowledge afterwards.
                send(ACK, 1)

            # The bytes go out straight from the read data, which the memory holds until the
            # next fetch: one fetch cycle per word, no copy of the (up to 256-bit) word.
            with m.State("READ_FETCH"):
                fetch()
                m.d.sync += out_index.eq(0)
                m.next = "READ_SEND"

            with m.State("READ_SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(bus.rdata.word_select(out_index, 8))]
                with m.If(self.o.ready):
                    m.d.sync += out_index.eq(out_index + 1)
                    with m.If(out_index == nbytes - 1):
                        with m.If(words != 0):
                            m.next = "READ_FETCH"
                        with m.Else():
                            m.next = "CMD"

            with m.State("RUN_START"):
                m.d.comb += self.start.eq(1)
                m.d.sync += ran.eq(0)
                m.next = "RUN_WAIT"

            with m.State("RESUME_START"):
                m.d.comb += self.resume.eq(1)
                m.next = "RUN_WAIT"

            with m.State("RUN_WAIT"):
                with m.If(self.halted):
                    m.d.sync += ran.eq(1)
                    send(ACK, 3)
                with m.Elif(self.paused):
                    send(Cat(Const(PAUSED, 8), self.segment), 3)

            with m.State("REPLY"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(reply[:8])]
                with m.If(self.o.ready):
                    m.d.sync += [reply.eq(reply >> 8), reply_left.eq(reply_left - 1)]
                    with m.If(reply_left == 1):
                        m.next = "CMD"
        return m
