"""Weight streaming: models whose program, weights or parameters exceed the on-chip buffers run in segments.

The compiler splits the program into segments that each fit IMEM, WBUF and PBUF; the
program's STREAM instructions pause the run until the host has written the next segment
(accel/runtime.py). These tests check the plan, the artifact round trip, the host-link
protocol and that the emulator's results stay bit-exact with the golden model.
"""

import dataclasses

import numpy as np
import pytest

import accel
from accel import isa, zoo
from accel.artifact import Artifact
from accel.compiler import cycles
from accel.compiler.backend import compile_model, compile_program
from accel.compiler.errors import DoesNotFitError
from accel.config import BufferSpec, preset
from accel.errors import DeviceError
from accel.runtime import Paused, Resume, Run, Status, parse_reply, reply_length, request_bytes
from accel.sim.emulator import EmulatorTarget

ICEBREAKER = preset("icebreaker")
SEED = 20261128

STREAMED = [("fc_autoencoder", "qop_channel"), ("mobilenet_v1_025", "qop_channel"),
            ("resnet8", "qdq_channel"), ("ds_cnn", "qdq_channel")]


@pytest.fixture(scope="module", params=STREAMED, ids=lambda p: p[0])
def streamed(request):
    name, variant = request.param
    model = accel.load_model(zoo.build(name, variant, activation_type="uint8" if name == "resnet8" else "int8"))
    return name, model, compile_model(model, ICEBREAKER)


def test_segments_fit_the_buffers_and_cover_every_weight(streamed):
    name, model, art = streamed
    cfg = art.config
    assert art.streamed and len(art.segments) >= 2
    assert len(art.imem) <= cfg.imem.depth and len(art.wbuf) <= cfg.wbuf.depth and len(art.pbuf) <= cfg.pbuf.depth
    for seg in art.segments:
        for buf in ("imem", "wbuf", "pbuf"):
            assert getattr(seg, f"{buf}_addr") + len(getattr(seg, buf)) <= getattr(cfg, buf).depth
    # the program: every segment ends with STREAM (naming the next) or, the last, HALT
    code_streams = bool(art.segments[1].imem)
    programs = [seg.imem for seg in art.segments] if code_streams else [art.imem]
    ends = [(i, isa.decode(w)) for prog in programs for i, w in enumerate(prog)
            if isa.decode(w).opcode in (isa.Opcode.STREAM, isa.Opcode.HALT)]
    assert [int(e.count) for _, e in ends[:-1]] == list(range(1, len(art.segments)))
    assert ends[-1][1].opcode == isa.Opcode.HALT
    if not code_streams:  # the program stays in IMEM: each STREAM resumes at the next instruction
        assert all(int(e.a_addr) == i + 1 for i, e in ends[:-1])
    # every weight of the resident compile (on a config with room) is loaded once or streamed once
    roomy = dataclasses.replace(cfg, name="roomy", imem=BufferSpec(8192), wbuf=BufferSpec(1 << 19),
                                pbuf=BufferSpec(1 << 15))
    resident = compile_model(model, roomy)
    assert not resident.streamed
    base = art.segments[0].wbuf_addr  # resident weights below, segment 0's streamed weights above
    loaded = list(art.wbuf[:base]) + [w for seg in art.segments for w in seg.wbuf]
    assert sorted(loaded) == sorted(resident.wbuf)
    assert len(art.pbuf[:art.segments[0].pbuf_addr]) + sum(len(seg.pbuf) for seg in art.segments) \
        == len(resident.pbuf)
    assert art.stream_bytes() == sum(seg.nbytes(cfg) for seg in art.segments)
    total = sum(len(getattr(resident, b)) * cfg.word_bytes(b) for b in ("wbuf", "pbuf"))
    print(f"{name}: {len(art.segments)} segments, {art.stream_bytes():,} of {total:,} weight and parameter "
          f"bytes streamed per run, program {'streamed' if code_streams else 'resident'}")


def test_streamed_artifact_round_trips(streamed, tmp_path):
    _, _, art = streamed
    path = tmp_path / "m.accel"
    art.save(path)
    back = accel.artifact.load_artifact(path)
    assert back.segments == art.segments and back.stream_bytes() == art.stream_bytes()


def test_streamed_models_match_golden_on_emu(streamed):
    name, model, art = streamed
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    x = zoo.calibration_data(name, n=3, seed=int(rng.integers(1 << 16)))
    golden = accel.open_device("golden").load(model)
    emu = accel.open_device("emu").load(art)
    for i in range(3):  # runs after the first rewrite segment 0 before they start
        assert np.array_equal(golden.run(x[i:i + 1]), emu.run(x[i:i + 1]))
        first = art.stream_bytes() - art.segments[0].nbytes(art.config)  # segment 0 came with load
        assert emu.last_stream_bytes == [art.stream_bytes() if i else first]
    # the batch API streams each run, too
    batch = emu.run_batch(x)
    assert np.array_equal(batch, golden.run_batch(x))
    assert emu.last_stream_bytes == [art.stream_bytes()] * 3


def test_streaming_costs_only_drains():
    """A streamed run's compute cycles exceed the resident run's by the drains of its STREAMs at most."""
    model = accel.load_model(zoo.build("resnet8", "qop_channel"))
    art = compile_model(model, ICEBREAKER)
    roomy = dataclasses.replace(ICEBREAKER, name="roomy", wbuf=BufferSpec(1 << 17), pbuf=BufferSpec(1024))
    resident = compile_model(model, roomy)
    x = zoo.calibration_data("resnet8", n=1)
    streamed_cycles = accel.open_device("emu").load(art)
    streamed_cycles.run(x)
    plain = accel.open_device("emu").load(resident)
    plain.run(x)
    extra = streamed_cycles.last_cycles[0] - plain.last_cycles[0]
    # each STREAM drains the pipeline, then the next MATMUL starts cold (fetch, setup, first weight tile);
    # with deferred requantization the drain includes the last MATMUL's rows, requant_spacing cycles apart
    assert ICEBREAKER.deferred_requant
    per_stream = (cycles.drain_cycles(ICEBREAKER) + ICEBREAKER.acc_rows * ICEBREAKER.requant_spacing
                  + cycles.SYNC_CYCLES + cycles.FETCH_CYCLES + cycles.CONV_SETUP + cycles.weight_load_cycles(ICEBREAKER))
    assert 0 < extra <= (len(art.segments) - 1) * per_stream, extra
    assert sum(layer["cycles"] for layer in art.layers) == streamed_cycles.last_cycles[0]


def test_run_and_resume_replies():
    cfg = ICEBREAKER
    assert request_bytes(Resume(), cfg) == bytes([isa.Command.RESUME.value])
    assert reply_length(Run(), cfg) == reply_length(Resume(), cfg) == 3
    assert parse_reply(Run(), cfg, bytes([isa.ACK, 0, 0])) is None
    assert parse_reply(Resume(), cfg, bytes([isa.PAUSED, 0x34, 0x12])) == Paused(0x1234)
    with pytest.raises(DeviceError, match="no run paused"):
        parse_reply(Resume(), cfg, bytes([isa.NACK, 0, 0]))
    with pytest.raises(DeviceError, match="expected ACK"):
        parse_reply(Run(), cfg, bytes([0x00, 0, 0]))


def test_emulator_pauses_and_resumes_at_stream():
    cfg = ICEBREAKER
    target = EmulatorTarget(cfg)
    from accel.runtime import Write
    from accel.isa import Memory
    program = [isa.sync(), isa.stream(7, 3), isa.halt(), isa.halt()]
    results = target.execute([Write(Memory.IMEM, 0, tuple(program)), Run(), Status()])
    assert results[1] == Paused(7) and results[2][0] == 0b101
    with pytest.raises(DeviceError, match="RESUME with no run paused"):
        EmulatorTarget(cfg).execute([Resume()])
    assert target.execute([Resume(), Status()])[0] is None
    assert target.execute([Status()])[0][0] == 0b10


def test_a_chunk_bigger_than_the_buffer_is_refused():
    model = accel.load_model(zoo.build("fc_autoencoder", "qdq_channel"))
    small = dataclasses.replace(ICEBREAKER, name="small-wbuf", wbuf=BufferSpec(64))
    with pytest.raises(DoesNotFitError, match=r"layer '[^']+' cannot stream: column tile 0 needs 2,560 bytes of "
                                              r"wbuf, small-wbuf holds 256; use a config with a bigger wbuf"):
        compile_program(model, small)


def test_report_and_cli_name_the_streaming_cost(streamed, tmp_path):
    from accel.report import report_text
    _, _, art = streamed
    text = report_text(art)
    nbytes = art.stream_bytes()
    assert (f"streaming: {len(art.segments)} segments, {nbytes:,} bytes over the host link per run "
            f"(8N1 line time: {nbytes * 10 / 3e6 * 1e3:,.1f} ms at 3 Mbaud") in text
