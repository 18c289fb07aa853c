"""Explaining one shard: load its images, seed the explainer for it, explain, score the
per-image metrics and write the shard file."""
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
from .shards import Record, shard_name, write_shard
from .sources import Source


class ImageError(Exception):
    """A shard failed; ``image`` is the id to blame (``None`` when no single image is)."""

    def __init__(self, image: Optional[str], message: str) -> None:
        super().__init__(message)
        self.image, self.message = image, message


class ShardWorker:
    """What a rank needs to explain any shard of the run, and :meth:`compute` to do it
    (``reseeded(seed)``: the run's explainer with another seed, for a seeded explainer)."""

    def __init__(self, out: Path, source: Source, model: nn.Module, explainer: Explainer,
                 reseeded: Callable[[int], Explainer], *, shard_size: int,
                 dtype: str, target: Target, metrics: list[str], seed: int, device: torch.device, rank: int,
                 config_hash: str) -> None:
        self.out, self.source, self.model, self.explainer, self.reseeded = out, source, model, explainer, reseeded
        self.shard_size, self.dtype, self.target, self.metrics = shard_size, dtype, target, metrics
        self.seed, self.device, self.rank, self.config_hash = seed, device, rank, config_hash
        self.seeded = is_seeded(explainer)

    def bounds(self, k: int) -> tuple[int, int]:
        """Dataset positions ``[a, b)`` of shard ``k``."""
        return k * self.shard_size, min(len(self.source.ids), (k + 1) * self.shard_size)

    def explainer_for(self, k: int) -> Explainer:
        """The explainer of shard ``k``: re-created with the shard's seed when it is seeded."""
        s = shard_seed(self.seed, k)
        torch.manual_seed(s)  # for anything drawing from the global RNG
        return self.reseeded(s) if self.seeded else self.explainer

    def compute(self, k: int) -> Record:
        """Explain shard ``k`` and write its file; the manifest record."""
        start = time.perf_counter()
        a, b = self.bounds(k)
        ids = self.source.ids[a:b]
        images = []
        for i in range(a, b):
            try:
                images.append(self.source.get(i))
            except Exception as err:  # noqa: BLE001 - named and re-raised
                raise ImageError(ids[i - a], f"cannot load it: {type(err).__name__}: {err}") from err
        shapes = {tuple(t.shape) for t in images}
        if len(shapes) > 1:
            raise ImageError(None, f"images of one shard have different shapes {sorted(shapes)}; resize them to "
                                   "one size in the dataset.")
        x = torch.stack(images).to(self.device)
        labels = torch.tensor([self.source.label(i) for i in range(a, b)], dtype=torch.int64)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            return self._compute(k, a, b, ids, x, labels, start)

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

    def _compute(self, k: int, a: int, b: int, ids: list[str], x: torch.Tensor, labels: torch.Tensor,
                 start: float) -> Record:
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
        arrays.update(ids=np.array(ids, dtype=str), indices=np.arange(a, b, dtype=np.int64), labels=labels.numpy(),
                      config_hash=np.array(self.config_hash), shard=np.array(k, dtype=np.int64))
        sha256, size = write_shard(self.out, k, arrays)
        return {"file": shard_name(k), "images": b - a, "first": ids[0], "last": ids[-1], "sha256": sha256,
                "bytes": size, "rank": self.rank, "seconds": round(time.perf_counter() - start, 3)}
