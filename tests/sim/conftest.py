"""Share Verilator builds across the simulation tests and show build progress live."""

import contextlib
import os
import sys

import pytest

from accel.hdl.smoke import SmokeMac
from accel.sim import verilator
from accel.sim.rtl import RtlTarget, build_core


@pytest.fixture(scope="session")
def sim_cache_root(pytestconfig):
    """Return ``$ACCEL_SIM_CACHE``, else ``<repo>/.cache/verilator`` from any working directory."""
    if os.environ.get("ACCEL_SIM_CACHE", "").strip():
        return verilator.default_cache_root()
    return pytestconfig.rootpath / ".cache" / "verilator"


@pytest.fixture(scope="session")
def live_output(pytestconfig):
    """Return a context manager that lets output through pytest's capture (for build progress)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capture is None:
        return contextlib.nullcontext
    return capture.global_and_fixture_disabled


@pytest.fixture(scope="session")
def smoke_mac_build(sim_cache_root, live_output):
    """Build SmokeMac with Verilator once per session (a cache hit after the first run)."""
    with live_output():
        sys.stderr.write("\n")  # start progress lines on their own line in pytest's output
        return verilator.build(SmokeMac, "smoke_mac", cache_root=sim_cache_root)


@pytest.fixture(scope="session")
def open_core(sim_cache_root, live_output):
    """Return a context manager that builds the core for a config (progress shown) and yields an RtlTarget on it."""
    @contextlib.contextmanager
    def open_core(config):
        with live_output():
            build_core(config, sim_cache_root)
        with RtlTarget(config, cache_root=sim_cache_root, timeout=300) as target:
            yield target
    return open_core
