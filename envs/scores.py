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
