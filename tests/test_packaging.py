"""The one `accel` namespace works installed from a wheel, not only editable."""

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_wheel_installs_all_subpackages(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("accel-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("accel/__init__.py", "accel/cli.py", "accel/hdl/__init__.py", "accel/compiler/frontend.py",
                   "accel/sim/golden.py", "accel/boards/__init__.py"):
        assert module in names, module
    assert not any(n.startswith(("hdl/", "compiler/", "sim/", "boards/", "tests/")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import accel, accel.hdl, accel.compiler.frontend, "
             "accel.sim.golden, accel.boards; print(accel.__file__); print(accel.sim.golden.__file__)")
    out = subprocess.run([sys.executable, "-c", probe, str(target)], check=True, capture_output=True, text=True,
                         cwd=tmp_path).stdout.split()
    assert all(path.startswith(str(target)) for path in out), out


def test_editable_install_maps_the_root_folders():
    import accel.compiler
    import accel.hdl
    import accel.sim
    assert pathlib.Path(accel.hdl.__file__).parent == ROOT / "hdl"
    assert pathlib.Path(accel.compiler.__file__).parent == ROOT / "compiler"
    assert pathlib.Path(accel.sim.__file__).parent == ROOT / "sim"
    for package in (accel.hdl, accel.compiler, accel.sim):
        assert package.__doc__ and len(package.__doc__) > 80
