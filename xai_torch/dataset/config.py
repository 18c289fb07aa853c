"""A run's configuration: file-format constants, the errors of a run, the default shard size,
fingerprints (JSON and weight hashes), per-shard seeds and ``--option`` parsing."""
from __future__ import annotations

import ast
import hashlib
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from ..errors import XaiError

FORMAT = "xai_torch.distributed/1"
MANIFEST = "manifest.json"
METRICS = ("deletion", "insertion")
#: a run's target rule: ``"pred"``, ``"label"`` or a class index
Target = Union[str, int]


#: what a run does with an image that cannot be decoded: stop (default) or quarantine it and go on
ON_ERROR = ("stop", "skip")


class RankFailure(XaiError):
    """A rank failed while explaining a shard (the command exits with status 1; under
    torchrun the launcher then stops the other ranks). ``rank``, ``shard`` and ``image`` (the
    id, or ``None`` when no single image is to blame) say where."""

    def __init__(self, message: str, rank: int = 0, shard: Optional[int] = None, image: Optional[str] = None):
        super().__init__(message)
        self.rank, self.shard, self.image = rank, shard, image


class IncompleteRun(XaiError):
    """This rank finished every shard it could take, but shards claimed by another rank did not
    finish in time (a stalled or dead rank): the finished shards are kept and a rerun of the same
    command completes the job (``xai-torch run`` exits with status 75). ``shards`` lists them."""

    def __init__(self, message: str, shards: Sequence[int] = ()):
        super().__init__(message)
        self.shards = list(shards)


def default_shard_size(images: int) -> int:
    """The default images per shard: ``min(64, ceil(images / 8))``, from the image count only.

    The shard layout fixes the per-shard seeds, so it must not depend on the number of
    processes (results would change with it); ``images / 8`` keeps up to 8 ranks busy (48
    images: 8 shards of 6, where 64 made one shard and left the other ranks idle).

    Example:
        >>> default_shard_size(48), default_shard_size(10_000)
        (6, 64)
    """
    return max(1, min(64, -(-int(images) // 8)))


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard ``shard`` for a run seeded with ``seed``: the first 63 bits of
    ``sha256("xai_torch:{seed}:{shard}")``. Independent of the world size and the rank.

    Args:
        seed: the run's seed.
        shard: the shard index.

    Returns:
        An int in ``[0, 2**63)``.

    Example:
        >>> shard_seed(0, 3) == shard_seed(0, 3) != shard_seed(0, 4)
        True
    """
    digest = hashlib.sha256(f"xai_torch:{int(seed)}:{int(shard)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def canonical(value: Any) -> Any:
    """JSON-friendly, stable form of option values (tuples -> lists, numpy -> python)."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def hash_json(value: Any) -> str:
    """sha256 of the canonical JSON form of ``value`` (the configuration fingerprint)."""
    return hashlib.sha256(json.dumps(canonical(value), sort_keys=True).encode()).hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes and bytes, in name order).

    Args:
        model: any ``nn.Module``.

    Returns:
        The hex digest; equal for equal weights whatever file or device they came from.

    Example:
        >>> weights_sha256(xt.zoo.efficientnet_lite0())[:8]
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def import_object(spec: str, what: str) -> Any:
    """``package.module:attribute`` -> the attribute (``what`` names it in messages)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise XaiError(f"{what} {spec!r} must look like 'package.module:function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise XaiError(f"cannot import module {module_name!r} of {what} {spec!r}: {err}. "
                       "Is it on PYTHONPATH (every rank needs it)?") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise XaiError(f"module {module_name!r} has no {part!r} (from {what} {spec!r}).")
        obj = getattr(obj, part)
    return obj


def parse_options(items: Optional[Sequence[str]]) -> dict[str, Any]:
    """``["steps=32", "layer=layer4"]`` -> ``{"steps": 32, "layer": "layer4"}``: values are
    Python literals (numbers, tuples, None, True) or else plain strings.

    Args:
        items: ``key=value`` strings (``--option`` on the command line).

    Returns:
        The options as a dict.

    Example:
        >>> parse_options(["steps=16", "normalize=(0.5, 0.5)", "layer=layer4"])
        {'steps': 16, 'normalize': (0.5, 0.5), 'layer': 'layer4'}
    """
    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise XaiError(f"an option must look like key=value (e.g. steps=32); got {item!r}.")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        options[key] = value
    return options


def check_args(shard_size: object, dtype: object, target: object, metrics: Sequence[str], seed: object,
               on_error: object = "stop", threads: object = None, workers: object = None) -> None:
    """Refuse bad run arguments before anything is built."""
    if shard_size is not None and (isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1):
        raise XaiError(f"shard_size must be an int >= 1 (or None: the default); got {shard_size!r}.")
    if on_error not in ON_ERROR:
        raise XaiError(f"on_error must be 'stop' or 'skip' (quarantine unreadable images); got {on_error!r}.")
    for name, value, low in (("threads", threads, 1), ("workers", workers, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise XaiError(f"{name} must be an int >= {low} (or None: fitted to the cores); got {value!r}.")
    if dtype not in ("float32", "float16"):
        raise XaiError(f"dtype must be 'float32' or 'float16'; got {dtype!r}.")
    if not (target in ("pred", "label") or (isinstance(target, int) and not isinstance(target, bool) and target >= 0)):
        raise XaiError(f"target must be 'pred', 'label' or a class index >= 0; got {target!r}.")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise XaiError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise XaiError(f"seed must be an int; got {seed!r}.")
