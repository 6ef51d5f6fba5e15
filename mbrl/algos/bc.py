"""Offline bc (mbrl/learners/bc.py) on a dataset: `python -m mbrl.train env=d4rl/<dataset> algo=bc`."""
from mbrl.algos.offline import learner_from_config as from_config

__all__ = ["from_config"]
