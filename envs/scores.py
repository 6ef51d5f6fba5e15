"""Atari 100k benchmark: the 26 games, published random / human scores, human-normalised score.

Source of the numbers: the random-agent and human scores in the form the Atari 100k literature uses
them — SPR (Schwarzer et al. 2021, Table 4, "Random" / "Human" columns), DreamerV3 (Hafner et al.
2023, Atari100k table), DIAMOND (Alonso et al. 2024, Table 1); they go back to Mnih et al. 2015
(random) and Wang et al. 2016 (human, no-op starts), and are the values of dqn_zoo's
`atari_data.py` and of rliable.
Human-normalised score = (score - random) / (human - random).
"""
from __future__ import annotations
from mbrl.errors import UserError

ATARI100K_STEPS = 100_000  # agent steps (= 400k frames at frame skip 4)

ATARI100K_GAMES = (
    "Alien", "Amidar", "Assault", "Asterix", "BankHeist", "BattleZone", "Boxing", "Breakout",
    "ChopperCommand", "CrazyClimber", "DemonAttack", "Freeway", "Frostbite", "Gopher", "Hero",
    "Jamesbond", "Kangaroo", "Krull", "KungFuMaster", "MsPacman", "Pong", "PrivateEye", "Qbert",
    "RoadRunner", "Seaquest", "UpNDown",
)

ATARI_RANDOM_SCORES = {
    "Alien": 227.8, "Amidar": 5.8, "Assault": 222.4, "Asterix": 210.0, "BankHeist": 14.2,
    "BattleZone": 2360.0, "Boxing": 0.1, "Breakout": 1.7, "ChopperCommand": 811.0,
    "CrazyClimber": 10780.5, "DemonAttack": 152.1, "Freeway": 0.0, "Frostbite": 65.2,
    "Gopher": 257.6, "Hero": 1027.0, "Jamesbond": 29.0, "Kangaroo": 52.0, "Krull": 1598.0,
    "KungFuMaster": 258.5, "MsPacman": 307.3, "Pong": -20.7, "PrivateEye": 24.9, "Qbert": 163.9,
    "RoadRunner": 11.5, "Seaquest": 68.4, "UpNDown": 533.4,
}

ATARI_HUMAN_SCORES = {
    "Alien": 7127.7, "Amidar": 1719.5, "Assault": 742.0, "Asterix": 8503.3, "BankHeist": 753.1,
    "BattleZone": 37187.5, "Boxing": 12.1, "Breakout": 30.5, "ChopperCommand": 7387.8,
    "CrazyClimber": 35829.4, "DemonAttack": 1971.0, "Freeway": 29.6, "Frostbite": 4334.7,
    "Gopher": 2412.5, "Hero": 30826.4, "Jamesbond": 302.8, "Kangaroo": 3035.0, "Krull": 2665.5,
    "KungFuMaster": 22736.3, "MsPacman": 6951.6, "Pong": 14.6, "PrivateEye": 69571.3, "Qbert": 13455.0,
    "RoadRunner": 7845.0, "Seaquest": 42054.7, "UpNDown": 11693.2,
}


def _canonical(game: str) -> str:
    key = game.split("/", 1)[1] if game.startswith("atari/") else game
    norm = key.replace("_", "").replace("-", "").lower()
    for name in ATARI100K_GAMES:
        if name.lower() == norm:
            return name

    raise UserError(f"no published Atari 100k scores for {game!r}; valid: {', '.join(ATARI100K_GAMES)}")


def human_normalized_score(game: str, score: float) -> float:
    """(score - random) / (human - random); `game` as `Pong`, `pong`, `ms_pacman` or `atari/pong`."""
    name = _canonical(game)
    random, human = ATARI_RANDOM_SCORES[name], ATARI_HUMAN_SCORES[name]
    return (float(score) - random) / (human - random)


# The Atari100k scoring rule of DreamerV3 (Hafner et al. 2023): a run's score is the mean of the training
# episode returns logged in the last 10k of its 400k frames (the released danijar/dreamerv3
# scores/atari100k-*.json.gz curves, scored this way, give the per-seed numbers in mbrl/baselines/).
ATARI100K_WINDOW_FRAMES = 10_000


def window_score(frames, returns, budget_frames: float, window_frames: float = ATARI100K_WINDOW_FRAMES) -> float:
    """Mean of the episode `returns` logged at `frames` in (budget - window, budget]; when no episode ended
    in the window (very long episodes), the last return logged at or before the budget."""
    pairs = [(float(f), float(r)) for f, r in zip(frames, returns) if float(f) <= budget_frames]
    inside = [r for f, r in pairs if f > budget_frames - window_frames]
    if inside:
        return sum(inside) / len(inside)
    if pairs:
        return sorted(pairs, key=lambda p: p[0])[-1][1]
    raise UserError(f"no episode return logged at or before frame {budget_frames:g}")


def normalize(env: str, score: float) -> tuple[float, str]:
    """A score on the benchmark's normalised scale and the scale's name: Atari -> human-normalised
    (`hns`), D4RL -> D4RL-normalised 0-100 (`d4rl`), DMC and everything else -> the raw return (`raw`)."""
    suite = env.split("/", 1)[0]
    if suite == "atari":
        return human_normalized_score(env, score), "hns"
    if suite == "d4rl":
        from .offline_scores import d4rl_normalized_score

        return float(d4rl_normalized_score(env.split("/", 1)[1], score)), "d4rl"
    return float(score), "raw"
