"""Check ``accel build`` and ``accel flash``: report parsing, verdicts, the build-script reader, CLI errors.

The full place-and-route of both boards' presets is ``@pytest.mark.slow`` (one build per
board); everything else runs in seconds with no EDA tool.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from accel.boards import get_board
from accel.build import (BuildResult, ClockTiming, _script_commands, build_board, format_report,
                         parse_nextpnr_log_utilization, parse_nextpnr_report)
from accel.flash import flash_command

from .test_artifact import one_line_error
from .test_boards import tiny_config

ICE = get_board("icebreaker")
ULX = get_board("ulx3s-85f")

# The shape of nextpnr's --report JSON (nextpnr 0.7+): utilization per bel type, fmax per clock net.
NEXTPNR_REPORT = {
    "utilization": {
        "ICESTORM_LC": {"available": 5280, "used": 4711},
        "ICESTORM_RAM": {"available": 30, "used": 12},
        "ICESTORM_DSP": {"available": 8, "used": 8},
        "SB_IO": {"available": 96, "used": 7},
    },
    "fmax": {"clk": {"achieved": 27.41, "constraint": 30.0}},
    "critical_paths": [],
}

# nextpnr's packing summary in its log, as nextpnr-ecp5 prints it (tabs and all).
NEXTPNR_LOG = """Info: Device utilisation:
Info: \t          TRELLIS_IO:       9/    365     2%
Info: \t              DP16KD:     240/    208   115%
Info: \t          MULT18X18D:      44/    156    28%
Info: \t        TRELLIS_COMB:   91234/  83640   109%
ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'DP16KD'
"""


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "accel.cli", *map(str, args)], capture_output=True, text=True,
                          env=env)


def result_with(resources, clocks, failures=(), seeds=None):
    return BuildResult(board="icebreaker", chip=ICE.chip, config="icebreaker", target_mhz=30.0, clock="pll",
                       baud=3_000_000, divisor=10, seed=1, resources=resources, clocks=clocks,
                       fmax_by_seed=seeds or {1: min((c.fmax_mhz for c in clocks), default=None)},
                       failures=list(failures), out_dir=Path("."), bitstream=None, log=Path("build.log"),
                       seconds=12.0)


# -- parsing ---------------------------------------------------------------------------------------


def test_nextpnr_report_gives_use_against_totals_and_fmax_against_the_constraint():
    resources, clocks = parse_nextpnr_report(NEXTPNR_REPORT, ICE.resources)
    assert [(r.label, r.used, r.total) for r in resources] == [
        ("LC", 4711, 5280), ("DSP", 8, 8), ("EBR", 12, 30), ("SPRAM", 0, 4)]
    assert clocks == [ClockTiming("clk", 27.41, 30.0)]
    assert not clocks[0].meets and all(r.fits for r in resources)


def test_nextpnr_log_utilization_when_the_design_does_not_fit():
    resources = parse_nextpnr_log_utilization(NEXTPNR_LOG, ULX.resources)
    assert [(r.label, r.used, r.total, r.fits) for r in resources] == [
        ("LUT", 91234, 83640, False), ("DSP", 44, 156, True), ("EBR", 240, 208, False)]


def test_report_markdown_and_summary_lines():
    resources, clocks = parse_nextpnr_report(NEXTPNR_REPORT, ICE.resources)
    failed = result_with(resources, clocks, ["misses timing: clk fmax 27.41 MHz < target 30 MHz"],
                         seeds={1: 27.41, 2: 29.01, 3: None})
    text = format_report(failed)
    assert "| LC | ICESTORM_LC | 4,711 | 5,280 | 89% |" in text
    assert "| clk | 27.41 | 30 | NO |" in text
    assert "fmax over 2 seeds: min 27.41, median 28.21, max 29.01 MHz" in text
    assert "**FAIL**" in text
    assert failed.summary_line() == ("FAIL: icebreaker (icebreaker): misses timing: clk fmax 27.41 MHz < "
                                     "target 30 MHz")
    assert failed.to_dict()["fmax_summary"] == {"min": 27.41, "median": 28.21, "max": 29.01, "seeds": 2}
    passed = result_with(resources, [ClockTiming("clk", 31.5, 30.0)])
    assert passed.passed and "**PASS**" in format_report(passed)
    assert passed.summary_line() == ("PASS: icebreaker (icebreaker): LC 4711/5280, DSP 8/8, EBR 12/30, "
                                     "SPRAM 0/4; fmax 31.5 MHz >= 30 MHz")
    assert json.loads(json.dumps(passed.to_dict()))["passed"] is True


def test_build_script_commands_are_read_from_amaranths_script():
    script = """#!/bin/sh
set -e
: ${YOSYS:=yosys}
"$YOSYS" -q -l top.rpt top.ys
"$NEXTPNR_ICE40" --quiet --timing-allow-fail --log top.tim --up5k --package sg48 --json top.json --pcf top.pcf --asc top.asc
"$ICEPACK" top.asc top.bin
"""
    assert _script_commands(script) == [
        ("YOSYS", ["-q", "-l", "top.rpt", "top.ys"]),
        ("NEXTPNR_ICE40", ["--quiet", "--timing-allow-fail", "--log", "top.tim", "--up5k", "--package", "sg48",
                           "--json", "top.json", "--pcf", "top.pcf", "--asc", "top.asc"]),
        ("ICEPACK", ["top.asc", "top.bin"])]


# -- CLI errors ------------------------------------------------------------------------------------


def test_build_refuses_bad_input_in_one_line():
    one_line_error(cli("build", "--board", "arty"), "unknown board 'arty'; supported: icebreaker, ulx3s-85f")
    one_line_error(cli("build", "--board", "ulx3s-85f", "--baud", "6000000"),
                   "baud 6,000,000 is above the ulx3s-85f bridge's limit (FT231X: 3,000,000 baud)")
    one_line_error(cli("build", "--board", "icebreaker", "--config", "huge"), "unknown config 'huge'")
    one_line_error(cli("build", "--board", "icebreaker", "--seeds", "0"), "seeds must be an integer of at least 1")
    one_line_error(cli("build", "--board", "icebreaker", "--config", "ulx3s-85f"),
                   "config 'ulx3s-85f' is for the ulx3s-85f board, not the icebreaker")


def fake_tool(directory, name, code, output):
    path = Path(directory) / name
    path.write_text(f"#!/bin/sh\necho '{output}' >&2\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def tool_env(tmp_path, **tools):
    """Return an environment whose PATH holds only the given fake tools (and the basics)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, (code, output) in tools.items():
        fake_tool(bin_dir, name, code, output)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENFPGALOADER", "ICEPROG")}
    env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
    return env, bin_dir


def test_flash_dry_run_prints_the_exact_command(tmp_path):
    bitstream = tmp_path / "accel_icebreaker.bin"
    bitstream.write_bytes(b"\xff\x00")
    env, bin_dir = tool_env(tmp_path, openFPGALoader=(0, "ok"))
    proc = cli("flash", "--board", "icebreaker", bitstream, "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{bin_dir}/openFPGALoader -b icebreaker {bitstream}"
    bit = tmp_path / "accel_ulx3s_85f.bit"
    bit.write_bytes(b"\xff")
    proc = cli("flash", "--board", "ulx3s-85f", bit, "--dry-run", env=env)
    assert proc.stdout.strip() == f"{bin_dir}/openFPGALoader -b ulx3s {bit}"
    # Without openFPGALoader the iCEBreaker falls back to iceprog.
    other = tmp_path / "other"
    other.mkdir()
    env, bin_dir = tool_env(other, iceprog=(0, "ok"))
    proc = cli("flash", "--board", "icebreaker", bitstream, "--dry-run", env=env)
    assert proc.stdout.strip() == f"{bin_dir}/iceprog {bitstream}"


def test_flash_dry_run_without_any_tool_names_openfpgaloader(tmp_path, monkeypatch):
    bitstream = tmp_path / "accel_ulx3s_85f.bit"
    bitstream.write_bytes(b"\xff")
    env, _ = tool_env(tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    assert flash_command("ulx3s-85f", bitstream, require_tool=False) == ["openFPGALoader", "-b", "ulx3s",
                                                                         str(bitstream)]


def test_flash_errors_are_one_line(tmp_path):
    bitstream = tmp_path / "accel_icebreaker.bin"
    bitstream.write_bytes(b"\xff")
    env, _ = tool_env(tmp_path)
    one_line_error(cli("flash", "--board", "icebreaker", bitstream, env=env),
                   "no programmer found for the icebreaker: install openFPGALoader", "or iceprog")
    one_line_error(cli("flash", "--board", "ulx3s-85f", tmp_path / "accel.bit", env=env),
                   "no such bitstream; build it with `accel build --board ulx3s-85f`")
    one_line_error(cli("flash", "--board", "ulx3s-85f", bitstream, env=env), "the ulx3s-85f takes a .bit bitstream")
    one_line_error(cli("flash", "--board", "nexys", bitstream, env=env), "unknown board 'nexys'")
    env, _ = tool_env(tmp_path, openFPGALoader=(1, "JTAG init failed with: unable to open ftdi device"))
    one_line_error(cli("flash", "--board", "icebreaker", bitstream, env=env),
                   "openFPGALoader failed (exit 1; is the board connected?): JTAG init failed")
    env, _ = tool_env(tmp_path, openFPGALoader=(0, "done"))
    proc = cli("flash", "--board", "icebreaker", bitstream, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == f"programmed icebreaker with {bitstream}"


# -- full builds -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s-85f"])
def test_full_build_reports_the_chip_and_a_verdict(board, tmp_path):
    """Build a 2x2 config end to end with the real tools; the report, the verdict and the bitstream must agree.

    The presets' own builds are in ``bench/results/build_<board>.md`` (``bench/build_report.py``).
    The 2x2 core fits the ECP5-85F with room to spare (16,743 LUT at 44.6 MHz measured), so
    that build must pass; on the UP5K today's core does not fit, which must be a FAIL with
    the numbers.
    """
    result = build_board(board, tiny_config(30_000_000), tmp_path, progress=print)
    report = json.loads((tmp_path / "report.json").read_text())
    print((tmp_path / "report.md").read_text())
    totals = {r[0]: r[3] for r in get_board(board).resources}
    assert {r["label"]: r["total"] for r in report["resources"]} == totals
    assert any(r["used"] > 0 for r in report["resources"])
    assert report["target_mhz"] == 30.0 and report["passed"] == result.passed
    if board == "ulx3s-85f":
        assert result.passed, result.summary_line()
    if result.passed:
        assert report["clocks"] and all(c["fmax_mhz"] >= c["target_mhz"] for c in report["clocks"])
        assert result.bitstream.stat().st_size > 0
    else:
        assert report["failures"] and result.summary_line().startswith("FAIL: ")


# -- the flow's orchestration, with stand-in tools -------------------------------------------------

FAKE_NEXTPNR = """#!{python}
import json, sys
args = sys.argv[1:]
def option(name):
    return args[args.index(name) + 1]
seed = int(option("--seed"))
with open(option("--log"), "w") as log:
    log.write("Info: Device utilisation:\\n")
    log.write("Info: \\t         ICESTORM_LC:  {lc:>5}/  5280    99%\\n")
    log.write("Info: \\t        ICESTORM_RAM:     4/    30    13%\\n")
if {lc} > 5280 or seed == 3:
    print("ERROR: Unable to place cell", file=sys.stderr)
    sys.exit(1)
report = {{"utilization": {{"ICESTORM_LC": {{"available": 5280, "used": {lc}}},
                          "ICESTORM_RAM": {{"available": 30, "used": 4}}}},
          "fmax": {{"clk": {{"achieved": 20.0 + seed, "constraint": 30.0}}}}}}
with open(option("--report"), "w") as f:
    json.dump(report, f)
with open(option("--asc"), "w") as f:
    f.write(f"placed with seed {{seed}}")
"""


def stand_in_tools(tmp_path, monkeypatch, lc, yosys_fails=False):
    """Point YOSYS, NEXTPNR_ICE40 and ICEPACK at stand-ins: nextpnr reports fmax 20 + seed MHz, fails seed 3."""
    bin_dir = tmp_path / f"tools{lc}"
    bin_dir.mkdir()
    yosys = ("#!/bin/sh\necho \"ERROR: Assert \\`x' failed in rtlil.cc:1.\" > accel_icebreaker.rpt\nexit 1\n"
             if yosys_fails else "#!/bin/sh\necho synthesized\n")
    tools = {"YOSYS": yosys,
             "NEXTPNR_ICE40": FAKE_NEXTPNR.format(python=sys.executable, lc=lc),
             "ICEPACK": "#!/bin/sh\ncp \"$1\" \"$2\"\n"}
    for variable, text in tools.items():
        path = bin_dir / variable.lower()
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv(variable, str(path))


def test_seed_sweep_packs_the_fastest_seed_and_reports_the_spread(tmp_path, monkeypatch):
    stand_in_tools(tmp_path, monkeypatch, lc=4000)
    lines = []
    result = build_board("icebreaker", tiny_config(), tmp_path / "out", seed=1, seeds=3, progress=lines.append)
    assert result.fmax_by_seed == {1: 21.0, 2: 22.0, 3: None}
    assert result.seed == 2 and result.bitstream.read_text() == "placed with seed 2"
    assert result.failures == ["misses timing: clk fmax 22.00 MHz < target 30 MHz"]
    assert [(r.label, r.used) for r in result.resources] == [("LC", 4000), ("DSP", 0), ("EBR", 4), ("SPRAM", 0)]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["fmax_summary"] == {"min": 21.0, "median": 21.5, "max": 22.0, "seeds": 2}
    assert any("place and route (nextpnr-ice40), seed 3: FAILED (exit 1)" in line for line in lines)
    assert "$ " in (tmp_path / "out" / "build.log").read_text()


@pytest.mark.parametrize("how", ["api", "cli"])
def test_router_and_more_nextpnr_options_reach_the_command(tmp_path, monkeypatch, how):
    stand_in_tools(tmp_path, monkeypatch, lc=4000)
    if how == "api":
        build_board("icebreaker", tiny_config(), tmp_path / "out", router="router2",
                    pnr_opts=["--placer-heap-beta", "0.8"], progress=lambda line: None)
    else:
        from accel.cli import main
        assert main(["build", "--board", "icebreaker", "-o", str(tmp_path / "out"), "--router", "router2",
                     "--nextpnr-opt=--placer-heap-beta", "--nextpnr-opt=0.8"]) == 2  # builds, misses timing
    commands = [line for line in (tmp_path / "out" / "build.log").read_text().splitlines()
                if line.startswith("$ ") and "/nextpnr_ice40 " in line]
    assert commands and all("--router router2" in c and "--placer-heap-beta 0.8" in c for c in commands)


def test_a_design_that_does_not_fit_fails_with_the_numbers(tmp_path, monkeypatch):
    stand_in_tools(tmp_path, monkeypatch, lc=9000)
    result = build_board("icebreaker", tiny_config(), tmp_path / "out", seeds=2, progress=lambda line: None)
    assert not result.passed and result.bitstream is None
    assert result.failures == ["does not fit: LC 9,000/5,280 (170%)"]
    assert result.fmax_by_seed == {1: None}  # a design that does not fit is not placed again
    assert "does not fit: LC 9,000/5,280 (170%)" in (tmp_path / "out" / "report.md").read_text()


def test_a_synthesis_crash_is_a_failed_build_with_the_tools_error(tmp_path, monkeypatch):
    stand_in_tools(tmp_path, monkeypatch, lc=4000, yosys_fails=True)
    result = build_board("icebreaker", tiny_config(), tmp_path / "out", progress=lambda line: None)
    assert result.failures == ["synthesis failed: ERROR: Assert `x' failed in rtlil.cc:1."]
    assert result.fmax_by_seed == {} and result.bitstream is None
    assert "| (not synthesized) |" in (tmp_path / "out" / "report.md").read_text()
