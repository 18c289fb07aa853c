"""The old name of :mod:`xai_torch.dataset` (the dataset runner), kept so that code written for
xai_torch 0.2 (``from xai_torch.distributed import load``) still runs; it warns once."""
import sys
import warnings

from . import dataset

warnings.warn("xai_torch.distributed was renamed xai_torch.dataset; import that instead.", DeprecationWarning,
              stacklevel=2)
sys.modules[__name__] = dataset
