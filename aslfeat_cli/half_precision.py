"""Float16 version of an ASLFeat ONNX graph, for ``--fp16`` on CUDA.

Only the backbone's heavy layers run in float16: the 3x3 convolutions and deformable
convolutions with at least ``MIN_CHANNELS`` output channels (conv2 to conv5 and the three
deformable layers; the small offset/mask branches stay float32) and the BatchNormalization,
Relu and Sigmoid nodes fed by them. Everything else stays float32, and the graph's inputs
and outputs keep their types:

* the full-resolution layers (conv0, conv1) and the peakiness score: with float16 features or
  scores, flat image regions get exactly equal scores and the official NMS (``s ==
  maxpool(s)``) keeps every pixel of such plateaus (measured: 1.8k keypoints become 3k on the
  astronaut photo);
* ``exp``/``log`` of the softplus, which overflow in float16;
* the index arithmetic of the resize, which float16 cannot hold exactly above 2048 px.

The conversion is a small graph pass instead of ``onnxconverter-common`` /
``onnxruntime.transformers.float16``: with ``keep_io_types`` those round every tensor that
passes between two float32 nodes through float16 too, which is exactly the plateau problem.
"""

from __future__ import annotations

from typing import Any

#: Output channels from which a 3x3 convolution runs in float16 (conv2 has 64).
MIN_CHANNELS = 64
_FOLLOWERS = ("BatchNormalization", "Relu", "Sigmoid")


def _float16_nodes(graph: Any) -> set[int]:
    """Indices of the nodes that run in float16 (see the module docstring)."""
    import onnx

    initializers = {t.name: t for t in graph.initializer}
    chosen: set[int] = set()
    half_tensors: set[str] = set()
    for index, node in enumerate(graph.node):
        half = False
        if node.op_type in ("Conv", "DeformConv"):
            group = next(
                (onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "group"),
                1,
            )
            weight = initializers.get(node.input[1])
            half = (
                group == 1
                and weight is not None
                and list(weight.dims[2:]) == [3, 3]
                and weight.dims[0] >= MIN_CHANNELS
            )
        elif node.op_type in _FOLLOWERS:
            half = node.input[0] in half_tensors
        if half:
            chosen.add(index)
            half_tensors.update(node.output)
    return chosen


def to_float16(model: Any) -> Any:
    """A float16 copy of ``model`` (an ``onnx.ModelProto``; the original is not changed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    chosen = _float16_nodes(graph)
    if not chosen:
        raise ValueError("no float16-capable layers found: not an ASLFeat export?")
    nodes = list(graph.node)
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)

    produced_half = {out for i in chosen for out in nodes[i].output}
    half_name: dict[str, str] = {}  # float32 tensor -> its float16 counterpart

    def half_input(name: str, emitted: list) -> str:
        if name in produced_half:
            return name + "__fp16"
        if name not in half_name:
            half_name[name] = name + "__fp16"
            if name in initializers:
                array = numpy_helper.to_array(initializers[name]).astype("float16")
                graph.initializer.append(numpy_helper.from_array(array, half_name[name]))
            else:
                emitted.append(
                    helper.make_node(
                        "Cast",
                        [name],
                        [half_name[name]],
                        name=name + "__to_fp16",
                        to=TensorProto.FLOAT16,
                    )
                )
        return half_name[name]

    new_nodes: list = []
    for index, node in enumerate(nodes):
        if index not in chosen:
            new_nodes.append(node)
            continue
        for k, name in enumerate(node.input):
            if name:
                node.input[k] = half_input(name, new_nodes)
        new_nodes.append(node)
        for k, name in enumerate(node.output):
            node.output[k] = name + "__fp16"
            users = [u for u in consumers.get(name, []) if u not in chosen]
            if users or name in graph_outputs:
                new_nodes.append(
                    helper.make_node(
                        "Cast",
                        [name + "__fp16"],
                        [name],
                        name=name + "__to_fp32",
                        to=TensorProto.FLOAT,
                    )
                )
    del graph.node[:]
    graph.node.extend(new_nodes)
    # Inferred types of renamed tensors are stale; onnxruntime infers them again.
    del graph.value_info[:]
    used = {name for node in new_nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    model.metadata_props.append(onnx.StringStringEntryProto(key="precision", value="float16"))
    return model
