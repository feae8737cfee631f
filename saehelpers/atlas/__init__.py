"""A feature atlas: a static, searchable site of every latent of chosen layers (see `build_atlas`).

`python -m saehelpers atlas --preset mini --layers 6 --tokens 4096 --out atlas/` writes it; under
`torchrun --nproc-per-node K` the token batches are shared between K processes and the files are the same.
"""

from .build import build_atlas
from .site import atlas_size
from .stats import AtlasStats, Moments, merge_examples

__all__ = ["AtlasStats", "Moments", "atlas_size", "build_atlas", "merge_examples"]
