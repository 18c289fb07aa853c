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
    select_output: what of the model's output the target scores, on every model call:
        ``None`` (the output itself; class targets read the ``logits`` of a dict or an object,
        Hugging Face's ``ImageClassifierOutput``, by themselves), a key of a dict or an
        attribute name (``"logits"``, ``"out"``), a position in a tuple (``0``), or a callable
        ``output -> scores``. Every explainer accepts it: the base adds the keyword to each
        subclass's constructor (see :meth:`Explainer.__init_subclass__`).
    precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: the model's passes run
        under ``torch.autocast(device, dtype)`` (the backward follows autocast's casts); outputs
        are widened before scoring, and attributions are accumulated and returned as with
        float32 (float32, or float64 for a float64 ``x``). Meant for GPUs with tensor cores
        (``python -m benchmarks --gpu`` reports the speed-up, the map correlation with float32
        and IG's completeness). :class:`~xai_torch.SmoothGrad` runs its passes through the
        explainer it wraps: give it there. The model is not converted (its
        parameters keep their dtype); an unknown name, or a dtype autocast does not support on
        the model's device, raises :class:`~xai_torch.XaiError` at the call, before any model
        call. Added to every constructor like ``select_output``; in attached mode
        (``from_output``) your own forward runs as you run it.

Call arguments:
    x: float tensor ``(B, C, H, W)`` (or ``(C, H, W)``, treated as B = 1) in the model's input
        space, on any device. It is moved to the model's device for the work and results come
        back on ``x.device``, in float32 (float64 if ``x`` is float64). ``x`` must have the
        model's dtype and channel count; nothing is cast for you, because a cast would change
        the precision silently (a float64 ``x`` computed in float32, a float32 ``x`` in
        bfloat16). A mismatch (float64 ``x`` for a float32 model, float32 ``x`` for a float16 /
        bfloat16 one, 4 channels for a 3-channel model) raises :class:`~xai_torch.XaiError`
        naming both dtypes or channel counts; pass ``x.to(model_dtype)`` (results are then
        float32) or convert the model.
    target: ``None`` (per-image argmax), an int, one int per image, a ``(B, K)`` array (K
        results per image: outputs gain a dim after the batch dim), or an ``xt.Target`` /
        callable ``output -> (n,)`` scores, or ``xt.TopK(k)`` (the k best classes of each clean
        image, resolved with one forward per image). See :mod:`xai_torch.targets`. A target with an
        ``attach(model, session)`` method (``xt.NeuronTarget``) is attached once per call,
        before the first forward, in the call's hook session.
    additional_forward_args: inputs the model takes after ``x`` and that are not attributed,
        ``model(x, *args)`` (Captum's name): one object or a tuple. A tensor whose first dim is
        B is per example: every model input built from image ``i`` (path points, noisy copies,
        occluded or masked images) gets its row ``i``; anything else is passed as it is.
        Accepted by every explainer of an ``nn.Module``; the gradient and IG families,
        SmoothGrad, Occlusion and RISE route per-example tensors (the others raise
        :class:`~xai_torch.XaiError` for them and pass the other objects).
"""
from __future__ import annotations

import functools
import inspect
import sys
import threading
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from .batching import check_batch_size
from .errors import XaiError, check_input
from .hooks import HookSession, this_thread
from .modelio import ForwardArgs, OutputSelector, Packed, check_select_output, model_device
from .rules import wrapper_errors
from .runner import ModelRunner, check_precision, keep_buffers, warn_if_training
from .targets import Target, TopK, as_target


@dataclass
class Explanation:
    """What every explainer returns from ``explain``.

    Attributes:
        attributions: ``(B, C, H, W)`` pixel attributions or ``(B, 1, H, W)`` maps, raw and
            signed; ``(B, K, ...)`` for ``(B, K)`` targets. With ``layer=`` (gradient
            explainers): shaped like the layer, or a dict ``name -> tensor`` for a list of layers.
        targets: class index explained per image, ``(B,)`` or ``(B, K)``; ``None`` for
            callable targets.
        scores: the target score ``F_c(x)`` per image, ``(B,)`` or ``(B, K)``.
    """

    attributions: torch.Tensor
    targets: Optional[torch.Tensor]
    scores: Optional[torch.Tensor]


def _subclasses(cls: type[Explainer]) -> list[type[Explainer]]:
    out: list[type[Explainer]] = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


class Explainer:
    """Base of all explainers. Subclasses implement :meth:`_explain` and list their
    configuration in :meth:`_config`.

    Usable directly (hooks live for one call) or as a context manager (state that a method
    keeps across calls lives inside the ``with`` block and is released at its end, even on
    an exception). Nested and repeated ``with`` blocks are fine.

    Threads: several threads may run explainers on one model, and share one explainer, at
    once (a web service, a thread pool); each gets the results it would get alone. Hooks
    record only the forwards of the thread that registered them, the rectifier rule applies
    in its own thread only, and ``with`` blocks are kept per thread.
    """

    #: per-call keyword arguments this explainer accepts besides ``target`` (``baseline``...).
    call_keywords: tuple[str, ...] = ()
    #: whether ``from_output`` (attached mode) works: the explainer captures all it needs during
    #: the user's own forward inside ``with explainer:``
    attachable: ClassVar[bool] = False

    def __init__(self, model: Any, *, batch_size: Optional[int] = None, progress: Optional[bool] = None,
                 select_output: OutputSelector = None, precision: str = "float32") -> None:
        if not callable(model):
            raise XaiError(f"model must be an nn.Module or a callable; got {type(model).__name__}.")
        self.model = model
        self.batch_size = check_batch_size(batch_size)
        self.progress = progress
        self.select_output = check_select_output(select_output)
        self.precision = check_precision(precision)
        # the sessions of the open ``with`` blocks: a stack per thread (threads may share an instance)
        self._sessions: dict[int, list[HookSession]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give the subclass's own ``__init__`` (when it has one without them) the keyword-only
        ``select_output=`` and ``precision=`` of the base: the wrapper takes them off the
        arguments, runs the subclass's ``__init__``, then sets them, so every explainer accepts
        them without repeating them in its signature (``inspect.signature`` shows them)."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        sig = inspect.signature(init)
        missing = [n for n in ("select_output", "precision") if n not in sig.parameters]
        if not missing:
            return

        @functools.wraps(init)
        def __init__(self: Explainer, *args: Any, **kw: Any) -> None:
            given = {n: kw.pop(n) for n in missing if n in kw}
            selected = check_select_output(given.get("select_output"))
            precision = check_precision(given.get("precision", "float32"))
            init(self, *args, **kw)
            if selected is not None:
                self.select_output = selected
            if "precision" in given:
                self.precision = precision

        params = list(sig.parameters.values())
        at = next((i for i, p in enumerate(params) if p.kind == p.VAR_KEYWORD), len(params))
        extra = [inspect.Parameter("select_output", inspect.Parameter.KEYWORD_ONLY, default=None),
                 inspect.Parameter("precision", inspect.Parameter.KEYWORD_ONLY, default="float32")]
        extra = [p for p in extra if p.name in missing]
        __init__.__signature__ = sig.replace(parameters=params[:at] + extra + params[at:])  # type: ignore[attr-defined]
        setattr(cls, "__init__", __init__)  # noqa: B010 (mypy refuses assigning to a method)

    # -- configuration --------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        """Constructor keywords shown by ``repr`` (subclasses extend it)."""
        chosen = {} if self.select_output is None else {"select_output": self.select_output}
        if self.precision != "float32":
            chosen["precision"] = self.precision
        return {"batch_size": self.batch_size, "progress": self.progress, **chosen}

    def __repr__(self) -> str:
        model = type(self.model).__name__
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}(model={model}, {args})"

    # -- context manager ------------------------------------------------------------------
    def __enter__(self: Any) -> Any:
        session = HookSession()
        self._sessions.setdefault(threading.get_ident(), []).append(session)
        try:
            self._open(session)
        except BaseException:
            self._pop_session()
            session.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> bool:
        session = self._pop_session()
        return False if session is None else bool(session.__exit__(*exc))

    def _pop_session(self) -> Optional[HookSession]:
        """The innermost open ``with`` block of this thread, removed from its stack (None if none)."""
        thread = threading.get_ident()
        stack = self._sessions.get(thread)
        if not stack:
            return None
        session = stack.pop()
        if not stack:
            del self._sessions[thread]
        return session

    def _open(self, session: HookSession) -> None:
        """Register state that lives for the whole ``with`` block (none by default)."""

    # -- calling --------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, target: Any = None, **kwargs: Any) -> torch.Tensor:
        """``explain(x, target, ...).attributions`` (without the work that only the other
        fields of the result need)."""
        return self._run(x, target, kwargs, details=False).attributions

    def explain(self, x: torch.Tensor, target: Any = None, **kwargs: Any) -> Explanation:
        """Explain ``x`` for ``target``; see the subclass for extra fields of the result."""
        return self._run(x, target, kwargs, details=True)

    def from_output(self, output: Any, target: Any = None) -> Explanation:
        """Attached mode: the explanation from the output of the user's own forward inside
        ``with explainer:``, without a second forward. Only explainers that capture what they
        need during that forward support it; the others raise :class:`XaiError`."""
        # the public explainers (a run-time look-up in the loaded package, not an import)
        public = vars(sys.modules[__name__.split(".")[0]])
        supported = sorted({c.__name__ for c in _subclasses(Explainer)
                            if c.attachable and public.get(c.__name__) is c})
        names = ", ".join(supported) if supported else "none yet"
        raise XaiError(
            f"{type(self).__name__} has no attached mode (from_output): it needs its own model calls. "
            f"Call it on x instead: {type(self).__name__}(model)(x, target). Explainers with attached mode: {names}."
        )

    def _run(self, x: torch.Tensor, target: Any, kwargs: dict[str, Any], details: bool) -> Explanation:
        """The call: check the arguments and the input, bind the target, run :meth:`_explain`
        in a :class:`HookSession` (buffers restored when the model is in training mode)."""
        kwargs = dict(kwargs)
        extra = kwargs.pop("additional_forward_args", None)
        unknown = sorted(set(kwargs) - set(self.call_keywords))
        if unknown:
            accepted = ", ".join(("target",) + tuple(self.call_keywords) + ("additional_forward_args",))
            raise XaiError(
                f"{type(self).__name__} got unexpected call argument(s) {unknown}; it accepts "
                f"{accepted}. Configuration goes to the constructor: {type(self).__name__}(model, ...)."
            )
        packed = self._packed(x) if isinstance(x, (tuple, list)) else None
        if packed is not None:
            x = packed.x
            kwargs = {k: packed.pack(v, k) for k, v in kwargs.items()}
            if "baseline" in self.call_keywords and kwargs.get("baseline") is None:
                kwargs["baseline"] = 0.0  # Captum's default for tuples: "black" has no meaning across members
        x4, _ = check_input(x)
        top = target if isinstance(target, TopK) else None
        tgt = self._coerce_target(target, x4.shape[0]) if top is None else top
        training = self._warn_if_training()
        with HookSession() as session, wrapper_errors(type(self).__name__):
            if training:
                keep_buffers(self.model, session)
            if packed is not None:  # before additional_forward_args' hook: members first, then the args
                session.forward_pre_hook(self.model, this_thread(packed.hook))
            if extra is not None:
                self._forward_args(extra, x4, session)
            if top is not None:  # the top-k classes of the clean images, then a (B, k) class target
                tgt = self._coerce_target(top.resolved(self.runner(x4).top_classes(x4, top)), x4.shape[0])
            attach = getattr(tgt, "attach", None)
            if callable(attach):  # a target that reads the model's layers (xt.NeuronTarget)
                attach(self.model, session)
            result = self._explain(x4, tgt, session, details=details, **kwargs)
        if packed is not None:
            result.attributions = packed.split(result.attributions)
        return result

    #: whether ``x`` may be a tuple of tensors (packed, see :class:`~xai_torch.modelio.Packed`)
    tuple_inputs: ClassVar[bool] = False

    def _packed(self, x: Any) -> Packed:
        """A tuple ``x`` packed into one tensor, for the explainers that take tuples."""
        name = type(self).__name__
        if not self.tuple_inputs or getattr(self, "layers", None):
            raise XaiError(f"{name}{' with layer=' if self.tuple_inputs else ''} takes x as one tensor; tuple inputs "
                           "(several tensors per example) go to Gradient, InputXGradient, GuidedBackprop, "
                           "Deconvnet, IntegratedGradients, ExpectedGradients, DeepLift, DeepLiftShap, LRP, "
                           "Occlusion and SmoothGrad around them.")
        if not isinstance(self.model, nn.Module):
            raise XaiError(f"{name}: tuple inputs need an nn.Module model (the members reach it through a forward "
                           f"pre-hook); got {type(self.model).__name__}.")
        return Packed(tuple(x), name)

    def _forward_args(self, args: Any, x: torch.Tensor, session: HookSession) -> None:
        """Route ``additional_forward_args`` to every model call of this call (runners made by
        :meth:`runner` in this thread): a forward pre-hook on the model, removed with ``session``."""
        if not isinstance(self.model, nn.Module):
            raise XaiError(f"{type(self).__name__}: additional_forward_args needs an nn.Module model (they reach it "
                           f"through a forward pre-hook); got {type(self.model).__name__}. Wrap it in an nn.Module.")
        fa = ForwardArgs(args, x.shape[0], model_device(self.model, x.device), type(self).__name__)
        session.forward_pre_hook(self.model, this_thread(fa.hook))
        stack = self.__dict__.setdefault("_call_args", {}).setdefault(threading.get_ident(), [])
        stack.append(fa)
        session.callback(stack.pop)

    def current_forward_args(self) -> Optional[ForwardArgs]:
        """The ``additional_forward_args`` of this thread's running call (``None`` if none)."""
        stack = self.__dict__.get("_call_args", {}).get(threading.get_ident())
        return stack[-1] if stack else None

    def _coerce_target(self, target: Any, batch: int) -> Target:
        """The call's ``target`` as a bound :class:`Target` (methods that score probabilities
        by default override it)."""
        return as_target(target, batch)

    def _explain(self, x: torch.Tensor, target: Target, session: HookSession, *, details: bool = True,
                 **kwargs: Any) -> Explanation:
        """The method: attributions of ``x`` ``(B, C, H, W)`` for the bound ``target``.
        ``details=False`` (``__call__``) lets it skip work that only feeds the other fields."""
        raise NotImplementedError

    # -- helpers for subclasses -----------------------------------------------------------
    def runner(self, x: torch.Tensor, target: Optional[Target] = None) -> ModelRunner:
        """A :class:`~xai_torch.runner.ModelRunner` for one call on images ``x`` (the model's
        model, ``batch_size``, ``progress``; its name is the class name)."""
        return ModelRunner(self.model, batch_size=self.batch_size, progress=self.progress,
                           name=type(self).__name__, sample=x[0], target=target, device=x.device,
                           select_output=self.select_output, forward_args=self.current_forward_args(),
                           precision=self.precision)

    @staticmethod
    def _per_image(items: list[torch.Tensor], x: torch.Tensor, target: Target,
                   dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Concatenate per-sample chunk results, back on ``x.device``, as ``(B, [K,] ...)``."""
        t = torch.cat(items).to(device=x.device, dtype=dtype)
        return t.reshape(x.shape[0], target.k, *t.shape[1:]) if target.k is not None else t

    def _chunk_size(self, x: torch.Tensor, device: torch.device) -> int:
        """Samples per model call for images ``x`` (``batch_size``, or automatic)."""
        return ModelRunner(self.model, batch_size=self.batch_size, sample=x[0], device=device).chunk

    def _warn_if_training(self) -> bool:
        """Warn when the model is in training mode; return whether any module is."""
        return warn_if_training(self.model, type(self).__name__, stacklevel=5)
