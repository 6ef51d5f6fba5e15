"""CQL on an offline dataset: `python -m mbrl.train env=d4rl/hopper-medium-v2 algo=cql`."""
from mbrl.algos.offline import learner_from_config
from mbrl.learners.cql import CQL


def from_config(cfg, run_dir=None):
    return learner_from_config(cfg, run_dir, CQL, "cql", "cql")
