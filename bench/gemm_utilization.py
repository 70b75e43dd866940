"""Measure RTL cycles against the ideal MACs / (R * C) on int8 GEMMs from 64 to 512 per side.

Each GEMM ``[M, K] @ [K, N]`` is a QLinearMatMul ONNX model, compiled by accel for a
4x4 and an 8x8 array (``sim-small``'s shape with buffers big enough for 512-sided GEMMs),
loaded on the ``rtl`` device (Verilator) and run once. The table gives the cycles the
hardware counted from RUN to HALT (STATUS), the ideal ``M*K*N / (R*C)``, utilization,
the compiler's modelled cycles (they must agree), the outputs checked against
onnxruntime, and the simulation speed: compute cycles per wall-clock second, and host-link
bytes per second while writing the input.

Run: ``python bench/gemm_utilization.py [--quick]``. Writes bench/results/gemm_utilization.{json,md}.
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
from accel.config import BufferSpec, HardwareConfig  # noqa: E402
from accel.runtime import Run, Status, Write, pack_rows  # noqa: E402
from accel.isa import Memory  # noqa: E402
from benchlib import write_results  # noqa: E402


def bench_config(n: int) -> HardwareConfig:
    return HardwareConfig(name=f"bench-{n}x{n}", rows=n, cols=n, imem=BufferSpec(1024),
                          abuf=BufferSpec(262144 // n * 4), wbuf=BufferSpec(262144 // n * 4),
                          accbuf=BufferSpec(512), pbuf=BufferSpec(1024))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 64 and 128 cubes")
    args = parser.parse_args()
    sizes = [(64, 64, 64), (128, 128, 128), (256, 256, 256), (512, 512, 512), (512, 64, 512), (64, 512, 64)]
    if args.quick:
        sizes = sizes[:2]
    rows = []
    for array in (4, 8):
        config = bench_config(array)
        with accel.open_device("rtl", config=config) as device:
            for m, k, n in sizes:
                model_proto = zoo.qlinear_matmul_chain([[m, k], [k, n]], seed=m + k + n)
                artifact = compile_model(accel.load_model(model_proto), config)
                x = np.random.default_rng(m * k).integers(-128, 128, (m, k)).astype(np.int8)
                device.load(artifact)
                placement = artifact.inputs[0]
                words = pack_rows(x.reshape(placement.rows, placement.features), config)
                t0 = time.perf_counter()
                device.target.execute([Write(Memory.ABUF, placement.addr, tuple(words))])
                t_write = time.perf_counter() - t0
                write_bytes = len(words) * config.word_bytes("abuf")
                t1 = time.perf_counter()
                _, (status, cycles) = device.target.execute([Run(), Status()])
                t_run = time.perf_counter() - t1
                y = device.run(x)  # full path again, checked against onnxruntime
                session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
                exact = np.array_equal(y, session.run(None, {"x": x})[0])
                ideal = m * k * n / (array * array)
                modelled = sum(layer["cycles"] for layer in artifact.layers)
                rows.append([f"{array}x{array}", f"{m}x{k}x{n}", f"{m * k * n:,}", f"{cycles:,}", f"{ideal:,.0f}",
                             f"{ideal / cycles:.1%}", f"{modelled:,}", "yes" if exact else "NO",
                             f"{cycles / t_run / 1e3:,.0f}k", f"{write_bytes / t_write / 1e3:,.0f}k"])
                print(" | ".join(rows[-1]), flush=True)
    write_results("gemm_utilization",
                  ["array", "M x K x N", "MACs", "RTL cycles", "ideal", "utilization", "modelled", "= ORT",
                   "sim cycles/s", "link bytes/s"], rows,
                  notes="RTL cycles: STATUS cycle counter, RUN to HALT, including the pipeline drain. "
                        "ideal = MACs / (rows * cols). sim cycles/s: Verilator speed while the core computes "
                        "unattended; link bytes/s: host-link bytes per second while writing the input "
                        "(cocotb drives one byte per clock).")


if __name__ == "__main__":
    main()
