"""Define the typed exceptions accel raises for bad input.

Every error accel raises on purpose derives from :class:`AccelError`, carries a one-line
message that names the file, node, op, shape or byte offset at fault and what is
supported, and maps to exit code 2 in the CLI.
"""

__all__ = [
    "AccelError",
    "ModelFormatError",
    "FloatModelError",
    "UnsupportedOpError",
    "UnsupportedAttributeError",
    "ShapeError",
    "InputMismatchError",
    "DeviceError",
    "BoardError",
    "LinkError",
]


class AccelError(Exception):
    """Report bad input to accel in one line."""


class ModelFormatError(AccelError):
    """Report a file that is not a readable ONNX model (wrong format, truncated, corrupt)."""


class FloatModelError(AccelError):
    """Report a float (unquantized) model, and say how to quantize it."""


class UnsupportedOpError(AccelError):
    """Report an op accel cannot run, naming the node, the op type and the supported ops."""


class UnsupportedAttributeError(AccelError):
    """Report an attribute value of a supported op that accel cannot run."""


class ShapeError(AccelError):
    """Report a tensor shape that cannot be resolved statically."""


class InputMismatchError(AccelError):
    """Report an input array whose name, shape or dtype does not match the model."""


class DeviceError(AccelError):
    """Report a device that does not exist or cannot run the given model."""


class BoardError(AccelError):
    """Report a bad board, baud rate or clock, a design that does not fit or meet timing, or a failed build or flash."""


class LinkError(DeviceError):
    """Report a host link that failed after bounded retries (timeouts, damaged or refused frames)."""
