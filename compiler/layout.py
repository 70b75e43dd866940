"""Lay out matrices in the accelerator's memories exactly as ``docs/isa.md`` specifies.

The compiler builds the WBUF and PBUF images with these functions and the emulator reads
and writes memory words with them, so both sides share one definition of every layout:

* :func:`pack_words` / :func:`unpack_words`: a matrix of small integers <-> memory words
  (element ``c`` of a word at bits ``[c*bits, (c+1)*bits)``), vectorized with NumPy;
* :func:`weight_tiles`: ``W'[K, N]`` -> the WBUF rows of every (column tile, K tile);
* :func:`param_words` / :func:`unpack_param_words`: per-channel bias and multiplier <-> PBUF.
"""

from __future__ import annotations

import numpy as np
from amaranth.lib import data

from .. import numerics
from ..isa import PARAM_BITS, ParamWord, param_word

__all__ = ["chunks", "pack_words", "unpack_words", "weight_tiles", "param_words", "unpack_param_words",
           "wrap_signed"]


def chunks(size: int, width: int) -> int:
    """Return how many ``width``-wide chunks cover ``size`` elements (``ceil(size / width)``)."""
    return -(-int(size) // int(width))


def wrap_signed(values, bits: int) -> np.ndarray:
    """Return int64 ``values`` wrapped to ``bits``-bit two's complement."""
    values = np.asarray(values, np.int64)
    half = np.int64(1) << (bits - 1)
    return ((values + half) & ((np.int64(1) << bits) - 1)) - half


def pack_words(values, bits: int) -> list[int]:
    """Pack each row of an integer matrix ``[n, count]`` into one word, ``bits`` per element, element 0 lowest."""
    values = np.asarray(values, np.int64)
    n, count = values.shape
    if bits == 8:
        raw = (values & 0xFF).astype(np.uint8)
    else:
        fields = (values & ((1 << bits) - 1))[..., None] >> np.arange(bits, dtype=np.int64)
        raw = np.packbits((fields & 1).astype(np.uint8).reshape(n, count * bits), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in raw]


def unpack_words(words, count: int, bits: int, signed: bool) -> np.ndarray:
    """Unpack words into an int64 matrix ``[len(words), count]`` of ``bits``-bit elements (inverse of :func:`pack_words`)."""
    nbytes = chunks(count * bits, 8)
    mask = (1 << (8 * nbytes)) - 1
    raw = np.frombuffer(b"".join((int(w) & mask).to_bytes(nbytes, "little") for w in words), np.uint8)
    raw = raw.reshape(len(words), nbytes)
    if bits == 8:
        values = raw.astype(np.int64)
    else:
        fields = np.unpackbits(raw, axis=1, bitorder="little")[:, :count * bits].reshape(len(words), count, bits)
        values = (fields.astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(axis=2)
    if signed:
        values = np.where(values >> (bits - 1) != 0, values - (1 << bits), values)
    return values


def weight_tiles(w: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Return the WBUF rows of ``w[K, N]``: column tile ``nt``, K tile ``kt``, row ``r`` at index ``(nt*k_tiles + kt)*rows + r``.

    Each WBUF row holds ``w[kt*rows + r, nt*cols : nt*cols + cols]``; entries past K or N are
    zero, so padded input bytes and padded output channels contribute nothing.
    """
    k, n = w.shape
    k_tiles, n_tiles = chunks(k, rows), chunks(n, cols)
    padded = np.zeros((k_tiles * rows, n_tiles * cols), np.int64)
    padded[:k, :n] = w
    return padded.reshape(k_tiles, rows, n_tiles, cols).transpose(2, 0, 1, 3).reshape(-1, cols)


def param_words(bias: np.ndarray, multiplier: np.ndarray, channels: int) -> list[int]:
    """Return ``channels`` PBUF words: int32 ``bias`` and float32 ``multiplier`` per channel, padded with bias 0 and multiplier 1."""
    mantissa, exponent = numerics.decompose_multiplier(np.asarray(multiplier, np.float32))
    words = [param_word(int(b), int(m), int(e)) for b, m, e in zip(wrap_signed(bias, 32), mantissa, exponent)]
    pad_mantissa, pad_exponent = numerics.decompose_multiplier(np.float32(1.0))
    return words + [param_word(0, int(pad_mantissa), int(pad_exponent))] * (channels - len(words))


def unpack_param_words(words) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(bias, mantissa, exponent)`` int64 arrays of PBUF words, read through the fields of ``isa.ParamWord``."""
    raw = np.asarray([int(w) & ((1 << PARAM_BITS) - 1) for w in words], np.uint64)
    layout = data.Layout.cast(ParamWord)
    fields = []
    for name in ("bias", "mantissa", "exponent"):
        field = layout[name]
        value = ((raw >> np.uint64(field.offset)) & np.uint64((1 << field.width) - 1)).astype(np.int64)
        fields.append(wrap_signed(value, field.width) if field.shape.signed else value)
    return tuple(fields)
