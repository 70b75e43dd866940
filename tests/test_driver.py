"""Check the host side of the framed link (accel.driver) against a scripted device in Python.

The gateware end is tested in ``test_link.py`` (Amaranth) and through Verilator in
``test_fault_injection.py`` and ``sim/test_board_sim.py``; here the device is a Python
transport that parses request frames and answers as told, so retries, stale replies,
refusals and the splitting of long transfers are checked exactly.
"""

import struct

import pytest

import accel
from accel.config import preset
from accel.driver import (FaultInjector, FramedTarget, LinkClient, LinkDevice, Transport, encode_reply,
                          encode_request)
from accel.errors import DeviceError, LinkError
from accel.hdl.link import MAX_REPLY, LinkCommand, LinkStatus, crc16
from accel.isa import Memory
from accel.runtime import Ident, Read, Status, Write

CONFIG = preset("icebreaker")


def test_request_frame_layout_matches_docs_protocol_md():
    # docs/protocol.md, example 1: STATUS with sequence number 0x12, expecting 9 reply bytes.
    frame = encode_request(0x12, LinkCommand.STATUS, b"", 9)
    assert frame.hex(" ") == "7e 00 00 12 04 09 00 " + crc16(bytes.fromhex("0000120409 00")).to_bytes(2, "big").hex(" ")
    assert crc16(frame[1:]) == 0
    reply = encode_reply(0x12, LinkStatus.ACK, bytes(9))
    assert reply[:5] == bytes([0x7E, 9, 0, 0x12, 0]) and len(reply) == 5 + 9 + 2


class ScriptedDevice(Transport):
    """Parse request frames and answer each with ``answer(seq, cmd, payload, rlen)`` -> list of byte strings."""

    name = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.frames = []
        self.inbox = bytearray()
        self.clock = 0.0

    def write(self, data):
        sof, length, seq, cmd, rlen = struct.unpack("<BHBBH", data[:7])
        assert sof == 0x7E and crc16(data[1:]) == 0 and len(data) == 9 + length
        payload = data[7:7 + length]
        self.frames.append((seq, LinkCommand(cmd), payload, rlen))
        for chunk in self.answer(seq, LinkCommand(cmd), payload, rlen):
            self.inbox += chunk

    def read(self, n, timeout):
        data = bytes(self.inbox[:n])
        del self.inbox[:n]
        if not data:
            self.clock += timeout
        return data

    def elapsed(self):
        return self.clock


def ack(seq, cmd, payload, rlen):
    return [encode_reply(seq, LinkStatus.ACK, bytes(range(rlen)))]


def test_the_client_retries_timeouts_damage_and_nacks_then_succeeds():
    script = iter(["silent", "bad crc", "nack", "stale", "ok"])

    def answer(seq, cmd, payload, rlen):
        what = next(script)
        if what == "silent":
            return []
        if what == "bad crc":
            frame = bytearray(encode_reply(seq, LinkStatus.ACK, bytes(rlen)))
            frame[6] ^= 1
            return [bytes(frame)]
        if what == "nack":
            return [encode_reply(seq, LinkStatus.BAD_CRC)]
        if what == "stale":   # garbage, then an answer to another sequence number, then nothing
            return [b"\x00\x13\x01", encode_reply(seq ^ 0x55, LinkStatus.ACK, bytes(rlen))]
        return [encode_reply(seq, LinkStatus.ACK, b"\x07\x08")]

    client = LinkClient(ScriptedDevice(answer), timeout=0.01, retries=8)
    assert client.request(LinkCommand.STATUS, b"", 2) == b"\x07\x08"
    seqs = {seq for seq, *_ in client.transport.frames}
    assert len(client.transport.frames) == 5 and len(seqs) == 1    # one sequence number for all retries
    assert client.stats.failures == {"timeout": 2, "bad reply CRC": 1, "NACK BAD_CRC": 1}
    assert client.stats.attempts == 5 and client.stats.frames == 1
    client.transport.answer = ack
    client.request(LinkCommand.STATUS, b"", 2)
    assert client.transport.frames[-1][0] == (next(iter(seqs)) + 1) & 0xFF


def test_bounded_retries_end_in_a_clear_link_error():
    client = LinkClient(ScriptedDevice(lambda *frame: []), timeout=0.01, retries=3)
    with pytest.raises(LinkError, match=r"scripted: no valid reply to IDENT after 4 attempts \(timeout"):
        client.request(LinkCommand.IDENT, b"", 15)
    assert len(client.transport.frames) == 4


@pytest.mark.parametrize("status", [LinkStatus.CORE_TIMEOUT, LinkStatus.BAD_COMMAND])
def test_a_refusal_is_not_retried(status):
    client = LinkClient(ScriptedDevice(lambda seq, *rest: [encode_reply(seq, status)]), timeout=0.01)
    with pytest.raises(LinkError, match=f"refused RUN with NACK {status.name}"):
        client.request(LinkCommand.RUN, b"", 3)
    assert len(client.transport.frames) == 1


def test_long_transfers_are_split_to_the_buffers_and_imem_goes_by_load():
    device = ScriptedDevice(lambda seq, cmd, payload, rlen: [encode_reply(
        seq, LinkStatus.ACK, b"\xa5" if cmd in (LinkCommand.WRITE, LinkCommand.LOAD)
        else bytes(k & 0xFF for k in range(rlen)))])
    target = FramedTarget(LinkClient(device), CONFIG, progress=False)
    wbytes = CONFIG.word_bytes("wbuf")
    words = tuple(range(1000))
    imem = tuple(range(40))
    results = target.execute([Write(Memory.WBUF, 16, words), Write(Memory.IMEM, 0, imem),
                              Read(Memory.ABUF, 3, 300), Status()])
    frames = device.frames
    writes = [f for f in frames if f[1] == LinkCommand.WRITE]
    per = (512 - 9) // wbytes
    assert len(writes) == -(-1000 // per)
    assert all(len(f[2]) <= 512 for f in frames)
    # Each chunk is a raw WRITE without its command byte, at the right address.
    mem, addr, count = struct.unpack("<BII", writes[1][2][:9])
    assert (mem, addr, count) == (Memory.WBUF.value, 16 + per, per)
    loads = [f for f in frames if f[1] == LinkCommand.LOAD]
    ibytes = CONFIG.word_bytes("imem")
    assert sum(struct.unpack("<II", f[2][:8])[1] for f in loads) == 40
    assert all(len(f[2]) == 8 + ibytes * struct.unpack("<II", f[2][:8])[1] for f in loads)
    reads = [f for f in frames if f[1] == LinkCommand.READ]
    abytes = CONFIG.word_bytes("abuf")
    assert [f[3] for f in reads] == [MAX_REPLY // abytes * abytes] * (300 // (MAX_REPLY // abytes)) + (
        [300 % (MAX_REPLY // abytes) * abytes] if 300 % (MAX_REPLY // abytes) else [])
    assert results[0] is None and len(results[2]) == 300 and results[3] == (0, int.from_bytes(bytes(range(1, 9)), "little"))


def identity_answer(config_id):
    ident = b"ACCL" + config_id.to_bytes(8, "little") + bytes([2, 4, 4])

    def answer(seq, cmd, payload, rlen):
        data = ident if cmd == LinkCommand.IDENT else bytes(rlen)
        return [encode_reply(seq, LinkStatus.ACK, data)]
    return answer


def test_a_device_finds_its_config_by_hash_and_refuses_another():
    device = LinkDevice(ScriptedDevice(identity_answer(CONFIG.config_id())), progress=False)
    assert device.config is CONFIG or device.config.config_id() == CONFIG.config_id()
    assert device.client.transport.frames[0][1] == LinkCommand.RESET
    other = preset("sim-small")
    with pytest.raises(DeviceError, match=f"reports config {CONFIG.config_id():016x}; 'sim-small' is "
                                          f"{other.config_hash}"):
        LinkDevice(ScriptedDevice(identity_answer(CONFIG.config_id())), config=other)
    with pytest.raises(DeviceError, match="which is no preset"):
        LinkDevice(ScriptedDevice(identity_answer(0x1234)))


def test_the_fault_injector_is_seeded_and_does_every_kind():
    def damage(seed):
        injector = FaultInjector(ScriptedDevice(ack), seed=seed, rate=1.0)
        frame = encode_request(1, LinkCommand.STATUS, bytes(range(40)), 9)
        return [injector._damage(frame, "out") for _ in range(200)], injector

    first, injector = damage(5)
    assert first == damage(5)[0] and first != damage(6)[0]
    assert set(kind for _, kind in injector.log) == set(FaultInjector.KINDS)
    frame = encode_request(1, LinkCommand.STATUS, bytes(range(40)), 9)
    assert all(out != frame for out in first)
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultInjector(ScriptedDevice(ack), seed=1, kinds=("melt",))


def test_opening_a_missing_serial_port_is_one_clear_error():
    with pytest.raises(DeviceError, match=r"serial:/dev/nonexistent-accel: cannot open the port at 3000000 baud"):
        accel.open_device("serial:/dev/nonexistent-accel", baud=3_000_000)


def test_ident_reply_through_a_target():
    target = FramedTarget(LinkClient(ScriptedDevice(identity_answer(CONFIG.config_id()))), CONFIG)
    info = target.execute([Ident()])[0]
    assert info.config_id == CONFIG.config_id() and (info.rows, info.cols) == (4, 4)


def test_long_loads_show_a_progress_bar_on_stderr(capsys):
    device = ScriptedDevice(lambda seq, cmd, payload, rlen: [encode_reply(seq, LinkStatus.ACK, b"\xa5")])
    target = FramedTarget(LinkClient(device), CONFIG, progress=True)
    target.execute([Write(Memory.WBUF, 0, tuple(range(8192)))])   # 32 KiB
    err = capsys.readouterr().err
    assert err.count("\rload [") == -(-8192 // ((512 - 9) // CONFIG.word_bytes("wbuf")))
    assert err.rstrip().endswith(f"[{'#' * 40}] 32.6/32.6 KiB")  # 32 KiB of words + 10-byte raw headers
    target.execute([Write(Memory.WBUF, 0, tuple(range(100)))])    # short: no bar
    assert capsys.readouterr().err == ""


def test_serial_transport_over_a_pseudo_terminal():
    """Drive a scripted device on a pty through pyserial: the serial:PORT path, retries included."""
    import os
    import threading

    master, slave = os.openpty()
    port = os.ttyname(slave)
    ident = b"ACCL" + CONFIG.config_id().to_bytes(8, "little") + bytes([2, 4, 4])
    seen, stop = [], threading.Event()

    def device():
        buffer = bytearray()
        while not stop.is_set():
            try:
                buffer += os.read(master, 4096)
            except OSError:
                return
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[1:3], "little")
                if len(buffer) < 9 + length:
                    break
                frame, buffer = bytes(buffer[:9 + length]), buffer[9 + length:]
                seq, cmd, rlen = frame[3], LinkCommand(frame[4]), int.from_bytes(frame[5:7], "little")
                seen.append(cmd)
                if cmd == LinkCommand.STATUS and seen.count(cmd) == 1:
                    continue   # lose the first STATUS: the driver must time out and resend it
                data = ident if cmd == LinkCommand.IDENT else bytes(k & 0xFF for k in range(rlen))
                os.write(master, encode_reply(seq, LinkStatus.ACK, data))

    thread = threading.Thread(target=device, daemon=True)
    thread.start()
    try:
        dev = accel.open_device(f"serial:{port}", baud=115_200, progress=False, timeout=0.2)
        assert dev.name == f"serial:{port}" and dev.config.config_id() == CONFIG.config_id()
        assert dev.target.execute([Status()]) == [(0, int.from_bytes(bytes(range(1, 9)), "little"))]
        assert seen == [LinkCommand.RESET, LinkCommand.IDENT, LinkCommand.STATUS, LinkCommand.STATUS]
        assert dev.client.stats.failures == {"timeout": 1}
        dev.close()
    finally:
        stop.set()
        os.close(slave)
        os.close(master)
        thread.join(1)
