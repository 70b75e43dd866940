"""Assemble the accelerator: memories, host interface, controller, systolic array and requantizer."""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import isa
from ..config import HardwareConfig
from .controller import TAG_WIDTH, Controller
from .hostif import HostInterface, memory_word_bits
from .requant import Requantizer
from .systolic import SystolicArray

__all__ = ["AcceleratorCore"]


class AcceleratorCore(wiring.Component):
    """Run programs on the systolic array, loaded and started over a host byte stream.

    The five memories of ``docs/isa.md`` are :class:`amaranth.lib.memory.Memory` instances
    (``imem``, ``wbuf``, ``abuf``, ``pbuf``, ``accbuf``), each with one synchronous read port
    and one write port. The controller owns every port while it is busy; the host interface
    owns them otherwise (it issues no memory access while a ``RUN`` is in progress). The ACC
    read port is transparent to the ACC write port for the controller's read-add-write.

    Members
    -------
    i : ``In(stream.Signature(8))``
        Host-link request bytes (``docs/isa.md``).
    o : ``Out(stream.Signature(8))``
        Host-link reply bytes.
    busy : ``Out(1)``
        A program is running.
    done : ``Out(1)``
        A run has completed since the last ``RUN`` started (and since reset).
    """

    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    busy: Out(1)
    done: Out(1)

    def __init__(self, config: HardwareConfig):
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig, not {config!r}")
        self._config = config
        super().__init__()

    @property
    def config(self) -> HardwareConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config

        m.submodules.hostif = host = HostInterface(c)
        m.submodules.controller = ctrl = Controller(c)
        m.submodules.array = array = SystolicArray(c, tag_width=TAG_WIDTH)
        m.submodules.requant = rq = Requantizer(c, tag_width=TAG_WIDTH)

        wiring.connect(m, wiring.flipped(self.i), host.i)
        wiring.connect(m, host.o, wiring.flipped(self.o))
        wiring.connect(m, ctrl.load, array.load)
        wiring.connect(m, ctrl.x, array.x)
        wiring.connect(m, array.y, ctrl.y)
        wiring.connect(m, ctrl.rq_i, rq.i)
        wiring.connect(m, rq.o, ctrl.rq_o)
        m.d.comb += [
            rq.params.eq(ctrl.params),
            rq.y_zp.eq(ctrl.y_zp),
            rq.y_lo.eq(ctrl.y_lo),
            rq.y_hi.eq(ctrl.y_hi),
            rq.y_signed.eq(ctrl.y_signed),
            ctrl.start.eq(host.start),
            host.busy.eq(ctrl.busy),
            host.halted.eq(ctrl.halted),
            host.cycles.eq(ctrl.cycles),
            self.busy.eq(ctrl.busy),
        ]
        with m.If(host.start):
            m.d.sync += self.done.eq(0)
        with m.Elif(ctrl.halted):
            m.d.sync += self.done.eq(1)

        # -- memories: one read and one write port each, controller while busy -----------
        # TODO: BufferSpec.kind is not used yet; every memory is a generic simple dual-port
        # memory. iCE40 SPRAM (the icebreaker preset's ABUF and WBUF) is single-ported, and
        # the controller reads input rows and writes results to ABUF in the same cycles.
        bits = memory_word_bits(c)
        bus = host.bus
        controller_ports = {
            isa.Memory.IMEM: (ctrl.imem, None),
            isa.Memory.WBUF: (ctrl.wbuf, None),
            isa.Memory.ABUF: (ctrl.abuf_r, ctrl.abuf_w),
            isa.Memory.PBUF: (ctrl.pbuf, None),
            isa.Memory.ACCBUF: (ctrl.acc_r, ctrl.acc_w),
        }
        host_rdata = Signal(bus.signature.word_bits)
        m.d.comb += bus.rdata.eq(host_rdata)
        for which, (c_read, c_write) in controller_ports.items():
            spec = getattr(c, which.config_field)
            mem = memory.Memory(shape=unsigned(bits[which]), depth=spec.depth, init=[])
            m.submodules[which.config_field] = mem
            write = mem.write_port()
            read = mem.read_port(transparent_for=(write,) if which == isa.Memory.ACCBUF else ())
            selected = bus.mem == which
            with m.If(ctrl.busy):
                m.d.comb += [read.addr.eq(c_read.addr), read.en.eq(c_read.en)]
                if c_write is not None:
                    m.d.comb += [write.addr.eq(c_write.addr), write.data.eq(c_write.data),
                                 write.en.eq(c_write.en)]
                else:
                    m.d.comb += write.en.eq(0)
            with m.Else():
                m.d.comb += [
                    read.addr.eq(bus.addr), read.en.eq(bus.re & selected),
                    write.addr.eq(bus.addr), write.data.eq(bus.wdata), write.en.eq(bus.we & selected),
                ]
            m.d.comb += c_read.data.eq(read.data)
            with m.If(selected):
                m.d.comb += host_rdata.eq(read.data)
        return m
