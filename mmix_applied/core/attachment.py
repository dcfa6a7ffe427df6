"""How a mixer lives on the user's model: the forward routing, clean copies, wrappers, compile.

A :class:`~mmix_applied.core.mixer.ManifoldMixup` attaches to one module by giving it an
instance-level ``forward`` (:class:`MixingForward`) that runs a traced cut graph while a plan is
active. Everything here is about that attachment meeting code the project did not write:

- **One mixer per model.** :func:`attached_mixer` finds the mixer attached to a module, so a
  second one is refused (the mixer says how to reuse or ``close()`` the first).
- **Copies are plain models.** ``copy.deepcopy`` (timm ``ModelEmaV3``), ``pickle`` and
  ``torch.save(model)`` read a module's state through ``__getstate__``; the attachment puts an
  instance-level one (:class:`PlainState`) that leaves out the routing and the mixer's hooks, so a
  copy's ``forward`` is its class's own: exportable, scriptable, loadable without this package.
- **Wrappers.** :func:`unwrap` finds the user's module inside DDP, DataParallel, FSDP (v1) and
  ``torch.compile``'s ``OptimizedModule``; :func:`enclosing_ddp` finds a DDP wrapper around a
  module, so a call that bypasses it (no gradient sync) is refused.
- **Compile.** Dynamo compiles the routing once per point (the point is a Python constant it
  guards on); :class:`RecompileBudget` raises ``torch._dynamo.config.recompile_limit`` by the
  number of points while the mixer is open, so no point ever falls back to eager.
"""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any

import torch
from torch import nn

__all__ = ["MixingForward", "PlainState", "attached_mixer", "unwrap", "enclosing_ddp", "refuse_scripted",
           "RecompileBudget"]


class MixingForward:
    """Instance-level ``forward`` of a mixed model: routes to the mixer while a plan is active.

    Copies never carry it (see :class:`PlainState`); should one be copied on its own anyway, the
    copy is a pass-through to the class's forward.
    """

    def __init__(self, model: nn.Module, mixer: Any, original: Any) -> None:
        self.model = model
        self.mixer = mixer
        self.original = original
        self.__wrapped__ = original if original is not None else type(model).forward.__get__(model)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mixer = self.mixer
        if mixer is None:
            return type(self.model).forward(self.model, *args, **kwargs)
        plan = mixer._active
        if plan is None or not mixer.enabled or not self.model.training:
            return self.original(*args, **kwargs)
        return mixer._forward_mixed(plan, self.original, args, kwargs)

    def __deepcopy__(self, memo: dict) -> MixingForward:
        import copy

        return MixingForward(copy.deepcopy(self.model, memo), None, None)

    def __reduce__(self) -> tuple:
        return (MixingForward, (self.model, None, None))


class PlainState:
    """An instance-level ``__getstate__`` that leaves the mixer out of copies of a module.

    Python's ``copy`` and ``pickle`` look ``__getstate__`` up on the instance first, so putting one
    in the module's ``__dict__`` changes what every copy of it (and of any module containing it)
    holds: the class's state without the routing ``forward``, without this object, and without the
    forward hooks whose ids are in ``hook_ids``.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = weakref.ref(module)
        self.hook_ids: set[int] = set()

    def __call__(self) -> dict[str, Any]:
        module = self.module()
        if module is None:  # pragma: no cover - the module owns this object
            raise RuntimeError("the module of this state is gone")
        getstate = getattr(type(module), "__getstate__", None)
        state = dict(getstate(module) if getstate is not None else module.__dict__)
        if isinstance(state.get("forward"), MixingForward):
            del state["forward"]
        state.pop("__getstate__", None)
        for key in ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called"):
            hooks = state.get(key)
            if hooks and self.hook_ids & set(hooks):
                state[key] = type(hooks)((k, v) for k, v in hooks.items() if k not in self.hook_ids)
        return state


def plain_state_of(module: nn.Module) -> PlainState:
    """The :class:`PlainState` of ``module``, installed on first use."""
    current = module.__dict__.get("__getstate__")
    if not isinstance(current, PlainState):
        current = PlainState(module)
        module.__dict__["__getstate__"] = current
    return current


def remove_plain_state(module: nn.Module) -> None:
    """Remove the :class:`PlainState` of ``module`` (the module's copies are then its own again)."""
    if isinstance(module.__dict__.get("__getstate__"), PlainState):
        del module.__dict__["__getstate__"]


def attached_mixer(module: nn.Module) -> Any:
    """The open :class:`~mmix_applied.core.mixer.ManifoldMixup` attached to ``module``, or None."""
    forward = module.__dict__.get("forward") if isinstance(module, nn.Module) else None
    return forward.mixer if isinstance(forward, MixingForward) else None


def refuse_scripted(model: nn.Module) -> None:
    """Raise a TypeError for a TorchScript module (``torch.jit.script`` / ``torch.jit.trace``), also inside a wrapper.

    Its forward is compiled TorchScript, not Python: there is nothing to trace into a cut graph and
    no Python forward to route, so no hidden state can be mixed. (An ``torch.fx.GraphModule`` is a
    Python module and is mixed as any other.)
    """
    inner = model
    for _ in range(8):
        if isinstance(inner, torch.jit.ScriptModule):
            how = "torch.jit.trace" if isinstance(inner, torch.jit.TopLevelTracedModule) else "torch.jit.script"
            raise TypeError(
                f"received a TorchScript module ({type(inner).__name__}, from {how}); its forward is compiled "
                "TorchScript, so its hidden states cannot be mixed. Give ManifoldMixup the Python model before "
                "scripting or tracing it, train, then script or export the trained model (copies of a mixed model "
                "are plain models)."
            )
        if type(inner).__name__ == "OptimizedModule" and isinstance(getattr(inner, "_orig_mod", None), nn.Module):
            inner = inner._orig_mod
        elif isinstance(inner, _wrapper_types()):
            inner = inner.module
        else:
            return


def _wrapper_types() -> tuple[type, ...]:
    types: list[type] = [nn.DataParallel, nn.parallel.DistributedDataParallel]
    fsdp = sys.modules.get("torch.distributed.fsdp")
    if fsdp is not None and hasattr(fsdp, "FullyShardedDataParallel"):
        types.append(fsdp.FullyShardedDataParallel)
    return tuple(types)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP, DataParallel, FSDP (v1) and ``torch.compile`` wrappers (nested too).

    FSDP2 (``fully_shard``) and plain modules are returned as they are: they are the model.
    """
    inner = model
    for _ in range(8):
        orig = inner.__dict__.get("_modules", {}).get("_orig_mod")
        if orig is not None and type(inner).__name__ == "OptimizedModule":
            inner = orig
        elif isinstance(inner, _wrapper_types()):
            inner = inner.module
        else:
            break
    return inner


def enclosing_ddp(module: nn.Module) -> nn.Module | None:
    """A ``DistributedDataParallel`` wrapper whose ``.module`` is ``module``, or None.

    DDP leaves no mark on the module it wraps, so this asks the garbage collector who refers to
    it: a walk of the heap, done once per mixer, only when a process group is initialised.
    """
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    ddp = nn.parallel.DistributedDataParallel
    for ref in gc.get_referrers(module):
        if not isinstance(ref, dict) or ref.get("module") is not module:
            continue
        for owner in gc.get_referrers(ref):
            candidates = [owner] if isinstance(owner, ddp) else []
            if isinstance(owner, dict) and owner.get("_modules") is ref:
                candidates = [o for o in gc.get_referrers(owner) if isinstance(o, ddp)]
            for candidate in candidates:
                if candidate.__dict__.get("_modules") is ref:
                    return candidate
    return None


class RecompileBudget:
    """Raises ``torch._dynamo.config.recompile_limit`` by ``extra`` while held; gives it back on release.

    Dynamo counts cache entries per code object: the routing's ``__call__`` (under
    ``torch.compile(model)``) or the user's compiled step gets one entry per mix point. With the
    default limit (8) a ninth point would run eager, silently. Taken only once ``torch._dynamo`` is
    imported (so importing the core never loads it); released on ``close()`` or garbage collection.
    """

    def __init__(self, extra: int) -> None:
        self.extra = int(extra)
        self.held = False
        self.released = False  # after release() the budget is never taken again (a closed mixer)
        self._finalizer: Any = None

    def take(self) -> None:
        """Raise the limit, once, if Dynamo is loaded (cheap to call every step)."""
        if self.held or self.released or "torch._dynamo" not in sys.modules:
            return
        config = sys.modules["torch._dynamo"].config
        config.recompile_limit = config.recompile_limit + self.extra
        self.held = True
        self._finalizer = weakref.finalize(self, _give_back, self.extra)

    def release(self) -> None:
        """Give the raised limit back (idempotent)."""
        if self.held and self._finalizer is not None:
            self._finalizer()
        self.held = False
        self.released = True


def _give_back(extra: int) -> None:
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:
        dynamo.config.recompile_limit = max(1, dynamo.config.recompile_limit - extra)
