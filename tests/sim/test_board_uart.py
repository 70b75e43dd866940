"""Run a compiled model through the iCEBreaker top's UART pins in Verilator, bit-exact with the golden model.

The design is the board top in sim mode (no PLL, no pins) with the raw host link and a
small UART divisor, wrapped by :func:`accel.boards.board_sim_harness` with a host-side
UART pair (``bench_board_uart.py`` drives it). Every request byte crosses the host's
transmitter, the top's RX pin, UART receiver, FIFO and link into the core; every reply
byte the core's transmitter and the TX pin.

The host-link operations come from the real driver (:class:`accel.runtime.HardwareDevice`)
loading and running the digits CNN compiled for the ``icebreaker`` preset: a first pass
runs them on the instruction-level emulator and records every ``execute`` call; the bench
plays the recorded calls over the UART (the host waits for each ``RUN``'s reply before
sending more, as a UART host must); the parsed replies must equal the emulator's, and a
second pass of the same driver, fed the board's replies, must decode outputs equal to the
golden model's.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import accel
from accel import runtime, zoo
from accel.boards import RawLink, board_sim_harness
from accel.compiler.backend import compile_model
from accel.config import preset
from accel.runtime import HardwareDevice, Target, parse_reply, reply_length, request_bytes
from accel.sim import verilator
from accel.sim.emulator import EmulatorTarget
from accel.sim.rtl import core_verilog

BOARD = "icebreaker"
CONFIG = preset("icebreaker")
DIVISOR = 4
TOP = "board_uart_icebreaker"
IMAGES = 3
#: Operations after which the host waits for the reply before it sends more (the core computes).
COMPUTE_OPS = tuple(getattr(runtime, name) for name in ("Run", "Resume") if hasattr(runtime, name))


class Recorder(Target):
    """Execute on another target and record each call's operations and results."""

    def __init__(self, inner: Target):
        self.inner = inner
        self.config = inner.config
        self.calls = []

    def execute(self, ops):
        results = self.inner.execute(ops)
        self.calls.append((list(ops), results))
        return results


class Replay(Target):
    """Answer each call with recorded results, checking the operations are the recorded ones."""

    def __init__(self, config, calls):
        self.config = config
        self.calls = list(calls)

    def execute(self, ops):
        expected_ops, results = self.calls.pop(0)
        assert list(ops) == expected_ops, "the driver sent different operations on replay"
        return results


class TargetDevice(HardwareDevice):
    """Drive a given :class:`Target` with the real host driver."""

    name = "board-uart-test"

    def __init__(self, target, config):
        super().__init__(config)
        self._target = target

    def _make_target(self, config):
        return self._target


def segments(calls, config):
    """Split the recorded calls into (request bytes, reply length), each ending after a compute op."""
    out, request, length = [], b"", 0
    for ops, _ in calls:
        for op in ops:
            request += request_bytes(op, config)
            length += reply_length(op, config)
            if isinstance(op, COMPUTE_OPS):
                out.append((request, length))
                request, length = b"", 0
        if request:
            out.append((request, length))
            request, length = b"", 0
    return out


@pytest.fixture(scope="module")
def harness_build(sim_cache_root, live_output):
    with live_output():
        text = core_verilog(CONFIG, sim_cache_root, top=TOP, variant=f"raw-link divisor {DIVISOR}",
                            factory=lambda config: board_sim_harness(BOARD, config, divisor=DIVISOR, link=RawLink))
        return verilator.build(text, TOP, cache_root=sim_cache_root)


def test_digits_cnn_over_the_uart_pins_is_bit_exact(harness_build, tmp_path):
    artifact = compile_model(accel.load_model(zoo.build("digits_cnn", "qdq_channel")), CONFIG, batch=1)
    x = zoo.digits_dataset()[2][:IMAGES]
    expected = accel.open_device("golden").load(zoo.build("digits_cnn", "qdq_channel")).run(x)

    recorder = Recorder(EmulatorTarget(CONFIG))
    y_emu = TargetDevice(recorder, CONFIG).load(artifact).run(x)
    assert np.array_equal(y_emu, expected)

    plan = segments(recorder.calls, CONFIG)
    request_file, reply_file = tmp_path / "requests.json", tmp_path / "replies.json"
    request_file.write_text(json.dumps([[req.hex(), n] for req, n in plan]))
    verilator.run(harness_build, Path(__file__).with_name("bench_board_uart.py"), extra_env={
        "ACCEL_BOARD_UART_REQUESTS": str(request_file), "ACCEL_BOARD_UART_REPLIES": str(reply_file)})
    answer = json.loads(reply_file.read_text())
    reply = b"".join(bytes.fromhex(r) for r in answer["replies"])
    sent = sum(len(req) for req, _ in plan)
    print(f"{len(plan)} segments, {sent:,} request bytes and {len(reply):,} reply bytes over the UART "
          f"(divisor {DIVISOR}) in {sum(answer['cycles']):,} cycles; LEDs {answer['leds']}")

    # The board's answers, call by call, equal the emulator's (outputs, STATUS and its cycle count).
    board_calls, offset = [], 0
    for ops, emu_results in recorder.calls:
        results = []
        for op in ops:
            n = reply_length(op, CONFIG)
            results.append(parse_reply(op, CONFIG, reply[offset:offset + n]))
            offset += n
        assert results == emu_results
        board_calls.append((ops, results))
    assert offset == len(reply)

    # The driver decodes the board's bytes into the golden model's outputs.
    y_board = TargetDevice(Replay(CONFIG, board_calls), CONFIG).load(artifact).run(x)
    assert y_board.dtype == expected.dtype and np.array_equal(y_board, expected)
    assert answer["leds"]["done"] == 1 and answer["leds"]["busy"] == 0 and answer["leds"]["error"] == 0
