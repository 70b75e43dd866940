"""Drive an accelerator over the framed host link of ``docs/protocol.md``: real boards and simulated ones.

Layers, bottom up:

* a :class:`Transport` moves bytes: :class:`SerialTransport` (pyserial) for a board,
  ``accel.sim.board_sim.SimTransport`` for a simulated one, and :class:`FaultInjector`,
  which wraps either and damages bytes on purpose (tests);
* :class:`LinkClient` frames requests (length, sequence number, CRC-16), waits for the
  matching reply, and retransmits on a timeout, a damaged reply or a NACK, up to
  ``retries`` times, then raises :class:`accel.errors.LinkError`;
* :class:`FramedTarget` is an :class:`accel.runtime.Target`: it turns host-link operations
  into frames (splitting long writes and reads to the 512-byte buffers) and their replies
  back into results with :func:`accel.runtime.parse_reply`;
* :class:`LinkDevice` is the :class:`accel.Device` (``serial:PORT``, ``board-sim``): load
  once, run many times, with the config-hash refusal of :class:`accel.runtime.HardwareDevice`.

>>> dev = accel.open_device("serial:/dev/ttyUSB1", baud=3_000_000)
>>> dev.load("digits.accel").run(x)
"""

from __future__ import annotations

import random
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from .config import HardwareConfig, PRESETS, preset
from .errors import DeviceError, LinkError
from .hdl.link import (CRC_BYTES, MAX_PAYLOAD, MAX_REPLY, REPLY_HEADER, SOF, LinkCommand, LinkStatus, crc16)
from .isa import Memory
from .runtime import HardwareDevice, Ident, Read, Run, Target, Write, parse_reply, reply_length, request_bytes

__all__ = ["encode_request", "encode_reply", "Transport", "SerialTransport", "FaultInjector", "LinkClient",
           "FramedTarget", "LinkDevice", "SerialDevice", "open_serial"]

_REQUEST = struct.Struct("<BHBBH")   # SOF, length, sequence, command, reply length
_REPLY = struct.Struct("<BHBB")      # SOF, length, sequence, status


def encode_request(seq: int, command: int, payload: bytes = b"", reply_len: int = 0) -> bytes:
    """Return a request frame: header, payload and CRC-16 (over everything after SOF, sent MSB first)."""
    if len(payload) > MAX_PAYLOAD or reply_len > MAX_REPLY:
        raise ValueError(f"payload {len(payload)} / reply {reply_len} bytes exceed the link's "
                         f"{MAX_PAYLOAD}/{MAX_REPLY}-byte buffers")
    body = _REQUEST.pack(SOF, len(payload), seq & 0xFF, int(command), reply_len)[1:] + bytes(payload)
    return bytes([SOF]) + body + crc16(body).to_bytes(CRC_BYTES, "big")


def encode_reply(seq: int, status: int, data: bytes = b"") -> bytes:
    """Return a reply frame as the device sends it."""
    body = _REPLY.pack(SOF, len(data), seq & 0xFF, int(status))[1:] + bytes(data)
    return bytes([SOF]) + body + crc16(body).to_bytes(CRC_BYTES, "big")


# -- transports -------------------------------------------------------------------------------

class Transport:
    """Move bytes to a device and back.

    ``read(n, timeout)`` returns up to ``n`` bytes, fewer only when ``timeout`` seconds pass
    without a byte arriving. ``elapsed()`` is the transport's clock in seconds (simulated
    time for a simulated device).
    """

    name = "transport"

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, n: int, timeout: float) -> bytes:
        raise NotImplementedError

    def drain(self, quiet: float) -> bytes:
        """Read and return whatever arrives until the line has been quiet for ``quiet`` seconds."""
        return self.read(1 << 30, quiet)

    def elapsed(self) -> float:
        return time.monotonic()

    def close(self) -> None:
        pass


class SerialTransport(Transport):
    """Move bytes over a serial port (pyserial), 8N1 at ``baud``."""

    def __init__(self, port: str, baud: int = 3_000_000):
        try:
            import serial
        except ImportError:
            raise DeviceError("serial devices need pyserial: pip install pyserial") from None
        if not isinstance(baud, int) or baud <= 0:
            raise DeviceError(f"baud must be a positive integer, not {baud!r}")
        try:
            self.port = serial.Serial(port, baudrate=baud, timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceError(f"serial:{port}: cannot open the port at {baud} baud ({exc})") from None
        self.name = f"serial:{port}"
        self.baud = baud

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, n: int, timeout: float) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < n:
            self.port.timeout = max(0.0, deadline - time.monotonic())
            chunk = self.port.read(min(n - len(out), max(1, self.port.in_waiting)))
            if not chunk:
                break
            out += chunk
            deadline = time.monotonic() + timeout
        return bytes(out)

    def close(self) -> None:
        self.port.close()


class FaultInjector(Transport):
    """Wrap a transport and damage the bytes it carries, seeded: for testing recovery.

    Each frame written, and each chunk read, is damaged with probability ``rate`` by one
    fault of a kind drawn from ``kinds``: ``flip`` (one bit), ``drop`` (one byte),
    ``duplicate`` (one byte), ``reorder`` (two adjacent, different bytes swapped),
    ``truncate`` (the tail cut off). ``log`` lists ``(direction, kind)`` per fault and
    ``pending`` counts the faults of the current attempt; :class:`LinkClient` files them
    under ``detected`` (the attempt failed and was retried) or ``undetected``.
    """

    KINDS = ("flip", "drop", "duplicate", "reorder", "truncate")

    def __init__(self, inner: Transport, seed: int, rate: float = 0.2, kinds=KINDS,
                 directions=("out", "in")):
        unknown = set(kinds) - set(self.KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; supported: {', '.join(self.KINDS)}")
        self.inner = inner
        self.name = f"faulty {inner.name}"
        self.rng = random.Random(seed)
        self.rate = rate
        self.kinds = tuple(kinds)
        self.directions = tuple(directions)
        self.enabled = True
        self.log: list[tuple[str, str]] = []
        self.pending = 0           # faults injected in the current attempt
        self._pushback = bytearray()

    def _damage(self, data: bytes, direction: str) -> bytes:
        if (not self.enabled or direction not in self.directions or not data
                or self.rng.random() >= self.rate):
            return data
        data = bytearray(data)
        rng, kind = self.rng, self.rng.choice(self.kinds)
        if len(data) == 1 and kind in ("duplicate", "reorder", "truncate"):
            kind = "drop" if kind == "truncate" else "flip"
        if kind == "reorder":
            pairs = [k for k in range(len(data) - 1) if data[k] != data[k + 1]]
            if not pairs:
                return bytes(data)
            k = rng.choice(pairs)
            data[k], data[k + 1] = data[k + 1], data[k]
        elif kind == "flip":
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "drop":
            del data[rng.randrange(len(data))]
        elif kind == "duplicate":
            k = rng.randrange(len(data) - 1)   # not the last byte: a copy after a whole frame is no fault
            data.insert(k, data[k])
        else:
            del data[rng.randrange(1, len(data)):]
        self.log.append((direction, kind))
        self.pending += 1
        return bytes(data)

    def write(self, data: bytes) -> None:
        self.inner.write(self._damage(data, "out"))

    def read(self, n: int, timeout: float) -> bytes:
        data = bytes(self._pushback[:n])
        del self._pushback[:n]
        if len(data) < n:
            data += self.inner.read(n - len(data), timeout)
        damaged = self._damage(data, "in")
        if len(damaged) > n:   # a duplicated byte: hand the surplus out next time
            self._pushback[:0] = damaged[n:]
            damaged = damaged[:n]
        return damaged

    def drain(self, quiet: float) -> bytes:
        self._pushback.clear()
        return self.inner.drain(quiet)

    def elapsed(self) -> float:
        return self.inner.elapsed()

    def close(self) -> None:
        self.inner.close()

    def counts(self) -> Counter:
        """Return the number of faults injected by ``(direction, kind)``."""
        return Counter(self.log)


# -- protocol engine ------------------------------------------------------------------------

class _Retry(Exception):
    """Report one failed attempt (the frame is sent again)."""


@dataclass
class LinkStats:
    """Count the link's traffic and trouble since the client was opened."""

    frames: int = 0
    attempts: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    failures: Counter = field(default_factory=Counter)


class LinkClient:
    """Send request frames and return the data of their ACKs, retransmitting on any link fault.

    Parameters
    ----------
    transport : Transport
    timeout : float
        Seconds to wait for a reply byte (and between the bytes of a reply).
    run_timeout : float
        Seconds to wait for the first byte of the reply to ``RUN``/``RESUME`` (the program computes).
    retries : int
        Retransmissions of one frame before :class:`LinkError`.
    quiet : float
        Seconds of silence awaited before a retransmission, so the device has dropped any
        partial frame (at least its frame timeout); default ``timeout``.
    max_payload : int
        Request payload limit (at most the device's 512); smaller frames for tests.
    """

    def __init__(self, transport: Transport, *, timeout: float = 0.1, run_timeout: float = 10.0,
                 retries: int = 8, quiet: float | None = None, max_payload: int = MAX_PAYLOAD):
        if not 16 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be from 16 to {MAX_PAYLOAD} bytes, not {max_payload!r}")
        self.transport = transport
        self.timeout = timeout
        self.run_timeout = run_timeout
        self.retries = retries
        self.quiet = timeout if quiet is None else quiet
        self.max_payload = max_payload
        self.seq = random.randrange(256)
        self.stats = LinkStats()
        #: With a :class:`FaultInjector`: injected faults whose attempt failed (``detected``) or passed
        #: (``undetected``), and failed attempts without one (``unprovoked``).
        self.fault_outcomes: Counter = Counter()

    def request(self, command: LinkCommand, payload: bytes = b"", reply_len: int = 0) -> bytes:
        """Send one command and return its reply data (exactly ``reply_len`` bytes)."""
        frame = encode_request(self.seq, command, payload, reply_len)
        first_timeout = self.run_timeout if command in (LinkCommand.RUN, LinkCommand.RESUME) else self.timeout
        self.stats.frames += 1
        problems = []
        injector = self.transport if isinstance(self.transport, FaultInjector) else None
        for attempt in range(self.retries + 1):
            self.stats.attempts += 1
            if injector is not None:
                injector.pending = 0
            self.transport.write(frame)
            self.stats.bytes_out += len(frame)
            try:
                status, data = self._await_reply(first_timeout)
                if status in (LinkStatus.BAD_CRC, LinkStatus.TRUNCATED, LinkStatus.TOO_LONG):
                    raise _Retry(f"NACK {LinkStatus(status).name}")
            except _Retry as exc:
                problems.append(str(exc))
                self.stats.failures[str(exc).split(" (")[0]] += 1
                if injector is not None:
                    if injector.pending:
                        self.fault_outcomes["detected"] += injector.pending
                    else:
                        self.fault_outcomes["unprovoked"] += 1
                self.transport.drain(self.quiet)
                continue
            if injector is not None and injector.pending:
                self.fault_outcomes["undetected"] += injector.pending
            self.seq = (self.seq + 1) & 0xFF
            if status != LinkStatus.ACK:
                name = LinkStatus(status).name if status in LinkStatus._value2member_map_ else f"0x{status:02x}"
                raise LinkError(f"{self.transport.name}: the device refused {command.name} with NACK {name}")
            if len(data) != reply_len:
                raise LinkError(f"{self.transport.name}: {command.name} answered {len(data)} bytes, "
                                f"expected {reply_len}")
            return data
        raise LinkError(f"{self.transport.name}: no valid reply to {command.name} after {self.retries + 1} "
                        f"attempts ({'; '.join(problems[-3:])})")

    def _read(self, n: int, timeout: float, what: str) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.transport.read(n - len(data), timeout)
            if not chunk:
                raise _Retry(f"timeout ({what}: {len(data)} of {n} bytes in {timeout:g} s)")
            data += chunk
        self.stats.bytes_in += n
        return bytes(data)

    def _await_reply(self, first_timeout: float) -> tuple[int, bytes]:
        """Return (status, data) of the next reply frame with our sequence number."""
        timeout, skipped, head = first_timeout, 0, bytearray()
        while True:
            if len(head) < REPLY_HEADER:
                head += self._read(REPLY_HEADER - len(head), timeout, "reply header")
            timeout = self.timeout
            start = head.find(SOF)
            if start != 0:   # bytes before a frame start: skip them
                skipped += len(head) if start < 0 else start
                del head[:len(head) if start < 0 else start]
                if skipped > MAX_REPLY + REPLY_HEADER + CRC_BYTES:
                    raise _Retry("garbage (no frame start)")
                continue
            length, seq, status = struct.unpack("<HBB", head[1:REPLY_HEADER])
            if length > MAX_REPLY:
                raise _Retry(f"bad reply (length {length})")
            rest = self._read(length + CRC_BYTES, timeout, "reply data")
            if crc16(bytes(head[1:]) + rest) != 0:
                raise _Retry("bad reply CRC")
            if seq == self.seq:
                return status, rest[:length]
            head.clear()   # a stale answer to an earlier attempt

    def reset(self) -> None:
        """Reset the core and the link's retransmission memory (do this when a session starts)."""
        self.request(LinkCommand.RESET)

    def cycles(self) -> int:
        """Return the device's free-running 32-bit clock cycle counter."""
        return int.from_bytes(self.request(LinkCommand.CYCLES, b"", 4), "little")


# -- target and device -------------------------------------------------------------------------

_COMMANDS = {"Read": LinkCommand.READ, "Run": LinkCommand.RUN, "Status": LinkCommand.STATUS,
             "Ident": LinkCommand.IDENT, "Resume": LinkCommand.RESUME}


class FramedTarget(Target):
    """Execute host-link operations through a :class:`LinkClient`, one frame (or chunk) each."""

    def __init__(self, client: LinkClient, config: HardwareConfig, progress: bool | None = None):
        self.client = client
        self.config = config
        self.progress = sys.stderr.isatty() if progress is None else progress

    def _chunks(self, op):
        """Split a Write/Read into operations whose frames fit the link's buffers."""
        nbytes = self.config.word_bytes(op.mem.config_field)
        if isinstance(op, Write):
            per = (self.client.max_payload - 9) // nbytes
            return [Write(op.mem, op.addr + k, op.words[k:k + per]) for k in range(0, len(op.words), per)] or [op]
        per = MAX_REPLY // nbytes
        return [Read(op.mem, op.addr + k, min(per, op.count - k)) for k in range(0, op.count, per)] or [op]

    def execute(self, ops: list) -> list:
        pieces = [self._chunks(op) if isinstance(op, (Write, Read)) else [op] for op in ops]
        total = sum(len(request_bytes(sub, self.config)) for chunks in pieces for sub in chunks)
        show = self.progress and total >= 16 * 1024
        done, results = 0, []
        for op, chunks in zip(ops, pieces):
            if isinstance(op, (Write, Read)):
                words = []
                for sub in chunks:
                    raw = request_bytes(sub, self.config)
                    if isinstance(sub, Write) and sub.mem == Memory.IMEM:
                        command, payload = LinkCommand.LOAD, raw[2:]
                    else:
                        command, payload = (LinkCommand.WRITE if isinstance(sub, Write) else LinkCommand.READ), raw[1:]
                    length = reply_length(sub, self.config)
                    result = parse_reply(sub, self.config, self.client.request(command, payload, length))
                    if isinstance(sub, Read):
                        words += result
                    done += len(raw)
                    if show:
                        _progress_bar(done, total)
                results.append(words if isinstance(op, Read) else None)
            else:
                command = _COMMANDS.get(type(op).__name__)
                if command is None:
                    raise TypeError(f"not a host-link operation: {op!r}")
                raw = request_bytes(op, self.config)
                length = reply_length(op, self.config)
                results.append(parse_reply(op, self.config, self.client.request(command, raw[1:], length)))
                done += len(raw)
        if show:
            sys.stderr.write("\n")
        return results

    def close(self):
        self.client.transport.close()


def _progress_bar(done: int, total: int, width: int = 40) -> None:
    filled = width * done // total
    sys.stderr.write(f"\rload [{'#' * filled}{'.' * (width - filled)}] {done / 1024:.1f}/{total / 1024:.1f} KiB")
    sys.stderr.flush()


class LinkDevice(HardwareDevice):
    """Run compiled artifacts on an accelerator behind the framed link, with the model resident.

    Opening resets the device and asks its identity; ``config`` (a preset name or config)
    is then checked against it, or, when omitted, found among the presets by its hash.
    ``stats=True`` reads the device's cycle counter (``CYCLES``) after each exchange, so that
    ``last_stats`` holds, per batch, the device cycles spent in total (less the readings'
    own round trips, measured once) and in compute (``STATUS``); the rest is transfer.
    """

    name = "link"

    def __init__(self, transport: Transport, config=None, batch: int = 1, *, stats: bool = False,
                 progress: bool | None = None, **client_options):
        self.client = LinkClient(transport, **client_options)
        self.name = transport.name
        try:
            self.client.reset()
            probe = preset("sim-small")
            info = parse_reply(Ident(), probe, self.client.request(LinkCommand.IDENT, b"",
                                                                   reply_length(Ident(), probe)))
        except BaseException:
            transport.close()
            raise
        config = preset(config) if isinstance(config, str) else config
        if config is None:
            matches = [c for c in PRESETS.values() if c.config_id() == info.config_id]
            if not matches:
                transport.close()
                raise DeviceError(f"{self.name}: the device reports config {info.config_id:016x}, which is no "
                                  f"preset; pass config=...")
            config = matches[0]
        elif config.config_id() != info.config_id:
            transport.close()
            raise DeviceError(f"{self.name}: the device reports config {info.config_id:016x}; "
                              f"{config.name!r} is {config.config_hash}")
        super().__init__(config, batch)
        self.stats = stats
        self.last_stats: list[dict] = []
        self._overhead: int | None = None
        self.target = FramedTarget(self.client, config, progress)

    def _make_target(self, config: HardwareConfig) -> Target:
        return self.target

    def _cycles_overhead(self) -> int:
        """Return the device cycles one CYCLES round trip adds between two readings (measured once)."""
        if self._overhead is None:
            first = self.client.cycles()
            second = self.client.cycles()
            self._overhead = (second - first) % (1 << 32)
        return self._overhead

    def _run_samples(self, samples):
        if not self.stats:
            return super()._run_samples(samples)
        overhead = self._cycles_overhead()
        inner, groups = self.target.execute, []
        mark = [self.client.cycles()]

        def timed(ops):
            # Each batch starts with the call that holds its RUN; later calls (stream segments,
            # RESUME, the final reads) belong to the same batch.
            out = inner(ops)
            now = self.client.cycles()
            if any(isinstance(op, Run) for op in ops) or not groups:
                groups.append(0)
            groups[-1] += (now - mark[0]) % (1 << 32) - overhead
            mark[0] = now
            return out
        self.target.execute = timed
        try:
            results = super()._run_samples(samples)
        finally:
            del self.target.execute
        self.last_stats = [{"device_cycles": total, "compute_cycles": compute, "transfer_cycles": total - compute}
                           for total, compute in zip(groups, self.last_cycles)]
        return results

    def close(self):
        if self.target is not None:
            self.target.close()
            self.target = None


class SerialDevice(LinkDevice):
    """Run artifacts on a board over a serial port (``accel.open_device("serial:/dev/ttyUSB1", baud=...)``)."""

    def __init__(self, port: str, baud: int = 3_000_000, config=None, batch: int = 1, **options):
        if not port:
            raise DeviceError("serial: name the port, e.g. serial:/dev/ttyUSB1")
        super().__init__(SerialTransport(port, baud), config, batch, **options)


def open_serial(port: str, **options) -> SerialDevice:
    """Open a board on ``port`` (the ``serial:`` device factory)."""
    return SerialDevice(port, **options)
