"""Whether two exports are the same graph with other weights, and serving the second through the first.

A retrained model exported again is, in the common case, the very graph of
the version it replaces with new values in its variables. Loading it as a
SavedModel costs ~70 MB for an LSTM-512 and one XLA compilation per batch
size, and TensorFlow never frees the compiled executables of the version it
replaces (its compilation cache has no eviction, tensorflow/tensorflow#64170):
~50-100 MB for good at every swap of an LSTM-512. Serving the new weights through the served
version's functions costs their size only, and no compilation.

Two exports are the same graph when their functions, signatures, assets and
variables' shapes agree once the names that tracing makes unique (function
and node names, counters in attributes) are replaced by what they refer to:
every function is named by the digest of its canonical body, so a function's
digest covers everything it calls.
"""

import hashlib

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2, trackable_object_graph_pb2

# Node attributes that only carry names made unique by tracing, never behaviour
# (the exports are saved without custom gradients, see `training.export`).
NAMING_ATTRIBUTES = ("_class", "_gradient_op_type", "debug_name")
CARD = "model.json"  # the model card differs between versions by design


def function_digests(library):
    """{function name: digest of its canonical body} for a FunctionDefLibrary."""
    functions = {f.signature.name: f for f in library.function}
    digests = {}

    def digest(name):
        if name not in functions:
            return name  # an op, not a function
        if name not in digests:
            digests[name] = canonical_digest(functions[name], digest)
        return digests[name]

    for name in functions:
        digest(name)
    return digests


def canonical_digest(function, digest_of):
    """The digest of `function` with its own names replaced by positions and the
    functions it calls by `digest_of` theirs."""
    f = type(function)()
    f.CopyFrom(function)
    f.signature.name = ""
    names = {node.name: f"n{i}" for i, node in enumerate(f.node_def)}
    for i, argument in enumerate(f.signature.input_arg):
        names[argument.name], argument.name = f"a{i}", f"a{i}"
    outputs = {argument.name: f"o{i}" for i, argument in enumerate(f.signature.output_arg)}
    for argument in f.signature.output_arg:
        argument.name = outputs[argument.name]
    controls = {name: f"c{i}" for i, name in enumerate(f.signature.control_output)}
    f.signature.control_output[:] = [controls[name] for name in f.signature.control_output]

    for node in f.node_def:
        node.name = names[node.name]
        node.input[:] = [rename_reference(text, names) for text in node.input]
        node.op = digest_of(node.op)
        rename_functions(node.attr, digest_of)
        node.ClearField("experimental_debug_info")
        for key in NAMING_ATTRIBUTES:
            node.attr.pop(key, None)
    for attributes in f.arg_attr.values():
        attributes.attr.pop("_user_specified_name", None)
    returns = {outputs[k]: rename_reference(v, names) for k, v in f.ret.items()}
    control_returns = {controls[k]: names.get(v, v) for k, v in f.control_ret.items()}
    f.ClearField("ret")
    f.ret.update(returns)
    f.ClearField("control_ret")
    f.control_ret.update(control_returns)
    return hashlib.sha256(f.SerializeToString(deterministic=True)).hexdigest()


def rename_functions(attributes, digest_of):
    for value in attributes.values():
        kind = value.WhichOneof("value")
        called = [value.func] if kind == "func" else value.list.func if kind == "list" else []
        for function in called:
            function.name = digest_of(function.name)
            rename_functions(function.attr, digest_of)


def rename_reference(text, names):
    """A reference to a node ("node:output:index", "^node", "argument") under its new name."""
    control, (head, _, rest) = text.startswith("^"), text.lstrip("^").partition(":")
    return ("^" if control else "") + names.get(head, head) + (":" + rest if rest else "")


def canonical_node(node, names, digest_of):
    """A copy of a top-level node under its position's name; its shared name, which
    Keras makes unique per process, is dropped (TF2 loading does not use it)."""
    node = type(node).FromString(node.SerializeToString())
    node.name = names[node.name]
    node.input[:] = [rename_reference(text, names) for text in node.input]
    node.op = digest_of.get(node.op, node.op)
    rename_functions(node.attr, lambda name: digest_of.get(name, name))
    node.ClearField("experimental_debug_info")
    for key in (*NAMING_ATTRIBUTES, "shared_name"):
        node.attr.pop(key, None)
    return node


def graph_digest(version_dir):
    """One digest of everything in an export but its weights and its model card."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    whole = hashlib.sha256()
    for meta_graph in saved.meta_graphs:
        digests = function_digests(meta_graph.graph_def.library)
        whole.update(" ".join(sorted(digests.values())).encode())
        names = {node.name: f"n{i}" for i, node in enumerate(meta_graph.graph_def.node)}
        for node in meta_graph.graph_def.node:  # variables, captured constants, signature calls
            whole.update(canonical_node(node, names, digests).SerializeToString(deterministic=True))
        for key in sorted(meta_graph.signature_def):
            signature = type(meta_graph.signature_def[key])()
            signature.CopyFrom(meta_graph.signature_def[key])
            for tensor in [*signature.inputs.values(), *signature.outputs.values()]:
                tensor.name = rename_reference(tensor.name, names)
            whole.update(key.encode() + signature.SerializeToString(deterministic=True))
    for path in sorted((version_dir / "assets").glob("*")):
        if path.name != CARD and path.is_file():
            whole.update(path.name.encode() + path.read_bytes())
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    for key in sorted(shapes):
        whole.update(f"{key} {shapes[key]} {dtypes[key].name}".encode())
    return whole.hexdigest()


def variables_from(version_dir, root):
    """New variables holding `version_dir`'s values, by the handle of the variable
    of the loaded SavedModel `root` that each replaces.

    The two are matched by their path in the object graph, which the
    checkpoint of `version_dir` records with each value's key.

    Raises:
        ValueError: a variable of `root` has no value of its shape in `version_dir`
            (or the values cannot be read: a corrupt copy).
    """
    reader = tf.train.load_checkpoint(str(version_dir / "variables" / "variables"))
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    view, replaced, seen = tf.train.TrackableView(root), {}, set()
    pending = [(root, 0)]
    while pending:
        obj, node_id = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        node = graph.nodes[node_id]
        if isinstance(obj, tf.Variable):
            key = next((a.checkpoint_key for a in node.attributes if a.name == "VARIABLE_VALUE"), None)
            value = reader.get_tensor(key) if key else None
            if value is None or tuple(value.shape) != tuple(obj.shape) or value.dtype != obj.dtype.as_numpy_dtype:
                raise ValueError(f"no value of shape {obj.shape} for {obj.name}")
            replaced[id(obj.handle)] = tf.Variable(value, trainable=False)
        children = {child.local_name: child.node_id for child in node.children}
        for name, child in view.children(obj).items():
            if name in children:
                pending.append((child, children[name]))
    return replaced
