"""Compare accel's conv cycles with SCALE-Sim's on the same layers, array size and dataflow (weight-stationary).

For every standard and pointwise convolution of ResNet-8 and DS-CNN (and the first conv of
MobileNetV1-0.25), accel's cycles come from the compiled program: the per-layer cycle
model, which the emulator counts and which matches the RTL's cycle counter on everything
measured so far (``bench/gemm_utilization.py``, ``tests/sim``). SCALE-Sim 3.0.0 runs in its
own venv (``.cache/scalesim-venv``, created on first use: it needs numpy < 2) with the
same array height and width, ``Dataflow: ws``, and the padded input sizes. The table gives
both cycle counts and their ratio (accel / SCALE-Sim; below 1 means fewer cycles).

Each preset's array and requantizer are used as they are, with buffers enlarged so that
nothing streams (SCALE-Sim models one layer with ample SRAM too).

Run: ``python bench/scalesim_compare.py [--presets icebreaker ulx3s-85f]``. Writes
bench/results/scalesim_compare.{json,md}.
"""

import argparse
import dataclasses
import json
import statistics
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import accel  # noqa: E402
from accel import zoo  # noqa: E402
from accel.compiler.backend import compile_model  # noqa: E402
from accel.config import BufferSpec, preset  # noqa: E402
from benchlib import write_results  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
VENV = ROOT / ".cache" / "scalesim-venv"
MODELS = ["resnet8", "ds_cnn", "mobilenet_v1_025"]


def scalesim_python() -> pathlib.Path:
    """Return SCALE-Sim's interpreter, creating its venv (scalesim 3.0.0, numpy < 2) on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} (scalesim==3.0.0, numpy<2) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "scalesim==3.0.0", "numpy<2"], check=True)
    return python


def bench_config(preset_name):
    """Return the preset with buffers large enough for every model (SCALE-Sim is given ample SRAM too)."""
    return dataclasses.replace(preset(preset_name), name=f"{preset_name}-ample", imem=BufferSpec(4096),
                               abuf=BufferSpec(65536), wbuf=BufferSpec(131072), accbuf=BufferSpec(1024),
                               pbuf=BufferSpec(8192))


def conv_layers(model, artifact):
    """Yield (stats, SCALE-Sim topology row) for the standard and pointwise convs of a compiled model."""
    g = model.graph
    nodes = {n.name: n for n in g.nodes}
    for stats in artifact.layers:
        if stats.get("kind") not in ("conv", "pointwise"):
            continue
        node = nodes[stats["name"]]
        if node.attrs["group"] != 1 or node.attrs["dilations"] != (1, 1) or \
                node.attrs["strides"][0] != node.attrs["strides"][1]:
            continue  # SCALE-Sim models one stride and no groups or dilation
        _, c, h, w = g.tensors[node.inputs[0]].shape
        m, _, kh, kw = g.tensors[node.inputs[1]].shape
        t, l, b, r = node.attrs["pads"]
        yield stats, dict(name=stats["name"].replace(",", "_"), ifmap_h=h + t + b, ifmap_w=w + l + r, filt_h=kh,
                          filt_w=kw, channels=c, num_filters=m, stride=node.attrs["strides"][0])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["icebreaker", "ulx3s-85f"])
    args = parser.parse_args()
    python = scalesim_python()
    rows, ratios = [], {}
    for preset_name in args.presets:
        config = bench_config(preset_name)
        n = config.rows
        for name in MODELS:
            model = accel.load_model(zoo.build(name, "qop_channel"))
            artifact = compile_model(model, config)
            layers = list(conv_layers(model, artifact))
            spec = dict(rows=n, cols=n, dataflow="ws", layers=[topo for _, topo in layers])
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(spec, f)
            out = subprocess.run([str(python), str(ROOT / "bench" / "scalesim_runner.py"), f.name],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            for (stats, topo), ref in zip(layers, json.loads(out)):
                ours = stats["cycles"]
                small_c = topo["channels"] < n
                ratios.setdefault((preset_name, small_c), []).append(ours / ref["cycles"])
                rows.append([f"{preset_name} {n}x{n}", name, stats["name"], stats["kind"],
                             f"{topo['ifmap_h']}x{topo['ifmap_w']}x{topo['channels']} k{topo['filt_h']}x{topo['filt_w']}"
                             f" s{topo['stride']} -> {topo['num_filters']}",
                             f"{stats['macs']:,}", f"{ours:,}", f"{ref['cycles']:,}", f"{ours / ref['cycles']:.3f}",
                             f"{stats['utilization']:.1%}", f"{ref['utilization']:.1%}"])
                print(" | ".join(rows[-1]), flush=True)
    write_results("scalesim_compare", ["array", "model", "layer", "kind", "shape", "MACs", "accel cycles",
                                       "SCALE-Sim cycles", "ratio", "accel util", "SCALE-Sim util"], rows,
                  notes="accel cycles: the compiler's per-layer cycle model (counted by the emulator; equal to "
                        "the RTL cycle counter). SCALE-Sim 3.0.0, Dataflow ws, same array, padded ifmap.\n\n"
                        + _summary(ratios))


def _summary(ratios) -> str:
    """Return one line per preset and channel class: the ratio's min, median and max."""
    lines = ["| preset | input channels | layers | ratio min | median | max |", "|---|---|---|---|---|---|"]
    for (preset_name, small_c), values in sorted(ratios.items()):
        lines.append(f"| {preset_name} | {'< array rows' if small_c else '>= array rows'} | {len(values)} | "
                     f"{min(values):.3f} | {statistics.median(values):.3f} | {max(values):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
