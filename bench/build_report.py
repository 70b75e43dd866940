"""Build each board's preset bitstream and commit the report summary to ``bench/results/build_<board>.{md,json}``.

Runs :func:`accel.build.build_board` (the same flow as ``accel build``) for each board,
then writes the build report with the git commit, date and machine on top. A design that
does not fit or misses timing is recorded as FAIL with its numbers, not skipped.

Run: ``python bench/build_report.py [--board icebreaker|ulx3s-85f ...] [--config PRESET] [--seeds N] [--clock-mhz F]
[--router router2] [--pnr-opt=--placer-heap-beta --pnr-opt=0.8 ...] [--keep DIR]``.
``--config`` builds another preset for the board (``ulx3s-85f-8x8``) into ``build_<preset>.{md,json}``;
``--clock-mhz`` builds a preset at another clock (to find the clock a board meets).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from accel.boards import board_names  # noqa: E402
from accel.build import build_board, format_report  # noqa: E402
from accel.config import preset  # noqa: E402
from benchlib import RESULTS, commit, machine  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", action="append", choices=board_names(), help="board(s) to build (default: all)")
    parser.add_argument("--seed", type=int, default=1, help="first placement seed (default 1)")
    parser.add_argument("--seeds", type=int, default=1, help="placement seeds to try (default 1)")
    parser.add_argument("--config", help="preset to build (default: the one named like the board); the results "
                                         "go to build_<config>.md/.json")
    parser.add_argument("--clock-mhz", type=float, help="build the preset at this clock instead of its own")
    parser.add_argument("--router", choices=("router1", "router2"), help="nextpnr router (default: nextpnr's)")
    parser.add_argument("--pnr-opt", action="append", default=[], metavar="ARG",
                        help="one more nextpnr argument, as given (repeat: --pnr-opt=--placer-heap-beta --pnr-opt=0.8)")
    parser.add_argument("--keep", metavar="DIR", help="build in DIR/<board> and keep the files")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for board in args.board or board_names():
            out_dir = pathlib.Path(args.keep or tmp) / board
            config = preset(args.config or board)
            if args.clock_mhz:
                config = dataclasses.replace(config, clock_hz=round(args.clock_mhz * 1e6))
            result = build_board(board, config, out_dir=out_dir, seed=args.seed, seeds=args.seeds,
                                 router=args.router, pnr_opts=args.pnr_opt)
            meta = {"commit": commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"), "machine": machine()}
            name = args.config or board
            (RESULTS / f"build_{name}.json").write_text(json.dumps({**meta, **result.to_dict()}, indent=1) + "\n")
            (RESULTS / f"build_{name}.md").write_text(
                format_report(result) + f"\ncommit {meta['commit']}, {meta['date']}, {meta['machine']['cpu']} "
                f"({meta['machine']['cores']} cores). Command: `python bench/build_report.py --board {board}"
                f"{f' --config {args.config}' if args.config else ''}"
                f"{f' --clock-mhz {args.clock_mhz:g}' if args.clock_mhz else ''}"
                f"{f' --router {args.router}' if args.router else ''}"
                f"{''.join(f' --pnr-opt={opt}' for opt in args.pnr_opt)}`.\n")
            print(result.summary_line())
            print(f"wrote bench/results/build_{name}.md and .json (commit {meta['commit']})")


if __name__ == "__main__":
    main()
