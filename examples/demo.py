"""Run accel's main demo: a digits CNN from PyTorch to accel, bit-exact with onnxruntime.

Steps, as a user would do them:
1. train a small CNN on scikit-learn's digits and export it to ONNX (accel.zoo does it);
2. quantize it with onnxruntime's quantize_static (int8, QDQ, per-channel);
3. load it into accel and print the canonical layer table (`accel inspect`);
4. run all 360 held-out images on the golden model and on onnxruntime, and compare;
5. compile the CNN for the accelerator's ``icebreaker`` preset (a 4x4 array), run the same
   images on the instruction-level emulator and on the cycle-accurate RTL (Verilator), and
   compare: accuracy, agreement with onnxruntime, cycles per image, latency at 30 MHz.

Bitstreams and the board come with the next issues.
"""

import time

import numpy as np
import onnxruntime as ort

import accel
from accel import zoo
from accel.cli import inspect_text


def main():
    t0 = time.perf_counter()
    print("== 1. train, export and quantize the digits CNN (cached under .cache/zoo)")
    path = zoo.build("digits_cnn", "qdq_channel")
    print(f"   {path.name}  ({time.perf_counter() - t0:.1f} s)")

    print("\n== 2. accel inspect")
    model = accel.load_model(path)
    print("\n".join("   " + line for line in inspect_text(model).splitlines()))

    print("\n== 3. run the 360 held-out images")
    _, _, x_test, y_test = zoo.digits_dataset()
    t1 = time.perf_counter()
    golden = accel.open_device("golden").load(model).run(x_test)
    t_golden = time.perf_counter() - t1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {session.get_inputs()[0].name: x_test})[0]

    equal = int(np.sum(golden == reference))
    accuracy = float(np.mean(golden.argmax(axis=1) == y_test))
    ort_accuracy = float(np.mean(reference.argmax(axis=1) == y_test))
    rows = [
        ("device", "golden (NumPy)"),
        ("images", f"{len(x_test)}"),
        ("accuracy (accel)", f"{accuracy:.2%}"),
        ("accuracy (onnxruntime)", f"{ort_accuracy:.2%}"),
        ("output elements equal to onnxruntime", f"{equal} of {reference.size}"),
        ("golden run time", f"{t_golden:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"   {key:<{width}}  {value}")
    if equal != reference.size:
        raise SystemExit("demo: accel and onnxruntime disagree")

    print("\n== 4. the digits CNN on the accelerator: compile for the icebreaker preset, emulate, simulate the RTL")
    from accel.compiler.backend import compile_model
    from accel.config import preset
    from accel.report import report_text

    config = preset("icebreaker")
    artifact = compile_model(model, config)
    print("\n".join("   " + line for line in report_text(artifact).splitlines()))
    rows = []
    for device_name in ("emu", "rtl"):
        t1 = time.perf_counter()
        with accel.open_device(device_name) as device:
            y = device.load(artifact).run(x_test)
            cycles = device.last_cycles
        seconds = time.perf_counter() - t1
        equal = int(np.sum(y == reference))
        accuracy = float(np.mean(y.argmax(axis=1) == y_test))
        per_image = sum(cycles) / len(x_test)
        rows.append((device_name, f"{equal} of {reference.size}", f"{accuracy:.2%}", f"{per_image:,.0f}",
                     f"{per_image / config.clock_hz * 1e3:.3f} ms", f"{seconds:.1f} s"))
        if equal != reference.size:
            raise SystemExit(f"demo: {device_name} and onnxruntime disagree")
    headers = ("device", "equal to onnxruntime", "accuracy", "cycles/image", f"at {config.clock_hz / 1e6:g} MHz",
               "wall time")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        print("   " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print("\naccel computes exactly what onnxruntime computes.")


if __name__ == "__main__":
    main()
