"""Offline td3bc (mbrl/learners/td3bc.py) on a dataset: `python -m mbrl.train env=d4rl/<dataset> algo=td3bc`."""
from mbrl.algos.offline import learner_from_config as from_config

__all__ = ["from_config"]
