"""Data: replay buffer (transitions and sequences), Batch."""
from mbrl.data.batch import Batch, tree_map
from mbrl.data.buffer import BufferError, ReplayBuffer

__all__ = ["Batch", "BufferError", "ReplayBuffer", "tree_map"]
