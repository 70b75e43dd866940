"""Measure the framed host link in board-sim: transfer throughput as % of line rate, and latency per inference.

The device is ``board-sim`` (the iCEBreaker top in Verilator, UART pins and FramedLink
included) driven by :mod:`accel.driver`, exactly as a board on a serial port. All times
are simulated clock cycles, not wall time. Two line rates:

* 3 Mbaud: 10 clocks per bit at the ``icebreaker`` preset's 30 MHz;
* 12 Mbaud: 4 clocks per bit, the fewest the UART takes. The 30 MHz iCE40 clock cannot
  sample 12 Mbaud (2.5 clocks per bit), so this case stands for a 48 MHz link clock; the
  link's cost per byte in clock cycles is what matters, and 4 clocks per bit is its worst case.

Measured per line rate:

* weight load: ``load(artifact)`` of the digits CNN and ResNet-8 (its resident images),
  data bytes (instruction, weight and parameter words) over the line time the load took;
* bulk input: one 16 KiB ABUF write, data bytes over line time;
* per inference (``stats=True``), the second of two (steady state): device cycles in total,
  in compute (``STATUS``) and in transfer (the rest: input, output, streamed weight
  segments, frame overhead), and the bytes that crossed the line both ways. The
  latency columns convert transfer cycles at the link clock (clocks per bit x baud) and
  compute cycles at 30 MHz.

Both models are compiled for the ``icebreaker`` preset; ResNet-8's weights do not fit its
WBUF, so each inference streams weight segments (``docs/isa.md``, STREAM) over the link.

Run: ``python bench/link_throughput.py [--quick]`` (``--quick``: the digits CNN only).
Writes bench/results/link_throughput.{json,md}.
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import accel  # noqa: E402
from accel import zoo  # noqa: E402
from accel.compiler.backend import compile_model  # noqa: E402
from accel.config import preset  # noqa: E402
from accel.isa import Memory  # noqa: E402
from accel.runtime import Write  # noqa: E402
from benchlib import write_results  # noqa: E402

CONFIG = preset("icebreaker")
RATES = [(3_000_000, 10), (12_000_000, 4)]   # (baud, clocks per bit)
MODELS = [("digits_cnn", "qdq_channel"), ("resnet8", "qop_channel")]
BULK_INPUT_WORDS = 4096


def line_efficiency(data_bytes: int, cycles: int, divisor: int) -> float:
    """Return data bytes over the bytes the line could have carried in ``cycles`` (8N1: 10 bits per byte)."""
    return data_bytes / (cycles / (10 * divisor))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the digits CNN only")
    args = parser.parse_args()
    models = MODELS[:1] if args.quick else MODELS
    artifacts = {}
    for name, variant in models:
        path = zoo.build(name, variant)
        artifacts[name] = (path, compile_model(accel.load_model(path), CONFIG))

    rows, detail = [], []
    for baud, divisor in RATES:
        link_hz = baud * divisor
        started = time.perf_counter()
        dev = accel.open_device("board-sim", board="icebreaker", divisor=divisor, stats=True, progress=False,
                                run_timeout=0.2)
        transport = dev.client.transport
        with dev:
            # Bulk input: one ABUF write.
            words = tuple(range(BULK_INPUT_WORDS))
            before = transport.cycles
            dev.target.execute([Write(Memory.ABUF, 0, words)])
            cycles = transport.cycles - before
            nbytes = BULK_INPUT_WORDS * CONFIG.word_bytes("abuf")
            eff = line_efficiency(nbytes, cycles, divisor)
            rows.append([f"{baud / 1e6:g} Mbaud", "bulk input (ABUF write)", f"{nbytes:,}", f"{cycles:,}",
                         f"{eff:.1%}", "", "", "", ""])
            detail.append({"baud": baud, "divisor": divisor, "what": "bulk_input", "bytes": nbytes,
                           "cycles": cycles, "efficiency": eff})
            for name, (path, artifact) in artifacts.items():
                before = transport.cycles
                dev.load(artifact)
                cycles = transport.cycles - before
                nbytes = sum(len(getattr(artifact, image)) * CONFIG.word_bytes(image)
                             for image in ("imem", "wbuf", "pbuf"))
                eff = line_efficiency(nbytes, cycles, divisor)
                # Two inferences; the second is the steady state (a streaming model reloads segment 0 first).
                x = zoo.digits_dataset()[2][:2] if name == "digits_cnn" else zoo.calibration_data(name, n=2, seed=0)
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                feed = session.get_inputs()[0].name
                expected = np.concatenate([session.run(None, {feed: x[k:k + 1]})[0] for k in range(2)])
                got = dev.run(x[:1])
                out_before, in_before = dev.client.stats.bytes_out, dev.client.stats.bytes_in
                got = np.concatenate([got.reshape(expected[:1].shape), dev.run(x[1:]).reshape(expected[:1].shape)])
                assert np.array_equal(got, expected), f"{name}: output differs from onnxruntime"
                line_bytes = dev.client.stats.bytes_out - out_before + dev.client.stats.bytes_in - in_before
                s = dev.last_stats[0]
                transfer_ms = s["transfer_cycles"] / link_hz * 1e3
                compute_ms = s["compute_cycles"] / CONFIG.clock_hz * 1e3
                rows.append([f"{baud / 1e6:g} Mbaud", f"{name}: weight load", f"{nbytes:,}", f"{cycles:,}",
                             f"{eff:.1%}", "", "", "", ""])
                rows.append([f"{baud / 1e6:g} Mbaud", f"{name}: one inference", f"{line_bytes:,} on the line",
                             f"{s['device_cycles']:,}", "", f"{s['transfer_cycles']:,}", f"{s['compute_cycles']:,}",
                             f"{transfer_ms:.2f}", f"{compute_ms:.2f}"])
                detail.append({"baud": baud, "divisor": divisor, "what": f"{name}_load", "bytes": nbytes,
                               "cycles": cycles, "efficiency": eff})
                detail.append({"baud": baud, "divisor": divisor, "what": f"{name}_inference",
                               "line_bytes": line_bytes, "streamed_bytes": dev.last_stream_bytes[0], **s,
                               "transfer_ms": transfer_ms, "compute_ms": compute_ms, "bit_exact_vs_ort": True})
                print(f"{baud / 1e6:g} Mbaud {name}: load {eff:.1%} of line rate; inference transfer "
                      f"{transfer_ms:.2f} ms + compute {compute_ms:.2f} ms", flush=True)
        print(f"{baud / 1e6:g} Mbaud done in {time.perf_counter() - started:.0f} s wall", flush=True)

    notes = (
        "Simulated cycles in board-sim (iCEBreaker top, UART pins, FramedLink, Verilator); stop-and-wait, 512-byte "
        "frames. Efficiency = data bytes / (cycles / (10 x clocks per bit)): the line carries 8N1 frames, 10 bits "
        "per byte. 3 Mbaud = 10 clocks per bit at 30 MHz; 12 Mbaud = 4 clocks per bit, which needs a 48 MHz link "
        "clock (the 30 MHz iCE40 core clock cannot sample 12 Mbaud). Latency: transfer cycles at the link clock "
        "(baud x clocks per bit), compute cycles at the icebreaker preset's 30 MHz. Both models are compiled for the "
        "icebreaker preset; ResNet-8's weights exceed its WBUF, so every inference streams weight segments over the "
        "link (docs/isa.md, STREAM), which dominates its transfer. Inference rows: the second of two runs "
        "(steady state). Outputs checked bit-exact against onnxruntime. Real USB-UART bridges add 0.1-1 ms of latency "
        "per stop-and-wait round that board-sim does not model.")
    write_results("link_throughput",
                  ["line rate", "what", "data bytes", "cycles", "% of line rate", "transfer cycles",
                   "compute cycles", "transfer ms", "compute ms"], rows, notes, {"measurements": detail})


if __name__ == "__main__":
    main()
