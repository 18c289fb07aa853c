"""Dataset-scale explanations on ``torch.distributed``: ``xai-torch run`` and :func:`explain_dataset`.

Start one process per core or GPU with PyTorch's own launcher (gloo on CPU, NCCL on GPU)::

    torchrun --nproc_per_node=4 -m xai_torch run val/ --out runs/ig --method integrated_gradients
    xai-torch run val/ --out runs/ig --method integrated_gradients      # one process works too

and read the result with :func:`load`. How a run is organised:

* **Shards.** Images are sorted by id (relative path for image folders); shard ``k`` holds
  images ``[k * shard_size, (k + 1) * shard_size)``. The shards still to do are dealt to the
  ranks round-robin (``pending[rank::world]``), one shard per rank per *round*. Which rank
  computes a shard changes nothing in it, so results do not depend on the number of processes
  and a run can resume with another number.
* **Seeds.** A stochastic explainer (any whose configuration has a ``seed``: SmoothGrad, RISE,
  LIME, KernelSHAP, ...) is re-created for shard ``k`` with ``seed = shard_seed(seed, k)``, and
  torch's global RNG is seeded with the same value before the shard: the same shard gets the same
  noise whatever the world size, the rank or the order.
* **Files.** Each shard is one ``shard-KKKKK.npz`` (ids, dataset indices, labels, targets,
  predictions, attributions, optional ``deletion_auc`` / ``insertion_auc``, the config hash),
  written by the rank that computed it to a temporary file and renamed into place, so a file
  is either whole or absent. ``manifest.json`` (config, model, method, dataset, every finished
  shard with its sha256, one record per run) is written only by rank 0, after every round, from
  what all ranks report through a gloo collective. The output folder must be shared by all
  ranks (one machine, or a network file system).
* **Resume.** A rerun with the same ``out`` refuses a folder made with another configuration
  (model, weights, method and options, dataset ids, shard size, dtype, target rule, metrics,
  seed, preprocessing) and otherwise skips every shard whose file matches the checksum in the
  manifest (a file written just before a crash, not yet in the manifest, is kept when it loads
  completely and carries the run's config hash); missing and corrupt shards are recomputed.
* **Errors.** After every round the ranks exchange their status: an exception in one rank
  (an image that does not load, an explainer that fails) stops every rank after that round,
  with a message naming the rank, the shard and the image id; the command exits with status 1.
"""
from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import importlib
import inspect
import io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from .errors import XaiError, XaiWarning, closest_names
from .explainer import Explainer

FORMAT = "xai_torch.distributed/1"
MANIFEST = "manifest.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
METRICS = ("deletion", "insertion")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: how long a rank may wait for the others at the end of a round (slow methods, big shards)
ROUND_TIMEOUT = datetime.timedelta(hours=24)


class RankFailure(XaiError):
    """A rank failed while explaining a shard; every rank stops. ``rank``, ``shard`` and
    ``image`` (the id, or ``None`` when no single image is to blame) say where."""

    def __init__(self, message: str, rank: int = 0, shard: Optional[int] = None, image: Optional[str] = None):
        super().__init__(message)
        self.rank, self.shard, self.image = rank, shard, image


# ---------------------------------------------------------------------------------------------
# results
@dataclass
class DatasetExplanation:
    """What :func:`load` returns: the images in dataset order (shard by shard).

    Attributes:
        ids: image ids (paths relative to the image folder, or the dataset's ids).
        indices: ``(N,)`` position of each image in the dataset.
        attributions: ``(N, ...)`` float32 (``(N, C, H, W)`` pixel attributions or
            ``(N, 1, H, W)`` maps).
        targets: ``(N,)`` class explained per image.
        predictions: ``(N,)`` argmax of the model's output.
        labels: ``(N,)`` dataset label (ImageFolder class index), -1 when unknown.
        metrics: name -> ``(N,)`` per-image values (``"deletion_auc"``, ``"insertion_auc"``).
        manifest: the run's ``manifest.json``.
    """

    ids: list
    indices: np.ndarray
    attributions: np.ndarray
    targets: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    metrics: dict
    manifest: dict


@dataclass
class RunSummary:
    """What :func:`explain_dataset` returns (on every rank).

    Attributes:
        out: the output folder.
        images: images in the dataset.
        computed: shard indices computed by this run (all ranks).
        reused: shard indices found complete and verified, not recomputed.
        computed_images: images explained by this run.
        seconds: wall time of the explaining loop.
        world_size: number of processes.
    """

    out: Path
    images: int
    computed: list
    reused: list
    computed_images: int
    seconds: float
    world_size: int

    @property
    def throughput(self) -> float:
        """Images explained per second by this run (all ranks together)."""
        return self.computed_images / self.seconds if self.seconds > 0 else float("nan")


# ---------------------------------------------------------------------------------------------
# small helpers
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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _canonical(value) -> Any:
    """JSON-friendly, stable form of option values (tuples -> lists, numpy -> python)."""
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _hash_json(value) -> str:
    return hashlib.sha256(json.dumps(_canonical(value), sort_keys=True).encode()).hexdigest()


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


def _import_object(spec: str, what: str):
    """``package.module:attribute`` -> the attribute."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise XaiError(f"{what} {spec!r} must look like 'package.module:function'.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise XaiError(f"cannot import module {module_name!r} of {what} {spec!r}: {err}. "
                       "Is it on PYTHONPATH (every rank needs it)?") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise XaiError(f"module {module_name!r} has no {part!r} (from {what} {spec!r}).")
        obj = getattr(obj, part)
    return obj


def parse_options(items: Optional[Sequence[str]]) -> dict:
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
    options = {}
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


# ---------------------------------------------------------------------------------------------
# models
def _normalisation(model_spec) -> tuple:
    """(mean, std) of the model's input space for pixels in [0, 1]."""
    from . import zoo

    if model_spec == "efficientnet_lite0":
        return zoo.NORMALIZE
    return (IMAGENET_MEAN, IMAGENET_STD)


def build_model(spec: Union[str, nn.Module], weights: Optional[str] = None, device="cpu") -> nn.Module:
    """The model of a run, in eval mode on ``device``.

    Args:
        spec: ``"efficientnet_lite0"`` (the packaged, trained model), ``"torchvision:NAME"``
            (built with ``weights=None``), ``"package.module:function"`` (a factory called
            with no argument that returns an ``nn.Module``), or an ``nn.Module``.
        weights: a state-dict file loaded strictly into the model (see ``xai_torch.cli.load_weights``).
        device: where the model goes.

    Returns:
        The model (``eval()`` is called: the run owns this model).

    Example:
        >>> model = build_model("torchvision:resnet18", weights="resnet18.pth")
    """
    from . import zoo

    if isinstance(spec, nn.Module):
        model = spec
    elif spec == "efficientnet_lite0":
        model = zoo.efficientnet_lite0()
    elif isinstance(spec, str) and spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        available = torchvision.models.list_models()
        if name not in available:
            raise XaiError(f"unknown torchvision model {name!r}; close names: "
                           f"{closest_names(name, available) or available[:10]}.")
        model = torchvision.models.get_model(name, weights=None)
        if weights is None:
            warnings.warn(f"{spec} has random weights (built with weights=None): pass a state-dict file "
                          "(--weights FILE) to explain a trained model.", XaiWarning, stacklevel=2)
    elif isinstance(spec, str) and ":" in spec:
        factory = _import_object(spec, "model factory")
        model = factory() if callable(factory) else factory
        if not isinstance(model, nn.Module):
            raise XaiError(f"model factory {spec!r} must return an nn.Module; got {type(model).__name__}.")
    else:
        raise XaiError(f"unknown model {spec!r}; give 'efficientnet_lite0', 'torchvision:NAME' (e.g. "
                       "torchvision:resnet50 with --weights FILE) or a factory 'package.module:function'.")
    if weights is not None:
        from .cli import load_weights  # the command line's loader: checks keys and shapes one by one

        load_weights(model, weights, spec if isinstance(spec, str) else type(spec).__name__)
    return model.eval().to(device)


# ---------------------------------------------------------------------------------------------
# explainers
def _recreate(explainer: Explainer, model, changes: dict) -> Explainer:
    """The same explainer class with its configuration (``_config()``) updated by ``changes``."""
    cls = type(explainer)
    cfg = {**explainer._config(), **changes}
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    args = [cfg.pop(params[0])] if params and params[0] in cfg else [model]
    try:
        return cls(*args, **cfg)
    except TypeError as err:
        accepted = sorted(k for k in explainer._config() if k != params[0])
        raise XaiError(f"{cls.__name__} does not take option(s) {sorted(changes)} ({err}); "
                       f"its options: {', '.join(accepted)}.") from None


def build_explainer(method, model: nn.Module, options: Optional[dict] = None, normalize=None) -> Explainer:
    """The explainer of a run.

    Args:
        method: a name from ``xai_torch.cli.METHODS`` (``"gradient"``, ``"smoothgrad"``,
            ``"integrated_gradients"``...; options override its preset configuration), the
            name of an explainer class of the package (``"GradCAM"``, ``"IntegratedGradients"``:
            built as ``cls(model, **options)``), ``"package.module:function"`` (called as
            ``function(model, **options)``), or a callable ``model -> Explainer``.
        model: the model.
        options: constructor keywords (``{"steps": 32}``, ``{"layer": "layer4"}``).
        normalize: the model's input normalisation, given to presets made for the packaged
            model's (``normalize=xt.zoo.NORMALIZE``) when the model uses another one.

    Returns:
        An :class:`~xai_torch.explainer.Explainer`.

    Example:
        >>> build_explainer("integrated_gradients", model, {"steps": 16})
    """
    import xai_torch

    from . import zoo
    from .cli import METHODS

    options = dict(options or {})
    if callable(method) and not isinstance(method, str):
        explainer = method(model, **options)
    elif method in METHODS:
        factory = METHODS[method][0]
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        kwargs = {}  # presets that take the model's CAM layer / input normalisation get them
        if "layer" in params and "layer" in options:
            kwargs["layer"] = options["layer"]
        if "normalize" in params and normalize is not None and "normalize" not in options:
            kwargs["normalize"] = normalize
        try:
            explainer = factory(model, **kwargs)
        except XaiError as err:
            raise XaiError(f"method {method!r} does not fit this model ({err}). A CAM needs the model's layer: "
                           "--option layer=NAME (e.g. layer4 of a ResNet).") from None
        changes = dict(options)
        cfg = explainer._config()
        if (normalize is not None and "normalize" not in options and cfg.get("normalize") == zoo.NORMALIZE
                and tuple(normalize) != tuple(zoo.NORMALIZE)):
            changes["normalize"] = normalize
        if changes:
            explainer = _recreate(explainer, model, changes)
    elif isinstance(method, str) and isinstance(getattr(xai_torch, method, None), type) \
            and issubclass(getattr(xai_torch, method), Explainer) and method != "SmoothGrad":
        try:
            explainer = getattr(xai_torch, method)(model, **options)
        except TypeError as err:
            raise XaiError(f"cannot build {method} with options {options}: {err}.") from None
    elif isinstance(method, str) and ":" in method:
        explainer = _import_object(method, "method factory")(model, **options)
    else:
        classes = [n for n in getattr(xai_torch, "__all__", []) if isinstance(getattr(xai_torch, n, None), type)
                   and issubclass(getattr(xai_torch, n), Explainer) and n not in ("Explainer", "SmoothGrad")]
        raise XaiError(f"unknown method {method!r}; choose a preset from {', '.join(METHODS)}, a class from "
                       f"{', '.join(classes)}, or a factory 'package.module:function'.")
    if not isinstance(explainer, Explainer):
        raise XaiError(f"method {method!r} must give an xai_torch Explainer; got {type(explainer).__name__}.")
    return explainer


def _is_seeded(explainer: Explainer) -> bool:
    return "seed" in explainer._config()


# ---------------------------------------------------------------------------------------------
# datasets
class _Source:
    """The images of a run: ``ids``, ``labels`` (-1: unknown), ``get(i) -> (C, H, W)``."""

    ids: list
    labels: list
    identity: dict

    def get(self, i: int) -> torch.Tensor:
        raise NotImplementedError


class _FolderSource(_Source):
    def __init__(self, root: Path, size: int, resize: int, normalize) -> None:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise XaiError(f"image folder {str(root)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        rel = [p.relative_to(root).as_posix() for p in files]
        layered = all("/" in r for r in rel)  # ImageFolder: every image inside a class folder
        classes = sorted({r.split("/", 1)[0] for r in rel}) if layered else []
        index = {c: i for i, c in enumerate(classes)}
        self.root, self.files, self.ids = root, files, rel
        self.labels = [index[r.split("/", 1)[0]] for r in rel] if layered else [-1] * len(rel)
        self.size, self.resize = size, resize
        mean, std = normalize
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
        self.identity = {"kind": "image_folder", "layout": "imagefolder" if layered else "flat", "classes": classes,
                         "preprocess": {"resize": resize, "crop": size, "normalize": _canonical(normalize)}}

    def get(self, i: int) -> torch.Tensor:
        from PIL import Image

        from .zoo import center_crop

        with Image.open(self.files[i]) as im:
            arr = np.asarray(im.convert("RGB"))
        arr = center_crop(arr, self.size, self.resize)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
        return (t - self.mean) / self.std


class _DatasetSource(_Source):
    def __init__(self, dataset, name: str) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise XaiError(f"dataset {name!r} must be a map-style dataset (__len__ and __getitem__); "
                           f"got {type(dataset).__name__}.")
        n = len(dataset)
        if n == 0:
            raise XaiError(f"dataset {name!r} is empty.")
        ids = getattr(dataset, "ids", None)
        ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(n)]
        if len(ids) != n or len(set(ids)) != n:
            raise XaiError(f"dataset {name!r}: .ids must hold {n} distinct ids; got {len(ids)} "
                           f"({len(set(ids))} distinct).")
        self.dataset, self.ids = dataset, ids
        labels = getattr(dataset, "labels", None)
        labels = getattr(dataset, "targets", None) if labels is None else labels
        self.labels = [int(v) for v in labels] if labels is not None and len(labels) == n else None
        self.identity = {"kind": "dataset", "name": name}

    def get(self, i: int) -> torch.Tensor:
        item = self.dataset[i]
        if isinstance(item, (tuple, list)):
            if len(item) > 1 and self.labels is None:
                self._label_of = getattr(self, "_label_of", {})
                self._label_of[i] = int(item[1])
            item = item[0]
        if not isinstance(item, torch.Tensor) or item.ndim != 3:
            raise XaiError(f"dataset item {i} must be a (C, H, W) tensor or (tensor, label); got "
                           f"{type(item).__name__}{tuple(item.shape) if hasattr(item, 'shape') else ''}.")
        return item.float()

    def label(self, i: int) -> int:
        if self.labels is not None:
            return self.labels[i]
        return getattr(self, "_label_of", {}).get(i, -1)


def build_source(data, model_spec, input_size: int = 224, resize: Optional[int] = None) -> _Source:
    """The images of a run: an image folder (ImageFolder layout or flat, searched
    recursively, ids = relative paths in sorted order), ``"package.module:function"``
    returning a map-style dataset, or a dataset object. Dataset items are ``(C, H, W)``
    tensors in the model's input space or ``(tensor, label)``; a dataset's ``ids`` attribute,
    when present, names its images (else the index is the id)."""
    resize = resize or round(input_size * 256 / 224)
    if not isinstance(data, (str, os.PathLike)):
        return _DatasetSource(data, type(data).__name__)
    text = str(data)
    path = Path(text)
    if path.is_dir():
        return _FolderSource(path, input_size, resize, _normalisation(model_spec))
    if ":" in text and not path.exists():
        factory = _import_object(text, "dataset factory")
        return _DatasetSource(factory() if callable(factory) else factory, text)
    raise XaiError(f"data {text!r} is neither an image folder nor a dataset factory 'package.module:function'.")


# ---------------------------------------------------------------------------------------------
# the process group
class _Comm:
    """Rank, world size and an all-gather of Python objects (a gloo group, also under NCCL)."""

    def __init__(self, device_type: str) -> None:
        import torch.distributed as dist

        self.dist, self.owned, self.group = dist, False, None
        launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
        if launched and not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, timeout=ROUND_TIMEOUT)
            self.owned = True
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            if dist.get_backend() != "gloo" and self.world > 1:
                self.group = dist.new_group(backend="gloo", timeout=ROUND_TIMEOUT)
        else:
            self.rank, self.world = 0, 1

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def close(self) -> None:
        if self.owned and self.dist.is_initialized():
            self.dist.destroy_process_group()


def _agree(comm: _Comm, fn):
    """Run ``fn`` on every rank; if it raises on any, raise the first error on all of them."""
    try:
        value, err = fn(), None
    except XaiError as e:
        value, err = None, ("xai", str(e))
    except Exception as e:  # noqa: BLE001 - reported to every rank
        value, err = None, ("other", f"{type(e).__name__}: {e}")
    for rank, e in enumerate(comm.gather(err)):
        if e is not None:
            where = f"rank {rank}: " if comm.world > 1 else ""
            err = XaiError(where + e[1]) if e[0] == "xai" else RankFailure(where + e[1], rank=rank)
            err.collective = True
            raise err
    return value


# ---------------------------------------------------------------------------------------------
# shards
def _shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


def _read_shard(path: Path) -> dict:
    """All arrays of a shard file (reading every member checks its zip CRC)."""
    with np.load(path, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}


def _shard_ok(out: Path, k: int, record: Optional[dict], config_hash: str, expect_ids: list) -> bool:
    path = out / _shard_name(k)
    if not path.is_file():
        return False
    if record is not None:
        return _sha256_file(path) == record.get("sha256")
    try:  # written just before a crash, before rank 0 recorded it: check it whole
        arrays = _read_shard(path)
        return (str(arrays["config_hash"]) == config_hash and int(arrays["shard"]) == k
                and list(arrays["ids"]) == list(expect_ids))
    except Exception:  # noqa: BLE001 - any unreadable file is recomputed
        return False


class _Run:
    def __init__(self, out: Path, source: _Source, model, explainer: Explainer, *, shard_size, dtype, target,
                 metrics, seed, device, comm: _Comm, config_hash: str) -> None:
        self.out, self.source, self.model, self.explainer = out, source, model, explainer
        self.shard_size, self.dtype, self.target, self.metrics = shard_size, dtype, target, metrics
        self.seed, self.device, self.comm, self.config_hash = seed, device, comm, config_hash
        self.seeded = _is_seeded(explainer)

    def bounds(self, k: int) -> tuple[int, int]:
        return k * self.shard_size, min(len(self.source.ids), (k + 1) * self.shard_size)

    def explainer_for(self, k: int) -> Explainer:
        s = shard_seed(self.seed, k)
        torch.manual_seed(s)  # for anything drawing from the global RNG
        return _recreate(self.explainer, self.model, {"seed": s}) if self.seeded else self.explainer

    def label(self, i: int) -> int:
        src = self.source
        return src.label(i) if isinstance(src, _DatasetSource) else src.labels[i]

    def compute(self, k: int) -> dict:
        """Explain shard ``k`` and write its file; the manifest record."""
        start = time.perf_counter()
        a, b = self.bounds(k)
        ids = self.source.ids[a:b]
        images = []
        for i in range(a, b):
            try:
                images.append(self.source.get(i))
            except Exception as err:  # noqa: BLE001 - named and re-raised
                raise _ImageError(ids[i - a], f"cannot load it: {type(err).__name__}: {err}") from err
        shapes = {tuple(t.shape) for t in images}
        if len(shapes) > 1:
            raise _ImageError(None, f"images of one shard have different shapes {sorted(shapes)}; resize them to "
                                    "one size in the dataset.")
        x = torch.stack(images).to(self.device)
        labels = torch.tensor([self.label(i) for i in range(a, b)], dtype=torch.int64)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self._compute(k, a, b, ids, x, labels, start)

    def _compute(self, k, a, b, ids, x, labels, start) -> dict:
        explainer = self.explainer_for(k)
        arrays = {}

        def work(sl: slice) -> dict:
            xs = x[sl]
            attr = None
            if self.target == "pred":  # the explainer's own argmax: no extra forward
                r = explainer._run(xs, None, {}, details=False)
                if isinstance(r.targets, torch.Tensor) and tuple(r.targets.shape) == (xs.shape[0],):
                    attr, pred = r.attributions, r.targets.cpu().to(torch.int64)
                    tgt = pred
            if attr is None:
                with torch.no_grad():
                    pred = self.model(xs).argmax(1).cpu()
                if self.target == "pred":
                    tgt = pred
                elif self.target == "label":
                    tgt = labels[sl]
                    if bool((tgt < 0).any()):
                        raise XaiError("target 'label' needs a label for every image; this image has none.")
                else:
                    tgt = torch.full((xs.shape[0],), int(self.target), dtype=torch.int64)
                attr = explainer(xs, target=tgt.to(self.device))
            res = {"predictions": pred, "targets": tgt, "attributions": attr.detach().float().cpu()}
            for name in self.metrics:
                from .metrics import faithfulness

                curve = getattr(faithfulness, name)(self.model, xs, attr, target=tgt.to(self.device))
                res[f"{name}_auc"] = curve.auc.detach().float().cpu()
            return res

        try:
            res = work(slice(None))
        except Exception as err:  # noqa: BLE001 - find the image to blame, then re-raise
            culprit = None
            if len(ids) > 1:
                for j in range(len(ids)):
                    try:
                        torch.manual_seed(shard_seed(self.seed, k))
                        work(slice(j, j + 1))
                    except Exception:  # noqa: BLE001
                        culprit = ids[j]
                        break
            raise _ImageError(culprit, f"{type(err).__name__}: {err}") from err
        attr = res.pop("attributions")
        if self.dtype == "float16":  # per-image scale keeps float16's relative precision for tiny values
            scale = attr.flatten(1).abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
            arrays["attributions"] = (attr / scale.view(-1, *[1] * (attr.ndim - 1))).half().numpy()
            arrays["attribution_scale"] = scale.numpy()
        else:
            arrays["attributions"] = attr.numpy()
        arrays.update({key: v.numpy() for key, v in res.items()})
        arrays.update(ids=np.array(ids, dtype=str), indices=np.arange(a, b, dtype=np.int64), labels=labels.numpy(),
                      config_hash=np.array(self.config_hash), shard=np.array(k, dtype=np.int64))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        _atomic_write(self.out / _shard_name(k), data)
        return {"file": _shard_name(k), "images": b - a, "first": ids[0], "last": ids[-1],
                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rank": self.comm.rank,
                "seconds": round(time.perf_counter() - start, 3)}


class _ImageError(Exception):
    def __init__(self, image: Optional[str], message: str) -> None:
        super().__init__(message)
        self.image, self.message = image, message


# ---------------------------------------------------------------------------------------------
# the run
def explain_dataset(out, data, *, model: Union[str, nn.Module] = "efficientnet_lite0", weights: Optional[str] = None,
                    method="gradient", options: Optional[dict] = None, shard_size: int = 64,
                    dtype: str = "float32", target: Union[str, int] = "pred", metrics: Sequence[str] = (),
                    seed: int = 0, device: Optional[str] = None, input_size: int = 224,
                    progress: Optional[bool] = None, _stop_after: Optional[int] = None) -> RunSummary:
    """Explain a dataset, sharded over the processes ``torchrun`` started (or in one process).

    Call it in every process (``xai-torch run`` does): it joins the process group from
    torchrun's environment (NCCL when the device is CUDA, gloo otherwise), unless one is
    already initialised. See the module docstring for shards, seeds, files and resume.

    Args:
        out: output folder (created; shared by all ranks). A rerun resumes in it.
        data: image folder, ``"package.module:function"`` returning a map-style dataset, or a
            dataset object (items: ``(C, H, W)`` model-space tensors or ``(tensor, label)``).
        model: ``"efficientnet_lite0"``, ``"torchvision:NAME"``, ``"package.module:function"``
            or an ``nn.Module``.
        weights: state-dict file for the model.
        method: preset name (``xai_torch.cli.METHODS``), explainer class name, factory
            ``"package.module:function"`` or callable ``model -> Explainer``.
        options: explainer constructor keywords.
        shard_size: images per shard (and per explainer call).
        dtype: ``"float32"`` or ``"float16"`` (stored divided by a per-image scale, which
            :func:`load` multiplies back).
        target: ``"pred"`` (the model's argmax), ``"label"`` (the dataset's label) or a class index.
        metrics: any of ``"deletion"``, ``"insertion"``: per-image AUC in the shards.
        seed: run seed; stochastic explainers get :func:`shard_seed` ``(seed, k)`` per shard.
        device: ``None`` = ``cuda:LOCAL_RANK`` when CUDA is available, else CPU.
        input_size: crop size for image folders (resize to ``input_size * 256 / 224`` first).
        progress: tqdm bar with images/s on rank 0 (``None``: when stderr is a terminal).

    Returns:
        :class:`RunSummary` (on every rank).

    Raises:
        XaiError: bad arguments, or an output folder made with another configuration.
        RankFailure: a rank failed on a shard (message names the rank, shard and image).

    Example:
        >>> xt.distributed.explain_dataset("runs/ig", "val/", method="integrated_gradients",
        ...                                options={"steps": 32}, metrics=["deletion"])
        >>> res = xt.distributed.load("runs/ig")
    """
    if device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    comm = _Comm(device.type)
    try:
        return _explain_dataset(comm, Path(out), data, model, weights, method, options, shard_size, dtype,
                                target, list(metrics), seed, device, input_size, progress, _stop_after)
    except XaiError as err:
        if comm.world > 1 and getattr(err, "collective", False):
            # every rank raises this together: rank 0 reports it, then all leave at once (torchrun
            # stops the other ranks as soon as one exits with an error)
            if comm.rank == 0:
                print(f"xai-torch: error: {err}", file=sys.stderr, flush=True)
            err.reported = True
            comm.gather(None)
        raise
    finally:
        comm.close()


def _check_args(shard_size, dtype, target, metrics, seed) -> None:
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise XaiError(f"shard_size must be an int >= 1; got {shard_size!r}.")
    if dtype not in ("float32", "float16"):
        raise XaiError(f"dtype must be 'float32' or 'float16'; got {dtype!r}.")
    if not (target in ("pred", "label") or (isinstance(target, int) and not isinstance(target, bool) and target >= 0)):
        raise XaiError(f"target must be 'pred', 'label' or a class index >= 0; got {target!r}.")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise XaiError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise XaiError(f"seed must be an int; got {seed!r}.")


def _explain_dataset(comm, out, data, model_spec, weights, method, options, shard_size, dtype, target, metrics,
                     seed, device, input_size, progress, stop_after) -> RunSummary:
    options = dict(options or {})

    def setup():
        _check_args(shard_size, dtype, target, metrics, seed)
        source = build_source(data, model_spec, input_size)
        if target == "label" and isinstance(source, _FolderSource) and source.labels[0] < 0:
            raise XaiError("target='label' needs labelled images (ImageFolder layout: one folder per class); "
                           f"{str(data)!r} is a flat folder.")
        model = build_model(model_spec, weights, device)
        norm = _normalisation(model_spec if isinstance(model_spec, str) else None)
        explainer = build_explainer(method, model, options, normalize=norm)
        config = {
            "format": FORMAT,
            "model": model_spec if isinstance(model_spec, str) else type(model_spec).__name__,
            "model_class": type(model).__name__,
            "weights_sha256": weights_sha256(model),
            "method": method if isinstance(method, str) else getattr(method, "__name__", repr(method)),
            "options": _canonical(options),
            "explainer": repr(explainer),
            "dataset": {**source.identity, "images": len(source.ids),
                        "ids_sha256": hashlib.sha256("\n".join(source.ids).encode()).hexdigest()},
            "shard_size": shard_size, "dtype": dtype, "target": target, "metrics": sorted(metrics), "seed": seed,
        }
        return source, model, explainer, config, _hash_json(config)

    source, model, explainer, config, config_hash = _agree(comm, setup)
    hashes = comm.gather(config_hash)
    if len(set(hashes)) > 1:
        err = XaiError(f"the ranks disagree on the run's configuration (config hashes {hashes}): every rank must "
                       "see the same dataset, model and options.")
        err.collective = True
        raise err
    n = len(source.ids)
    num_shards = math.ceil(n / shard_size)

    def read_manifest():
        out.mkdir(parents=True, exist_ok=True)
        path = out / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise XaiError(f"{str(path)!r} is unreadable ({err}); delete it (and the shards) to start over.") from None
        if manifest.get("config_hash") != config_hash:
            old = manifest.get("config", {})
            diff = [f"{k}: {old.get(k)!r} there, {config.get(k)!r} here" for k in sorted(set(old) | set(config))
                    if old.get(k) != _canonical(config.get(k))]
            raise XaiError(f"output folder {str(out)!r} holds a run with a different configuration ("
                           f"{'; '.join(diff) or 'config hash differs'}). Use another --out folder, or delete this "
                           "one to start over.")
        return manifest

    manifest = _agree(comm, read_manifest)
    recorded = {int(k): v for k, v in (manifest or {}).get("shards", {}).items()}

    # verify existing shards, split over the ranks
    def verify():
        found = {}
        for k in range(comm.rank, num_shards, comm.world):
            a, b = k * shard_size, min(n, (k + 1) * shard_size)
            if _shard_ok(out, k, recorded.get(k), config_hash, source.ids[a:b]):
                found[k] = recorded.get(k) or _unrecorded_record(out, k, source.ids[a:b])
        return found

    done = {}
    for part in comm.gather(_agree(comm, verify)):
        done.update(part)
    pending = [k for k in range(num_shards) if k not in done]
    reused = sorted(done)

    run_record = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "world_size": comm.world,
                  "device": device.type, "reused": reused, "computed": [], "seconds": None, "finished": False}
    runs = (manifest or {}).get("runs", []) + [run_record]
    state = {"config_hash": config_hash, "format": FORMAT, "config": _canonical(config), "images": n,
             "num_shards": num_shards, "shards": {}, "complete": False, "runs": runs}

    def write_manifest():
        state["shards"] = {str(k): done[k] for k in sorted(done)}
        state["complete"] = len(done) == num_shards
        _atomic_write(out / MANIFEST, json.dumps(state, indent=1).encode())

    if comm.rank == 0:
        write_manifest()
    run = _Run(out, source, model, explainer, shard_size=shard_size, dtype=dtype, target=target,
               metrics=metrics, seed=seed, device=device, comm=comm, config_hash=config_hash)
    bar = None
    if comm.rank == 0:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(total=n, initial=sum(done[k]["images"] for k in done), unit="img", disable=not show,
                   desc=f"xai-torch run ({comm.world} proc)", dynamic_ncols=True)
    mine = pending[comm.rank::comm.world]
    rounds = math.ceil(len(pending) / comm.world)
    start = time.perf_counter()
    computed_images, written = 0, 0
    try:
        for j in range(rounds):
            k = mine[j] if j < len(mine) else None
            message = None
            if k is not None:
                try:
                    message = ("ok", k, run.compute(k))
                except Exception as err:  # noqa: BLE001 - reported to every rank, which all stop
                    image = err.image if isinstance(err, _ImageError) else None
                    text = err.message if isinstance(err, _ImageError) else f"{type(err).__name__}: {err}"
                    a, b = run.bounds(k)
                    where = f"image {image!r}" if image is not None else \
                        f"images {source.ids[a]!r}..{source.ids[b - 1]!r}"
                    message = ("error", k, (f"rank {comm.rank} failed on {where} (shard {k}): {text}", image))
                written += 1
                if stop_after is not None and written >= stop_after and message[0] == "ok":
                    os._exit(75)  # testing hook: die like a killed process, after the file, before the report
            failure = None
            for rank, msg in enumerate(comm.gather(message)):
                if msg is None:
                    continue
                if msg[0] == "ok":
                    done[msg[1]] = msg[2]
                    run_record["computed"].append(msg[1])
                    computed_images += msg[2]["images"]
                elif failure is None:
                    failure = RankFailure(msg[2][0], rank=rank, shard=msg[1], image=msg[2][1])
                    failure.collective = True
            run_record["seconds"] = round(time.perf_counter() - start, 3)
            if comm.rank == 0:
                if failure is not None:
                    state["error"] = str(failure)
                write_manifest()
            if bar is not None:
                bar.update(sum(done[m]["images"] for m in done) - bar.n)
            if failure is not None:
                raise failure
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    run_record.update(seconds=round(seconds, 3), finished=True, computed=sorted(run_record["computed"]))
    if comm.rank == 0:
        state.pop("error", None)
        write_manifest()
    return RunSummary(out=out, images=n, computed=run_record["computed"], reused=reused,
                      computed_images=computed_images, seconds=seconds, world_size=comm.world)


def _unrecorded_record(out: Path, k: int, ids: list) -> dict:
    path = out / _shard_name(k)
    return {"file": path.name, "images": len(ids), "first": ids[0], "last": ids[-1], "sha256": _sha256_file(path),
            "bytes": path.stat().st_size, "rank": None, "seconds": None}


# ---------------------------------------------------------------------------------------------
# reading
def load(out_dir, *, verify: bool = True, allow_partial: bool = False) -> DatasetExplanation:
    """Read a run's shards back, in dataset order.

    Args:
        out_dir: the run's output folder.
        verify: check every shard against the sha256 in the manifest.
        allow_partial: return the finished shards of an unfinished run instead of raising.

    Returns:
        :class:`DatasetExplanation` (attributions as float32, float16 runs scaled back).

    Raises:
        XaiError: no manifest, an unfinished run (unless ``allow_partial``), a missing or
        corrupt shard.

    Example:
        >>> res = xt.distributed.load("runs/ig")
        >>> res.ids[:2], res.attributions.shape, res.metrics["deletion_auc"].mean()
    """
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.is_file():
        raise XaiError(f"{str(out)!r} holds no {MANIFEST}: not the output folder of an xai-torch run.")
    manifest = json.loads(path.read_text())
    shards = {int(k): v for k, v in manifest.get("shards", {}).items()}
    missing = [k for k in range(manifest["num_shards"]) if k not in shards]
    if missing and not allow_partial:
        raise XaiError(f"the run in {str(out)!r} is unfinished: {len(missing)} of {manifest['num_shards']} shards "
                       "missing. Rerun the same command to finish it, or pass allow_partial=True.")
    parts = []
    for k in sorted(shards):
        file = out / shards[k]["file"]
        if not file.is_file():
            raise XaiError(f"shard {str(file)!r} is missing; rerun the same command to recompute it.")
        if verify and _sha256_file(file) != shards[k]["sha256"]:
            raise XaiError(f"shard {str(file)!r} does not match its checksum; rerun the same command to "
                           "recompute it.")
        parts.append(_read_shard(file))
    if not parts:
        raise XaiError(f"the run in {str(out)!r} has no finished shard yet.")

    def cat(key):
        return np.concatenate([p[key] for p in parts])

    attributions = []
    for p in parts:
        a = p["attributions"]
        if "attribution_scale" in p:
            a = a.astype(np.float32) * p["attribution_scale"].reshape(-1, *[1] * (a.ndim - 1))
        attributions.append(a.astype(np.float32, copy=False))
    metrics = {key: cat(key) for key in parts[0] if key.endswith("_auc")}
    return DatasetExplanation(ids=[str(i) for i in cat("ids")], indices=cat("indices"),
                              attributions=np.concatenate(attributions), targets=cat("targets"),
                              predictions=cat("predictions"), labels=cat("labels"), metrics=metrics,
                              manifest=manifest)


# ---------------------------------------------------------------------------------------------
# command line
def add_run_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``run`` to the ``xai-torch`` sub-commands.

    Args:
        subparsers: what ``parser.add_subparsers()`` returned.

    Returns:
        The ``run`` parser (its handler is :func:`run_command`).

    Example:
        >>> sub = argparse.ArgumentParser().add_subparsers(dest="command")
        >>> add_run_parser(sub)
    """
    p = subparsers.add_parser(
        "run", help="explain a dataset, sharded over torchrun's processes",
        description="Explain a dataset with one explainer, sharded over the processes torchrun starts "
                    "(torchrun --nproc_per_node=N -m xai_torch run DATA --out DIR ...), or in one process. "
                    "A rerun with the same --out resumes.")
    p.add_argument("data", help="image folder (ImageFolder layout or flat) or dataset factory package.module:function")
    p.add_argument("--out", required=True, help="output folder (shards + manifest.json); rerun to resume")
    p.add_argument("--model", default="efficientnet_lite0",
                   help="efficientnet_lite0 (default), torchvision:NAME or package.module:function")
    p.add_argument("--weights", default=None, help="state-dict file for the model")
    p.add_argument("--method", default="gradient",
                   help="preset from xai-torch demo's list (gradient, smoothgrad, integrated_gradients...), "
                        "an explainer class (GradCAM, IntegratedGradients...) or package.module:function")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="explainer constructor option, repeatable (e.g. --option steps=32 --option layer=layer4)")
    p.add_argument("--target", default="pred", help="pred (model's argmax, default), label, or a class index")
    p.add_argument("--shard-size", type=int, default=64, help="images per shard (default 64)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"), help="attribution storage")
    p.add_argument("--metrics", default="", help="comma list of per-image metrics: deletion,insertion")
    p.add_argument("--seed", type=int, default=0, help="run seed (stochastic methods: per-shard seeds from it)")
    p.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--input-size", type=int, default=224, help="crop size for image folders (default 224)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--stop-after-shards", type=int, default=None, help=argparse.SUPPRESS)  # tests: simulated kill
    p.set_defaults(handler=run_command)
    return p


def run_command(args: argparse.Namespace) -> int:
    """Handle ``xai-torch run``: explain, print the summary line on rank 0.

    Args:
        args: parsed arguments of :func:`add_run_parser`'s parser.

    Returns:
        0 on success, 2 for bad arguments or configuration, 1 when a rank failed.

    Example:
        >>> args = parser.parse_args(["run", "val/", "--out", "runs/g"])
        >>> run_command(args)
    """
    rank = int(os.environ.get("RANK", 0))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    target = args.target
    if target not in ("pred", "label"):
        try:
            target = int(target)
        except ValueError:
            print(f"xai-torch: error: --target must be pred, label or a class index; got {target!r}.", file=sys.stderr)
            return 2
    try:
        options = parse_options(args.option)
        summary = explain_dataset(
            args.out, args.data, model=args.model, weights=args.weights, method=args.method, options=options,
            shard_size=args.shard_size, dtype=args.dtype, target=target,
            metrics=[m.strip() for m in args.metrics.split(",") if m.strip()], seed=args.seed, device=args.device,
            input_size=args.input_size, progress=False if args.no_progress else None,
            _stop_after=args.stop_after_shards)
    except XaiError as err:
        if rank == 0 and not getattr(err, "reported", False):
            print(f"xai-torch: error: {err}", file=sys.stderr)
        return 1 if isinstance(err, RankFailure) else 2
    if rank == 0 and not summary.computed:
        print(f"nothing to do: all {len(summary.reused)} shards in {summary.out}/ are complete and verified "
              f"({summary.images} images).", flush=True)
    elif rank == 0:
        s = summary
        print(f"{s.computed_images} images in {s.seconds:.1f} s ({s.throughput:.2f} img/s) on {s.world_size} "
              f"process{'es' if s.world_size > 1 else ''}; {len(s.computed)} shards computed, {len(s.reused)} reused; "
              f"{s.images} images in {s.out}/", flush=True)
    return 0


__all__ = ["DatasetExplanation", "RankFailure", "RunSummary", "add_run_parser", "build_explainer", "build_model",
           "explain_dataset", "load", "parse_options", "run_command", "shard_seed", "weights_sha256"]
