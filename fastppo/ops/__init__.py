"""The hot paths: one public function each, with its pure-PyTorch reference beside it."""

from fastppo.ops.gae import gae, gae_reference

__all__ = ["gae", "gae_reference"]
