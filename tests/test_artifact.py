"""The .accel artifact: round trip, refusal on another config, corrupt files; and the CLI compile/report/run."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import accel
from accel import zoo
from accel.artifact import Artifact, ArtifactError, load_artifact
from accel.compiler.backend import compile_model
from accel.config import preset

SEED = 777


@pytest.fixture(scope="module")
def mlp():
    path = zoo.build("mlp_37_53_19", "qop_channel")
    return path, accel.load_model(path)


@pytest.fixture(scope="module")
def artifact(mlp):
    return compile_model(mlp[1], preset("sim-small"), batch=2)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "accel.cli", *map(str, args)], capture_output=True, text=True)


def one_line_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def test_save_and_load_round_trip(artifact, tmp_path):
    path = tmp_path / "mlp.accel"
    artifact.save(path)
    loaded = load_artifact(path)
    for field in ("imem", "wbuf", "pbuf", "inputs", "outputs", "batch", "layers", "source_name", "source_sha256",
                  "compiler_version", "dynamic_batch", "source_onnx"):
        assert getattr(loaded, field) == getattr(artifact, field), field
    assert loaded.config == artifact.config and loaded.config_hash == artifact.config_hash
    x = np.random.default_rng(SEED).standard_normal((5, 37), dtype=np.float32)
    print(f"seed {SEED}")
    y = accel.open_device("emu").load(path).run(x)
    assert np.array_equal(y, accel.open_device("golden").load(accel.load_model(loaded.source_onnx)).run(x))


def test_another_config_is_refused_naming_both_hashes(artifact):
    device = accel.open_device("emu", config="icebreaker")
    with pytest.raises(accel.DeviceError) as info:
        device.load(artifact)
    message = str(info.value)
    assert artifact.config_hash in message and preset("icebreaker").config_hash in message
    assert "recompile with --config icebreaker" in message


def test_corrupt_and_truncated_files_name_byte_offsets(artifact, tmp_path):
    data = artifact.to_bytes()
    head_len = struct.unpack_from("<I", data, 12)[0]
    header = json.loads(data[16:16 + head_len])
    wbuf = header["sections"]["wbuf"]
    start = 16 + head_len + wbuf["offset"]
    end = start + wbuf["length"]

    def load(blob, name):
        path = tmp_path / name
        path.write_bytes(blob)
        return path

    flipped = bytearray(data)
    flipped[start + 5] ^= 0x40
    with pytest.raises(ArtifactError, match=rf"section 'wbuf' \(bytes {start}-{end}\) is corrupt"):
        load_artifact(load(bytes(flipped), "flipped.accel"))
    with pytest.raises(ArtifactError, match=rf"truncated at byte {start + 10}: section 'wbuf' needs bytes {start}-{end}"):
        load_artifact(load(data[:start + 10], "cut.accel"))
    with pytest.raises(ArtifactError, match=r"truncated at byte 100: the header needs bytes 16-"):
        load_artifact(load(data[:100], "short.accel"))
    with pytest.raises(ArtifactError, match=r"bytes 0-7"):
        load_artifact(load(b"NOTACCEL" + data[8:], "magic.accel"))
    with pytest.raises(ArtifactError, match=r"truncated: 5 bytes"):
        load_artifact(load(data[:5], "tiny.accel"))
    garbled = bytearray(data)
    garbled[20] = 0xFF
    with pytest.raises(ArtifactError, match=rf"corrupt header at bytes 16-{16 + head_len}"):
        load_artifact(load(bytes(garbled), "header.accel"))
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(tmp_path / "missing.accel")


# -- CLI: compile, report, run -----------------------------------------------------------------


def test_cli_compile_report_run_round_trip(mlp, tmp_path):
    path, model = mlp
    out = tmp_path / "mlp.accel"
    proc = cli("compile", path, "--config", "sim-small", "--batch", "3", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout and "modelled cycles" in proc.stdout
    art = load_artifact(out)
    assert art.batch == 3 and art.config.name == "sim-small"

    proc = cli("report", out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    total = next(line for line in lines if line.split()[:1] == ["total"])
    macs = sum(layer["macs"] for layer in art.layers)
    cycles = sum(layer["cycles"] for layer in art.layers)
    assert f"{macs:,}" in total and f"{cycles:,}" in total and f"{macs / (cycles * 16):.1%}" in total
    assert any("/0/Gemm_quant" in line and " fc " in line for line in lines)

    x = np.random.default_rng(SEED).standard_normal((7, 37), dtype=np.float32)
    print(f"seed {SEED}")
    np.save(tmp_path / "x.npy", x)
    expected = accel.open_device("golden").load(model).run(x)
    for source, device, extra in ((out, "emu", []), (out, "golden", []), (path, "emu", ["--config", "ulx3s-85f"]),
                                  (path, "emu", ["--batch", "2"])):
        y_path = tmp_path / f"y_{device}.npy"
        proc = cli("run", source, "--input", tmp_path / "x.npy", "--device", device, "-o", y_path, *extra)
        assert proc.returncode == 0, proc.stderr
        assert np.array_equal(np.load(y_path), expected), (source, device, extra)


def test_cli_errors_are_one_line(mlp, tmp_path):
    path, _ = mlp
    out = tmp_path / "mlp.accel"
    assert cli("compile", path, "-o", out).returncode == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 37), np.float32))
    run = ("run", out, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    one_line_error(cli(*run, "--device", "emu", "--config", "icebreaker"),
                   "sim-small", preset("sim-small").config_hash, preset("icebreaker").config_hash)
    one_line_error(cli(*run, "--device", "emu", "--batch", "2"), "--batch", "batch 1")
    import onnx
    from .test_cli import two_input_model
    onnx.save(two_input_model(), tmp_path / "two.onnx")
    one_line_error(cli("compile", tmp_path / "two.onnx", "-o", tmp_path / "two.accel"),
                   "one input and one output", "inputs ['a', 'b']")
    assert cli("compile", zoo.build("digits_cnn", "qdq_tensor"), "-o", tmp_path / "cnn.accel").returncode == 0
    one_line_error(cli("compile", zoo.build("fc_autoencoder", "qdq_tensor"), "--config", "icebreaker", "--batch",
                       "1000", "-o", tmp_path / "fc.accel"), "abuf 896,000 bytes, icebreaker has 65,536",
                   "or a smaller batch")
    one_line_error(cli("compile", path, "--config", "nope", "-o", tmp_path / "z.accel"), "unknown config 'nope'")
    data = out.read_bytes()
    (tmp_path / "cut.accel").write_bytes(data[:len(data) // 2])
    one_line_error(cli("report", tmp_path / "cut.accel"), "cut.accel", "truncated at byte")
    one_line_error(cli("run", tmp_path / "cut.accel", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy",
                       "--device", "emu"), "truncated at byte")
    one_line_error(cli("report", path), "not an accel artifact")
    one_line_error(cli(*run, "--device", "emu", "-o", tmp_path / "no" / "dir" / "y.npy"), "No such file")


def test_artifact_from_a_model_proto_embeds_its_source():
    from .fc_models import qdq_fc_chain
    proto = qdq_fc_chain([6, 5, 3], seed=SEED)
    art = compile_model(accel.load_model(proto), preset("sim-small"))
    assert art.source_onnx == proto.SerializeToString() and art.source_sha256
    assert isinstance(Artifact.from_bytes(art.to_bytes()), Artifact)


def test_image_layouts_store_pixel_major_and_round_trip():
    from accel.artifact import TensorPlacement
    image = np.random.default_rng(SEED).integers(-128, 128, (1, 3, 5, 7)).astype(np.int8)
    print(f"seed {SEED}")
    for layout, pixels in (("nchw", image[0].transpose(1, 2, 0)), ("nchw_t", image[0].transpose(2, 1, 0))):
        t = TensorPlacement("x", (1, 3, 5, 7), "int8", {}, 0, 35, 3, 1, layout)
        rows = t.to_rows(image)
        assert np.array_equal(rows, pixels.reshape(35, 3))  # nchw_t: column after column
        assert np.array_equal(t.from_rows(rows), image)
        assert TensorPlacement.from_dict(t.to_dict()) == t
    with pytest.raises(ArtifactError, match="tensor 'x': layout 'nhwc'; this accel reads rows, nchw, nchw_t"):
        TensorPlacement.from_dict({**t.to_dict(), "layout": "nhwc"})


def test_format_version_2_still_loads_and_others_are_refused(artifact, tmp_path):
    path = tmp_path / "mlp.accel"
    artifact.save(path)
    data = bytearray(path.read_bytes())
    for version, loads in ((2, True), (3, True), (1, False), (4, False)):
        struct.pack_into("<I", data, 8, version)
        path.write_bytes(bytes(data))
        if loads:
            assert load_artifact(path).imem == artifact.imem
        else:
            with pytest.raises(ArtifactError, match=rf"format version {version} at byte 8; this accel reads versions 2, 3"):
                load_artifact(path)
