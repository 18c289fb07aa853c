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
  ranks (one machine, or a network file system). Links planted in it are replaced, never
  written through (:func:`xai_torch.files.atomic_write`), a linked shard is recomputed, and
  :func:`load` reads only files inside the folder (a manifest naming ``../x.npz`` is refused).
* **Resume.** A rerun with the same ``out`` refuses a folder made with another configuration
  (model, weights, method and options, dataset ids, shard size, dtype, target rule, metrics,
  seed, preprocessing) and otherwise skips every shard whose file matches the checksum in the
  manifest (a file written just before a crash, not yet in the manifest, is kept when it loads
  completely and carries the run's config hash); missing and corrupt shards are recomputed.
* **Errors.** After every round the ranks exchange their status: an exception in one rank
  (an image that does not load, an explainer that fails) stops every rank after that round,
  with a message naming the rank, the shard and the image id; the command exits with status 1.

The package, one job per module: :mod:`.config` (constants, fingerprints, seeds, options),
:mod:`.build` (model and explainer from their names), :mod:`.sources` (image folders and
datasets), :mod:`.shards` (shard files and the manifest), :mod:`.comm` (the process group),
:mod:`.compute` (one shard), :mod:`.loop` (the run), :mod:`.reading` (:func:`load`) and
:mod:`.command` (``xai-torch run``).
"""
from __future__ import annotations

from .build import build_explainer, build_model
from .comm import ROUND_TIMEOUT as ROUND_TIMEOUT
from .command import add_run_parser, run_command
from .config import FORMAT as FORMAT
from .config import MANIFEST as MANIFEST
from .config import METRICS as METRICS
from .config import RankFailure, parse_options, shard_seed, weights_sha256
from .loop import RunSummary, explain_dataset
from .reading import DatasetExplanation, load
from .sources import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from .sources import build_source as build_source

__all__ = ["DatasetExplanation", "RankFailure", "RunSummary", "add_run_parser", "build_explainer", "build_model",
           "explain_dataset", "load", "parse_options", "run_command", "shard_seed", "weights_sha256"]
