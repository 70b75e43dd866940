"""Define accel's public Python API: models, devices and one ``run(x)`` across engines.

>>> import accel
>>> model = accel.load_model("digits_int8.onnx")
>>> dev = accel.open_device("golden")
>>> y = dev.load(model).run(x)              # x: one input, or a batch with a leading N

Every engine (``golden`` now; ``emu``, ``rtl``, ``board-sim`` and ``serial:PORT`` as the
hardware lands) is a :class:`Device`. The base class owns input checking and batching, so
each engine only implements :meth:`Device._load` and :meth:`Device._run_one`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import DeviceError, InputMismatchError

__all__ = ["Model", "TensorSpec", "Device", "load_model", "open_device", "register_device", "device_names"]


@dataclass(frozen=True)
class TensorSpec:
    """Describe one model input or output as the user sees it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dynamic_batch: bool = False


class Model:
    """Hold a model in accel's canonical quantized form, ready to load on any device."""

    def __init__(self, graph, source: str, onnx_bytes: bytes | None = None):
        self.graph = graph
        self.source = source
        # The serialized ONNX model when it was loaded from bytes or a ModelProto (a path can be re-read).
        self.onnx_bytes = onnx_bytes

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def inputs(self) -> list[TensorSpec]:
        g = self.graph
        return [TensorSpec(n, g.tensors[n].shape, g.tensors[n].dtype, n in g.dynamic_batch) for n in g.inputs]

    @property
    def outputs(self) -> list[TensorSpec]:
        g = self.graph
        batched = bool(g.dynamic_batch)
        return [TensorSpec(n, g.tensors[n].shape, g.tensors[n].dtype, batched and g.tensors[n].shape[:1] == (1,))
                for n in g.outputs]

    def __repr__(self):
        ins = ", ".join(f"{t.name}:{t.dtype}{list(t.shape)}" for t in self.inputs)
        outs = ", ".join(f"{t.name}:{t.dtype}{list(t.shape)}" for t in self.outputs)
        return f"<accel.Model {self.name!r} ({ins}) -> ({outs}), {len(self.graph.nodes)} ops>"


def load_model(source, name: str | None = None) -> Model:
    """Load a quantized ONNX model (a path, bytes or an ``onnx.ModelProto``) into accel's canonical form.

    Raises an :class:`accel.AccelError` subclass naming the file, node and op at fault when
    the model is not ONNX, is a float model, or uses something accel does not support.
    """
    from .compiler.frontend import import_model
    from .compiler.passes import canonicalize

    graph = canonicalize(import_model(source, name))
    label = source if isinstance(source, (str, os.PathLike)) else getattr(getattr(source, "graph", None), "name", "<model>")
    onnx_bytes = bytes(source) if isinstance(source, (bytes, bytearray)) else None
    if hasattr(source, "SerializeToString"):
        onnx_bytes = source.SerializeToString()
    return Model(graph, os.fspath(label) if isinstance(label, os.PathLike) else str(label), onnx_bytes)


class Device:
    """Run models on one engine through a common API.

    Subclasses implement ``_load(model)`` and ``_run_one(feeds) -> dict``, where ``feeds``
    maps input names to arrays of exactly the model's input shapes (one inference).
    """

    name = "device"

    def __init__(self):
        self.model: Model | None = None

    # -- public ------------------------------------------------------------------------
    def load(self, model) -> "Device":
        """Load ``model`` (a :class:`Model` or anything :func:`load_model` takes); return self."""
        if not isinstance(model, Model):
            model = load_model(model)
        self._load(model)
        self.model = model
        return self

    def run(self, x):
        """Run the loaded model on ``x`` and return its output(s).

        ``x`` is an array (single-input models), a list in input order, or a dict keyed by
        input name. Each array has the model input's shape (one inference) or an extra
        leading batch dimension N (N inferences); a model whose ONNX batch dimension is
        symbolic also takes N in place of that dimension. A single-output model returns an
        array, others a dict keyed by output name.
        """
        outputs = self.run_dict(x)
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        return outputs

    def run_batch(self, xs):
        """Run the loaded model on a batch; the same as :meth:`run` with a leading batch dimension."""
        return self.run(xs)

    def run_dict(self, x) -> dict[str, np.ndarray]:
        """Run like :meth:`run` but always return a dict keyed by output name."""
        if self.model is None:
            raise DeviceError(f"{self.name}: no model loaded; call .load(model) first")
        feeds = self._normalize(x)
        plan = self._batch_plan(feeds)
        if plan is None:
            return self._run_samples([feeds])[0]
        mode, n = plan
        samples = [{k: (v[i:i + 1] if mode == "dynamic" else v[i]) for k, v in feeds.items()} for i in range(n)]
        results = self._run_samples(samples)
        if mode == "dynamic":
            return {k: np.concatenate([r[k] for r in results], axis=0) for k in results[0]}
        return {k: np.stack([r[k] for r in results], axis=0) for k in results[0]}

    def close(self):
        """Release the engine's resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<accel.Device {self.name}{' with ' + self.model.name if self.model else ''}>"

    # -- for engines ---------------------------------------------------------------------
    def _load(self, model: Model):
        raise NotImplementedError

    def _run_one(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _run_samples(self, samples: list[dict]) -> list[dict]:
        """Run several single inferences; engines that batch override this."""
        return [self._run_one(feeds) for feeds in samples]

    def _input_specs(self) -> list[TensorSpec]:
        return self.model.inputs

    # -- input checking -----------------------------------------------------------------
    def _normalize(self, x) -> dict[str, np.ndarray]:
        specs = self._input_specs()
        if isinstance(x, dict):
            unknown = set(x) - {s.name for s in specs}
            if unknown:
                raise InputMismatchError(f"unknown input(s) {sorted(unknown)}; the model takes {[s.name for s in specs]}")
            missing = [s.name for s in specs if s.name not in x]
            if missing:
                raise InputMismatchError(f"missing input(s) {missing}; the model takes {[s.name for s in specs]}")
            feeds = {s.name: x[s.name] for s in specs}
        elif isinstance(x, (list, tuple)):
            if len(x) != len(specs):
                raise InputMismatchError(f"got {len(x)} inputs; the model takes {len(specs)}: {[s.name for s in specs]}")
            feeds = {s.name: v for s, v in zip(specs, x)}
        else:
            if len(specs) != 1:
                raise InputMismatchError(f"the model takes {len(specs)} inputs {[s.name for s in specs]}; pass a dict")
            feeds = {specs[0].name: x}
        for spec in specs:
            value = feeds[spec.name]
            if not isinstance(value, np.ndarray):
                raise InputMismatchError(f"input {spec.name!r} must be a numpy array, not {type(value).__name__}")
            if value.dtype != spec.dtype:
                raise InputMismatchError(
                    f"input {spec.name!r} has dtype {value.dtype}; the model takes {spec.dtype}")
        return feeds

    def _batch_plan(self, feeds):
        """Return None for one inference, or (mode, N) for a batch; raise on a shape mismatch."""
        plans = set()
        for spec in self._input_specs():
            shape = feeds[spec.name].shape
            if shape == spec.shape:
                plans.add(None)
            elif spec.dynamic_batch and shape[1:] == spec.shape[1:] and len(shape) == len(spec.shape) and shape[0] >= 1:
                plans.add(("dynamic", shape[0]))
            elif shape[1:] == spec.shape and len(shape) == len(spec.shape) + 1:
                plans.add(("stacked", shape[0]))
            else:
                batch = ", ".join(map(str, ["N", *(spec.shape[1:] if spec.dynamic_batch else spec.shape)]))
                raise InputMismatchError(f"input {spec.name!r} has shape {list(shape)}; the model takes "
                                         f"{list(spec.shape)}, or [{batch}] for a batch of N")
        if len(plans) != 1:
            raise InputMismatchError(f"inputs disagree on the batch size: {sorted(map(str, plans))}")
        return plans.pop()


_DEVICES: dict[str, type] = {}


def register_device(prefix: str, factory) -> None:
    """Register a device factory under a name (``golden``) or a prefix (``serial:``)."""
    _DEVICES[prefix] = factory


def device_names() -> list[str]:
    """Return the names of the registered devices."""
    return sorted(_DEVICES)


def open_device(name: str = "golden", **options) -> Device:
    """Open a device by name: ``golden`` (NumPy), ``emu`` (instruction-level emulator), ``rtl`` (Verilator),
    ``board-sim`` (a board top in Verilator behind its UART), ``serial:PORT`` (a board; ``baud=``).

    ``options`` go to the engine, e.g. ``config="icebreaker"`` for the hardware engines.
    """
    if name in _DEVICES:
        return _DEVICES[name](**options)
    for prefix, factory in _DEVICES.items():
        if prefix.endswith(":") and name.startswith(prefix):
            return factory(name[len(prefix):], **options)
    raise DeviceError(f"unknown device {name!r}; available: {', '.join(device_names())}")


class GoldenDevice(Device):
    """Run models on the NumPy golden model, bit-identical to onnxruntime."""

    name = "golden"

    def _load(self, model: Model):
        pass

    def _run_one(self, feeds):
        from .sim.golden import run_graph
        return run_graph(self.model.graph, feeds)


register_device("golden", GoldenDevice)


def _lazy_device(module: str, cls: str):
    def factory(*args, **options):
        import importlib
        return getattr(importlib.import_module(module), cls)(*args, **options)
    return factory


# Engines that need the hardware stack import it only when opened.
register_device("emu", _lazy_device("accel.sim.emulator", "EmulatorDevice"))
register_device("rtl", _lazy_device("accel.sim.rtl", "RtlDevice"))
# The framed host link (accel.driver): a board on a serial port, the board top in Verilator
# (UART included), and the link in front of the core without the UART (fast, for tests).
register_device("serial:", _lazy_device("accel.driver", "SerialDevice"))
register_device("board-sim", _lazy_device("accel.sim.board_sim", "BoardSimDevice"))
register_device("link-sim", _lazy_device("accel.sim.board_sim", "LinkSimDevice"))
