"""Cuts on a traced graph: the state at a mix point is the live set of the forward graph.

A cut after point ``p`` must mix every value computed before the cut and used after it, or an
encoder-decoder's decoder sees a mixed deep path beside unmixed skips (DESIGN.md section 2).
Module hooks see only module boundaries, and MONAI's ``UNet`` joins its skips with a bare
``torch.cat``. So the model's forward is traced once with ``torch.fx``, keeping the points (and
every module that contains no point) as leaves, and for each point a copy of the graph is made in
which every live, input-dependent value is replaced, for its uses after the cut, by its mix.

The traced graph calls the user's own submodules, so parameters, buffers, hooks and
``state_dict`` keys are the user's. Python branches in the traced modules are frozen as they were
in training mode; the graphs run only in training mode.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from mmix_applied.errors import MmixError

from .functional import BatchDims, mix_value
from .points import INPUT, resolve_batch_dims

__all__ = ["TraceFailed", "trace_for_points", "build_cut_graph", "live_set", "PLAN_ARGS", "EAGER_CHECKS",
           "concrete_args_for", "call_key", "forward_signature", "is_current"]

#: Names of the graph inputs that carry the plan; passed as keyword arguments.
PLAN_ARGS = ("mmix_lam", "mmix_perm", "mmix_box")


class TraceFailed(MmixError, RuntimeError):
    """The model's forward could not be traced with ``torch.fx``."""


class _CutTracer(fx.Tracer):
    """Keeps mix points and every module that contains no point as leaves.

    Decided by module identity, not by name: a module registered under two names (MONAI's
    DynUNet keeps its down blocks both in ``downsamples`` and in a ``skip_layers`` chain) is
    still recognised as containing a point whichever path the forward calls it through.
    """

    def __init__(self, root: nn.Module, point_modules: list[nn.Module]) -> None:
        super().__init__()
        self._points = {id(m) for m in point_modules}
        self._ancestors = {
            id(m) for m in root.modules()
            if any(id(d) in self._points for d in m.modules() if d is not m)
        }

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self._points or id(m) not in self._ancestors


#: Methods of a root module that only validate the input with Python branches on its shape
#: (smp's ``SegmentationModel.check_input_shape``). They cannot be traced, so they are silenced
#: while tracing and called eagerly on the input before each mixed forward instead.
EAGER_CHECKS = ("check_input_shape",)


def forward_signature(model: nn.Module) -> inspect.Signature:
    """The signature of the model class's ``forward``, without ``self``."""
    sig = inspect.signature(type(model).forward)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False


def concrete_args_for(signature: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any] | None:
    """The non-tensor arguments of one call (flags, None, numbers), which tracing freezes.

    Tensors (and containers of tensors) stay graph inputs; everything else is specialised, so
    a forward that branches on ``mask is None`` or on a flag traces, once per distinct value.
    Returns None when the call does not bind to the signature.
    """
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    concrete = {}
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if not _holds_tensor(value):
            concrete[name] = value
    return concrete


def call_key(concrete: dict[str, Any]) -> tuple:
    """A hashable key of a call's frozen arguments (graphs are cached per key)."""
    def freeze(v: Any) -> Any:
        try:
            hash(v)
            return v
        except TypeError:
            return repr(v)
    return tuple(sorted((k, freeze(v)) for k, v in concrete.items()))


def is_current(model: nn.Module, gm: fx.GraphModule) -> bool:
    """Whether every module and attribute the graph calls is still the model's own object.

    A replaced head (``reset_classifier``), ``load_state_dict(assign=True)`` or a buffer swapped
    by ``.to()`` leaves the traced copy pointing at the old object; the mixer then rebuilds it.
    """
    for node in gm.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            target = str(node.target)
            try:
                if _lookup(model, target) is not _lookup(gm, target):
                    return False
            except AttributeError:
                return False
    return True


def _lookup(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace_for_points(model: nn.Module, points: list[str], concrete: dict[str, Any] | None = None) -> fx.Graph:
    """Trace ``model``'s forward in training mode with ``points`` kept as leaf calls.

    ``concrete`` freezes the non-tensor arguments of the call the graph is for (see
    :func:`concrete_args_for`); by default, those of a call with one tensor argument.

    Raises:
        TraceFailed: the forward has data-dependent control flow or other untraceable code.
        ValueError: a point is not called exactly once in forward.
    """
    point_modules = {p: model.get_submodule(p) for p in points if p != INPUT}
    modes = {m: m.training for m in model.modules()}
    silenced = [name for name in EAGER_CHECKS if callable(getattr(model, name, None))]
    try:
        model.train()
        for name in silenced:
            setattr(model, name, lambda *args, **kwargs: None)
        tracer = _CutTracer(model, list(point_modules.values()))
        if concrete is None:
            sig = forward_signature(model)
            first = next(iter(sig.parameters), None)
            concrete = concrete_args_for(sig, (torch.empty(0),), {}) if first is not None else {}
        graph = tracer.trace(model, concrete_args=concrete or None)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError ...)
        raise TraceFailed(f"{type(exc).__name__}: {exc}") from exc
    finally:
        for name in silenced:
            model.__dict__.pop(name, None)
        for m, mode in modes.items():
            m.training = mode
    for p, module in sorted(point_modules.items()):
        calls = len(_calls_of(model, graph, module))
        if calls != 1:
            raise ValueError(
                f"mix point {p!r} is called {calls} times in {type(model).__name__}.forward; a point "
                "must be a module called exactly once (a cut needs one place in the forward). "
                "Choose its parent block or another module."
            )
    return graph


def _calls_of(model: nn.Module, graph: fx.Graph, module: nn.Module) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op == "call_module" and model.get_submodule(str(n.target)) is module]


def _tainted(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on the model input, its first argument (parameters, constants and
    side inputs such as masks or lengths do not: they are the same whichever sample they serve)."""
    tainted: set[fx.Node] = set()
    placeholders = [n for n in graph.nodes if n.op == "placeholder" and n.target not in PLAN_ARGS]
    for n in graph.nodes:
        if n.op == "placeholder":
            if placeholders and n is placeholders[0]:
                tainted.add(n)
        elif n.op in ("call_module", "call_function", "call_method"):
            if any(a in tainted for a in n.all_input_nodes):
                tainted.add(n)
    return tainted


def live_set(model: nn.Module, graph: fx.Graph, point: str) -> tuple[fx.Node, list[fx.Node]]:
    """The point's node and the input-dependent values computed up to it and used after it."""
    nodes = list(graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    cut_node = _calls_of(model, graph, model.get_submodule(point))[0]
    cut = position[cut_node]
    tainted = _tainted(graph)
    live = [
        n for n in nodes[: cut + 1]
        if n in tainted and any(position[u] > cut for u in n.users)
    ]
    return cut_node, live


def _node_batch_dims(model: nn.Module, node: fx.Node, point: str, override: dict[str, BatchDims] | None) -> BatchDims:
    if node.op == "call_module" and model.get_submodule(str(node.target)) is model.get_submodule(point):
        return resolve_batch_dims(model, point, override)  # the user's name for the point
    if node.op == "call_module":
        return resolve_batch_dims(model, str(node.target), override)
    return 0


def build_cut_graph(
    model: nn.Module, base: fx.Graph, point: str, batch_dims: dict[str, BatchDims] | None = None
) -> fx.GraphModule:
    """A GraphModule that runs ``model``'s forward and mixes the live set after ``point``.

    Its forward takes the model's arguments plus the keyword arguments ``mmix_lam``,
    ``mmix_perm`` and ``mmix_box`` (see :data:`PLAN_ARGS`).
    """
    graph = copy.deepcopy(base)
    cut_node, live = live_set(model, graph, point)
    position = {n: i for i, n in enumerate(graph.nodes)}
    cut = position[cut_node]
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    anchor = placeholders[-1] if placeholders else None
    plan_nodes = []
    for name in PLAN_ARGS:
        ctx = graph.inserting_after(anchor) if anchor is not None else graph.inserting_before(None)
        with ctx:
            anchor = graph.placeholder(name, default_value=None)
        plan_nodes.append(anchor)
    lam, perm, box = plan_nodes
    anchor = cut_node
    for value in live:
        dims = _node_batch_dims(model, value, point, batch_dims)
        with graph.inserting_after(anchor):
            mixed = graph.call_function(mix_value, (value, lam, perm, box, dims))
        anchor = mixed
        for user in list(value.users):
            if user is not mixed and user in position and position[user] > cut:
                user.replace_input_with(value, mixed)
    graph.lint()
    gm = fx.GraphModule(model, graph, class_name=f"{type(model).__name__}MixedAt_{point.replace('.', '_')}")
    return gm
