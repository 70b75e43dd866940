"""Assemble the accelerator: memories, host interface, controller, systolic array, requantizer and vector unit."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .. import isa
from ..config import HardwareConfig
from .buffers import PairedReadBuffer, buffer_ports
from .controller import TAG_WIDTH, Controller
from .dsp import dsp_blocks, dsp_family
from .hostif import HostInterface, memory_word_bits
from .requant import Requantizer
from .systolic import SystolicArray
from .vector import VectorUnit

__all__ = ["AcceleratorCore"]


class AcceleratorCore(wiring.Component):
    """Run programs on the systolic array, loaded and started over a host byte stream.

    The five memories of ``docs/isa.md`` (``imem``, ``wbuf``, ``abuf``, ``pbuf``, ``accbuf``)
    each have one synchronous read port and one write port: an
    :class:`amaranth.lib.memory.Memory`, or iCE40 SPRAM where the config asks for it and the
    controller never writes the buffer (:func:`accel.hdl.buffers.buffer_ports`). The
    controller owns every port while it is busy and not paused at
    a ``STREAM``; the host interface owns them otherwise (it issues no memory access while
    a ``RUN`` or ``RESUME`` is in progress). While
    a ``VECTOR`` runs, the :class:`VectorUnit` takes the ABUF ports, the PBUF read port and
    the requantizer (the controller has drained, so both never drive them at once). The ACC
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
        # The chip's DSP blocks go to the requantizer's partial products first (few, and slow
        # as LUT multipliers), then to the PEs, at most `config.pe_dsp_blocks` of them; PEs
        # beyond the budget multiply in LUTs.
        budget = dsp_blocks(platform)
        rq_blocks = None if budget is None else min(budget, Requantizer.dsp_blocks_for(c, dsp_family(platform)))
        pe_blocks = None if budget is None else budget - rq_blocks
        if c.pe_dsp_blocks is not None:  # also on a device whose block count is unknown
            pe_blocks = c.pe_dsp_blocks if pe_blocks is None else min(pe_blocks, c.pe_dsp_blocks)
        m.submodules.array = array = SystolicArray(c, tag_width=TAG_WIDTH, dsp_blocks=pe_blocks)
        m.submodules.requant = rq = Requantizer(c, tag_width=TAG_WIDTH, dsp_blocks=rq_blocks)

        wiring.connect(m, wiring.flipped(self.i), host.i)
        wiring.connect(m, host.o, wiring.flipped(self.o))
        wiring.connect(m, ctrl.load, array.load)
        wiring.connect(m, ctrl.x, array.x)
        wiring.connect(m, array.y, ctrl.y)
        m.submodules.vector = vec = VectorUnit(c)
        m.d.comb += [
            vec.start.eq(ctrl.vec_start),
            vec.insn.eq(ctrl.vec_insn),
            vec.geometry.eq(ctrl.geometry),
            ctrl.vec_busy.eq(vec.busy),
        ]
        # The requantizer is shared: the vector unit runs only after a SYNC, so no MATMUL
        # row is in it while vec.busy.
        for name in ("params", "y_zp", "y_lo", "y_hi", "y_signed"):
            m.d.comb += getattr(rq, name).eq(Mux(vec.busy, getattr(vec, name), getattr(ctrl, name)))
        m.d.comb += [
            rq.i.valid.eq(ctrl.rq_i.valid | vec.rq_i.valid),
            rq.i.payload.eq(Mux(vec.busy, vec.rq_i.payload, ctrl.rq_i.payload)),
            ctrl.rq_o.valid.eq(rq.o.valid & ~vec.busy),
            ctrl.rq_o.payload.eq(rq.o.payload),
            vec.rq_o.valid.eq(rq.o.valid),
            vec.rq_o.payload.eq(rq.o.payload),
            ctrl.start.eq(host.start),
            ctrl.resume.eq(host.resume),
            host.busy.eq(ctrl.busy),
            host.paused.eq(ctrl.paused),
            host.segment.eq(ctrl.segment),
            host.halted.eq(ctrl.halted),
            host.cycles.eq(ctrl.cycles),
            self.busy.eq(ctrl.busy),
        ]
        with m.If(host.start):
            m.d.sync += self.done.eq(0)
        with m.Elif(ctrl.halted):
            m.d.sync += self.done.eq(1)

        # -- memories: one read and one write port each, controller while busy -----------
        # hdl/buffers.py maps them as BufferSpec.kind asks: SPRAM only for the buffers the
        # controller never writes (the host reads or writes one word per cycle while idle).
        bits = memory_word_bits(c)
        bus = host.bus
        # The vector unit owns the ABUF ports and the PBUF read port while it is busy.
        abuf_r = _merged_port(m, "abuf_r", vec.busy, vec.abuf_r, ctrl.abuf_r)
        abuf_w = _merged_port(m, "abuf_w", vec.busy, vec.abuf_w, ctrl.abuf_w, write=True)
        pbuf_r = _merged_port(m, "pbuf_r", vec.busy, vec.pbuf, ctrl.pbuf)
        controller_ports = {
            isa.Memory.IMEM: (ctrl.imem, None),
            isa.Memory.WBUF: (ctrl.wbuf, None),
            isa.Memory.ABUF: (abuf_r, abuf_w),
            isa.Memory.PBUF: (pbuf_r, None),
            isa.Memory.ACCBUF: (ctrl.acc_r, ctrl.acc_w),
        }
        host_rdata = Signal(bus.signature.word_bits)
        m.d.comb += bus.rdata.eq(host_rdata)
        for which, (c_read, c_write) in controller_ports.items():
            spec = getattr(c, which.config_field)
            is_acc = which == isa.Memory.ACCBUF
            if which == isa.Memory.ABUF:  # two banks: a read also returns the next word (packed taps)
                m.submodules.abuf = abuf = PairedReadBuffer(spec.depth, unsigned(bits[which]))
                read, write, extra = abuf.read, abuf.write, []
                m.d.comb += ctrl.abuf_r_next.eq(abuf.read_next)
            else:
                read, write, extra = buffer_ports(m, which.config_field, spec, unsigned(bits[which]), platform,
                                                  single_port=c_write is None, transparent=is_acc,
                                                  extra_reads=int(is_acc and c.deferred_requant))
            if extra:  # the drainer's ACC read port (deferred requantization): the controller's alone
                drain, = extra
                m.d.comb += [drain.addr.eq(ctrl.acc_d.addr), drain.en.eq(ctrl.acc_d.en & ctrl.busy),
                             ctrl.acc_d.data.eq(drain.data)]
            selected = bus.mem == which
            with m.If(ctrl.busy & ~ctrl.paused):  # a run paused at STREAM lends them to the host
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


class _SharedPort:
    """Hold the memory side of one port shared by two units (plain signals, like a port's members)."""

    def __init__(self, name, addr_width, width):
        self.addr = Signal(addr_width, name=f"{name}_addr")
        self.data = Signal(width, name=f"{name}_data")
        self.en = Signal(name=f"{name}_en")


def _merged_port(m, name, select, first, second, *, write=False):
    """Return a port with ``first``'s address (and write data) when ``select``, else ``second``'s.

    Enables are ORed (the unit not selected keeps its port idle); read data goes to both.
    """
    port = _SharedPort(name, len(first.addr), len(first.data))
    m.d.comb += [port.addr.eq(Mux(select, first.addr, second.addr)), port.en.eq(first.en | second.en)]
    if write:
        m.d.comb += port.data.eq(Mux(select, first.data, second.data))
    else:
        m.d.comb += [first.data.eq(port.data), second.data.eq(port.data)]
    return port
