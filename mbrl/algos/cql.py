"""Offline cql (mbrl/learners/cql.py) on a dataset: `python -m mbrl.train env=d4rl/<dataset> algo=cql`."""
from mbrl.algos.offline import learner_from_config as from_config

__all__ = ["from_config"]
