"""Drive the simulated AcceleratorCore's host byte stream from cocotb, and serve it over a socket.

This module runs *inside* the Verilator simulator, imported by cocotb. It has two parts:

* :class:`HostLinkDriver` plays request bytes into the core's ``i`` stream and collects
  reply bytes from ``o``, one clock cycle per Python step only while bytes can move.
  When the core neither accepts nor offers a byte (a ``RUN`` computing, a memory word
  being committed) it awaits the next edge of ``i.ready`` or ``o.valid`` instead, so the
  design runs unattended at full simulator speed. Optional random idle cycles on ``i`` and
  backpressure on ``o`` exercise the stream handshakes.
* :func:`serve` (the ``@cocotb.test``) connects to the Unix socket named by
  ``$ACCEL_RTL_SOCKET`` and serves the requests of :class:`accel.sim.rtl.RtlTarget` until it
  says goodbye or closes the socket. The simulator, and so the core's memories, live for
  the whole session.

Socket messages (little-endian): the simulator first sends ``HELLO`` (``<4sI``: magic,
process id). Each request is ``<BIIQ`` (kind, request byte count, reply byte count, cycle
budget; 0 = unlimited) followed by the request bytes; kind ``QUIT`` ends the session, and
kind ``EXCHANGE`` is a transaction whose running out of budget does not end it. Each
answer is ``<BQI`` (outcome, cycles spent, reply byte count) followed by the reply bytes.
"""

from __future__ import annotations

import os
import random
import socket
import struct

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer
from cocotb.simtime import get_sim_time

__all__ = ["CLOCK_PERIOD_NS", "HostLinkDriver", "LinkTimeout", "serve",
           "HELLO", "REQUEST", "ANSWER", "KIND_TRANSACT", "KIND_EXCHANGE", "KIND_QUIT", "OUTCOME_OK", "OUTCOME_TIMEOUT"]

CLOCK_PERIOD_NS = 10

HELLO = struct.Struct("<4sI")
HELLO_MAGIC = b"ACRT"
REQUEST = struct.Struct("<BIIQ")
ANSWER = struct.Struct("<BQI")
KIND_TRANSACT = 1
KIND_QUIT = 2
KIND_EXCHANGE = 3  # like TRANSACT, but running out of cycles is a normal outcome: the session goes on
OUTCOME_OK = 0
OUTCOME_TIMEOUT = 1


class LinkTimeout(Exception):
    """Report that the core stopped answering within the cycle budget."""

    def __init__(self, message: str, received: bytes, cycles: int):
        super().__init__(message)
        self.received = received
        self.cycles = cycles


class HostLinkDriver:
    """Play bytes into the core's ``i`` stream and collect its ``o`` replies.

    All stepping happens just after a falling clock edge: the core's ``i.ready``,
    ``o.valid`` and ``o.payload`` depend only on its registers, so their values there are
    the ones the next rising edge samples, and a transfer is known before it happens.

    ``idle`` is the probability of leaving ``i.valid`` low for a cycle between bytes;
    ``backpressure`` the probability of holding ``o.ready`` low for a cycle. Both need
    Python on every cycle of a transaction, so they are for tests.
    """

    def __init__(self, dut, idle: float = 0.0, backpressure: float = 0.0, seed: int = 0):
        self.dut = dut
        self.clk = dut.clk
        self.idle = float(idle)
        self.backpressure = float(backpressure)
        self.rng = random.Random(seed)
        self._falling = FallingEdge(dut.clk)

    @property
    def cycle(self) -> int:
        """Return the clock cycles simulated so far."""
        return int(get_sim_time("ns")) // CLOCK_PERIOD_NS

    async def start(self):
        """Start the clock (in the simulator, no Python per cycle) and reset the core."""
        dut = self.dut
        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns", impl="gpi").start(start_high=False)
        dut.i__valid.value = 0
        dut.i__payload.value = 0
        dut.o__ready.value = 0
        dut.rst.value = 1
        for _ in range(3):
            await self._falling
        dut.rst.value = 0
        await self._falling

    async def transact(self, request: bytes, reply_length: int, max_cycles: int = 0) -> bytes:
        """Send ``request``, return the next ``reply_length`` reply bytes.

        Raises :class:`LinkTimeout` if the core makes no progress for ``max_cycles`` cycles
        (0: wait forever). Returns just after a falling edge with ``i.valid`` low.
        """
        dut = self.dut
        i_valid, i_payload, i_ready = dut.i__valid, dut.i__payload, dut.i__ready
        o_valid, o_payload, o_ready = dut.o__valid, dut.o__payload, dut.o__ready
        falling = self._falling
        idle, backpressure, rng = self.idle, self.backpressure, self.rng
        budget_ns = max_cycles * CLOCK_PERIOD_NS
        wake = [RisingEdge(i_ready), RisingEdge(o_valid)]
        if budget_ns:
            wake.append(Timer(budget_ns, unit="ns"))
        wake = First(*wake) if len(wake) > 1 else wake[0]

        received = bytearray()
        sent = 0
        holding = False          # i.valid is high with a byte not yet accepted
        driving_valid = 0
        driving_ready = 0
        last_progress = get_sim_time("ns")
        while sent < len(request) or len(received) < reply_length:
            moved = False
            # -- request side -------------------------------------------------------
            want_valid = 0
            if sent < len(request) and (holding or not idle or rng.random() >= idle):
                want_valid = 1
                i_payload.value = request[sent]
            if want_valid != driving_valid:
                i_valid.value = want_valid
                driving_valid = want_valid
            ready_now = int(i_ready.value)
            if want_valid and ready_now:
                sent += 1
                holding = False
                moved = True
            else:
                holding = bool(want_valid)
            # -- reply side ---------------------------------------------------------
            valid_now = int(o_valid.value)
            want_ready = int(len(received) < reply_length
                             and (not backpressure or rng.random() >= backpressure))
            if want_ready != driving_ready:
                o_ready.value = want_ready
                driving_ready = want_ready
            if valid_now and want_ready:
                received.append(int(o_payload.value))
                moved = True
            # -- advance ------------------------------------------------------------
            if moved:
                await falling
                last_progress = get_sim_time("ns")
                continue
            stuck = not valid_now and (sent == len(request) or not ready_now)
            if stuck:
                # Nothing can move until the core changes: let it run unattended.
                await wake
                await falling
            else:
                await falling  # a cycle we chose to idle or stall
            if budget_ns and get_sim_time("ns") - last_progress >= budget_ns:
                raise LinkTimeout(
                    f"the core made no progress for {max_cycles} cycles: sent {sent} of {len(request)} "
                    f"request bytes, received {len(received)} of {reply_length} reply bytes",
                    bytes(received), self.cycle)
        if driving_valid:
            i_valid.value = 0
        if driving_ready:
            o_ready.value = 0
        return bytes(received)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


@cocotb.test()
async def serve(dut):
    """Serve host-link transactions from ``$ACCEL_RTL_SOCKET`` until told to quit."""
    path = os.environ["ACCEL_RTL_SOCKET"]
    driver = HostLinkDriver(dut,
                            idle=float(os.environ.get("ACCEL_RTL_IDLE", "0")),
                            backpressure=float(os.environ.get("ACCEL_RTL_BACKPRESSURE", "0")),
                            seed=int(os.environ.get("ACCEL_RTL_SEED", "0")))
    await driver.start()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    try:
        sock.sendall(HELLO.pack(HELLO_MAGIC, os.getpid()))
        while True:
            header = _recv_exact(sock, REQUEST.size)
            if header is None:
                dut._log.info("the host closed the socket; ending the session")
                return
            kind, n_request, n_reply, max_cycles = REQUEST.unpack(header)
            if kind == KIND_QUIT:
                return
            request = _recv_exact(sock, n_request) if n_request else b""
            if request is None:
                return
            started = driver.cycle
            try:
                reply = await driver.transact(request, n_reply, max_cycles)
                outcome = OUTCOME_OK
            except LinkTimeout as exc:
                if kind != KIND_EXCHANGE:
                    dut._log.error(str(exc))
                reply, outcome = exc.received, OUTCOME_TIMEOUT
            sock.sendall(ANSWER.pack(outcome, driver.cycle - started, len(reply)) + reply)
            if outcome != OUTCOME_OK and kind != KIND_EXCHANGE:
                return  # the core is stuck mid-command; the session cannot continue
    finally:
        sock.close()
