"""HookSession: the only place xai_torch registers hooks or changes state temporarily.

Every hook handle, entered context (a torch function mode, ``no_grad``...) and temporary
attribute change goes onto one stack and is undone in reverse order when the session closes:
on success, on an exception, on KeyboardInterrupt. Closing twice is harmless. Nothing relies
on ``__del__``.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_MISSING = object()


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

    def add(self, handle):
        """Take ownership of a handle with ``.remove()`` (``torch.utils.hooks.RemovableHandle``)."""
        self._check_open()
        self._stack.callback(handle.remove)
        return handle

    def callback(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` when the session closes (in reverse registration order)."""
        self._check_open()
        self._stack.callback(fn)

    def enter(self, cm):
        """Enter a context manager now and exit it when the session closes."""
        self._check_open()
        return self._stack.enter_context(cm)

    def forward_hook(self, module: nn.Module, fn, **kwargs):
        return self.add(module.register_forward_hook(fn, **kwargs))

    def forward_pre_hook(self, module: nn.Module, fn, **kwargs):
        return self.add(module.register_forward_pre_hook(fn, **kwargs))

    def tensor_hook(self, tensor: torch.Tensor, fn):
        return self.add(tensor.register_hook(fn))

    def set_attr(self, obj, name: str, value) -> None:
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

    def __exit__(self, *exc) -> bool:
        if self._closed:
            return False
        self._closed = True
        # ExitStack runs every callback even if one raises, and never swallows ``exc``.
        return bool(self._stack.__exit__(*exc))

