"""Offline iql (mbrl/learners/iql.py) on a dataset: `python -m mbrl.train env=d4rl/<dataset> algo=iql`."""
from mbrl.algos.offline import learner_from_config as from_config

__all__ = ["from_config"]
