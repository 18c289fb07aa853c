"""HookSession, the only place xai_torch registers hooks or changes state temporarily, and the
layer taps built on it (:class:`LayerTap`, :func:`capture`).

Every hook handle, entered context (a torch function mode, ``no_grad``...) and temporary
attribute change goes onto one stack and is undone in reverse order when the session closes:
on success, on an exception, on KeyboardInterrupt. Closing twice is harmless. Nothing relies
on ``__del__``.

A tap records only the forward passes of the thread that created it (the hooks check the
thread identity), and only while its session is open: one explainer call, or one ``with``
block. Another thread running the same model at the same time is not seen.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Optional, TypeVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .errors import XaiError
from .layers import find_layers

_MISSING = object()
_CM = TypeVar("_CM")


class SessionHook:
    """A module hook registered through a :class:`HookSession` (the function, wrapped).

    A deep copy of the module shares it instead of copying it: it holds per-call state (a tap's
    activations, which ``copy.deepcopy`` refuses when they are in a graph) that belongs to the
    call that registered it, not to the copy; :func:`strip_session_hooks` removes it from the
    copy (``metrics.model_randomization`` copies a model that other threads may be explaining).
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> SessionHook:
        return self


def strip_session_hooks(model: nn.Module) -> None:
    """Remove every :class:`SessionHook` from ``model``'s modules (a deep copy's: the original's
    are removed by their sessions)."""
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for key in [k for k, fn in hooks.items() if isinstance(fn, SessionHook)]:
                hooks.pop(key, None)
                for extra in (module._forward_hooks_with_kwargs, module._forward_hooks_always_called,
                              module._forward_pre_hooks_with_kwargs):
                    extra.pop(key, None)


class HookSession:
    """A stack of hook handles and restorers, released in reverse order exactly once.

    Example:
        >>> with HookSession() as s:
        ...     s.forward_hook(model.layer4, lambda m, i, o: acts.append(o))
        ...     model(x)
        # the hook is gone here, even if model(x) raised
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._closed = False

    # -- registration -------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this HookSession is closed; open a new one")

    def add(self, handle: RemovableHandle) -> RemovableHandle:
        """Take ownership of a handle with ``.remove()`` (``torch.utils.hooks.RemovableHandle``)."""
        self._check_open()
        self._stack.callback(handle.remove)
        return handle

    def callback(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` when the session closes (in reverse registration order)."""
        self._check_open()
        self._stack.callback(fn)

    def enter(self, cm: contextlib.AbstractContextManager[_CM]) -> _CM:
        """Enter a context manager now and exit it when the session closes."""
        self._check_open()
        return self._stack.enter_context(cm)

    def forward_hook(self, module: nn.Module, fn: Callable[..., Any], **kwargs: Any) -> RemovableHandle:
        self._check_open()
        return self.add(module.register_forward_hook(SessionHook(fn), **kwargs))

    def forward_pre_hook(self, module: nn.Module, fn: Callable[..., Any], **kwargs: Any) -> RemovableHandle:
        self._check_open()
        return self.add(module.register_forward_pre_hook(SessionHook(fn), **kwargs))

    def tensor_hook(self, tensor: torch.Tensor,
                    fn: Callable[[torch.Tensor], Optional[torch.Tensor]]) -> RemovableHandle:
        self._check_open()
        return self.add(tensor.register_hook(fn))  # type: ignore[no-untyped-call]  # torch's stub is untyped

    def set_attr(self, obj: object, name: str, value: Any) -> None:
        """Set ``obj.name = value`` until the session closes, then restore the old value."""
        self._check_open()
        old = obj.__dict__.get(name, _MISSING) if hasattr(obj, "__dict__") else getattr(obj, name)

        def restore() -> None:
            if old is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, old)

        setattr(obj, name, value)
        self._stack.callback(restore)

    # -- release --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Undo everything in reverse order. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stack.close()

    def __enter__(self) -> HookSession:
        self._check_open()
        return self

    def __exit__(self, *exc: Any) -> bool:
        if self._closed:
            return False
        self._closed = True
        # ExitStack runs every callback even if one raises, and never swallows ``exc``.
        return bool(self._stack.__exit__(*exc))


def this_thread(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` as a hook that runs for the module calls of the thread that wraps it only; calls
    from other threads (the same model served elsewhere) pass untouched.

    Example:
        >>> session.forward_hook(layer, this_thread(lambda m, i, o: seen.append(m)))
    """
    thread = threading.get_ident()

    def guarded(*args: Any, **kwargs: Any) -> Any:
        return hook(*args, **kwargs) if threading.get_ident() == thread else None

    return guarded


# --- taps ------------------------------------------------------------------------------------------
def check_hookable(model: nn.Module, layers: Sequence[tuple[str, nn.Module]]) -> None:
    """Raise when forward hooks on ``layers`` of ``model`` cannot record anything.

    A TorchScript module (``torch.jit.script`` or ``torch.jit.trace``) runs its graph outside
    Python: scripted modules refuse hooks, and the layers inside a traced one never call
    theirs. A layer is hookable when neither ``model`` nor any module above the layer is one
    (a traced module called from eager code is hookable itself, its layers are not).

    Args:
        model: the model; layers: ``(dotted name, module)`` pairs, as :func:`find_layers`
            gives them.

    Raises:
        XaiError: naming the layer, the TorchScript module and how it was made.
    """
    modules = dict(model.named_modules())
    for name, module in layers:
        parts = name.split(".") if name else []
        above = [".".join(parts[:i]) for i in range(len(parts))]  # "" is the model itself
        owners = [(a, modules.get(a)) for a in above]
        if isinstance(module, torch.jit.ScriptModule) and not _traced(module):
            owners.append((name, module))
        for owner, m in owners:
            if isinstance(m, torch.jit.ScriptModule):
                how = "traced with torch.jit.trace" if _traced(m) else "scripted with torch.jit.script"
                where = "the model" if owner == "" else f"submodule {owner!r}"
                raise XaiError(
                    f"layer {name!r} cannot be hooked: {where} is a TorchScript module ({how}), which "
                    "runs its graph outside Python, so forward hooks on its layers never run. Explain the "
                    "eager (untraced, unscripted) model instead."
                )


def _traced(module: nn.Module) -> bool:
    return "Traced" in type(module).__name__  # torch.jit's TracedModule / TopLevelTracedModule


class LayerTap:
    """Forward hooks that record what some layers of ``model`` output during the forward passes
    of the thread that creates the tap, one forward at a time.

    A pre-hook on ``model`` starts each forward by clearing the record, so the tap always holds
    the most recent forward of ``model`` (a forward that raised leaves ``output`` at None). A
    layer's tensor output is recorded as it is, still in the autograd graph, and the rest of the
    network goes on with a copy, so later in-place ops (``ReLU(inplace=True)``) cannot change
    what was recorded.

    Attributes:
        layers: ``(dotted name, module)`` pairs.
        outputs: per layer, its outputs in the last forward, one per call of the layer.
        output: ``model``'s output in the last complete forward, else None.
        input_shape, input_device, input_dtype: of the first positional argument of the last
            forward (when it is a tensor).
        input: a detached copy of that argument, kept only with ``keep_input=True``.
        forwards: forward passes of ``model`` recorded so far.
        layer_inputs: with ``layer_inputs=True`` the tap records each layer's first positional
            input (still in the graph, in ``outputs``) instead of its output, and the layer runs
            on a copy of it.

    Example:
        >>> with HookSession() as s:
        ...     tap = LayerTap(s, model, find_layers(model, "layer4"))
        ...     out = model(x)
        ...     a = tap.outputs[0][0]                   # layer4's output, in the graph
    """

    def __init__(self, session: HookSession, model: nn.Module, layers: Sequence[tuple[str, nn.Module]], *,
                 keep_input: bool = False, layer_inputs: bool = False) -> None:
        check_hookable(model, layers)
        self.thread = threading.get_ident()
        self.layers = list(layers)
        self.outputs: list[list[Any]] = [[] for _ in self.layers]
        self.output: Any = None
        self.input: Optional[torch.Tensor] = None
        self.input_shape: Optional[torch.Size] = None
        self.input_device: Optional[torch.device] = None
        self.input_dtype: Optional[torch.dtype] = None
        self.forwards = 0
        self._keep_input = keep_input
        self._paused = 0
        session.forward_pre_hook(model, self._start)
        self.layer_inputs = layer_inputs
        for i, (_, module) in enumerate(self.layers):
            if layer_inputs:
                session.forward_pre_hook(module, self._input_recorder(i))
            else:
                session.forward_hook(module, self._recorder(i))
        session.forward_hook(model, self._finish)

    def _active(self) -> bool:
        return self._paused == 0 and threading.get_ident() == self.thread

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Forward passes inside this block are not recorded (an explainer's own forwards)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def clear(self) -> None:
        for outs in self.outputs:
            outs.clear()
        self.output = None

    def _start(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._active():
            return
        self.clear()
        first = args[0] if args else None
        if isinstance(first, torch.Tensor):
            self.input_shape, self.input_device, self.input_dtype = first.shape, first.device, first.dtype
            self.input = first.detach().clone() if self._keep_input else None
        else:
            self.input_shape = self.input_device = self.input_dtype = self.input = None

    def _recorder(self, i: int) -> Callable[[nn.Module, Any, Any], Any]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            if not self._active():
                return None
            self.outputs[i].append(output)
            # the network goes on with a copy: in-place ops later leave the recorded tensor intact
            return output.clone() if isinstance(output, torch.Tensor) else None

        return hook

    def _input_recorder(self, i: int) -> Callable[[nn.Module, tuple[Any, ...]], Any]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
            if not self._active() or not args:
                return None
            self.outputs[i].append(args[0])
            # the layer runs on a copy: its in-place ops leave the recorded input intact
            return (args[0].clone(), *args[1:]) if isinstance(args[0], torch.Tensor) else None

        return hook

    def _finish(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self._active():
            self.output = output
            self.forwards += 1


class Activations(Mapping[str, Any]):
    """Read-only mapping ``layer name -> output`` of a :func:`capture` block, live while the
    block runs (the last forward wins) and kept after it ends."""

    def __init__(self, tap: LayerTap) -> None:
        self._tap = tap

    def __getitem__(self, name: str) -> Any:
        for (n, _), outs in zip(self._tap.layers, self._tap.outputs):
            if n == name and outs:
                return outs[-1]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (n for (n, _), outs in zip(self._tap.layers, self._tap.outputs) if outs)

    def __len__(self) -> int:
        return sum(1 for outs in self._tap.outputs if outs)

    def __repr__(self) -> str:
        shapes = {n: tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for n, v in self.items()}
        return f"Activations({shapes})"


@contextlib.contextmanager
def capture(model: nn.Module, layers: Any) -> Iterator[Activations]:
    """Record the outputs of layers of ``model`` during your own forward passes.

    Inside the block every forward of ``model`` from this thread replaces the record (the last
    forward wins; a layer called several times in one forward keeps its last call). The
    tensors stay in the autograd graph of that forward, so ``torch.autograd.grad(score,
    acts["layer4"])`` works when the forward ran with gradients; under ``torch.no_grad()`` they
    have no graph. ``.detach()`` them to keep them past the forward without its graph. The rest
    of the network runs on a copy of each recorded output (same values), so later in-place ops
    cannot change the record. Every hook is removed when the block ends, even on an exception;
    the record stays readable.

    Args:
        model: the ``nn.Module`` you run.
        layers: a dotted name, a module of ``model``, or a list of them.

    Returns:
        a read-only mapping ``name -> output`` (:class:`Activations`), keyed by dotted names;
        layers not called in the last forward are absent.

    Raises:
        XaiError: for an unknown layer (the message lists the closest names), a model that
        is not an ``nn.Module``, or a layer inside a traced or scripted (TorchScript) module.

    Example:
        >>> with xt.capture(model, ["layer3", "layer4"]) as acts:
        ...     out = model(x)
        >>> acts["layer4"].shape
        torch.Size([8, 512, 7, 7])
    """
    if not isinstance(model, nn.Module):
        raise XaiError(f"capture needs an nn.Module to find layers in; got {type(model).__name__}.")
    found = find_layers(model, layers)
    with HookSession() as session:
        yield Activations(LayerTap(session, model, found))
