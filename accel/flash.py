"""Program a board with a bitstream from ``accel build``: openFPGALoader, or iceprog for the iCEBreaker.

:func:`flash_command` picks the programmer: ``openFPGALoader -b <board> BITSTREAM`` when
openFPGALoader is installed (``$OPENFPGALOADER`` names another binary), else, for the
iCEBreaker only, ``iceprog BITSTREAM`` (``$ICEPROG``). openFPGALoader loads the FPGA's
SRAM (lost at power-off); iceprog writes the configuration flash. :func:`flash` runs it
and turns any failure (no tool, no board, no cable) into one :class:`BoardError` line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import BoardError

__all__ = ["flash_command", "flash"]

_TIMEOUT_SECONDS = 300


def _find(variable: str, default: str) -> str | None:
    return shutil.which(os.environ.get(variable) or default)


def flash_command(board, bitstream, *, require_tool: bool = True) -> list[str]:
    """Return the command that programs ``bitstream`` into ``board``.

    With ``require_tool=False`` (a dry run) a missing programmer is named by its plain
    executable name instead of raising.
    """
    from .boards import get_board

    board = get_board(board)
    path = Path(bitstream)
    if path.suffix != f".{board.bitstream_suffix}":
        raise BoardError(f"{path}: the {board.name} takes a .{board.bitstream_suffix} bitstream "
                         f"(from `accel build --board {board.name}`)")
    if not path.is_file():
        raise BoardError(f"{path}: no such bitstream; build it with `accel build --board {board.name}`")
    loader = _find("OPENFPGALOADER", "openFPGALoader")
    if loader is not None:
        return [loader, "-b", board.programmer_board, str(path)]
    if board.family == "ice40":
        iceprog = _find("ICEPROG", "iceprog")
        if iceprog is not None:
            return [iceprog, str(path)]
    if not require_tool:
        return ["openFPGALoader", "-b", board.programmer_board, str(path)]
    alternatives = " or iceprog (Debian: fpga-icestorm)" if board.family == "ice40" else ""
    raise BoardError(f"no programmer found for the {board.name}: install openFPGALoader (Debian: openfpgaloader)"
                     f"{alternatives}, or set $OPENFPGALOADER")


def flash(board, bitstream, *, dry_run: bool = False) -> list[str]:
    """Program ``board`` with ``bitstream`` (or only return the command when ``dry_run``); return the command."""
    command = flash_command(board, bitstream, require_tool=not dry_run)
    if dry_run:
        return command
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise BoardError(f"{Path(command[0]).name} did not finish within {_TIMEOUT_SECONDS} s") from None
    except OSError as exc:
        raise BoardError(f"{command[0]}: cannot run ({exc.strerror})") from None
    if proc.returncode != 0:
        output = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        errors = [line for line in output if "error" in line.lower() or "fail" in line.lower()]
        detail = (errors or output or ["no output"])[-1]
        raise BoardError(f"{Path(command[0]).name} failed (exit {proc.returncode}; is the board connected?): "
                         f"{detail[:200]}")
    return command
