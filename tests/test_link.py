# amaranth: UnusedElaboratable=no
"""Check the FramedLink in Amaranth's simulator against a scripted core.

The testbench plays frames (built by :func:`accel.driver.encode_request`) into the link's
line side, stands in for the core on the raw side (recording every byte it receives and
answering with scripted replies), and parses the reply frames. ``ACCEL_SEED`` picks the
random seed (default 1); random tests print it.
"""

import pytest
from amaranth.sim import Simulator

from accel.driver import encode_reply, encode_request
from accel.hdl.link import SOF, FramedLink, LinkCommand, LinkStatus, crc16

from .test_hdl_datapath import rng_for

TIMEOUT_BITS = 6


def test_crc16_is_ccitt_false_with_a_zero_residue():
    assert crc16(b"123456789") == 0x29B1
    frame = encode_request(7, LinkCommand.STATUS, b"", 9)
    assert crc16(frame[1:]) == 0


def run_link(script, *, replies=None, core_stall=0, timeout_bits=TIMEOUT_BITS, busy_cycles=0, cycles=4000):
    """Play ``script`` (a list of bytes objects or ints = idle cycles) into a FramedLink.

    ``replies(request_bytes) -> bytes`` answers each raw request the core receives (called
    when the core has received a whole request: ``len`` known from the command). Returns
    (line bytes out, raw requests seen by the core, core reset pulses).
    """
    dut = FramedLink(timeout_bits=timeout_bits)
    out, core_bytes, resets = bytearray(), [], []
    state = {"done": False}

    async def line(ctx):
        for item in script:
            if isinstance(item, int):
                await ctx.tick().repeat(item)
                continue
            for byte in item:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, byte)
                await ctx.tick()
            ctx.set(dut.i.valid, 0)
        await ctx.tick().repeat(cycles)
        state["done"] = True

    async def collect(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, payload, reset in ctx.tick().sample(dut.o.valid, dut.o.payload, dut.core_reset):
            if valid:
                out.append(payload)
            if reset:
                resets.append(len(core_bytes))

    async def core(ctx):
        pending = bytearray()
        answer = bytearray()
        ctx.set(dut.core_i.ready, 1)
        async for _, _, valid, payload, o_ready in ctx.tick().sample(dut.core_i.valid, dut.core_i.payload,
                                                                     dut.core_o.ready):
            if answer and o_ready:
                answer.pop(0)
            if valid:
                pending.append(payload)
                if replies is not None:
                    reply = replies(bytes(pending))
                    if reply is not None:
                        core_bytes.append(bytes(pending))
                        pending.clear()
                        answer += reply
            ctx.set(dut.core_o.valid, bool(answer))
            ctx.set(dut.core_o.payload, answer[0] if answer else 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(line)
    sim.add_testbench(collect, background=True)
    sim.add_testbench(core, background=True)
    sim.run()
    return bytes(out), core_bytes, resets


def fake_core(request: bytes):
    """Answer raw requests like the core would, for the commands the tests use."""
    cmd = request[0]
    if cmd == 0x01 and len(request) >= 10:      # WRITE of 1-byte words
        count = int.from_bytes(request[6:10], "little")
        return b"\xa5" if len(request) == 10 + count else None
    if cmd == 0x02 and len(request) == 10:      # READ of 1-byte words: echo a pattern
        count = int.from_bytes(request[6:10], "little")
        return bytes((request[2] + k) & 0xFF for k in range(count))
    if cmd == 0x04:
        return bytes(range(1, 10))
    if cmd == 0x03:
        return b"\xa5\x00\x00"
    return None


def parse_replies(data: bytes):
    """Split line bytes into (seq, status, data) reply frames, checking each CRC."""
    frames, k = [], 0
    while k < len(data):
        assert data[k] == SOF, f"garbage at byte {k}: {data[k:].hex()}"
        length = int.from_bytes(data[k + 1:k + 3], "little")
        frame = data[k:k + 7 + length]
        assert crc16(frame[1:]) == 0, f"bad CRC in {frame.hex()}"
        frames.append((frame[3], frame[4], frame[5:5 + length]))
        k += len(frame)
    return frames


def write_frame(seq, addr, data):
    payload = bytes([1]) + addr.to_bytes(4, "little") + len(data).to_bytes(4, "little") + bytes(data)
    return encode_request(seq, LinkCommand.WRITE, payload, 1)


def test_good_frames_are_replayed_exactly_and_answered():
    read_payload = bytes([1]) + (5).to_bytes(4, "little") + (3).to_bytes(4, "little")
    out, seen, _ = run_link([write_frame(1, 9, b"\x10\x20\x30"), 200,
                             encode_request(2, LinkCommand.READ, read_payload, 3), 200,
                             encode_request(3, LinkCommand.STATUS, b"", 9)], replies=fake_core)
    assert seen == [b"\x01\x01" + (9).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"\x10\x20\x30",
                    b"\x02" + read_payload, b"\x04"]
    assert parse_replies(out) == [(1, LinkStatus.ACK, b"\xa5"), (2, LinkStatus.ACK, bytes([5, 6, 7])),
                                  (3, LinkStatus.ACK, bytes(range(1, 10)))]
    assert out[-16:] == encode_reply(3, LinkStatus.ACK, bytes(range(1, 10)))


def test_load_becomes_a_raw_write_to_imem():
    payload = (4).to_bytes(4, "little") + (2).to_bytes(4, "little") + b"\xaa\xbb"
    out, seen, _ = run_link([encode_request(9, LinkCommand.LOAD, payload, 1)], replies=fake_core)
    assert seen == [b"\x01\x00" + payload]
    assert parse_replies(out) == [(9, LinkStatus.ACK, b"\xa5")]


@pytest.mark.parametrize("position", [1, 2, 3, 4, 5, 8, 12, -2, -1])
def test_a_damaged_frame_is_never_executed(position):
    frame = bytearray(write_frame(4, 0, b"\x01\x02\x03\x04"))
    frame[position] ^= 0x10
    out, seen, _ = run_link([bytes(frame), 300, write_frame(5, 0, b"\x05")], replies=fake_core)
    assert seen == [b"\x01\x01" + bytes(4) + (1).to_bytes(4, "little") + b"\x05"]
    replies = parse_replies(out)
    assert replies[-1] == (5, LinkStatus.ACK, b"\xa5")
    assert all(status != LinkStatus.ACK for _, status, _ in replies[:-1])


def test_truncated_frames_time_out_and_garbage_is_skipped():
    frame = write_frame(6, 0, b"\x01\x02\x03\x04")
    out, seen, _ = run_link([b"\x00\x13\xff", frame[:9], 200, b"\x55\xaa", write_frame(7, 3, b"\x09")],
                            replies=fake_core)
    assert seen == [b"\x01\x01" + (3).to_bytes(4, "little") + (1).to_bytes(4, "little") + b"\x09"]
    assert parse_replies(out) == [(6, LinkStatus.TRUNCATED, b""), (7, LinkStatus.ACK, b"\xa5")]


def test_a_retransmission_is_answered_again_but_not_executed():
    frame = write_frame(8, 0, b"\x42")
    run = encode_request(9, LinkCommand.RUN, b"", 3)
    out, seen, resets = run_link([frame, 200, frame, 200, run, 200, run, 200,
                                  encode_request(9, LinkCommand.RESET), 200, run], replies=fake_core)
    assert seen == [b"\x01\x01" + bytes(4) + (1).to_bytes(4, "little") + b"\x42", b"\x03", b"\x03"]
    assert parse_replies(out) == [(8, 0, b"\xa5"), (8, 0, b"\xa5"), (9, 0, b"\xa5\0\0"), (9, 0, b"\xa5\0\0"),
                                  (9, 0, b""), (9, 0, b"\xa5\0\0")]
    assert resets == [2]


def test_refusals_oversize_and_unknown_commands():
    too_long = bytes([SOF]) + (600).to_bytes(2, "little") + b"\x01\x01\x01\x00"
    out, seen, _ = run_link([too_long, 100, encode_request(2, 0x33, b"", 0), 100,
                             encode_request(3, LinkCommand.STATUS, b"", 9)], replies=fake_core)
    assert seen == [b"\x04"]
    # The length is refused before the sequence number arrives: that NACK carries a stale one.
    assert [r[1:] for r in parse_replies(out)] == [(LinkStatus.TOO_LONG, b""), (LinkStatus.BAD_COMMAND, b""),
                                                   (LinkStatus.ACK, bytes(range(1, 10)))]
    assert [r[0] for r in parse_replies(out)][1:] == [2, 3]


def test_a_silent_core_is_reset_and_reported():
    out, seen, resets = run_link([encode_request(4, LinkCommand.IDENT, b"", 15)], replies=lambda r: None)
    assert parse_replies(out) == [(4, LinkStatus.CORE_TIMEOUT, b"")]
    assert resets == [0]


def test_cycle_counter_counts_clock_cycles():
    out, _, _ = run_link([encode_request(1, LinkCommand.CYCLES, b"", 4), 300,
                          encode_request(2, LinkCommand.CYCLES, b"", 4)], replies=fake_core)
    (_, s1, c1), (_, s2, c2) = parse_replies(out)
    assert s1 == s2 == LinkStatus.ACK
    # The frames are 9 bytes, one per cycle, 300 idle cycles apart; replies take 11 cycles.
    delta = int.from_bytes(c2, "little") - int.from_bytes(c1, "little")
    assert 300 < delta < 400


def test_random_frames_with_random_damage():
    rng = rng_for(6)
    script, expected_exec, expected = [], [], []
    for seq in range(40):
        data = bytes(int(v) for v in rng.integers(0, 256, int(rng.integers(1, 40))))
        frame = bytearray(write_frame(seq, int(rng.integers(0, 1000)), data))
        if rng.random() < 0.5:
            frame[int(rng.integers(0, len(frame)))] ^= 1 << int(rng.integers(0, 8))
            damaged = True
        else:
            damaged = False
        script += [bytes(frame), 200]
        if not damaged:
            expected_exec.append(b"\x01" + bytes(frame[7:-2]))
            expected.append((seq, LinkStatus.ACK, b"\xa5"))
    out, seen, _ = run_link(script, replies=fake_core, cycles=2000)
    assert seen == expected_exec
    assert [r for r in parse_replies(out) if r[1] == LinkStatus.ACK] == expected
