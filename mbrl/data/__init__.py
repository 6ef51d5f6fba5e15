"""Data: replay buffer (transitions and sequences), Batch."""
from mbrl.data.batch import Batch, tree_map
from mbrl.data.buffer import ReplayBuffer

__all__ = ["Batch", "ReplayBuffer", "tree_map"]
