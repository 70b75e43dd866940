"""Normalize the canonical graph with small named passes run to a fixpoint.

Each pass is a class with ``apply(graph) -> (graph, changed)``. :func:`canonicalize` runs
the :data:`PIPELINE` in order, verifying the graph after every pass; given sample inputs it
also runs the golden model before and after each pass and raises :class:`PassMismatch` on
any difference, which bisects a wrong result to one pass.
"""

from __future__ import annotations

import numpy as np

from .ir import Graph, Node, dtype_range

__all__ = ["Pass", "RemoveIdentityOps", "FoldClampIntoProducer", "MergeReshapes", "PIPELINE",
           "canonicalize", "PassMismatch", "bypass"]


class PassMismatch(Exception):
    """Report a pass that changed the golden model's results (a compiler bug)."""


def bypass(graph: Graph, node: Node) -> None:
    """Remove a single-input, single-output ``node`` whose output equals its input, rewiring consumers."""
    src, dst = node.inputs[0], node.outputs[0]
    graph.nodes.remove(node)
    if dst in graph.outputs and (src in graph.inputs or src in graph.outputs or src in graph.constants):
        # Keep the output name: re-add an identity as a reshape to the same shape.
        graph.nodes.append(Node("reshape", node.name, [src], [dst], {"shape": graph.tensors[dst].shape}))
        _topo_sort(graph)
        return
    if dst in graph.outputs:
        # Rename the source tensor to the output's name.
        del graph.tensors[dst]
        tensor = graph.tensors.pop(src)
        tensor.name = dst
        graph.tensors[dst] = tensor
        for n in graph.nodes:
            n.inputs = [dst if i == src else i for i in n.inputs]
            n.outputs = [dst if o == src else o for o in n.outputs]
        return
    del graph.tensors[dst]
    for n in graph.nodes:
        n.inputs = [src if i == dst else i for i in n.inputs]


def _topo_sort(graph: Graph) -> None:
    ready = set(graph.inputs) | set(graph.constants)
    pending, ordered = list(graph.nodes), []
    while pending:
        for node in pending:
            if all(i in ready for i in node.inputs):
                ordered.append(node)
                ready.update(node.outputs)
                pending.remove(node)
                break
        else:
            raise RuntimeError("graph has a cycle")
    graph.nodes = ordered


class Pass:
    """Rewrite a graph; subclasses implement :meth:`apply`."""

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__


class RemoveIdentityOps(Pass):
    """Remove clamps to the full type range, requantizations to the same scale and no-op reshapes."""

    def apply(self, graph):
        for node in list(graph.nodes):
            tensor_in = graph.tensors[node.inputs[0]] if node.inputs else None
            identity = (
                (node.op == "clamp" and (node.attrs["lo"], node.attrs["hi"]) == dtype_range(tensor_in.dtype))
                or (node.op == "requantize" and node.attrs["x_quant"].same_as(node.attrs["y_quant"]))
                or (node.op == "reshape" and tensor_in.shape == graph.tensors[node.outputs[0]].shape
                    and not (node.outputs[0] in graph.outputs and node.inputs[0] in graph.inputs))
                or (node.op == "transpose" and tuple(node.attrs["perm"]) == tuple(range(len(tensor_in.shape))))
            )
            if identity:
                bypass(graph, node)
                return graph, True
        return graph, False


class FoldClampIntoProducer(Pass):
    """Fold a clamp into the requantization clamp of the conv/matmul/add that produces its input."""

    def apply(self, graph):
        for node in graph.nodes:
            if node.op != "clamp":
                continue
            producer = graph.producer(node.inputs[0])
            if producer is None or producer.op not in ("conv", "matmul", "add"):
                continue
            requant = producer.attrs["requant"]
            if requant is None or len(graph.consumers(node.inputs[0])) != 1 or node.inputs[0] in graph.outputs:
                continue
            requant.lo = max(requant.lo, node.attrs["lo"])
            requant.hi = min(requant.hi, node.attrs["hi"])
            if requant.lo > requant.hi:
                requant.hi = requant.lo
            bypass(graph, node)
            return graph, True
        return graph, False


class MergeReshapes(Pass):
    """Merge a reshape that feeds only another reshape into it."""

    def apply(self, graph):
        for node in graph.nodes:
            if node.op != "reshape":
                continue
            producer = graph.producer(node.inputs[0])
            if (producer is None or producer.op != "reshape" or len(graph.consumers(node.inputs[0])) != 1
                    or node.inputs[0] in graph.outputs):
                continue
            mid = node.inputs[0]
            node.inputs[0] = producer.inputs[0]
            graph.nodes.remove(producer)
            del graph.tensors[mid]
            return graph, True
        return graph, False


PIPELINE: list[Pass] = [RemoveIdentityOps(), FoldClampIntoProducer(), MergeReshapes()]


def _run_golden(graph, feeds):
    from ..sim.golden import run_graph
    return run_graph(graph, feeds)


def canonicalize(graph: Graph, passes: list[Pass] | None = None, check_feeds: dict | None = None) -> Graph:
    """Run ``passes`` (default :data:`PIPELINE`) to a fixpoint, verifying after each rewrite.

    With ``check_feeds`` (one inference's inputs) the golden model runs before and after
    every rewrite and any difference raises :class:`PassMismatch` naming the pass.
    """
    passes = PIPELINE if passes is None else passes
    reference = _run_golden(graph, check_feeds) if check_feeds is not None else None
    changed = True
    while changed:
        changed = False
        for p in passes:
            graph, did = p.apply(graph)
            if did:
                graph.verify()
                changed = True
                if reference is not None:
                    after = _run_golden(graph, check_feeds)
                    for name, value in reference.items():
                        if not np.array_equal(after[name], value):
                            raise PassMismatch(f"{p.name} changed output {name!r} of {graph.name!r}")
    return graph
