"""Implement the ``accel`` command line.

``accel inspect MODEL.onnx`` prints the canonical layer table; ``accel compile MODEL.onnx
--config PRESET -o MODEL.accel`` compiles a model into an artifact; ``accel report
MODEL.accel`` prints its per-layer cycles and utilization; ``accel run MODEL.{onnx,accel}
--input X.npy -o Y.npy --device golden|emu|rtl`` runs a model or an artifact on a device;
``accel build --board B`` builds a board's bitstream and ``accel flash --board B FILE``
programs it.
Errors in the user's input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from . import __version__
from .api import device_names, load_model, open_device
from .artifact import ArtifactError, is_artifact, load_artifact
from .config import preset, preset_names
from .errors import AccelError, BoardError, DeviceError
from .report import format_table, report_text, stream_line, summary_line

__all__ = ["main"]


def _shape(graph, name) -> str:
    t = graph.tensors[name]
    return "x".join(str(d) for d in t.shape) or "scalar"


def inspect_text(model) -> str:
    """Return the canonical layer table of ``model`` as text."""
    from .compiler.analysis import describe_quant, layer_stats

    g = model.graph
    rows, total_macs, total_params = [], 0, 0
    for i, node in enumerate(g.nodes):
        stats = layer_stats(g, node)
        total_macs += stats.macs
        total_params += stats.params
        data_inputs = [n for n in node.inputs if not g.is_constant(n)] or node.inputs[:1]
        in_shapes = ", ".join(_shape(g, n) for n in data_inputs)
        dtypes = f"{g.tensors[data_inputs[0]].dtype.name}->{g.tensors[node.outputs[0]].dtype.name}"
        extra = ""
        if node.op == "conv":
            a = node.attrs
            w = g.tensors[node.inputs[1]].shape
            extra = f"k{w[2]}x{w[3]} s{a['strides'][0]}" + (f" g{a['group']}" if a["group"] > 1 else "")
            if any(a["pads"]):
                extra += " p" + ",".join(map(str, a["pads"]))
            if a["dilations"] != (1, 1):
                extra += f" d{a['dilations'][0]}"
        elif node.op in ("maxpool", "avgpool"):
            extra = f"k{node.attrs['kernel'][0]}x{node.attrs['kernel'][1]} s{node.attrs['strides'][0]}"
        rows.append([str(i), node.name[:28], node.op, extra, in_shapes, _shape(g, node.outputs[0]), dtypes,
                     f"{stats.macs:,}" if stats.macs else "", f"{stats.params:,}" if stats.params else "",
                     describe_quant(g, node)])
    header = [f"model: {model.source}", f"graph: {g.name}"]
    for kind, specs in (("input ", model.inputs), ("output", model.outputs)):
        for spec in specs:
            dims = ["N", *map(str, spec.shape[1:])] if spec.dynamic_batch else list(map(str, spec.shape))
            header.append(f"{kind} {spec.name}: {spec.dtype.name}[{'x'.join(dims)}]")
    table = format_table(["#", "name", "op", "attrs", "input", "output", "dtype", "MACs", "params", "quantization"], rows,
                   right={0, 7, 8})
    footer = f"{len(g.nodes)} ops, {total_macs:,} MACs, {total_params:,} parameters per inference"
    return "\n".join(header) + "\n\n" + table + "\n\n" + footer


def _load_arrays(path: str, names: list[str]) -> dict[str, np.ndarray] | np.ndarray:
    if not os.path.exists(path):
        raise AccelError(f"{path}: no such input file")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise AccelError(f"{path}: not a .npy/.npz file ({exc})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        arrays = {k: data[k] for k in data.files}
        if len(names) == 1 and len(arrays) == 1 and names[0] not in arrays:
            return next(iter(arrays.values()))
        return arrays
    if len(names) != 1:
        raise AccelError(f"{path}: the model takes {len(names)} inputs {names}; pass an .npz keyed by input name")
    return data


def _save_arrays(path: str, outputs: dict[str, np.ndarray]):
    if path.endswith(".npz"):
        np.savez(path, **outputs)
    elif len(outputs) == 1:
        np.save(path, next(iter(outputs.values())))
    else:
        raise AccelError(f"{path}: the model has {len(outputs)} outputs {list(outputs)}; write an .npz")


def _is_artifact_path(path: str) -> bool:
    return path.endswith(".accel") or is_artifact(path)


def _open(name: str, **options):
    try:
        return open_device(name, **options)
    except ImportError as exc:
        raise DeviceError(f"device {name!r} is not available in this installation: {exc}") from None


def cmd_inspect(args):
    print(inspect_text(load_model(args.model)))


def cmd_compile(args):
    from .compiler.backend import compile_model
    config = preset(args.config)
    artifact = compile_model(load_model(args.model), config, batch=args.batch)
    output = args.output or os.path.splitext(args.model)[0] + ".accel"
    artifact.save(output)
    print(f"wrote {output}: {artifact.source_name} for {config.name} ({artifact.config_hash})")
    print(summary_line(artifact))
    if artifact.streamed:
        print(stream_line(artifact))


def cmd_quantize(args):
    """Quantize a float ONNX model with onnxruntime's static quantizer (MinMax calibration on the given inputs)."""
    import onnx

    from . import zoo
    from .errors import ModelFormatError
    try:
        model = onnx.load(args.model, load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise ModelFormatError(f"{args.model}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    quantized_ops = {n.op_type for n in model.graph.node if n.op_type.startswith(("QLinear", "Quantize", "Dequantize"))}
    if quantized_ops:
        raise ModelFormatError(f"{args.model}: already quantized ({', '.join(sorted(quantized_ops))}); "
                               f"`accel quantize` takes a float model")
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ModelFormatError(f"{args.model}: {len(inputs)} inputs; `accel quantize` calibrates one-input models")
    try:
        calibration = np.load(args.calibration)
    except (OSError, ValueError) as exc:
        raise AccelError(f"{args.calibration}: cannot read a .npy calibration array: {exc}") from None
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
    if (calibration.dtype != np.float32 or calibration.ndim != len(dims)
            or any(d is not None and d != n for d, n in zip(dims[1:], calibration.shape[1:]))):
        raise AccelError(f"{args.calibration}: {calibration.dtype}{list(calibration.shape)}; the calibration is float32 "
                         f"[N, {', '.join(str(d) for d in dims[1:])}] for input {inputs[0].name!r}")
    variant = f"{args.format}_{'tensor' if args.per_tensor else 'channel'}"
    output = args.output or os.path.splitext(args.model)[0] + f"_{variant}.onnx"
    try:
        zoo.quantize_onnx(args.model, output, calibration, variant, activation_type=args.activations,
                          input_name=inputs[0].name, calibration_batch=dims[0] or 16)
    except Exception as exc:  # onnxruntime's quantizer raises its own exception types
        raise AccelError(f"{args.model}: onnxruntime's quantizer failed: {str(exc).splitlines()[0]}") from None
    print(f"wrote {output}: {variant}, {args.activations} activations, int8 weights, calibrated on "
          f"{len(calibration)} inputs")


def cmd_report(args):
    print(report_text(load_artifact(args.artifact)))


def _device_for(args):
    """Return (device, input names) for ``accel run``: the model or artifact loaded on the chosen device."""
    if _is_artifact_path(args.model):
        artifact = load_artifact(args.model)
        if args.batch is not None:
            raise AccelError(f"--batch applies when compiling an .onnx model; {args.model} was compiled for batch "
                             f"{artifact.batch}")
        if args.device == "golden":
            if not artifact.source_onnx:
                raise ArtifactError(f"{args.model}: the artifact holds no source model, so the golden model cannot "
                                    f"run it")
            model = load_model(artifact.source_onnx, artifact.source_name)
            return _open("golden").load(model), [s.name for s in model.inputs]
        device = _open(args.device, **({"config": args.config} if args.config else {}), **_link_options(args))
        return device.load(artifact), [t.name for t in artifact.inputs]
    model = load_model(args.model)
    if args.device == "golden":
        return _open("golden").load(model), [s.name for s in model.inputs]
    link = _link_options(args)
    config = preset(args.config) if args.config else (None if link else preset("sim-small"))
    device = _open(args.device, config=config, batch=args.batch or 1, **link)
    return device.load(model), [s.name for s in model.inputs]


def _link_options(args) -> dict:
    """Return the options of the framed-link devices (board-sim, serial:PORT); refuse them elsewhere."""
    link = args.device == "board-sim" or args.device.startswith("serial:")
    given = {"--baud": args.baud, "--board": args.board}
    if not link:
        wrong = [flag for flag, value in given.items() if value is not None]
        if wrong or args.stats and args.device == "golden":
            flag = wrong[0] if wrong else "--stats"
            raise AccelError(f"{flag} applies to the board devices (board-sim, serial:PORT), not {args.device!r}")
        return {}
    options = {"stats": args.stats}
    if args.baud is not None:
        options["baud"] = args.baud
    if args.device == "board-sim":
        options["board"] = args.board or "icebreaker"
    elif args.board is not None:
        raise AccelError(f"--board applies to board-sim; {args.device} is a real board")
    return options


def _print_stats(device) -> None:
    """Print transfer vs compute time per inference (device cycles) after ``accel run --stats``."""
    clock = device.config.clock_hz
    stats = getattr(device, "last_stats", None)
    if not stats:   # a simulated core: compute cycles only, no link
        for k, cycles in enumerate(device.last_cycles):
            print(f"run {k}: compute {cycles:,} cycles ({cycles / clock * 1e6:,.1f} us at {clock / 1e6:g} MHz)")
        return
    for k, s in enumerate(stats):
        total = s["device_cycles"]
        print(f"run {k}: transfer {s['transfer_cycles']:,} cycles ({s['transfer_cycles'] / clock * 1e6:,.1f} us), "
              f"compute {s['compute_cycles']:,} cycles ({s['compute_cycles'] / clock * 1e6:,.1f} us), "
              f"total {total:,} cycles at {clock / 1e6:g} MHz; transfer {s['transfer_cycles'] / total:.0%}")


def cmd_run(args):
    _link_options(args)  # refuse link options for other devices before loading anything
    device, names = _device_for(args)
    with device:
        x = _load_arrays(args.input, names)
        outputs = device.run_dict(x)
        if args.stats:
            _print_stats(device)
    _save_arrays(args.output, outputs)
    for name, value in outputs.items():
        print(f"{name}: {value.dtype.name}{list(value.shape)} -> {args.output}")


def cmd_build(args):
    from .build import build_board
    from .boards import get_board
    board = get_board(args.board)
    result = build_board(board, args.config or board.name, args.output or os.path.join("build", board.name),
                         seed=args.seed, seeds=args.seeds, baud=args.baud, router=args.router,
                         pnr_opts=args.nextpnr_opt)
    print(result.summary_line())
    if result.bitstream is not None:
        print(f"bitstream: {result.bitstream}")
    print(f"report: {result.out_dir / 'report.md'}")
    if not result.passed:
        raise BoardError(result.summary_line())


def cmd_flash(args):
    from .flash import flash
    command = flash(args.board, args.bitstream, dry_run=args.dry_run)
    print(" ".join(command) if args.dry_run else f"programmed {args.board} with {args.bitstream}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accel", description="Compile and run quantized ONNX models on accel.")
    parser.add_argument("--version", action="version", version=f"accel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="print the canonical layer table of a model")
    p.add_argument("model", help="quantized ONNX model")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("quantize", help="quantize a float ONNX model with onnxruntime (static, MinMax calibration)")
    p.add_argument("model", help="float ONNX model (e.g. from torch.onnx.export)")
    p.add_argument("--calibration", required=True, help=".npy float32 batch of representative inputs [N, ...]")
    p.add_argument("--format", choices=["qdq", "qop"], default="qdq", help="QDQ (default) or QOperator")
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weight scales (default per channel)")
    p.add_argument("--activations", choices=["int8", "uint8"], default="int8", help="activation type")
    p.add_argument("--output", "-o", help="quantized model to write (default: MODEL_<format>_<scales>.onnx)")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("compile", help="compile a model for a hardware config into an .accel artifact")
    p.add_argument("model", help="quantized ONNX model")
    p.add_argument("--config", "-c", default="sim-small", help=f"hardware config: {', '.join(preset_names())} "
                   "(default sim-small)")
    p.add_argument("--batch", "-b", type=int, default=1, help="inferences per run (default 1)")
    p.add_argument("--output", "-o", help="artifact to write (default: MODEL with .accel)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("report", help="print an artifact's per-layer cycles and utilization")
    p.add_argument("artifact", help=".accel artifact")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("run", help="run a model or artifact on a device")
    p.add_argument("model", help="quantized ONNX model or .accel artifact")
    p.add_argument("--input", "-i", required=True, help=".npy (one input) or .npz keyed by input name")
    p.add_argument("--output", "-o", required=True, help=".npy (one output) or .npz keyed by output name")
    p.add_argument("--device", "-d", default="golden", help=f"engine: {', '.join(device_names())} (default golden)")
    p.add_argument("--config", "-c", help="hardware config to compile an .onnx for (emu/rtl; default sim-small), or "
                   "to require of an artifact")
    p.add_argument("--batch", "-b", type=int, help="inferences per run when compiling an .onnx (default 1)")
    p.add_argument("--board", help="board-sim: the simulated board (icebreaker, ulx3s-85f; default icebreaker)")
    p.add_argument("--baud", type=int, help="serial:PORT / board-sim: UART line rate (default: the board's)")
    p.add_argument("--stats", action="store_true", help="print transfer vs compute time (cycles) per inference")
    p.set_defaults(func=cmd_run)

    from .boards import board_names
    p = sub.add_parser("build", help="build a board's bitstream (Yosys, nextpnr, icepack/ecppack from YoWASP)")
    p.add_argument("--board", required=True, help=f"board: {', '.join(board_names())}")
    p.add_argument("--config", "-c", help="hardware config (default: the preset named like the board)")
    p.add_argument("--output", "-o", help="build directory (default build/BOARD)")
    p.add_argument("--seed", type=int, default=1, help="first nextpnr placement seed (default 1)")
    p.add_argument("--seeds", type=int, default=1, help="seeds to try; reports min/median/max fmax (default 1)")
    p.add_argument("--baud", type=int, help="UART baud rate (default: the board's, 3000000)")
    p.add_argument("--router", choices=("router1", "router2"), help="nextpnr router (default: nextpnr's, router1)")
    p.add_argument("--nextpnr-opt", action="append", default=[], metavar="ARG",
                   help="one more nextpnr argument, as given; repeat for more "
                        "(--nextpnr-opt=--placer-heap-beta --nextpnr-opt=0.8)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("flash", help="program a board with a bitstream (openFPGALoader, or iceprog)")
    p.add_argument("--board", required=True, help=f"board: {', '.join(board_names())}")
    p.add_argument("bitstream", help="bitstream from accel build (.bin for icebreaker, .bit for ulx3s-85f)")
    p.add_argument("--dry-run", action="store_true", help="print the programming command instead of running it")
    p.set_defaults(func=cmd_flash)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except AccelError as exc:
        print(f"accel: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable output path and the like
        print(f"accel: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accel: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
