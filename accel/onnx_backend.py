"""Expose accel as an ``onnx.backend.base.Backend``, as ``onnxruntime.backend`` does.

onnx's own ``BackendTest`` suite (and any code written against the backend convention)
then runs on accel::

    import accel.onnx_backend as backend
    rep = backend.prepare(model)                 # the golden model
    rep = backend.backend_for("rtl").prepare(model)  # another engine, once it exists
    outputs = rep.run([x, ...])

onnx's node tests pass weights, scales and zero points as graph *inputs*, while accel
compiles them as constants. The representation therefore binds every input that only
feeds parameter slots (scale, zero point, weight, bias, shape) to the values given at
``run`` time, compiles that model once per distinct set of parameter values, and feeds the
remaining data inputs to the device.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep, namedtupledict

from .api import load_model, open_device

__all__ = ["AccelBackend", "AccelBackendRep", "backend_for", "prepare", "run_model", "run_node",
           "supports_device", "is_compatible"]

# Input positions that hold parameters rather than activations, per op type.
_PARAM_SLOTS = {
    "QuantizeLinear": {1, 2},
    "DequantizeLinear": {1, 2},
    "QLinearConv": set(range(1, 9)),
    "QLinearMatMul": set(range(1, 8)),
    "ConvInteger": {1, 2, 3},
    "MatMulInteger": {1, 2, 3},
    "QGemm": set(range(1, 9)),
    "QLinearAdd": {1, 2, 4, 5, 6, 7},
    "QLinearAveragePool": {1, 2, 3, 4},
    "QLinearGlobalAveragePool": {1, 2, 3, 4},
    "Reshape": {1},
    "Clip": {1, 2},
    "Squeeze": {1},
    "Unsqueeze": {1},
}


def _param_slots(node: onnx.NodeProto) -> set[int]:
    if node.op_type == "QLinearConcat":
        return {0, 1} | {i for i in range(2, len(node.input)) if (i - 2) % 3}
    return _PARAM_SLOTS.get(node.op_type, set())


def parameter_inputs(model: onnx.ModelProto) -> list[str]:
    """Return the graph inputs that feed only parameter slots (bound as constants at run time)."""
    inits = {i.name for i in model.graph.initializer}
    slots: dict[str, bool] = {}
    for node in model.graph.node:
        params = _param_slots(node)
        for i, name in enumerate(node.input):
            slots[name] = slots.get(name, True) and i in params
    return [i.name for i in model.graph.input if i.name not in inits and slots.get(i.name, False)]


class AccelBackendRep(BackendRep):
    """Run one prepared ONNX model on an accel device."""

    def __init__(self, model: onnx.ModelProto, engine: str):
        self.proto = model
        self.engine = engine
        inits = {i.name for i in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.output_names = [o.name for o in model.graph.output]
        self.params = parameter_inputs(model)
        self._devices: dict[str, object] = {}

    def _bound_device(self, values: dict[str, np.ndarray]):
        digest = hashlib.sha256()
        for name in self.params:
            digest.update(name.encode() + str(values[name].dtype).encode() + values[name].tobytes())
        key = digest.hexdigest()
        if key not in self._devices:
            proto = onnx.ModelProto()
            proto.CopyFrom(self.proto)
            graph = proto.graph
            keep = [i for i in graph.input if i.name not in self.params]
            del graph.input[:]
            graph.input.extend(keep)
            for name in self.params:
                graph.initializer.append(numpy_helper.from_array(np.asarray(values[name]), name))
            device = open_device(self.engine)
            device.load(load_model(proto))
            self._devices[key] = device
        return self._devices[key]

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            values = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            values = dict(zip(self.input_names, inputs))
        values = {k: np.asarray(v) for k, v in values.items()}
        device = self._bound_device(values)
        feeds = {n: values[n] for n in self.input_names if n not in self.params}
        outputs = device.run_dict(feeds)
        return namedtupledict("Outputs", self.output_names)(*[outputs[n] for n in self.output_names])


class AccelBackend(Backend):
    """Prepare and run ONNX models on accel (the ``golden`` engine unless :func:`backend_for` says otherwise)."""

    engine = "golden"

    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        try:
            load_model(model)
        except Exception:
            return False
        return True

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        if isinstance(model, (str, bytes)):
            model = onnx.load(model) if isinstance(model, str) else onnx.load_from_string(model)
        super().prepare(model, device, **kwargs)
        return AccelBackendRep(model, kwargs.get("engine", cls.engine))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        raise NotImplementedError("accel runs whole models; use prepare(model).run(inputs)")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        # The engine runs on the host and drives the accelerator; onnx's tests ask for "CPU".
        return device == "CPU"


def backend_for(engine: str) -> type[AccelBackend]:
    """Return an :class:`AccelBackend` subclass that runs on ``engine`` (e.g. ``"golden"``)."""
    return type(f"AccelBackend_{engine.replace(':', '_').replace('-', '_')}", (AccelBackend,), {"engine": engine})


prepare = AccelBackend.prepare
run_model = AccelBackend.run_model
run_node = AccelBackend.run_node
supports_device = AccelBackend.supports_device
is_compatible = AccelBackend.is_compatible
