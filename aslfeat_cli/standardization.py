"""The network's per-image standardisation, moved out of the graph into numpy.

The official graph starts with ``(x - mean) / sqrt(var + 1e-5)`` over the whole image. Run in
tiles (:mod:`aslfeat_cli.tiling`), that would use each tile's own mean and variance and change
every output, so the backends take the standardisation out of the graph at load time
(:func:`remove_from_graph`) and apply it here, once per image, with the whole image's
statistics. The rest of the network is unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The variance epsilon of ``export.tf_compat.standardize`` (TF's per-image standardisation).
EPS = float(np.float32(1e-5))  # as the graph stores it
_CHAIN = ("ReduceMean", "Sub", "Pow", "ReduceMean", "Add", "Sqrt", "Div")


def standardize(gray: np.ndarray) -> np.ndarray:
    """``(gray - mean) / sqrt(var + EPS)`` as float32 (statistics in float64, population
    variance): what the graph computed before :func:`remove_from_graph`."""
    gray = np.asarray(gray, dtype=np.float32)
    mean = gray.mean(dtype=np.float64)
    var = np.square(gray - np.float32(mean), dtype=np.float64).mean()
    scale = np.float32(1.0 / np.sqrt(var + EPS))
    return np.ascontiguousarray((gray - np.float32(mean)) * scale)


def remove_from_graph(model: Any, input_name: str = "image") -> bool:
    """Rewire an ``onnx.ModelProto`` in place so the network takes standardised input.

    Finds ``ReduceMean(image) -> Sub -> Pow -> ReduceMean -> Add -> Sqrt -> Div`` (the torch
    export of ``tf_compat.standardize``), feeds ``image`` to the Div's consumers and drops the
    chain. Returns False, changing nothing, when the graph has no such chain (the model then
    keeps standardising inside and cannot run in tiles).
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    for div in graph.node:
        if div.op_type != "Div":
            continue
        chain = _chain_ending_at(div, producer, input_name)
        if chain is None or not _only_internal(graph, chain) or _epsilon(graph, chain[4]) != EPS:
            continue
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == div.output[0]:
                    node.input[i] = input_name
        dropped = {id(node) for node in chain}
        kept = [node for node in graph.node if id(node) not in dropped]
        del graph.node[:]
        graph.node.extend(kept)
        used = {name for node in kept for name in node.input}
        unused = [init for init in graph.initializer if init.name not in used]
        for init in unused:  # the axes, exponent and epsilon (onnxruntime warns about them)
            graph.initializer.remove(init)
        return True
    return False


def _only_internal(graph: Any, chain: list[Any]) -> bool:
    """Whether nothing outside ``chain`` reads its intermediate outputs (only the Div's)."""
    inner = {out for node in chain[:-1] for out in node.output}
    outside = [node for node in graph.node if all(node is not c for c in chain)]
    graph_outputs = {o.name for o in graph.output}
    return not inner & graph_outputs and not any(
        name in inner for node in outside for name in node.input
    )


def _epsilon(graph: Any, add: Any) -> float | None:
    """The Add's constant (the variance epsilon) as a float, None if it is not a scalar
    initializer."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == add.input[1]:
            value = numpy_helper.to_array(init)
            return float(np.float32(value)) if value.size == 1 else None
    return None


def _chain_ending_at(div: Any, producer: dict[str, Any], input_name: str) -> list[Any] | None:
    """The seven nodes of the standardisation ending at ``div``, or None if it is not one."""
    sub = producer.get(div.input[0])
    sqrt = producer.get(div.input[1])
    if sub is None or sqrt is None or sub.op_type != "Sub" or sqrt.op_type != "Sqrt":
        return None
    mean = producer.get(sub.input[1])
    add = producer.get(sqrt.input[0])
    if sub.input[0] != input_name or mean is None or add is None:
        return None
    var = producer.get(add.input[0])
    pow_ = producer.get(var.input[0]) if var is not None else None
    if mean.input[0] != input_name or pow_ is None or pow_.input[0] != sub.output[0]:
        return None
    chain = [mean, sub, pow_, var, add, sqrt, div]
    if tuple(node.op_type for node in chain) != _CHAIN:
        return None
    return chain
