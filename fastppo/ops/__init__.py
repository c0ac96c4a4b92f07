"""The hot paths: one public function each, with its pure-PyTorch reference beside it."""

from fastppo.ops.gae import gae, gae_reference
from fastppo.ops.ppo_loss import ppo_loss, ppo_loss_reference

__all__ = ["gae", "gae_reference", "ppo_loss", "ppo_loss_reference"]
