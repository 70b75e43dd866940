"""Measure the MLPerf Tiny models and the digits CNN on the accelerator, per preset: cycles, utilization, latency.

For every model and preset the model is compiled (per-channel QOperator, as onnxruntime's
quantizer writes it), run on the emulator (modelled cycles per layer) and, with ``--rtl``,
on the Verilator RTL (the hardware cycle counter), each checked element for element
against onnxruntime. Utilization is MACs / (cycles * rows * cols), overall and per layer
kind (standard conv, depthwise, pointwise, fc); latency is cycles at the preset's clock.
Models whose program, weights or parameters exceed a preset's buffers stream them during
each run: the table gives the segments, the bytes streamed per run, the line time of those
bytes at the board's UART rate, and the compute cycles the STREAM pauses add (against the
same model compiled with buffers big enough to hold everything). Models whose activations
do not fit are listed with the buffer that overflows.

Run: ``python bench/models.py [--rtl] [--presets icebreaker ulx3s-85f ulx3s-85f-8x8 sim-small]``.
Writes bench/results/models.{json,md}.
"""

import argparse
import dataclasses
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import accel  # noqa: E402
from accel import zoo  # noqa: E402
from accel.compiler.backend import compile_model  # noqa: E402
from accel.config import BufferSpec, preset  # noqa: E402
from benchlib import write_results  # noqa: E402

MODELS = ["digits_cnn", "resnet8", "ds_cnn", "mobilenet_v1_025", "fc_autoencoder"]
#: The host link's line rate per board (the FT2232H's and the FT231X's fastest UART rates).
LINK_BAUD = {"icebreaker": 12_000_000, "ulx3s-85f": 3_000_000, "ulx3s-85f-8x8": 3_000_000}
KINDS = ["conv", "depthwise", "pointwise", "fc"]


def inputs(name):
    if name == "digits_cnn":
        return zoo.digits_dataset()[2][:8]
    return zoo.calibration_data(name, n=2, seed=7)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtl", action="store_true", help="also run every model on the Verilator RTL")
    parser.add_argument("--presets", nargs="+", default=["icebreaker", "ulx3s-85f", "ulx3s-85f-8x8", "sim-small"])
    args = parser.parse_args()
    rows = []
    for preset_name in args.presets:
        config = preset(preset_name)
        for name in MODELS:
            path = zoo.build(name, "qop_channel")
            model = accel.load_model(path)
            try:
                artifact = compile_model(model, config)
            except accel.DoesNotFitError as exc:
                worst = max(exc.needs.items(), key=lambda kv: kv[1][0] / max(kv[1][1], 1))
                rows.append([preset_name, name, "-", "-", "-", "-", *["-"] * (len(KINDS) + 1), "-", "-", "-", "-",
                             f"does not fit: {worst[0]} {worst[1][0]:,} > {worst[1][1]:,} bytes"])
                continue
            x = inputs(name)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            expected = session.run(None, {session.get_inputs()[0].name: x})[0]
            emu = accel.open_device("emu").load(artifact)
            exact = np.array_equal(emu.run(x), expected)
            modelled = emu.last_cycles[0]
            measured = "-"
            if args.rtl:
                t0 = time.perf_counter()
                with accel.open_device("rtl") as rtl:
                    exact &= np.array_equal(rtl.load(artifact).run(x), expected)
                    measured = f"{rtl.last_cycles[0]:,}"
                print(f"  rtl {name} on {preset_name}: {time.perf_counter() - t0:.1f} s", flush=True)
            macs = sum(layer["macs"] for layer in artifact.layers)
            peak = config.rows * config.cols
            per_kind = []
            for kind in KINDS:
                layers = [layer for layer in artifact.layers if layer.get("kind", "fc") == kind]
                kind_macs = sum(layer["macs"] for layer in layers)
                kind_cycles = sum(layer["cycles"] for layer in layers)
                per_kind.append(f"{kind_macs / (kind_cycles * peak):.1%}" if kind_cycles else "-")
            depthwise_cycles = sum(layer["cycles"] for layer in artifact.layers if layer.get("kind") == "depthwise")
            per_kind.append(f"{depthwise_cycles / modelled:.0%}" if depthwise_cycles else "-")
            streaming = ["-", "-", "-"]
            if artifact.streamed:
                ample = dataclasses.replace(config, name=f"{preset_name}-ample", imem=BufferSpec(8192),
                                            wbuf=BufferSpec(1 << 19), pbuf=BufferSpec(1 << 15))
                resident = sum(layer["cycles"] for layer in compile_model(model, ample).layers)
                baud = LINK_BAUD.get(preset_name, 3_000_000)
                nbytes = artifact.stream_bytes()
                streaming = [f"{len(artifact.segments)}, {nbytes / 1024:,.0f} KiB",
                             f"{nbytes * 10 / baud * 1e3:,.1f} ms @ {baud / 1e6:g} Mbaud",
                             f"{modelled - resident:+,} ({(modelled - resident) / resident:+.2%})"]
            rows.append([preset_name, name, f"{macs:,}", f"{modelled:,}", measured, f"{macs / (modelled * peak):.1%}",
                         *per_kind, f"{modelled / config.clock_hz * 1e3:.3f} ms @ {config.clock_hz / 1e6:g} MHz",
                         *streaming, "yes" if exact else "NO"])
            print(" | ".join(rows[-1]), flush=True)
    write_results("models", ["preset", "model", "MACs", "cycles (model)", "cycles (RTL)", "utilization",
                             *[f"util {k}" for k in KINDS], "depthwise share of cycles", "latency (compute)",
                             "streamed: segments, bytes/run",
                             "stream line time/run", "stream cycles vs resident", "= ORT"], rows,
                  notes="Per-channel QOperator models, batch 1. cycles (model): the compiler's cycle model, which the "
                        "emulator counts; cycles (RTL): the hardware's STATUS cycle counter (with --rtl). "
                        "Utilization = MACs / (cycles * rows * cols). Streaming: the run pauses while the host "
                        "writes each segment (no double buffering), so a streamed inference takes the compute "
                        "latency plus the line time (8N1, before framing); the cycles vs resident are the STREAM pauses' "
                        "cost in compute cycles (the drains before each pause, and the weight tiles that reload).")


if __name__ == "__main__":
    main()
