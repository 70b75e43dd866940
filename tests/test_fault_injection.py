"""Damage the host link on purpose and check that no fault ever turns into a wrong answer.

The device is the real gateware: :class:`accel.sim.board_sim.LinkedCore` (the FramedLink in
front of the core) in Verilator, through ``link-sim``. A :class:`accel.driver.FaultInjector`
flips bits, drops, duplicates and reorders bytes and truncates frames in both directions,
seeded (``ACCEL_SEED``, default 1). The digits CNN is loaded and run again and again until
at least 1,000 faults have been injected: every fault must be detected (its attempt fails
and is retried), every output must equal the fault-free one, and the device must answer
correctly afterwards. The counts by kind and outcome are printed.
"""

import os
from collections import Counter

import numpy as np
import pytest

import accel
from accel import zoo
from accel.compiler.backend import compile_model
from accel.config import preset
from accel.driver import FaultInjector
from accel.errors import LinkError
from accel.runtime import Ident
from accel.sim import verilator

SEED = int(os.environ.get("ACCEL_SEED", "1"))
FAULTS = 1000


@pytest.fixture(scope="module")
def device(pytestconfig):
    # The Verilator build cache of tests/sim (ACCEL_SIM_CACHE, else <repo>/.cache/verilator).
    cache = (verilator.default_cache_root() if os.environ.get("ACCEL_SIM_CACHE", "").strip()
             else pytestconfig.rootpath / ".cache" / "verilator")
    dev = accel.open_device("link-sim", config="icebreaker", cache_root=cache, run_timeout=0.005, progress=False)
    with dev:
        yield dev


@pytest.fixture(scope="module")
def digits():
    path = zoo.build("digits_cnn", "qdq_channel")
    return compile_model(accel.load_model(path), preset("icebreaker")), zoo.digits_dataset()[2][:4]


def test_a_thousand_faults_are_all_detected_and_never_give_a_wrong_output(device, digits):
    print(f"seed={SEED}")
    artifact, images = digits
    reference = device.load(artifact).run(images)
    clean = device.client.transport
    injector = FaultInjector(clean, seed=SEED, rate=0.1)
    device.client.transport = injector
    device.client.max_payload = 64      # more, smaller frames: more faults per simulated second
    outcomes = Counter()
    try:
        while len(injector.log) < FAULTS:
            try:
                device.load(artifact)
                outputs = device.run(images)
            except LinkError as exc:
                outcomes["LinkError"] += 1
                print(f"clear failure: {exc}")
                continue
            assert np.array_equal(outputs, reference), "a damaged link produced a wrong output"
            outcomes["correct outputs"] += 1
    finally:
        device.client.transport = clean
        device.client.max_payload = 512
    kinds = injector.counts()
    print(f"{len(injector.log)} faults injected:")
    for (direction, kind), n in sorted(kinds.items()):
        print(f"  {'host->device' if direction == 'out' else 'device->host'} {kind:9s} {n:5d}")
    print(f"fault outcomes: {dict(device.client.fault_outcomes)}; runs: {dict(outcomes)}; "
          f"link failures by symptom: {dict(device.client.stats.failures)}")
    assert len(injector.log) >= FAULTS
    assert {kind for _, kind in injector.log} == set(FaultInjector.KINDS)
    assert device.client.fault_outcomes["undetected"] == 0
    assert device.client.fault_outcomes["detected"] == len(injector.log)
    assert outcomes["correct outputs"] >= 5
    # After recovery the device answers correctly, with the model still resident.
    assert device.target.execute([Ident()])[0].config_id == preset("icebreaker").config_id()
    assert np.array_equal(device.run(images), reference)


def test_a_dead_line_ends_in_a_clear_error_and_the_device_recovers(device, digits):
    artifact, images = digits
    reference = device.load(artifact).run(images[:1])
    clean = device.client.transport
    device.client.transport = FaultInjector(clean, seed=SEED, rate=1.0, kinds=("flip",), directions=("out",))
    try:
        with pytest.raises(LinkError, match=r"no valid reply to IDENT after 9 attempts \("):
            device.target.execute([Ident()])
    finally:
        device.client.transport = clean
    assert np.array_equal(device.run(images[:1]), reference)
