"""Run compiled artifacts on hardware-like targets through one host-link vocabulary.

A *target* executes a list of host-link operations (:class:`Write`, :class:`Read`,
:class:`Run`, :class:`Status`, :class:`Ident`) and returns one result per operation. The
instruction-level emulator executes them on NumPy memory images; the RTL engine turns them
into the raw byte stream of ``docs/isa.md`` (:func:`request_bytes`, :func:`parse_reply`) and
plays it into the simulated core; the board driver sends the same bytes over a serial port.

:class:`HardwareDevice` is the :class:`accel.Device` for all of them: ``load(artifact)``
checks the config hash and writes the program, weights and parameters once; ``run(x)``
quantizes inputs on the host exactly as the model's QuantizeLinear, writes them, runs, and
reads and dequantizes the outputs.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from .api import Device, Model, TensorSpec, load_model
from .artifact import Artifact, dequantize_output, is_artifact, load_artifact, quantize_input
from .config import HW_REVISION, HardwareConfig, preset
from .errors import DeviceError
from .isa import ACK, IDENT_MAGIC, NACK, PAUSED, Command, Memory, unpack_values, pack_values

__all__ = ["Write", "Read", "Run", "Resume", "Paused", "Status", "Ident", "IdentInfo", "request_bytes", "reply_length", "parse_reply",
           "Target", "HardwareDevice", "pack_rows", "unpack_rows"]


@dataclass(frozen=True)
class Write:
    mem: Memory
    addr: int
    words: tuple


@dataclass(frozen=True)
class Read:
    mem: Memory
    addr: int
    count: int


@dataclass(frozen=True)
class Run:
    pass


@dataclass(frozen=True)
class Resume:
    """Continue a run paused at a ``STREAM`` (after the host wrote the segment it asked for)."""


@dataclass(frozen=True)
class Paused:
    """The result of a :class:`Run` or :class:`Resume` that stopped at a ``STREAM``: it waits for ``segment``.

    A run that halted returns ``None`` instead.
    """

    segment: int


@dataclass(frozen=True)
class Status:
    pass


@dataclass(frozen=True)
class Ident:
    pass


@dataclass(frozen=True)
class IdentInfo:
    config_id: int
    hw_revision: int
    rows: int
    cols: int


def _mem_words_bytes(config: HardwareConfig, mem: Memory) -> int:
    return config.word_bytes(mem.config_field)


def request_bytes(op, config: HardwareConfig) -> bytes:
    """Return the raw host-link bytes of one operation."""
    if isinstance(op, Write):
        nbytes = _mem_words_bytes(config, op.mem)
        return (struct.pack("<BBII", Command.WRITE.value, op.mem.value, op.addr, len(op.words))
                + b"".join(int(w).to_bytes(nbytes, "little") for w in op.words))
    if isinstance(op, Read):
        return struct.pack("<BBII", Command.READ.value, op.mem.value, op.addr, op.count)
    if isinstance(op, Run):
        return bytes([Command.RUN.value])
    if isinstance(op, Resume):
        return bytes([Command.RESUME.value])
    if isinstance(op, Status):
        return bytes([Command.STATUS.value])
    if isinstance(op, Ident):
        return bytes([Command.IDENT.value])
    raise TypeError(f"not a host-link operation: {op!r}")


def reply_length(op, config: HardwareConfig) -> int:
    """Return how many reply bytes one operation produces."""
    if isinstance(op, Write):
        return 1
    if isinstance(op, (Run, Resume)):
        return 3
    if isinstance(op, Read):
        return op.count * _mem_words_bytes(config, op.mem)
    if isinstance(op, Status):
        return 9
    if isinstance(op, Ident):
        return 15
    raise TypeError(f"not a host-link operation: {op!r}")


def parse_reply(op, config: HardwareConfig, data: bytes):
    """Decode one operation's reply bytes into its result (None, :class:`Paused`, words, (status, cycles) or IdentInfo)."""
    if len(data) != reply_length(op, config):
        raise DeviceError(f"{type(op).__name__}: expected {reply_length(op, config)} reply bytes, got {len(data)}")
    if isinstance(op, (Run, Resume)):
        if data[0] == PAUSED:
            return Paused(int.from_bytes(data[1:3], "little"))
        if data[0] == NACK and isinstance(op, Resume):
            raise DeviceError("RESUME: the device has no run paused at a STREAM")
    if isinstance(op, (Write, Run, Resume)):
        if data[0] != ACK:
            raise DeviceError(f"{type(op).__name__}: device answered 0x{data[0]:02x}, expected ACK 0x{ACK:02x}")
        return None
    if isinstance(op, Read):
        n = _mem_words_bytes(config, op.mem)
        return [int.from_bytes(data[i:i + n], "little") for i in range(0, len(data), n)]
    if isinstance(op, Status):
        return data[0], int.from_bytes(data[1:9], "little")
    if isinstance(op, Ident):
        if data[:4] != IDENT_MAGIC:
            raise DeviceError(f"IDENT: device answered {data[:4]!r}, expected {IDENT_MAGIC!r}")
        return IdentInfo(int.from_bytes(data[4:12], "little"), data[12], data[13], data[14])
    raise TypeError(f"not a host-link operation: {op!r}")


class Target:
    """Execute host-link operations on one accelerator instance (emulated, simulated or real)."""

    config: HardwareConfig

    def execute(self, ops: list) -> list:
        raise NotImplementedError

    def close(self):
        pass


def segment_writes(artifact: Artifact, segment: int) -> list[Write]:
    """Return the writes that load one stream segment's images (the empty ones are left out)."""
    seg = artifact.segments[segment]
    return [Write(mem, getattr(seg, f"{name}_addr"), getattr(seg, name))
            for mem, name in ((Memory.IMEM, "imem"), (Memory.WBUF, "wbuf"), (Memory.PBUF, "pbuf")) if getattr(seg, name)]


def pack_rows(values: np.ndarray, config: HardwareConfig, pack: int = 1) -> list[int]:
    """Pack an integer matrix [rows, features] into ABUF words, ``config.rows`` bytes per word, row-major.

    With ``pack > 1`` each word holds ``pack`` rows of ``config.rows / pack`` bytes (the
    features, then zeros), one row after the other (packed taps, ``TensorPlacement.pack``).
    """
    rows, features = values.shape
    if pack > 1:
        per_row = config.rows // pack
        padded = np.zeros((-(-rows // pack) * pack, per_row), np.int64)
        padded[:rows, :features] = values
        flat = padded.reshape(-1, config.rows)
        return [pack_values(flat[w], 8) for w in range(len(flat))]
    chunks = -(-features // config.rows)
    padded = np.zeros((rows, chunks * config.rows), np.int64)
    padded[:, :features] = values
    return [pack_values(padded[r, c * config.rows:(c + 1) * config.rows], 8)
            for r in range(rows) for c in range(chunks)]


def unpack_rows(words: list[int], rows: int, features: int, config: HardwareConfig, signed: bool) -> np.ndarray:
    """Unpack ABUF words (row-major, ``ceil(features/rows)`` words per row) into a [rows, features] matrix."""
    chunks = -(-features // config.rows)
    out = np.zeros((rows, chunks * config.rows), np.int64)
    for r in range(rows):
        for c in range(chunks):
            out[r, c * config.rows:(c + 1) * config.rows] = unpack_values(words[r * chunks + c], config.rows, 8, signed)
    return out[:, :features]


class HardwareDevice(Device):
    """Run compiled artifacts on a :class:`Target`, with the program resident between runs.

    ``config`` (a preset name or :class:`HardwareConfig`) fixes the hardware; simulated
    devices default to the artifact's config, real boards report theirs. ``load`` takes an
    :class:`Artifact`, a path to an ``.accel`` file, or a model (compiled on the spot for
    the device's config, ``sim-small`` by default).
    """

    name = "hardware"

    def __init__(self, config=None, batch: int = 1):
        super().__init__()
        self.config = preset(config) if isinstance(config, str) else config
        self.compile_batch = batch
        self.artifact: Artifact | None = None
        self.target: Target | None = None
        self.last_cycles: list[int] = []
        self.last_stream_bytes: list[int] = []  # segment bytes each run of the last call streamed
        self.loaded_segment = 0  # the stream segment in IMEM/WBUF/PBUF

    # -- engines provide the target ---------------------------------------------------------
    def _make_target(self, config: HardwareConfig) -> Target:
        raise NotImplementedError

    # -- loading ---------------------------------------------------------------------------
    def load(self, source) -> "HardwareDevice":
        if isinstance(source, Artifact):
            artifact = source
        elif isinstance(source, (str, os.PathLike)) and is_artifact(source):
            artifact = load_artifact(source)
        else:
            from .compiler.backend import compile_model
            model = source if isinstance(source, Model) else load_model(source)
            artifact = compile_model(model, self.config or preset("sim-small"), batch=self.compile_batch)
        if self.config is not None and artifact.config.config_id() != self.config.config_id():
            raise DeviceError(
                f"{self.name}: artifact was compiled for config {artifact.config.name!r} ({artifact.config_hash}); "
                f"this device is {self.config.name!r} ({self.config.config_hash}); recompile with "
                f"--config {self.config.name}")
        if self.target is None or self.target.config.config_id() != artifact.config.config_id():
            if self.target is not None:
                self.target.close()
            self.target = self._make_target(artifact.config)
        info = self.target.execute([Ident()])[0]
        if info.config_id != artifact.config.config_id() or info.hw_revision != HW_REVISION:
            raise DeviceError(
                f"{self.name}: the hardware reports config {info.config_id:016x} rev {info.hw_revision}; the artifact "
                f"needs {artifact.config_hash} rev {HW_REVISION}")
        self.target.execute([Write(Memory.IMEM, 0, tuple(artifact.imem)), Write(Memory.WBUF, 0, tuple(artifact.wbuf)),
                             Write(Memory.PBUF, 0, tuple(artifact.pbuf))])
        self.loaded_segment = 0
        self.artifact = artifact
        self.model = artifact  # marks the device as loaded
        return self

    def close(self):
        if self.target is not None:
            self.target.close()
            self.target = None

    # -- running ---------------------------------------------------------------------------
    def _input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(t.name, tuple(t.shape), np.dtype(t.dtype), self.artifact.dynamic_batch)
                for t in self.artifact.inputs]

    def _run_samples(self, samples: list[dict]) -> list[dict]:
        art, config = self.artifact, self.artifact.config
        results, self.last_cycles, self.last_stream_bytes = [], [], []
        for start in range(0, len(samples), art.batch):
            group = samples[start:start + art.batch]
            ops = segment_writes(art, 0) if self.loaded_segment != 0 else []
            streamed = art.segments[0].nbytes(config) if ops else 0
            self.loaded_segment = 0
            for t in art.inputs:
                rows = []
                for b in range(art.batch):
                    sample = group[b] if b < len(group) else group[0]
                    q = t.to_rows(quantize_input(t, sample[t.name]))
                    rows.append(q)
                words = pack_rows(np.concatenate(rows), config, t.pack)
                ops.append(Write(Memory.ABUF, t.addr, tuple(words)))
            ops += [Run(), Status()]
            reads = [Read(Memory.ABUF, t.addr, art.batch * t.rows * t.stride) for t in art.outputs]
            out = self.target.execute(ops + reads)
            state = out[len(ops) - 2]  # the Run's result
            if isinstance(state, Paused):  # the program streams its segments
                while isinstance(state, Paused):
                    if not 0 < state.segment < len(art.segments):
                        raise DeviceError(f"{self.name}: the program paused for stream segment {state.segment}; the "
                                          f"artifact has segments 0-{len(art.segments) - 1}")
                    self.loaded_segment = state.segment
                    streamed += art.segments[state.segment].nbytes(config)
                    state = self.target.execute(segment_writes(art, state.segment) + [Resume()])[-1]
                out = out[:len(ops) - 1] + self.target.execute([Status()] + reads)
            status, cycles = out[len(ops) - 1]
            self.last_stream_bytes.append(streamed)
            self.last_cycles.append(cycles)
            matrices = [unpack_rows(words, art.batch * t.rows, t.features, config,
                                    np.dtype(t.quant["dtype"]) == np.int8)
                        for t, words in zip(art.outputs, out[len(ops):])]
            for b in range(len(group)):
                result = {}
                for t, matrix in zip(art.outputs, matrices):
                    q = t.from_rows(matrix[b * t.rows:(b + 1) * t.rows].astype(t.quant["dtype"]))
                    result[t.name] = dequantize_output(t, q)
                results.append(result)
        return results
