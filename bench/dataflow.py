"""Compare weight-stationary and output-stationary dataflows on the MLPerf Tiny layers (a model, not RTL).

Every conv and matmul of the four MLPerf Tiny models is lowered to GEMMs (per group:
M = output pixels, K = input channels x kernel, N = output channels). For an R x C array:

* weight-stationary (accel): accel's own cycle model, ``compiler.cycles.matmul_cycles``:
  per (column tile, row tile) ``1 + R + (k_tiles - 1) * max(M_tile, R) + M_tile``, the
  next weight tile loading while the current one streams;
* output-stationary: every R x C output tile streams its K-long operands through the
  array, ``K + max(R, C)`` cycles per tile (fill overlapped with the previous drain).

Run: ``python bench/dataflow.py``. Writes bench/results/dataflow.{json,md}.
"""

import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import accel  # noqa: E402
from accel import zoo  # noqa: E402
from accel.compiler.cycles import matmul_cycles  # noqa: E402
from accel.config import preset  # noqa: E402
from benchlib import write_results  # noqa: E402

MODELS = ["resnet8", "ds_cnn", "mobilenet_v1_025", "fc_autoencoder"]


def gemms(model):
    """Yield (kind, groups, M, K, N) for every conv/matmul of one inference."""
    g = model.graph
    for node in g.nodes:
        out = g.tensors[node.outputs[0]].shape
        if node.op == "conv":
            w = g.tensors[node.inputs[1]].shape
            groups = node.attrs["group"]
            kind = "depthwise" if groups > 1 and w[1] == 1 else ("pointwise" if w[2:] == (1, 1) else "conv")
            yield kind, groups, out[2] * out[3], w[1] * w[2] * w[3], w[0] // groups
        elif node.op == "matmul":
            k = g.tensors[node.inputs[0]].shape[-1]
            yield "fc", 1, int(math.prod(out[:-1])), k, out[-1]


def ws_cycles(config, m, k, n, acc_depth):
    r = config.rows
    cycles = 0
    for _ in range(math.ceil(n / config.cols)):
        for start in range(0, m, acc_depth):
            cycles += matmul_cycles(config, min(acc_depth, m - start), math.ceil(k / r))
    return cycles


def os_cycles(config, m, k, n):
    return math.ceil(m / config.rows) * math.ceil(n / config.cols) * (k + max(config.rows, config.cols))


def main():
    rows = []
    for config_name in ("icebreaker", "ulx3s-85f"):
        config = preset(config_name)
        for name in MODELS:
            model = accel.load_model(zoo.build(name, "qop_channel"))
            totals = {}
            for kind, groups, m, k, n in gemms(model):
                t = totals.setdefault(kind, [0, 0, 0])
                t[0] += groups * m * k * n
                t[1] += groups * ws_cycles(config, m, k, n, config.accbuf.depth)
                t[2] += groups * os_cycles(config, m, k, n)
            for kind, (macs, ws, os_) in sorted(totals.items()):
                peak = config.rows * config.cols
                rows.append([config_name, name, kind, f"{macs:,}", f"{ws:,}", f"{macs / (ws * peak):.1%}",
                             f"{os_:,}", f"{macs / (os_ * peak):.1%}", f"{os_ / ws:.2f}"])
    write_results("dataflow", ["config", "model", "layers", "MACs", "WS cycles", "WS util", "OS cycles", "OS util",
                               "OS/WS"], rows,
                  notes="Model of both dataflows with the plain GEMM lowering (depthwise as one GEMM per group); "
                        "cycle counts for the weight-stationary column are accel's compiler cycle model.")


if __name__ == "__main__":
    main()
