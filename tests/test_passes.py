"""Each canonicalization pass keeps the golden model's results bit-identical and removes what it targets."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel.compiler.frontend import import_model
from accel.compiler.passes import (FoldClampIntoProducer, MergeReshapes, PassMismatch, RemoveIdentityOps,
                                   canonicalize)
from accel.sim.golden import run_graph

SEED = 7


def conv_relu_reshape_model(channels, size, relu_kind):
    """QLinearConv -> int8 Relu/Clip -> Reshape -> Flatten -> Reshape (int8 ops, opset 14)."""
    rng = np.random.default_rng(SEED)
    inits = dict(xs=np.float32(0.05), xz=np.int8(-3), w=rng.integers(-127, 128, (channels, 3, 3, 3)).astype(np.int8),
                 ws=np.float32(0.01), wz=np.int8(0), ys=np.float32(0.02), yz=np.int8(-10),
                 b=rng.integers(-300, 300, channels).astype(np.int32),
                 s1=np.array([1, channels, size * size], np.int64), s2=np.array([1, -1], np.int64),
                 lo=np.int8(-5), hi=np.int8(90))
    act = helper.make_node("Relu", ["c"], ["r"]) if relu_kind == "relu" else helper.make_node("Clip", ["c", "lo", "hi"], ["r"])
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["c"], pads=[1, 1, 1, 1]),
             act,
             helper.make_node("Reshape", ["r", "s1"], ["r1"]),
             helper.make_node("Flatten", ["r1"], ["r2"]),
             helper.make_node("Reshape", ["r2", "s2"], ["y"])]
    graph = helper.make_graph(nodes, "passes", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, [1, channels * size * size])],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def random_feeds(graph, n=4):
    rng = np.random.default_rng(SEED)
    print("seed", SEED)
    for _ in range(n):
        yield {name: rng.integers(-128, 128, graph.tensors[name].shape).astype(graph.tensors[name].dtype)
               for name in graph.inputs}


@pytest.mark.parametrize("channels, size", [(4, 5), (8, 3), (3, 7)])
@pytest.mark.parametrize("relu_kind", ["relu", "clip"])
@pytest.mark.parametrize("the_pass, removed_op", [(FoldClampIntoProducer(), "clamp"), (MergeReshapes(), "reshape")])
def test_pass_keeps_golden_results(channels, size, relu_kind, the_pass, removed_op):
    graph = import_model(conv_relu_reshape_model(channels, size, relu_kind))
    before_ops = [n.op for n in graph.nodes]
    feeds = list(random_feeds(graph))
    expected = [run_graph(graph, f) for f in feeds]
    after, changed = the_pass.apply(graph.copy())
    assert changed
    after.verify()
    assert [n.op for n in after.nodes].count(removed_op) == before_ops.count(removed_op) - 1
    for f, e in zip(feeds, expected):
        assert np.array_equal(run_graph(after, f)["y"], e["y"])


def test_pipeline_reaches_fixpoint_with_golden_checked_after_every_pass():
    graph = import_model(conv_relu_reshape_model(4, 5, "clip"))
    feeds = next(random_feeds(graph))
    expected = run_graph(graph, feeds)["y"]
    result = canonicalize(graph.copy(), check_feeds=feeds)
    assert [n.op for n in result.nodes] == ["conv", "reshape"]
    conv = result.nodes[0]
    assert (conv.attrs["requant"].lo, conv.attrs["requant"].hi) == (-5, 90)
    assert np.array_equal(run_graph(result, feeds)["y"], expected)


def test_remove_identity_ops_drops_full_range_clamp():
    graph = import_model(conv_relu_reshape_model(4, 5, "clip"))
    clamp = next(n for n in graph.nodes if n.op == "clamp")
    clamp.attrs.update(lo=-128, hi=127)
    feeds = next(random_feeds(graph))
    expected = run_graph(graph, feeds)["y"]
    after, changed = RemoveIdentityOps().apply(graph)
    assert changed and "clamp" not in [n.op for n in after.nodes]
    assert np.array_equal(run_graph(after, feeds)["y"], expected)


def test_a_wrong_pass_is_caught():
    class BreakClamp(FoldClampIntoProducer):
        def apply(self, graph):
            graph, changed = super().apply(graph)
            if changed:
                graph.nodes[0].attrs["requant"].hi = 0  # a deliberately wrong rewrite
            return graph, changed

    graph = import_model(conv_relu_reshape_model(4, 5, "relu"))
    with pytest.raises(PassMismatch, match="BreakClamp"):
        canonicalize(graph, passes=[BreakClamp()], check_feeds=next(random_feeds(graph)))
