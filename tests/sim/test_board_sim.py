"""Run the digits CNN on the simulated iCEBreaker board (``board-sim``) bit-exact against onnxruntime.

``board-sim`` is the board's top-level in Verilator, UART pins and FramedLink included,
reached through the same driver code as a real board (:mod:`accel.driver`). The module
also checks the config-hash refusal and drives a few dozen injected link faults through
the UART gateware (the thousand-fault test runs on the faster stream-level ``link-sim``).
"""

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import accel
from accel import zoo
from accel.compiler.backend import compile_model
from accel.config import preset
from accel.driver import FaultInjector
from accel.errors import DeviceError, LinkError

SEED = int(os.environ.get("ACCEL_SEED", "1"))
IMAGES = 12


@pytest.fixture(scope="module")
def board(sim_cache_root, live_output):
    with live_output():
        device = accel.open_device("board-sim", board="icebreaker", cache_root=sim_cache_root, stats=True,
                                   progress=False, run_timeout=0.02)
    with device:
        yield device


@pytest.fixture(scope="module")
def digits():
    path = zoo.build("digits_cnn", "qdq_channel")
    return path, compile_model(accel.load_model(path), preset("icebreaker"))


def ort_run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[k:k + 1]})[0] for k in range(len(images))])


def test_digits_cnn_on_board_sim_is_bit_exact_with_onnxruntime(board, digits):
    path, artifact = digits
    images = zoo.digits_dataset()[2][:IMAGES]
    expected = ort_run(path, images)
    board.load(artifact)
    got = board.run(images).reshape(expected.shape)
    print(f"{int(np.sum(got == expected))} of {expected.size} outputs equal onnxruntime; per inference "
          f"{board.last_stats[0]}")
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    stats = board.last_stats[0]
    assert stats["compute_cycles"] == board.last_cycles[0] > 0
    assert stats["device_cycles"] == stats["compute_cycles"] + stats["transfer_cycles"]
    assert stats["transfer_cycles"] > 0
    # The model stays resident: a second batch needs no load.
    frames = board.client.stats.frames
    assert np.array_equal(board.run(images[:2]).reshape(expected[:2].shape), expected[:2])
    assert board.client.stats.frames - frames < 30


def test_board_sim_refuses_an_artifact_for_another_config(board, digits):
    path, _ = digits
    other = compile_model(accel.load_model(path), preset("sim-small"))
    with pytest.raises(DeviceError) as info:
        board.load(other)
    message = str(info.value)
    assert preset("sim-small").config_hash in message and preset("icebreaker").config_hash in message


def test_faults_through_the_uart_gateware_are_detected(board, digits):
    print(f"seed={SEED}")
    path, artifact = digits
    images = zoo.digits_dataset()[2][:2]
    expected = ort_run(path, images)
    board.load(artifact)
    clean = board.client.transport
    injector = FaultInjector(clean, seed=SEED, rate=0.15)
    board.client.transport = injector
    board.client.max_payload = 64
    try:
        try:
            board.load(artifact)
            got = board.run(images).reshape(expected.shape)
            assert np.array_equal(got, expected)
        except LinkError as exc:
            print(f"clear failure: {exc}")
    finally:
        board.client.transport = clean
        board.client.max_payload = 512
    print(f"{len(injector.log)} faults through the UART: {dict(injector.counts())}; "
          f"outcomes {dict(board.client.fault_outcomes)}")
    assert len(injector.log) >= 30
    assert board.client.fault_outcomes["undetected"] == 0
    assert np.array_equal(board.run(images).reshape(expected.shape), expected)


def test_cli_runs_on_board_sim_with_stats(tmp_path, sim_cache_root, digits):
    path, artifact = digits
    images = zoo.digits_dataset()[2][:2]
    np.save(tmp_path / "x.npy", images)
    art = tmp_path / "digits.accel"
    env = {**os.environ, "ACCEL_SIM_CACHE": str(sim_cache_root)}
    run = [sys.executable, "-m", "accel.cli"]
    proc = subprocess.run([*run, "compile", str(path), "--config", "icebreaker", "-o", str(art)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([*run, "run", str(art), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                           "--device", "board-sim", "--stats"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("run ")]
    assert len(lines) == 2 and all("transfer" in line and "compute" in line and "30 MHz" in line for line in lines)
    assert np.array_equal(np.load(tmp_path / "y.npy").reshape(-1, 10), ort_run(path, images).reshape(-1, 10))


@pytest.mark.parametrize("argv, message", [
    (["--device", "golden", "--stats"], "--stats applies to the board devices"),
    (["--device", "emu", "--baud", "3000000"], "--baud applies to the board devices"),
    (["--device", "serial:/dev/nonexistent-accel"], "serial:/dev/nonexistent-accel: cannot open the port"),
])
def test_cli_link_options_fail_in_one_line(tmp_path, digits, argv, message):
    path, _ = digits
    np.save(tmp_path / "x.npy", zoo.digits_dataset()[2][:1])
    proc = subprocess.run([sys.executable, "-m", "accel.cli", "run", str(path), "--input", str(tmp_path / "x.npy"),
                           "-o", str(tmp_path / "y.npy"), *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
