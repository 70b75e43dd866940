"""Define the ``.accel`` artifact: one file holding everything a device needs to run a model.

Layout (all integers little-endian)::

    offset 0   magic  b"ACCELART"
    offset 8   u32    format version (FORMAT_VERSION)
    offset 12  u32    header length H
    offset 16  H bytes of UTF-8 JSON header
    then       the sections the header lists: offsets count from the end of the header,
               each with its length and sha256

The header holds the hardware config and its hash, the compiler version, the source
model's name and sha256, the batch size, the input/output descriptors (ABUF placement and
quantization) and per-layer statistics. The sections hold the memory images: ``imem``
(the program), ``wbuf`` (weights) and ``pbuf`` (per-channel parameters), each as words of
``config.word_bytes(memory)`` bytes, ``stream``: the weight-streaming segments 0, 1, ...
(each an IMEM, WBUF and PBUF image, concatenated; the header's ``stream`` lists their word
counts and addresses), and ``source``: the source ONNX model's bytes, so the golden model can run the
artifact too and its sha256 can be checked.

A model whose program, weights or parameters exceed the on-chip buffers is compiled into
*segments*: ``imem``/``wbuf``/``pbuf`` are what ``load`` writes (the resident weights and
parameters, segment 0's streamed part and the program, or its first segment), and the
program's ``STREAM`` instructions pause the run until the host has written the segment
they name (``docs/isa.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from .config import HardwareConfig
from .errors import AccelError

__all__ = ["MAGIC", "FORMAT_VERSION", "ArtifactError", "TensorPlacement", "StreamSegment", "Artifact", "load_artifact",
           "is_artifact",
           "quantize_input", "dequantize_output",
           "words_to_bytes", "bytes_to_words"]

MAGIC = b"ACCELART"
FORMAT_VERSION = 3  # 3: TensorPlacement layout "nchw_t"
#: Versions this accel reads: 2 differs from 3 only in lacking the "nchw_t" layout.
READABLE_VERSIONS = (2, 3)

#: Axis order of the stored [rows, features] matrix for each image layout (``TensorPlacement.layout``).
_PIXEL_ORDER = {"nchw": (0, 2, 3, 1), "nchw_t": (0, 3, 2, 1)}
LAYOUTS = ("rows", *_PIXEL_ORDER)
SECTIONS = ("imem", "wbuf", "pbuf", "stream", "source")
IMAGES = ("imem", "wbuf", "pbuf")


class ArtifactError(AccelError):
    """Report an artifact file that is corrupt, truncated, or from another format version."""


def _json_value(value):
    """Convert the NumPy scalars and arrays found in layer statistics to JSON values."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def words_to_bytes(words, nbytes: int) -> bytes:
    """Serialize words (Python ints) to ``nbytes`` little-endian bytes each."""
    return b"".join(int(w).to_bytes(nbytes, "little") for w in words)


def bytes_to_words(data: bytes, nbytes: int) -> list[int]:
    """Deserialize little-endian words of ``nbytes`` bytes each."""
    return [int.from_bytes(data[i:i + nbytes], "little") for i in range(0, len(data), nbytes)]


@dataclass
class TensorPlacement:
    """Describe where one model input or output lives in ABUF and how it is quantized.

    One inference of the tensor has ``shape``; it is stored as a matrix of ``rows`` rows
    by ``features`` columns (row-major over ``shape``), row ``m`` of batch item ``b`` at
    ABUF word ``addr + (b * rows + m) * stride``, in chunks of ``config.rows`` bytes.
    ``dtype`` is what the user passes or gets (``float32``, or ``int8``/``uint8`` for
    integer tensors); ``quant`` (``scale``, ``zero_point``, ``dtype``, ``axis``) is how the
    host quantizes or dequantizes a float tensor, exactly as the model's QuantizeLinear /
    DequantizeLinear do. ``layout`` says how the matrix relates to ``shape``: ``"rows"``,
    row-major over ``shape``; ``"nchw"``, an image ``[1, C, H, W]`` stored pixel-major
    (``H*W`` rows of ``C`` channels), transposed by the host; ``"nchw_t"``, the same image
    with ``H`` and ``W`` swapped (``W*H`` rows, column after column: the compiler runs the
    first conv over the transposed image when its kernel packs better that way,
    ``PackInputTaps``). ``pack`` is the rows per ABUF
    word: 1, or a power of two when the compiler packs a few-channel input
    (``PackInputTaps``): then each row takes ``config.rows / pack`` bytes and the rows of
    all batch items follow each other, ``pack`` to a word.
    """

    name: str
    shape: tuple
    dtype: str
    quant: dict
    addr: int
    rows: int
    features: int
    stride: int
    layout: str = "rows"
    pack: int = 1

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ArtifactError(f"tensor {self.name!r}: layout {self.layout!r}; this accel reads {', '.join(LAYOUTS)}")

    def to_dict(self) -> dict:
        return dict(name=self.name, shape=list(self.shape), dtype=self.dtype, quant=self.quant, addr=self.addr,
                    rows=self.rows, features=self.features, stride=self.stride, layout=self.layout, pack=self.pack)

    @classmethod
    def from_dict(cls, d: dict) -> "TensorPlacement":
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d["quant"], d["addr"], d["rows"], d["features"],
                   d["stride"], d.get("layout", "rows"), d.get("pack", 1))

    def to_rows(self, values: np.ndarray) -> np.ndarray:
        """Return one inference of this tensor as the [rows, features] matrix the device stores."""
        if self.layout in _PIXEL_ORDER:
            values = values.reshape(self.shape).transpose(_PIXEL_ORDER[self.layout])
        return values.reshape(self.rows, self.features)

    def from_rows(self, matrix: np.ndarray) -> np.ndarray:
        """Return one inference of this tensor, shaped like the model's, from the device's [rows, features] matrix."""
        if self.layout in _PIXEL_ORDER:
            order = _PIXEL_ORDER[self.layout]
            stored = matrix.reshape([self.shape[axis] for axis in order])
            return stored.transpose(np.argsort(order))
        return matrix.reshape(self.shape)


@dataclass(frozen=True)
class StreamSegment:
    """Hold one weight-streaming segment: IMEM, WBUF and PBUF images and the address each is written at."""

    imem: tuple
    wbuf: tuple
    pbuf: tuple
    imem_addr: int = 0
    wbuf_addr: int = 0
    pbuf_addr: int = 0

    def words(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in IMAGES}

    def header(self) -> dict[str, int]:
        return {**self.words(), **{f"{name}_addr": getattr(self, f"{name}_addr") for name in IMAGES}}

    def nbytes(self, config: HardwareConfig) -> int:
        """Return the bytes the host link moves to load this segment (payload only)."""
        return sum(len(getattr(self, name)) * config.word_bytes(name) for name in IMAGES)


@dataclass
class Artifact:
    """Hold a compiled model: config, program, memory images, I/O placement and layer statistics."""

    config: HardwareConfig
    imem: list[int]
    wbuf: list[int]
    pbuf: list[int]
    inputs: list[TensorPlacement]
    outputs: list[TensorPlacement]
    batch: int = 1
    layers: list[dict] = field(default_factory=list)
    source_name: str = ""
    source_sha256: str = ""
    compiler_version: str = ""
    dynamic_batch: bool = False
    source_onnx: bytes = b""
    stream: list[StreamSegment] = field(default_factory=list)  # every segment, 0 first; empty when nothing streams

    @property
    def config_hash(self) -> str:
        return self.config.config_hash

    @property
    def segments(self) -> list[StreamSegment]:
        """Return the stream segments, 0 first (empty when nothing streams)."""
        return self.stream

    @property
    def streamed(self) -> bool:
        """Return whether the program streams segments during each run."""
        return bool(self.stream)

    def stream_bytes(self) -> int:
        """Return the bytes each run moves over the host link for its segments (0 when nothing streams).

        A streamed run ends with the last segment loaded, so every run writes segment 0 again.
        """
        return sum(seg.nbytes(self.config) for seg in self.stream)

    # -- writing ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        blobs = {name: words_to_bytes(getattr(self, name), self.config.word_bytes(name)) for name in IMAGES}
        blobs["stream"] = b"".join(words_to_bytes(getattr(seg, name), self.config.word_bytes(name))
                                   for seg in self.stream for name in IMAGES)
        blobs["source"] = self.source_onnx
        sections, offset = {}, 0
        for name in SECTIONS:
            sections[name] = dict(offset=offset, length=len(blobs[name]),
                                  sha256=hashlib.sha256(blobs[name]).hexdigest())
            offset += len(blobs[name])
        header = dict(
            format_version=FORMAT_VERSION, config=self.config.to_dict(), config_hash=self.config_hash,
            compiler_version=self.compiler_version, source=dict(name=self.source_name, sha256=self.source_sha256),
            batch=self.batch, dynamic_batch=self.dynamic_batch,
            inputs=[t.to_dict() for t in self.inputs], outputs=[t.to_dict() for t in self.outputs],
            layers=self.layers, sections=sections, stream=[seg.header() for seg in self.stream])
        head = json.dumps(header, sort_keys=True, default=_json_value).encode()
        return MAGIC + struct.pack("<II", FORMAT_VERSION, len(head)) + head + b"".join(blobs[n] for n in SECTIONS)

    def save(self, path) -> None:
        """Write the artifact to ``path``."""
        data = self.to_bytes()
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes, label: str = "<artifact>") -> "Artifact":
        if len(data) < 16:
            raise ArtifactError(f"{label}: truncated: {len(data)} bytes, an artifact starts with a 16-byte preamble")
        if data[:8] != MAGIC:
            raise ArtifactError(f"{label}: not an accel artifact (bytes 0-7 are {data[:8]!r}, expected {MAGIC!r})")
        version, head_len = struct.unpack_from("<II", data, 8)
        if version not in READABLE_VERSIONS:
            raise ArtifactError(f"{label}: format version {version} at byte 8; this accel reads versions "
                                f"{', '.join(map(str, READABLE_VERSIONS))}")
        if 16 + head_len > len(data):
            raise ArtifactError(f"{label}: truncated at byte {len(data)}: the header needs bytes 16-{16 + head_len}")
        try:
            header = json.loads(data[16:16 + head_len])
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{label}: corrupt header at bytes 16-{16 + head_len}: {exc}") from None
        try:
            config = HardwareConfig.from_dict(header["config"])
            sections = header["sections"]
            blobs = {}
            base = 16 + head_len
            for name in SECTIONS:
                s = sections[name]
                start, end = base + s["offset"], base + s["offset"] + s["length"]
                if end > len(data):
                    raise ArtifactError(f"{label}: truncated at byte {len(data)}: section {name!r} needs bytes "
                                        f"{start}-{end}")
                blob = data[start:end]
                if hashlib.sha256(blob).hexdigest() != s["sha256"]:
                    raise ArtifactError(f"{label}: section {name!r} (bytes {start}-{end}) is corrupt: sha256 mismatch")
                blobs[name] = blob
            if config.config_hash != header["config_hash"]:
                raise ArtifactError(f"{label}: header config hash {header['config_hash']} does not match its config "
                                    f"({config.config_hash}); the file was edited or made by another accel version")
            stream, offset = [], 0
            for counts in header["stream"]:
                images = {}
                for name in IMAGES:
                    n = counts[name] * config.word_bytes(name)
                    if offset + n > len(blobs["stream"]):
                        raise ArtifactError(f"{label}: section 'stream' is shorter than its segments in the header")
                    images[name] = tuple(bytes_to_words(blobs["stream"][offset:offset + n], config.word_bytes(name)))
                    offset += n
                stream.append(StreamSegment(**images, **{f"{name}_addr": counts[f"{name}_addr"] for name in IMAGES}))
            return cls(
                stream=stream,
                config=config,
                imem=bytes_to_words(blobs["imem"], config.word_bytes("imem")),
                wbuf=bytes_to_words(blobs["wbuf"], config.word_bytes("wbuf")),
                pbuf=bytes_to_words(blobs["pbuf"], config.word_bytes("pbuf")),
                inputs=[TensorPlacement.from_dict(t) for t in header["inputs"]],
                outputs=[TensorPlacement.from_dict(t) for t in header["outputs"]],
                source_onnx=blobs["source"],
                batch=header["batch"], layers=header["layers"], dynamic_batch=header.get("dynamic_batch", False),
                source_name=header["source"]["name"], source_sha256=header["source"]["sha256"],
                compiler_version=header["compiler_version"])
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{label}: corrupt header (bytes 16-{16 + head_len}): {type(exc).__name__}: {exc}") from None


def load_artifact(path) -> Artifact:
    """Read and verify an ``.accel`` file, raising :class:`ArtifactError` naming the byte offset at fault."""
    label = os.fspath(path)
    try:
        with open(label, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ArtifactError(f"{label}: cannot read file: {exc.strerror}") from None
    return Artifact.from_bytes(data, label)


def is_artifact(path) -> bool:
    """Return True when the file at ``path`` starts with the artifact magic."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == MAGIC
    except OSError:
        return False


def _boundary_scale_zp(placement: TensorPlacement):
    """Return the placement's scale and zero point: scalars when per-tensor, arrays per axis."""
    scale = np.asarray(placement.quant["scale"], np.float32)
    zp = np.asarray(placement.quant["zero_point"])
    return (scale if scale.size > 1 else scale[0]), (zp if zp.size > 1 else zp[0])


def quantize_input(placement: TensorPlacement, x: np.ndarray) -> np.ndarray:
    """Return one input as the integers the device stores (quantizing a float tensor like the model's QuantizeLinear)."""
    from . import numerics
    if placement.dtype != "float32":
        return x
    scale, zp = _boundary_scale_zp(placement)
    return numerics.quantize_linear(x, scale, zp, np.dtype(placement.quant["dtype"]), placement.quant.get("axis"))


def dequantize_output(placement: TensorPlacement, q_values: np.ndarray) -> np.ndarray:
    """Return one output as the user sees it (dequantizing like the model's DequantizeLinear)."""
    from . import numerics
    if placement.dtype != "float32":
        return q_values.astype(placement.dtype)
    scale, zp = _boundary_scale_zp(placement)
    return numerics.dequantize_linear(q_values, scale, zp, placement.quant.get("axis"))
