"""Explaining one shard: its decoded images (bad ones quarantined or the run stopped), the
explainer seeded for it, the attributions, the per-image metrics and the shard file."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..errors import XaiError
from ..explainer import Explainer
from .build import is_seeded
from .config import Target, shard_seed
from .engine import Loaded
from .shards import Record, shard_name, write_shard


class ImageError(Exception):
    """A shard failed; ``image`` is the id to blame (``None`` when no single image is)."""

    def __init__(self, image: Optional[str], message: str) -> None:
        super().__init__(message)
        self.image, self.message = image, message


class ShardWorker:
    """What a rank needs to explain any shard of the run, and :meth:`compute` to do it
    (``reseeded(seed)``: the run's explainer with another seed, for a seeded explainer)."""

    def __init__(self, out: Path, model: nn.Module, explainer: Explainer,
                 reseeded: Callable[[int], Explainer], *, dtype: str, target: Target, metrics: list[str], seed: int,
                 device: torch.device, rank: int, config_hash: str, on_error: str = "stop") -> None:
        self.out, self.model, self.explainer, self.reseeded = out, model, explainer, reseeded
        self.dtype, self.target, self.metrics, self.on_error = dtype, target, metrics, on_error
        self.seed, self.device, self.rank, self.config_hash = seed, device, rank, config_hash
        self.seeded = is_seeded(explainer)

    def explainer_for(self, k: int) -> Explainer:
        """The explainer of shard ``k``: re-created with the shard's seed when it is seeded."""
        s = shard_seed(self.seed, k)
        torch.manual_seed(s)  # for anything drawing from the global RNG
        return self.reseeded(s) if self.seeded else self.explainer

    def compute(self, loaded: Loaded, a: int, ids: list[str]) -> Record:
        """Explain the decoded shard ``loaded`` (run positions ``a ..``, ``ids``) and write its
        file; the manifest record (``"quarantined"``: ``[id, reason]`` of the images skipped).

        Raises:
            ImageError: an image could not be decoded (``on_error="stop"``), the images differ
                in shape, or the explainer failed (naming the image when one is to blame).
        """
        start = time.perf_counter()
        arrays, bad = self.arrays(loaded, a, ids)
        sha256, size = write_shard(self.out, loaded.shard, arrays)
        return {"file": shard_name(loaded.shard), "images": len(arrays["ids"]), "first": ids[0], "last": ids[-1],
                "sha256": sha256, "bytes": size, "rank": self.rank, "seconds": round(time.perf_counter() - start, 3),
                "quarantined": [list(e) for e in bad]}

    def arrays(self, loaded: Loaded, a: int, ids: list[str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """The columns of the shard file of ``loaded`` (what :meth:`compute` writes; the Ray
        engine writes the same columns to Parquet) and the ``(id, reason)`` of the images
        skipped. Raises as :meth:`compute`."""
        k = loaded.shard
        bad = [e for e in loaded.errors if e is not None]
        if bad and self.on_error == "stop":
            raise ImageError(bad[0][0], f"cannot load it: {bad[0][1]}. Pass --on-error skip (on_error='skip') to "
                                        "quarantine unreadable images and go on")
        keep = [j for j, e in enumerate(loaded.errors) if e is None]
        images = [t for t in loaded.images if t is not None]
        shapes = {tuple(t.shape) for t in images}
        if len(shapes) > 1:
            raise ImageError(None, f"images of one shard have different shapes {sorted(shapes)}; resize them to "
                                   "one size in the dataset.")
        kept_ids = [ids[j] for j in keep]
        labels = torch.tensor([loaded.labels[j] for j in keep], dtype=torch.int64)
        arrays: dict[str, Any]
        if images:
            x = torch.stack(images).to(self.device)
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                arrays = self._compute(k, kept_ids, x, labels)
        else:  # every image of the shard is quarantined: an empty shard keeps the record
            empty = np.zeros(0, dtype=np.int64)
            arrays = {"attributions": np.zeros(0, dtype=np.float32), "predictions": empty, "targets": empty,
                      **{f"{m}_auc": np.zeros(0, dtype=np.float32) for m in self.metrics}}
        arrays.update(ids=np.array(kept_ids, dtype=str), indices=np.array([a + j for j in keep], dtype=np.int64),
                      labels=labels.numpy(), config_hash=np.array(self.config_hash), shard=np.array(k, dtype=np.int64),
                      quarantined=np.array([e[0] for e in bad], dtype=str),
                      quarantine_reasons=np.array([e[1] for e in bad], dtype=str))
        return arrays, bad

    def _work(self, explainer: Explainer, xs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions, targets, attributions and metric AUCs of the images ``xs``."""
        attr: Optional[torch.Tensor] = None
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
                tgt = labels
                if bool((tgt < 0).any()):
                    raise XaiError("target 'label' needs a label for every image; this image has none.")
            else:
                tgt = torch.full((xs.shape[0],), int(self.target), dtype=torch.int64)
            attr = explainer(xs, target=tgt.to(self.device))
        res = {"predictions": pred, "targets": tgt, "attributions": attr.detach().float().cpu()}
        for name in self.metrics:
            from ..metrics import faithfulness

            curve = getattr(faithfulness, name)(self.model, xs, attr, target=tgt.to(self.device))
            res[f"{name}_auc"] = curve.auc.detach().float().cpu()
        return res

    def _compute(self, k: int, ids: list[str], x: torch.Tensor, labels: torch.Tensor) -> dict[str, NDArray[Any]]:
        explainer = self.explainer_for(k)
        try:
            res = self._work(explainer, x, labels)
        except Exception as err:  # noqa: BLE001 - find the image to blame, then re-raise
            culprit = None
            if len(ids) > 1:
                for j in range(len(ids)):
                    try:
                        torch.manual_seed(shard_seed(self.seed, k))
                        self._work(explainer, x[j:j + 1], labels[j:j + 1])
                    except Exception:  # noqa: BLE001
                        culprit = ids[j]
                        break
            raise ImageError(culprit, f"{type(err).__name__}: {err}") from err
        arrays: dict[str, NDArray[Any]] = {}
        attr = res.pop("attributions")
        if self.dtype == "float16":  # per-image scale keeps float16's relative precision for tiny values
            scale = attr.flatten(1).abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
            arrays["attributions"] = (attr / scale.view(-1, *[1] * (attr.ndim - 1))).half().numpy()
            arrays["attribution_scale"] = scale.numpy()
        else:
            arrays["attributions"] = attr.numpy()
        arrays.update({key: v.numpy() for key, v in res.items()})
        return arrays
