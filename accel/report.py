"""Summarize a compiled artifact: per-layer work, modelled cycles and utilization, memory use.

``accel report MODEL.accel`` prints :func:`report_text`. Cycles and utilization come from
the cycle model in :mod:`accel.compiler.cycles`, the same model the emulator counts with;
utilization is useful MACs over ``cycles * rows * cols``.
"""

from __future__ import annotations

from .artifact import Artifact

__all__ = ["report_text", "summary_line", "stream_line", "total_cycles", "format_table"]

#: Baud rates the streaming cost is quoted at (the ULX3S's FT231X and the iCEBreaker's FT2232H).
STREAM_BAUDS = (3_000_000, 12_000_000)


def format_table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    """Return rows as an aligned text table under ``headers``; columns in ``right`` align right."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]

    def fmt(row):
        cells = (str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()
    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)])


def total_cycles(artifact: Artifact) -> int:
    """Return the modelled cycles of one RUN (every layer's instructions, SYNCs and the HALT)."""
    return sum(layer["cycles"] for layer in artifact.layers)


def _totals(artifact: Artifact) -> tuple[int, int, float]:
    macs = sum(layer["macs"] for layer in artifact.layers)
    cycles = total_cycles(artifact)
    return macs, cycles, macs / (cycles * artifact.config.macs_per_cycle) if cycles else 0.0


def summary_line(artifact: Artifact) -> str:
    """Return one line: layers, MACs, modelled cycles, time and utilization of one RUN."""
    macs, cycles, util = _totals(artifact)
    micros = cycles / artifact.config.clock_hz * 1e6
    return (f"{len(artifact.layers)} layers, batch {artifact.batch}: {macs:,} MACs in {cycles:,} modelled cycles "
            f"({micros:,.1f} us at {artifact.config.clock_hz / 1e6:g} MHz), utilization {util:.1%}")


def stream_line(artifact: Artifact) -> str | None:
    """Return one line on weight streaming (segments, bytes per run, link time), or None when nothing streams."""
    if not artifact.streamed:
        return None
    nbytes = artifact.stream_bytes()
    times = ", ".join(f"{nbytes * 10 / baud * 1e3:,.1f} ms at {baud / 1e6:g} Mbaud" for baud in STREAM_BAUDS)
    return (f"streaming: {len(artifact.segments)} segments, {nbytes:,} bytes over the host link per run "
            f"(8N1 line time: {times}); the compute pauses while a segment loads")


def _memory_lines(artifact: Artifact) -> list[str]:
    cfg = artifact.config
    abuf = max((addr + words for layer in artifact.layers for addr, words in layer.get("abuf", {}).values()), default=0)
    # the loaded images, or the highest word a stream segment writes
    used = {buf: max([len(getattr(artifact, buf))] + [getattr(seg, f"{buf}_addr") + len(getattr(seg, buf))
                                                      for seg in artifact.segments])
            for buf in ("imem", "wbuf", "pbuf")}
    used["abuf"] = abuf
    parts = []
    for buf, words in used.items():
        depth = getattr(cfg, buf).depth
        parts.append(f"{buf} {words:,} of {depth:,} words ({words * cfg.word_bytes(buf):,} bytes, {words / depth:.0%})")
    return ["memory: " + "; ".join(parts)]


def report_text(artifact: Artifact) -> str:
    """Return the report of ``artifact``: header, per-layer table, totals and memory use."""
    cfg = artifact.config
    header = [
        f"model:    {artifact.source_name or '<unnamed>'}"
        + (f" (sha256 {artifact.source_sha256[:16]})" if artifact.source_sha256 else ""),
        f"config:   {cfg.describe()}",
        f"compiled: accel {artifact.compiler_version}, batch {artifact.batch} per run"
        + (", dynamic batch" if artifact.dynamic_batch else ""),
    ]
    for kind, tensors in (("input ", artifact.inputs), ("output", artifact.outputs)):
        for t in tensors:
            dims = ["N", *map(str, t.shape[1:])] if artifact.dynamic_batch else list(map(str, t.shape))
            header.append(f"{kind}    {t.name}: {t.dtype}[{'x'.join(dims)}] at ABUF {t.addr}, "
                          f"{t.rows} x {t.features} per inference"
                          + (", written transposed (W x H)" if t.layout == "nchw_t" else "")
                          + (f", packed {t.pack} per ABUF word (packed taps)" if t.pack > 1 else ""))
    rows = []
    for i, layer in enumerate(artifact.layers):
        tiles = layer.get("tiles", {})
        rows.append([str(i), layer["name"][:32], layer.get("kind", "fc" if layer["op"] == "matmul" else layer["op"]), f"{layer['M']:,}", f"{layer['K']:,}", f"{layer['N']:,}",
                     "x".join(str(tiles.get(k, "?")) for k in "knm"), f"{layer['macs']:,}", f"{layer['cycles']:,}",
                     f"{layer['utilization']:.1%}"])
    macs, cycles, util = _totals(artifact)
    rows.append(["", "total", "", "", "", "", "", f"{macs:,}", f"{cycles:,}", f"{util:.1%}"])
    table = format_table(["#", "layer", "kind", "M", "K", "N", "tiles kxnxm", "MACs", "cycles", "util"], rows,
                   right={0, 3, 4, 5, 7, 8, 9})
    per_second = cfg.clock_hz / cycles * artifact.batch if cycles else 0.0
    footer = [summary_line(artifact), f"throughput: {per_second:,.0f} inferences/s modelled (compute only)",
              *_memory_lines(artifact)]
    if artifact.streamed:
        footer.append(stream_line(artifact))
    return "\n".join(header) + "\n\n" + table + "\n\n" + "\n".join(footer)
