"""TD3+BC on an offline dataset: `python -m mbrl.train env=d4rl/hopper-medium-v2 algo=td3bc`."""
from mbrl.algos.offline import learner_from_config
from mbrl.learners.td3bc import TD3BC


def from_config(cfg, run_dir=None):
    return learner_from_config(cfg, run_dir, TD3BC, "td3bc", "td3bc")
