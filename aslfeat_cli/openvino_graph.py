"""OpenVINO-ready version of an ASLFeat ONNX graph, a load-time pass like :mod:`.half_precision`.

OpenVINO's ONNX reader (2026.4) has no conversion rule for the standard ``DeformConv`` node (the
full model even crashes in ``read_model``), but it reads the same layer written as its own
``org.openvinotoolkit.DeformableConv2D``. This pass rewrites the nodes:

* ``DeformConv(X, W, offset, B, mask)`` becomes ``DeformableConv2D(X, offset, W, mask)``
  (OpenVINO's input order); our exports' bias is all zeros and is dropped, a non-zero bias is
  kept as an ``Add``;
* ``offset_group`` becomes ``deformable_groups``; ``bilinear_interpolation_pad=1`` is written
  too, but OpenVINO 2026.4's reader ignores it, so :mod:`.backends.openvino` also sets it on the
  read model (without it, samples up to one pixel outside the map are dropped instead of
  interpolated with the zero padding: score maps differ by 0.03, against 2e-6 with it).

The final ``Transpose`` of the descriptor map (D, h, w) -> (h, w, D) runs a slow reference
kernel in OpenVINO; the pass removes it, so the graph returns (D, h, w) and the backend hands
keypoint selection a transposed numpy view (it only gathers N descriptors from it). The score
head's overflow-safe softplus ``max(x, log(exp(min(x, 80)) + 1))`` (fastest in onnxruntime)
becomes one ``Softplus`` node, which OpenVINO runs as its SoftPlus kernel. Each of the two
measured a few per cent faster (README, Benchmarks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPENVINO_DOMAIN = "org.openvinotoolkit"
DESCRIPTOR_OUTPUT = "descriptor_map"
#: Metadata key recording the descriptor map's layout after this pass.
LAYOUT_KEY = "descriptor_layout"


def _attribute(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _rewrite_deform_conv(graph: Any, node: Any, initializers: dict[str, Any]) -> list[Any]:
    """The node(s) replacing one ``DeformConv``: DeformableConv2D, plus an Add for a bias."""
    from onnx import helper, numpy_helper

    inputs = list(node.input) + [""] * (5 - len(node.input))
    x, w, offset, bias, mask = inputs[:5]
    pads = list(_attribute(node, "pads", [0, 0, 0, 0]))
    attributes = {
        "strides": list(_attribute(node, "strides", [1, 1])),
        "pads": pads,
        "dilations": list(_attribute(node, "dilations", [1, 1])),
        "group": _attribute(node, "group", 1),
        "deformable_groups": _attribute(node, "offset_group", 1),
        "bilinear_interpolation_pad": 1,
    }
    new_inputs = [x, offset, w] + ([mask] if mask else [])
    output = node.output[0]
    # Our exports pass an all-zero bias: dropped. Any other bias is added after the layer.
    has_bias = bool(bias) and not (
        bias in initializers and not numpy_helper.to_array(initializers[bias]).any()
    )
    conv_out = output + "__no_bias" if has_bias else output
    nodes = [
        helper.make_node(
            "DeformableConv2D",
            new_inputs,
            [conv_out],
            name=node.name,
            domain=OPENVINO_DOMAIN,
            **attributes,
        )
    ]
    if has_bias:
        shape_name = bias + "__nchw_shape"
        graph.initializer.append(
            numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64), shape_name)
        )
        nodes.append(
            helper.make_node("Reshape", [bias, shape_name], [bias + "__nchw"], name=bias + "_r")
        )
        nodes.append(helper.make_node("Add", [conv_out, bias + "__nchw"], [output]))
    return nodes


def _drop_final_transpose(graph: Any) -> bool:
    """Make ``descriptor_map`` the Transpose's input (D, h, w); True when it was removed."""
    from onnx import TensorShapeProto

    for index, node in enumerate(graph.node):
        if node.op_type != "Transpose" or list(node.output) != [DESCRIPTOR_OUTPUT]:
            continue
        if list(_attribute(node, "perm", [])) != [1, 2, 0]:
            return False
        source = node.input[0]
        del graph.node[index]
        for other in graph.node:  # the producer now writes the graph output directly
            for k, name in enumerate(other.output):
                if name == source:
                    other.output[k] = DESCRIPTOR_OUTPUT
            for k, name in enumerate(other.input):
                if name == source:
                    other.input[k] = DESCRIPTOR_OUTPUT
        for output in graph.output:
            if output.name == DESCRIPTOR_OUTPUT:
                dims = output.type.tensor_type.shape.dim
                copies = [TensorShapeProto.Dimension() for _ in range(3)]
                for copy, k in zip(copies, (2, 0, 1), strict=True):  # (h, w, D) -> (D, h, w)
                    copy.CopyFrom(dims[k])
                del dims[:]
                dims.extend(copies)
        return True
    return False


def _fuse_softplus(graph: Any) -> int:
    """Replace the export's overflow-safe softplus ``max(x, log(exp(min(x, 80)) + 1))`` (the
    form that was fastest in onnxruntime) by one ``Softplus`` node; returns how many."""
    from onnx import helper

    producer = {out: node for node in graph.node for out in node.output}
    fused = 0
    for node in list(graph.node):
        if node.op_type != "Max" or len(node.input) != 2:
            continue
        x, other = node.input
        log = producer.get(other)
        add = producer.get(log.input[0]) if log is not None and log.op_type == "Log" else None
        exp = producer.get(add.input[0]) if add is not None and add.op_type == "Add" else None
        clip = producer.get(exp.input[0]) if exp is not None and exp.op_type == "Exp" else None
        if clip is None or clip.op_type != "Clip" or clip.input[0] != x:
            continue
        index = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(
            index, helper.make_node("Softplus", [x], [node.output[0]], name=node.name)
        )
        fused += 1
    # Drop what only fed the replaced subgraphs (Clip, Exp, Add, Log), outputs first.
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if not any(out in used for out in n.output)]
        if not dead:
            return fused
        for node in dead:
            graph.node.remove(node)


def to_openvino(model: Any, *, drop_transpose: bool = True, softplus: bool = True) -> Any:
    """An OpenVINO-ready copy of ``model`` (an ``onnx.ModelProto``; the original is unchanged).

    With ``drop_transpose`` the descriptor output is (D, h, w) and the metadata key
    ``descriptor_layout`` says ``chw``; otherwise the graph keeps the (h, w, D) contract.
    ``softplus`` writes the score head's softplus as OpenVINO's own SoftPlus (one node instead
    of five; float32 outputs unchanged).
    Raises ValueError when the graph has no ``DeformConv`` (not an ASLFeat DeformConv export).
    """
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    new_nodes: list[Any] = []
    rewritten = 0
    for node in graph.node:
        if node.op_type == "DeformConv" and node.domain in ("", "ai.onnx"):
            new_nodes.extend(_rewrite_deform_conv(graph, node, initializers))
            rewritten += 1
        else:
            new_nodes.append(node)
    if not rewritten:
        raise ValueError("no DeformConv node found: not an ASLFeat DeformConv export?")
    del graph.node[:]
    graph.node.extend(new_nodes)
    if not any(op.domain == OPENVINO_DOMAIN for op in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(OPENVINO_DOMAIN, 1))
    layout = "chw" if drop_transpose and _drop_final_transpose(graph) else "hwc"
    if softplus:
        _fuse_softplus(graph)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    model.metadata_props.append(onnx.StringStringEntryProto(key=LAYOUT_KEY, value=layout))
    return model
