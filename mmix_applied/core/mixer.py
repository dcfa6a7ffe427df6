"""ManifoldMixup: makes an unmodified model mix its hidden states at a random point each step.

Manifold Mixup (Verma et al., ICML 2019): pick a point uniformly from the eligible set (the input
counts), draw ``lam ~ Beta(alpha, alpha)`` and a permutation, mix the state there, mix the targets
the same way. The user's own model object mixes: ``model(x)`` inside ``mixer.apply(plan)`` runs a
traced copy of its forward (see :mod:`mmix_applied.core.graph`) that calls the same submodules; in
``eval()`` mode, with the mixer disabled, or outside ``apply`` it runs its own forward untouched.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from mmix_applied.errors import MmixWarning
from mmix_applied.utils.rules import Rule

from .attachment import (
    MixingForward,
    RecompileBudget,
    attached_mixer,
    enclosing_ddp,
    plain_state_of,
    refuse_scripted,
    remove_plain_state,
    unwrap,
)
from .functional import BatchDims, mix_value
from .graph import (
    EAGER_CHECKS,
    TraceFailed,
    build_cut_graph,
    call_key,
    concrete_args_for,
    forward_signature,
    is_current,
    trace_for_points,
)
from .plan import MixPlan, sample_beta, sample_box
from .points import INPUT, check_points, default_points, resolve_batch_dims, validate_points

__all__ = ["ALPHA", "DEFAULT_ALPHA", "MODES", "PROB", "ManifoldMixup"]

MODES = ("mixup", "cutmix")

#: The library's one default for ``alpha`` (``ManifoldMixup`` and the config's ``mix.alpha``): the
#: value this project's study chose on validation for classification (docs/core.md says why it is
#: not the paper's 2.0). Every recipe's YAML sets its own.
DEFAULT_ALPHA = 0.2

#: The rule of ``alpha``, here and in the config's ``mix.alpha`` (an infinite one would hang the Beta sampler).
ALPHA = Rule(lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0 < v < math.inf,
             "must be a number > 0 and finite (Beta(alpha, alpha); typical 0.2 to 2.0)")
#: The rule of ``prob``, here and in ``mix.prob``.
PROB = Rule(lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 <= v <= 1.0,
            "must be a number in [0, 1]")


def _first_tensor(args: Sequence[Any], kwargs: dict[str, Any]) -> Tensor | None:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, Tensor):
            return value
    return None


def _leaves(value: Any) -> list[Any]:
    """The leaves of nested tuples, lists and dicts, in order (the structures :func:`mix_value` walks)."""
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


def _check_input_mixed(before: Any, after: Any) -> None:
    """Raise a TypeError when mixing at ``"input"`` changed no tensor (e.g. uint8 images or token ids):
    the targets would be mixed while the input is not."""
    old, new = _leaves(before), _leaves(after)
    if any(isinstance(a, Tensor) and a is not b for a, b in zip(old, new)):
        return
    seen = ", ".join(f"{t.dtype} {tuple(t.shape)}" for t in old if isinstance(t, Tensor))
    raise TypeError(
        f"mixing at 'input' found no floating-point input tensor carrying the batch to mix (inputs: {seen}); "
        "the targets would be mixed but the input would not. Convert the input to float (e.g. x.float() / 255 "
        "for uint8 images), or mix at a module point after the embedding for integer inputs such as token ids."
    )


class ManifoldMixup:
    """Manifold Mixup for an unmodified model.

    Args:
        model: the network; it keeps its parameters, ``state_dict`` keys and forward. A DDP,
            DataParallel, FSDP (v1) or ``torch.compile`` wrapper is accepted: the module inside it
            is traced and mixed, and ``mixer(x)`` calls through the wrapper. One mixer per model:
            a second raises until the first is closed (:meth:`attached` finds the first).
        points: ``"auto"`` (the family's default set from the model's own description, see
            :func:`default_points`; timm CNNs: the paper's {input, stage 1, stage 2}), ``"all"``
            (the input and every declared stage) or a list of ``"input"`` and module names from
            ``model.named_modules()``.
        alpha: Beta(alpha, alpha) concentration, > 0; default :data:`DEFAULT_ALPHA` (0.2, the
            value this project's study chose; the paper: 2.0 for CIFAR, 0.2 for ImageNet).
        mode: ``"mixup"`` (interpolate) or ``"cutmix"`` (swap a box at the point's resolution).
        lam_per_sample: one lam per sample instead of one per batch (``mixup`` mode only).
        prob: probability that a step called through ``mixer(...)`` mixes at all.
        seed: seed of the mixer's own generator (None: a fresh random seed).
        batch_dims: per-point batch dimension(s) for states whose batch is not dim 0, e.g.
            ``{"rnn": 1}`` for a ``(T, B, D)`` sequence (see :data:`~mmix_applied.core.functional.BatchDims`).

    Example:
        >>> mixer = ManifoldMixup(model, alpha=0.2, seed=0)
        >>> out, plan = mixer(x)                 # samples a plan and runs the mixed forward
        >>> loss = adapter.loss(out, y, plan)    # targets or losses mixed with the same plan
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        points: str | Sequence[str] = "auto",
        alpha: float = DEFAULT_ALPHA,
        mode: str = "mixup",
        lam_per_sample: bool = False,
        prob: float = 1.0,
        seed: int | None = None,
        batch_dims: dict[str, BatchDims] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; received {type(model).__name__}.")
        refuse_scripted(model)
        wrapper, model = model, unwrap(model)
        existing = attached_mixer(model)
        if existing is not None:
            raise ValueError(
                f"received a {type(model).__name__} that already has a mixer attached ({existing!r}); a second "
                "one would stack on the first. Reuse the first (ManifoldMixup.attached(model) returns it, e.g. "
                "`mixer = ManifoldMixup.attached(model) or ManifoldMixup(model, ...)` in a setup() that runs "
                "twice), or call its close() before making a new one."
            )
        ALPHA.check(alpha, "alpha")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; received {mode!r}.")
        PROB.check(prob, "prob")
        check_points(points)
        if mode == "cutmix" and lam_per_sample:
            raise ValueError("lam_per_sample=True needs mode='mixup': cutmix uses one box per batch.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None; received {seed!r}.")
        self.model = model
        #: What ``mixer(x)`` calls: the wrapper given (DDP, compile), else the model itself.
        self.caller: nn.Module = wrapper
        self.alpha = float(alpha)
        self.mode = mode
        self.lam_per_sample = bool(lam_per_sample)
        self.prob = float(prob)
        self.batch_dims = dict(batch_dims or {})
        self.points: list[str] = (default_points(model, which=points) if isinstance(points, str)
                                  else validate_points(model, points))
        self.enabled = True
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self._plans = threading.local()  # the active plan, per thread (see the `_active` property)
        self._plans.plan = None  # set here, so a compiled step sees the same attributes on every call
        # Cut graphs for the plain call model(x), and per call key for calls with other non-tensor
        # arguments (flags, masks given or None), built when first seen.
        self._graphs: dict[str, fx.GraphModule] = {}
        self._graphs_by_call: dict[tuple, dict[str, fx.GraphModule]] = {}
        self._grids: dict[tuple, list[int] | None] = {}
        self._hooks: list[Any] = []
        self._warned: set[str] = set()
        self.trace_error: str | None = None
        self._module_points = [p for p in self.points if p != INPUT]
        try:
            self._signature = forward_signature(model)
        except (TypeError, ValueError):
            self._signature = None
        if self._module_points:
            try:
                # Built once, here: torch.compile must never see a graph being built.
                self._graphs = self._build_graphs(None)
            except TraceFailed as exc:
                self.trace_error = str(exc)
                warnings.warn(
                    f"{type(model).__name__}.forward could not be traced ({exc}); falling back to forward "
                    "hooks that mix only each point's output. Tensors that bypass a point (skip "
                    "connections) are then NOT mixed: prefer points with no skip across them.",
                    MmixWarning,
                    stacklevel=2,
                )
                self._install_hooks(self._module_points)
        self._previous_forward = model.__dict__.get("forward")
        model.forward = MixingForward(model, self, model.forward)
        plain_state_of(model)  # copies of the model (deepcopy, pickle, torch.save) are plain models
        # Dynamo compiles the routing once per point (and once unmixed): make room for exactly that.
        self._budget = RecompileBudget(len(self.points) + 1)
        self._budget.take()
        self._ddp_ref: Any = None  # the DDP wrapper found around the model (see _check_not_bypassing_ddp)

    @property
    def _active(self) -> MixPlan | None:
        """The plan of the ``apply`` block the calling thread is in: each thread has its own, so two
        threads training copies of a step with one mixer never mix with the other's plan."""
        return getattr(self._plans, "plan", None)

    @_active.setter
    def _active(self, plan: MixPlan | None) -> None:
        self._plans.plan = plan

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_plans"] = None  # active plans belong to the threads of this process
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._plans = threading.local()
        self._plans.plan = None

    @staticmethod
    def attached(model: nn.Module) -> ManifoldMixup | None:
        """The open mixer attached to ``model`` (or to the module inside a DDP/compile wrapper), or None."""
        return attached_mixer(unwrap(model)) if isinstance(model, nn.Module) else None

    # ------------------------------------------------------------------ drawing
    def sample(self, batch_size: int, device: torch.device | str | None = None, *,
               input_shape: Sequence[int] | None = None) -> MixPlan:
        """Draw a plan (point, lam, perm, box) from the mixer's own generator.

        Args:
            batch_size: number of samples in the batch (1 works: the sample mixes with itself).
            device: where the plan's tensors go (default CPU; the forward moves them if needed).
            input_shape: the input's shape; in ``cutmix`` mode it places the box on the point's grid
                so that lam is exactly the kept area there (without it, the grid is the input's).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; received {batch_size!r}.")
        self._budget.take()
        g = self.generator
        point = self.points[int(torch.randint(len(self.points), (1,), generator=g))]
        lam = sample_beta(self.alpha, batch_size if self.lam_per_sample else 1, g)
        lam = lam if self.lam_per_sample else lam[0]
        perm = torch.randperm(batch_size, generator=g)
        box = None
        if self.mode == "cutmix":
            grid = self._grid(point, input_shape)
            box, kept = sample_box(float(lam), grid, g)
            lam = torch.tensor(kept, dtype=torch.float32)
        plan = MixPlan(point=point, lam=lam, perm=perm, box=box)
        return plan if device is None else plan.to(device)

    def _grid(self, point: str, input_shape: Sequence[int] | None) -> list[int]:
        if input_shape is None:
            self._warn_once("cutmix-grid", "cutmix without input_shape: the box is drawn on a 32x32 grid, so lam is "
                            "the kept area only where the state's size is a multiple of 32; pass "
                            "sample(..., input_shape=x.shape) or call mixer(x), which does.")
            return [32, 32]
        key = (point, tuple(input_shape))
        if key not in self._grids:
            self._grids[key] = self._probe_grid(point, tuple(input_shape))
        grid = self._grids[key]
        return grid if grid else list(input_shape[2:]) or [1, 1]

    def _probe_grid(self, point: str, input_shape: tuple) -> list[int] | None:
        """Spatial size of the state at ``point`` for inputs of ``input_shape`` (one eval forward)."""
        if point == INPUT:
            return list(input_shape[2:])
        seen: list[list[int]] = []
        handle = self.model.get_submodule(point).register_forward_hook(
            lambda _m, _i, out: seen.append(list(out.shape[2:])) if isinstance(out, Tensor) else None
        )
        modes = {m: m.training for m in self.model.modules()}
        param = next(self.model.parameters(), None)
        try:
            self.model.eval()
            with torch.no_grad():
                self.model(torch.zeros((1,) + input_shape[1:], device=param.device if param is not None else None,
                                       dtype=param.dtype if param is not None and param.is_floating_point() else None))
        except Exception as exc:  # the probe is best effort; the input grid is the fallback
            self._warn_once("probe", f"cutmix could not measure the state at {point!r} ({type(exc).__name__}: {exc}); "
                            "the box uses the input's grid, so lam is only approximately the kept area there.")
            return None
        finally:
            handle.remove()
            for m, mode in modes.items():
                m.training = mode
        return seen[0] if seen and seen[0] else None

    # ------------------------------------------------------------------ applying
    @contextlib.contextmanager
    def apply(self, plan: MixPlan) -> Iterator[MixPlan]:
        """Within this context, a training-mode forward of the model mixes as ``plan`` says."""
        if not isinstance(plan, MixPlan):
            raise TypeError(f"apply() takes a MixPlan from sample(); received {type(plan).__name__}.")
        if plan.point not in self.points:
            raise ValueError(f"plan point {plan.point!r} is not one of this mixer's points {self.points}.")
        if not torch.compiler.is_compiling():
            self._budget.take()
        previous, self._active = self._active, plan
        try:
            yield plan
        finally:
            self._active = previous

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, MixPlan | None]:
        """Run ``model(*args, **kwargs)``, mixed at a freshly drawn plan when this step mixes.

        Returns:
            ``(output, plan)``; ``plan`` is None when the step ran unmixed (``eval()`` mode,
            ``enabled`` False, or skipped by ``prob``), so ``adapter.loss(output, y, plan)``
            is right in every case.
        """
        if not self.enabled or not self.model.training:
            return self.caller(*args, **kwargs), None
        if self.caller is self.model:
            self._check_not_bypassing_ddp()
        if self.prob < 1.0 and float(torch.rand((), generator=self.generator)) >= self.prob:
            return self.caller(*args, **kwargs), None
        x = _first_tensor(args, kwargs)
        if x is None or x.dim() == 0:
            raise TypeError("mixer(...) needs a batched tensor argument (the model input).")
        dim = resolve_batch_dims(self.model, INPUT, self.batch_dims)
        size = x.shape[dim] if isinstance(dim, int) and x.dim() > dim else x.shape[0]
        plan = self.sample(size, device=x.device, input_shape=tuple(x.shape))
        with self.apply(plan):
            out = self.caller(*args, **kwargs)
        return out, plan

    def _check_not_bypassing_ddp(self) -> None:
        """Refuse ``mixer(x)`` on a module that a training DDP wrapper wraps: the call would skip
        DDP's gradient sync and the ranks would drift apart. The wrapper is looked for once (a heap walk)."""
        if torch.compiler.is_compiling():
            return
        if self._ddp_ref is None:
            ddp = enclosing_ddp(self.model)
            self._ddp_ref = weakref.ref(ddp) if ddp is not None else (lambda: None)
        ddp = self._ddp_ref()
        if ddp is not None and ddp.training:
            raise ValueError(
                f"mixer(...) received a call for a {type(self.model).__name__} that a DistributedDataParallel "
                "wrapper wraps: calling the inner module bypasses DDP, so gradients would never be synced and "
                "the ranks would drift apart. Make the mixer from the wrapper, ManifoldMixup(ddp_model, ...) "
                "(it mixes the inner module and calls through DDP), or run `with mixer.apply(plan): "
                "out = ddp_model(x)`."
            )

    def _forward_mixed(self, plan: MixPlan, original: Any, args: tuple, kwargs: dict) -> Any:
        x = _first_tensor(args, kwargs)
        if x is not None and x.dim() > 0:
            if plan.lam.device != x.device or plan.perm.device != x.device:
                plan = plan.to(x.device)
            dim = resolve_batch_dims(self.model, INPUT, self.batch_dims)
            size = x.shape[dim] if isinstance(dim, int) and x.dim() > dim else x.shape[0]
            if size != plan.batch_size:
                raise ValueError(
                    f"the plan was drawn for batch size {plan.batch_size} but the input has batch size "
                    f"{size}; draw the plan with mixer.sample({size}) for this batch."
                )
        if plan.point == INPUT:
            dims = resolve_batch_dims(self.model, INPUT, self.batch_dims)
            # The model input is the first argument; side inputs (masks, lengths) are never mixed.
            mixed_args, mixed_kwargs = list(args), dict(kwargs)
            if mixed_args:
                mixed_args[0] = mix_value(mixed_args[0], plan.lam, plan.perm, plan.box, dims)
            elif mixed_kwargs:
                first = next(iter(mixed_kwargs))
                mixed_kwargs[first] = mix_value(mixed_kwargs[first], plan.lam, plan.perm, plan.box, dims)
            if dims is not None:
                _check_input_mixed((args, kwargs), (mixed_args, mixed_kwargs))
            return original(*mixed_args, **mixed_kwargs)
        if not self._graphs:  # fallback: forward hooks mix the point's output
            return original(*args, **kwargs)
        graph = self._graph_for(plan.point, args, kwargs)
        for name in EAGER_CHECKS:  # input checks the traced graph leaves out (see graph.py)
            check = getattr(self.model, name, None)
            if callable(check) and x is not None:
                check(x)
        if kwargs and self._signature is not None:  # fx renames frozen parameters: pass every argument by position
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            args, kwargs = bound.args, bound.kwargs
        return graph(*args, **kwargs, mmix_lam=plan.lam, mmix_perm=plan.perm, mmix_box=plan.box)

    def _build_graphs(self, concrete: dict[str, Any] | None) -> dict[str, fx.GraphModule]:
        base = trace_for_points(self.model, self._module_points, concrete)
        return {p: build_cut_graph(self.model, base, p, self.batch_dims) for p in self._module_points}

    def _graph_for(self, point: str, args: tuple, kwargs: dict, *, rebuilt: bool = False) -> fx.GraphModule:
        """The cut graph for this call: the prebuilt one for ``model(x)``, else one traced for the
        call's non-tensor arguments; rebuilt when the model's modules or tensors were replaced."""
        graphs = self._graphs
        if kwargs or len(args) != 1:
            concrete = concrete_args_for(self._signature, args, kwargs) if self._signature is not None else None
            if concrete is None:
                raise TypeError(f"{type(self.model).__name__}.forward does not take the arguments of this call.")
            key = call_key(concrete)
            if key not in self._graphs_by_call:
                self._graphs_by_call[key] = self._build_graphs(concrete)
            graphs = self._graphs_by_call[key]
        graph = graphs[point]
        if not rebuilt and not torch.compiler.is_compiling() and not is_current(self.model, graph):
            # The model changed since tracing (a new head, assigned weights, buffers moved by .to()).
            self._graphs = self._build_graphs(None)
            self._graphs_by_call.clear()
            return self._graph_for(point, args, kwargs, rebuilt=True)
        return graph

    def _install_hooks(self, module_points: list[str]) -> None:
        for name in module_points:
            def hook(_module, _inputs, output, name=name):
                plan = self._active
                if plan is None or plan.point != name or not self.enabled or not self.model.training:
                    return None
                dims = resolve_batch_dims(self.model, name, self.batch_dims)
                return mix_value(output, plan.lam, plan.perm, plan.box, dims)
            module = self.model.get_submodule(name)
            handle = module.register_forward_hook(hook)
            self._hooks.append(handle)
            plain_state_of(module).hook_ids.add(handle.id)  # copies of the module leave the hook out

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, MmixWarning, stacklevel=3)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Remove every hook and the forward routing; the model is as it was. Idempotent."""
        for handle in self._hooks:
            handle.remove()
        for name in self._module_points if self._hooks else []:
            remove_plain_state(self.model.get_submodule(name))
        self._hooks.clear()
        self._budget.release()
        self._graphs.clear()
        self._graphs_by_call.clear()
        self.enabled = False  # a closed mixer's __call__ runs unmixed and returns plan None
        current = self.model.__dict__.get("forward")
        if isinstance(current, MixingForward) and current.mixer is self:
            remove_plain_state(self.model)
            if self._previous_forward is None:
                del self.model.__dict__["forward"]
            else:
                self.model.__dict__["forward"] = self._previous_forward
            current.mixer = None
        self._active = None

    def __deepcopy__(self, memo: dict) -> ManifoldMixup:
        """A copy of the mixer (e.g. inside a deep-copied LightningModule) is a new mixer attached to
        the copy of its model, with the same settings and generator state; never a detached one that
        would return plans for a forward that does not mix."""
        import copy

        caller = copy.deepcopy(self.caller, memo)
        new = ManifoldMixup(caller, points=list(self.points), alpha=self.alpha, mode=self.mode,
                            lam_per_sample=self.lam_per_sample, prob=self.prob, seed=0,
                            batch_dims=copy.deepcopy(self.batch_dims, memo))
        new.generator.set_state(self.generator.get_state())
        new.enabled = self.enabled
        return new

    def __enter__(self) -> ManifoldMixup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def state_dict(self) -> dict[str, Any]:
        """The generator state (so a resumed run draws the same plans) and the settings."""
        return {"generator": self.generator.get_state(), "points": list(self.points), "alpha": self.alpha,
                "mode": self.mode, "enabled": self.enabled}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator state saved by :meth:`state_dict`."""
        if not isinstance(state, dict) or "generator" not in state:
            raise ValueError("load_state_dict expects the dict from ManifoldMixup.state_dict() (a 'generator' entry).")
        if state.get("points", self.points) != self.points:
            warnings.warn(f"restoring a mixer state saved with points {state['points']} into a mixer with "
                          f"points {self.points}: the plans drawn will differ.", MmixWarning, stacklevel=2)
        # clone: a row of a gathered tensor (offset into a shared storage) segfaults Generator.set_state
        self.generator.set_state(state["generator"].clone())
        self.enabled = bool(state.get("enabled", self.enabled))

    def __repr__(self) -> str:
        return (f"ManifoldMixup(model={type(self.model).__name__}, points={self.points}, alpha={self.alpha}, "
                f"mode={self.mode!r}, lam_per_sample={self.lam_per_sample}, prob={self.prob})")
