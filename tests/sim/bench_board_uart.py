"""Play host-link transactions through a simulated board top's UART pins (cocotb bench).

The design is :func:`accel.boards.board_sim_harness`: the board top in sim mode with a
host-side UART pair on its pins, so :class:`accel.sim.rtl_host.HostLinkDriver` moves bytes
at stream level. While a byte crosses the line the host transmitter is not ready, so the
driver waits for an edge and the design runs unattended.

Environment: ``ACCEL_BOARD_UART_REQUESTS`` names a JSON file ``[[request hex, reply
length], ...]`` (each a segment the host sends before waiting for its whole reply);
``ACCEL_BOARD_UART_REPLIES`` names the JSON file this bench writes: the reply hex per
segment, the cycles of each, and the LEDs at the end.
"""

import json
import os

import cocotb

from accel.boards import LED_ROLES
from accel.sim.rtl_host import HostLinkDriver

#: Cycles without a byte moving after which a segment fails (a RUN of the digits CNN takes far fewer).
MAX_IDLE_CYCLES = 5_000_000


@cocotb.test()
async def play_segments(dut):
    """Send each request segment over the UART and record its reply."""
    with open(os.environ["ACCEL_BOARD_UART_REQUESTS"]) as f:
        segments = json.load(f)
    driver = HostLinkDriver(dut)
    await driver.start()
    replies, cycles = [], []
    for request_hex, reply_length in segments:
        started = driver.cycle
        reply = await driver.transact(bytes.fromhex(request_hex), reply_length, MAX_IDLE_CYCLES)
        replies.append(reply.hex())
        cycles.append(driver.cycle - started)
    leds = int(dut.leds.value)
    with open(os.environ["ACCEL_BOARD_UART_REPLIES"], "w") as f:
        json.dump({"replies": replies, "cycles": cycles,
                   "leds": {role: (leds >> n) & 1 for n, role in enumerate(LED_ROLES)}}, f)
