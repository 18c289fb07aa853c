"""The Explainer base class: constructor config, context manager, ``__call__`` / ``explain``.

Common arguments, documented here once for every explainer:

Args:
    model: the ``nn.Module`` (or any callable ``x -> output``) to explain. It is never
        modified: no ``eval()``, no ``zero_grad()``, no swapped modules, no hooks left behind.
        Put it in eval mode yourself (a warning says so when it is not).
    batch_size: the most samples one model call may see (images x targets, steps, noise
        draws...). ``None`` picks a size from the input size; on CUDA an out-of-memory error
        halves it and retries.
    progress: tqdm progress bar on long work; ``None`` shows it when a call makes many model
        calls and stderr is a terminal.

Call arguments:
    x: float tensor ``(B, C, H, W)`` (or ``(C, H, W)``, treated as B = 1) in the model's input
        space, on any device. It is moved to the model's device for the work and results come
        back on ``x.device``, in float32 (float64 if ``x`` is float64).
    target: ``None`` (per-image argmax), an int, one int per image, a ``(B, K)`` array (K
        results per image: outputs gain a dim after the batch dim), or an ``xt.Target`` /
        callable ``output -> (n,)`` scores. See :mod:`xai_torch.targets`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .batching import auto_batch_size, check_batch_size, map_chunks
from .errors import XaiError, XaiWarning, check_input
from .hooks import HookSession
from .targets import Target, as_target

_STOCHASTIC_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


@dataclass
class Explanation:
    """What every explainer returns from ``explain``.

    Attributes:
        attributions: ``(B, C, H, W)`` pixel attributions or ``(B, 1, H, W)`` maps, raw and
            signed; ``(B, K, ...)`` for ``(B, K)`` targets.
        targets: class index explained per image, ``(B,)`` or ``(B, K)``; ``None`` for
            callable targets.
        scores: the target score ``F_c(x)`` per image, ``(B,)`` or ``(B, K)``.
    """

    attributions: torch.Tensor
    targets: Optional[torch.Tensor]
    scores: torch.Tensor


def model_device(model, default: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer (``default`` if it has none)."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return default


def result_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def keep_buffers(model: nn.Module, session: HookSession) -> None:
    """Restore every buffer of ``model`` (BatchNorm running statistics...) when ``session``
    closes: a forward in training mode updates them, and the user's model keeps no trace."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]

    def restore() -> None:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)

    session.callback(restore)


class Explainer:
    """Base of all explainers. Subclasses implement :meth:`_explain` and list their
    configuration in :meth:`_config`.

    Usable directly (hooks live for one call) or as a context manager (state that a method
    keeps across calls lives inside the ``with`` block and is released at its end, even on
    an exception). Nested and repeated ``with`` blocks are fine.
    """

    #: per-call keyword arguments this explainer accepts besides ``target`` (``baseline``...).
    call_keywords: tuple = ()

    def __init__(self, model, *, batch_size: Optional[int] = None, progress: Optional[bool] = None) -> None:
        if not callable(model):
            raise XaiError(f"model must be an nn.Module or a callable; got {type(model).__name__}.")
        self.model = model
        self.batch_size = check_batch_size(batch_size)
        self.progress = progress
        self._sessions: list[HookSession] = []

    # -- configuration --------------------------------------------------------------------
    def _config(self) -> dict:
        """Constructor keywords shown by ``repr`` (subclasses extend it)."""
        return {"batch_size": self.batch_size, "progress": self.progress}

    def __repr__(self) -> str:
        model = type(self.model).__name__
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}(model={model}, {args})"

    # -- context manager ------------------------------------------------------------------
    def __enter__(self):
        session = HookSession()
        self._sessions.append(session)
        try:
            self._open(session)
        except BaseException:
            self._sessions.pop()
            session.close()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        if not self._sessions:
            return False
        return self._sessions.pop().__exit__(*exc)

    def _open(self, session: HookSession) -> None:
        """Register state that lives for the whole ``with`` block (none by default)."""

    # -- calling --------------------------------------------------------------------------
    #: whether the running call wants the full result (``explain``) or only the attributions
    #: (``__call__``): methods may skip work that only feeds the extra fields (IG's delta).
    _details: bool = True

    def __call__(self, x: torch.Tensor, target=None, **kwargs) -> torch.Tensor:
        """``explain(x, target, ...).attributions`` (without the work that only the other
        fields of the result need)."""
        return self._run(x, target, kwargs, details=False).attributions

    def explain(self, x: torch.Tensor, target=None, **kwargs) -> Explanation:
        """Explain ``x`` for ``target``; see the subclass for extra fields of the result."""
        return self._run(x, target, kwargs, details=True)

    def _run(self, x: torch.Tensor, target, kwargs: dict, details: bool) -> Explanation:
        unknown = sorted(set(kwargs) - set(self.call_keywords))
        if unknown:
            accepted = ", ".join(("target",) + self.call_keywords)
            raise XaiError(
                f"{type(self).__name__} got unexpected call argument(s) {unknown}; it accepts "
                f"{accepted}. Configuration goes to the constructor: {type(self).__name__}(model, ...)."
            )
        x4, _ = check_input(x)
        tgt = self._coerce_target(target, x4.shape[0])
        training = self._warn_if_training()
        previous, self._details = self._details, details
        try:
            with HookSession() as session:
                if training:
                    keep_buffers(self.model, session)
                return self._explain(x4, tgt, session, **kwargs)
        finally:
            self._details = previous

    def _coerce_target(self, target, batch: int) -> Target:
        """The call's ``target`` as a bound :class:`Target` (methods that score probabilities
        by default override it)."""
        return as_target(target, batch)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, **kwargs) -> Explanation:
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------
    def _map_samples(self, x: torch.Tensor, target: Target, fn) -> list:
        """Run ``fn(x_chunk, rows)`` over the ``B * K`` samples (image ``r // K`` with target
        column ``r % K``) on the model's device, at most ``batch_size`` samples per call."""
        device = model_device(self.model, x.device)
        k = target.k or 1
        x_dev = x.to(device)

        def chunk(start: int, stop: int):
            rows = torch.arange(start, stop, device=device)
            return fn(x_dev[rows // k] if k > 1 else x_dev[start:stop], rows)

        return map_chunks(chunk, x.shape[0] * k, self._chunk_size(x, device), device=device,
                          progress=self.progress, desc=type(self).__name__)

    @staticmethod
    def _per_image(items: list, x: torch.Tensor, target: Target, dtype=None) -> torch.Tensor:
        """Concatenate per-sample chunk results, back on ``x.device``, as ``(B, [K,] ...)``."""
        t = torch.cat(items).to(device=x.device, dtype=dtype)
        return t.reshape(x.shape[0], target.k, *t.shape[1:]) if target.k is not None else t

    def _chunk_size(self, x: torch.Tensor, device: torch.device) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return auto_batch_size(x[0].numel(), device)

    def _warn_if_training(self) -> bool:
        """Warn when the model is in training mode; return whether any module is."""
        model = self.model
        if not isinstance(model, nn.Module):
            return False
        if model.training:
            kinds = sorted({type(m).__name__ for m in model.modules() if isinstance(m, _STOCHASTIC_LAYERS)})
            if kinds:
                warnings.warn(
                    f"{type(self).__name__}: the model is in training mode and has {', '.join(kinds)}: "
                    "each image's explanation then depends on the rest of the batch and on chance. "
                    "Call model.eval() first (xai_torch never changes the mode for you).",
                    XaiWarning,
                    stacklevel=4,
                )
        return any(m.training for m in model.modules())
