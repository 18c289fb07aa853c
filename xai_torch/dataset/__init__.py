"""Dataset-scale explanations with torchrun on one machine: ``xai-torch run`` and :func:`explain_dataset`.

Start one process per core or GPU with PyTorch's own launcher, or run one process::

    torchrun --nproc_per_node=4 -m xai_torch run val/ --out runs/ig --method integrated_gradients
    xai-torch run val/ --out runs/ig --method integrated_gradients      # one process works too

and read the result with :func:`load`. How a run is organised:

* **No collective.** The ranks read ``RANK`` / ``WORLD_SIZE`` from torchrun's environment and
  join no process group: the output folder is their only meeting point (:mod:`.locks`). A rank
  *claims* a shard (a ``lockf`` byte lock in ``.xai-torch.claims``), verifies or explains it,
  records it in ``manifest.json`` (changed under a file lock) and releases it. Its own shards
  (``range(rank, num_shards, world)``) come first, decoded ahead by a ``DataLoader`` with
  worker processes (:mod:`.engine`); then it takes any shard still free (a slower or dead
  rank's), then waits for shards that others hold - at most ``finish_timeout`` without
  progress (default ``max(60 s, 3 x`` the slowest shard so far ``)``). A stalled rank (SIGSTOP, a hung
  device) therefore never blocks the others: they finish every other shard and exit with status
  75 and a message that a rerun completes the job (torchrun then stops the stalled rank). A
  dead rank's claims vanish with it. ``--max-restarts`` or a plain rerun finishes the job.
* **Shards.** The run's images are sorted by id (relative path for image folders); shard ``k``
  holds images ``[k * shard_size, (k + 1) * shard_size)``, ``shard_size`` by default
  ``min(64, ceil(images / 8))``: from the image count only, never from the world size, so the
  layout - and with it every result - is the same for 1, 2 or 8 processes, and a run can
  resume with another number.
* **Seeds.** A stochastic explainer (any whose configuration has a ``seed``: SmoothGrad, RISE,
  LIME, KernelSHAP, ...) is re-created for shard ``k`` with ``seed = shard_seed(seed, k)``, and
  torch's global RNG is seeded with the same value before the shard: the same shard gets the same
  noise whatever the world size, the rank or the order.
* **Threads.** Each process runs ``max(1, cores // processes on the machine)`` torch threads
  unless ``--threads`` says otherwise (a one-process run on 2 cores: 2; two processes: 1 each).
  The thread count changes results in the last digits, so it is part of the configuration; a
  resume without ``--threads`` uses the recorded count.
* **Files.** Each shard is one ``shard-KKKKK.npz`` (ids, dataset indices, labels, targets,
  predictions, attributions, optional ``deletion_auc`` / ``insertion_auc``, the config hash, the
  quarantined ids), written to a temporary file and renamed into place, so a file is either
  whole or absent; temporary files a killed job left are removed when the next job starts.
  ``manifest.json`` holds the config, model, method, dataset, every finished shard with its
  sha256, the quarantine and one record per job. The output folder must be on a local file
  system (file locks). Links planted in it are replaced, never written through
  (:func:`xai_torch.files.atomic_write`), a linked shard is recomputed, and :func:`load` reads
  only files inside the folder (a manifest naming ``../x.npz`` is refused).
* **One job per folder.** ``.xai-torch.lock`` is held (``flock``) for the whole run by the ranks
  of one job; a second job on the same ``--out`` gets an error naming the holder's pid and host.
  Ranks started by torchrun exit when torchrun dies (:func:`.engine.watch_parent`: torchrun
  puts its workers in sessions of their own, so killing its process group misses them).
* **Resume.** A rerun with the same ``out`` refuses a folder made with another configuration
  (model, weights, method and options, dataset identity, shard size, dtype, target rule,
  metrics, seed, threads, preprocessing), listing the differences, and otherwise skips every
  shard whose file matches the checksum in the manifest (a file written just before a crash,
  not yet in the manifest, is kept when it loads completely and carries the run's config
  hash); missing and corrupt shards are recomputed.
* **Bad images.** ``on_error="stop"`` (default): an image that cannot be decoded stops the rank
  with a message naming the image, the shard and ``--on-error skip`` (exit status 1; torchrun
  stops the other ranks). ``"skip"``: the image is left out of its shard and listed in the
  manifest's ``"quarantine"`` (id, reason); deleting the bad file and rerunning resumes
  (:mod:`.layout` explains why the dataset identity still matches).

The package, one job per module. The application: :mod:`.config` (constants, fingerprints,
seeds, options), :mod:`.build` (model and explainer from their names), :mod:`.sources` and
:mod:`.images` (image folders and datasets), :mod:`.layout` (shard plan, dataset identity,
quarantine), :mod:`.compute` (one shard), :mod:`.shards` (shard files, manifest checks),
:mod:`.loop` (the run), :mod:`.reading` (:func:`load`) and :mod:`.command` (``xai-torch run``).
The engine: :mod:`.engine` (launch, threads, watchdog, DataLoader), :mod:`.locks` (job lock,
claims, manifest ledger) and :mod:`.work` (a rank's claim loop).
"""
from __future__ import annotations

from .build import build_explainer, build_model
from .command import add_run_parser, run_command
from .config import FORMAT as FORMAT
from .config import MANIFEST as MANIFEST
from .config import METRICS as METRICS
from .config import IncompleteRun, RankFailure, default_shard_size, parse_options, shard_seed, weights_sha256
from .loop import RunSummary, explain_dataset
from .reading import DatasetExplanation, load
from .sources import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from .sources import build_source as build_source

__all__ = ["DatasetExplanation", "IncompleteRun", "RankFailure", "RunSummary", "add_run_parser", "build_explainer",
           "build_model", "default_shard_size", "explain_dataset", "load", "parse_options", "run_command", "shard_seed",
           "weights_sha256"]
