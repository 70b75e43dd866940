"""accel: compile quantized ONNX models for an open systolic-array accelerator, bit-exact with onnxruntime.

Public API::

    model = accel.load_model("model_int8.onnx")   # QDQ or QOperator, int8/uint8
    dev = accel.open_device("golden")              # later: "emu", "rtl", "board-sim", "serial:PORT"
    y = dev.load(model).run(x)

Subpackages: :mod:`accel.compiler` (front end, canonical graph, passes), :mod:`accel.sim`
(golden model and simulators), :mod:`accel.hdl` (Amaranth hardware), :mod:`accel.boards`
(board top-levels).
"""

from .api import Device, Model, TensorSpec, device_names, load_model, open_device, register_device
from .errors import (AccelError, DeviceError, FloatModelError, InputMismatchError, ModelFormatError, ShapeError,
                     UnsupportedAttributeError, UnsupportedOpError)

__version__ = "0.1.0"

from .artifact import Artifact, ArtifactError, load_artifact  # noqa: E402
from .compiler.errors import CompileError, DoesNotFitError  # noqa: E402
from .config import HardwareConfig, preset  # noqa: E402

__all__ = [
    "load_model", "open_device", "register_device", "device_names", "Model", "Device", "TensorSpec",
    "AccelError", "ModelFormatError", "FloatModelError", "UnsupportedOpError", "UnsupportedAttributeError",
    "ShapeError", "InputMismatchError", "DeviceError", "CompileError", "DoesNotFitError", "ArtifactError",
    "Artifact", "load_artifact", "HardwareConfig", "preset", "__version__",
]
