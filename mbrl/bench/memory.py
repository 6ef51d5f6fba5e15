"""World-model memory on toy/memory-<L>: does the model's imagined reward name the cue it saw L steps ago?

For each backbone and each L, a world model is fitted (the project's `ModelFitter`, the model's own loss with
the reward term weighted `REWARD_WEIGHT` = 10; sequences of 16 steps, batch 16, Adam lr `--lr`, clip 1000) on 600 random-policy episodes of
`toy/memory-<L>` (envs/toy.py: a cue at step 0, L - 1 blank steps, the query flag at step L where the answer
is rewarded 1 if it names the cue). Every `--every` updates it answers 128 fresh episodes: each is observed
up to the query (`observe`), every answer is imagined one step (`step`, `reward`), and the answer with the
highest imagined reward is taken (a one-step planner on the model). Accuracy 1/4 is chance (what a model
without memory gets: the query state is the same whatever the cue); 1 is recall. This is S4WM's kind of
memory test (Deng et al. 2023: the world model alone), not an agent's success rate. Transition models (the
ensemble: Markov in the observation) are fitted once on every transition, as PETS / MBPO fit them.

Writes results/bench_memory.md (+ .png: best accuracy against L per backbone).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

#: CI-sized backbones (the sizes of their toy/point learning tests)
SIZES = {
    "rssm": ["model.size=XS", "model.deter=64", "model.hidden=64", "model.stoch=8", "model.classes=8", "model.blocks=2", "model.bins=31"],
    "transformer": ["model.size=XS", "model.width=64", "model.layers=1", "model.attn_heads=4", "model.hidden=64", "model.stoch=8",
                    "model.classes=8", "model.context=16", "model.window=16", "model.imag_context=8", "model.dropout=0.0", "model.bins=31"],
    "mamba": ["model.size=XS", "model.d_model=32", "model.n_layer=1", "model.d_state=16", "model.headdim=16", "model.stoch=8",
              "model.classes=8", "model.hidden=64", "model.bins=31"],
    "s5": ["model.size=XS", "model.d_model=32", "model.n_layer=1", "model.d_state=16", "model.deter=64", "model.stoch=8",
           "model.classes=8", "model.hidden=64", "model.blocks=2", "model.bins=31"],
    "ensemble": ["model.hidden=64", "model.layers=2"],
}
#: reward-loss weight of the sequence backbones here (their configs: 1). The reward is 1 when the answer equals the
#: cue, so neither the cue nor the answer alone predicts it (E[r | cue] = E[r | answer] = 1/4): an XOR that a
#: gradient-trained reward head leaves only after a plateau. Measured (mamba, toy/memory-1, seeds 0 / 1, goal 0.9):
#: weight 1 reached it after 6500 updates (results/bench_memory_10k.md, seed 0), weight 10 after 1000 / 750.
REWARD_WEIGHT = 10.0
CUES = 4
EPISODES = 600


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="rssm,transformer,mamba,s5,ensemble", help="comma-separated backbones")
    p.add_argument("--lengths", default="1,2,4", help="comma-separated L of toy/memory-<L>")
    p.add_argument("--updates", type=int, default=3000, help="update budget per (backbone, L)")
    p.add_argument("--every", type=int, default=250, help="updates between accuracy checks")
    p.add_argument("--goal", type=float, default=0.9, help="accuracy at which a fit stops early")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench_memory", help="results/<out>.md and .png (an absolute path is kept)")


def memory_model(name: str, length: int, seed: int = 0):
    """A world model for toy/memory-<length> (its CI size) and a replay buffer of random-policy episodes."""
    import torch

    from mbrl import envs
    from mbrl.config import compose
    from mbrl.data.buffer import ReplayBuffer
    from mbrl.errors import UserError
    from mbrl.models import build

    if name not in SIZES:
        raise UserError(f"bench memory: no size for model {name!r}; valid: {', '.join(SIZES)}")
    env = envs.make_single(f"toy/memory-{length}", seed=seed)
    weight = [f"model.rew_scale={REWARD_WEIGHT}"] if name != "ensemble" else []  # the ensemble's reward is one output of its MLP
    cfg = compose([f"model={name}", "env=toy/point", *SIZES[name], *weight]).model
    torch.manual_seed(seed)
    model = build(cfg, env.observation_space, env.action_space, seed=seed)
    buf = ReplayBuffer(EPISODES * (length + 2), env.observation_space, env.action_space, num_envs=1, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(EPISODES):
        obs, _ = env.reset()
        done = False
        while not done:
            a = int(rng.integers(env.action_space.n))
            nxt, r, term, trunc, _ = env.step(a)
            buf.add(obs[None], np.array([a]), np.array([r], np.float32), nxt[None], np.array([term]), np.array([trunc]))
            obs, done = nxt, term or trunc
    return model, buf


def answer_accuracy(model, length: int, episodes: int = 128, cues: int = CUES, seed: int = 1) -> float:
    """How often the answer with the highest imagined reward names the cue (module docstring)."""
    import torch

    rng = np.random.default_rng(seed)
    cue = rng.integers(cues, size=episodes)
    obs = np.zeros((episodes, length + 1, cues + 1), np.float32)
    obs[np.arange(episodes), 0, cue] = 1.0
    obs[:, length, cues] = 1.0
    action = torch.as_tensor(rng.integers(cues, size=(episodes, length + 1)))
    is_first = torch.zeros(episodes, length + 1, dtype=torch.bool)
    is_first[:, 0] = True
    model.eval()
    with torch.no_grad(), model.inference():
        query = model.observe(torch.as_tensor(obs), action, is_first)[:, length]
        rewards = torch.stack([model.reward(model.step(query, model.action_input(torch.full((episodes,), a)))).reshape(episodes)
                               for a in range(cues)], -1)
    return float((rewards.argmax(-1).numpy() == cue).mean())


def fit_until_recall(name: str, length: int, updates: int = 3000, every: int = 250, goal: float = 0.9, lr: float = 3e-3,
                     seed: int = 0) -> list[tuple[int, float]]:
    """[(updates so far, accuracy)] every `every` updates until `goal` or `updates` (module docstring)."""
    from mbrl.algos.model_fit import ModelFitter

    model, buf = memory_model(name, length, seed)
    if model.train_on == "transitions":
        ModelFitter(model, seed=seed, epochs=20).fit(buf)
        return [(0, answer_accuracy(model, length))]
    fitter = ModelFitter(model, seed=seed, seq_batch=16, seq_length=16, seq_updates=every, opt={"lr": lr, "clip": 1000.0})
    curve: list[tuple[int, float]] = []
    for done in range(every, updates + 1, every):
        fitter.fit(buf)
        curve.append((done, answer_accuracy(model, length)))
        if curve[-1][1] >= goal:
            break
    return curve


def run(args: argparse.Namespace) -> int:
    import torch

    from mbrl.bench.common import claim, results_path
    from mbrl.bench.peers import write_result

    torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    from mbrl.errors import UserError

    bad = [m for m in models if m not in SIZES]
    if bad or not models:
        raise UserError(f"bench memory --models {args.models}: unknown {', '.join(bad) or '(none given)'}; valid: {', '.join(SIZES)}")
    try:
        lengths = [int(x) for x in args.lengths.split(",") if x]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 1:
        raise UserError(f"bench memory --lengths {args.lengths}: expected comma-separated integers >= 1, e.g. 1,2,4")
    md, png = claim(f"{args.out}.md", f"{args.out}.png")
    rows, best = [], {}
    for name in models:
        for L in lengths:
            t0 = time.time()
            curve = fit_until_recall(name, L, args.updates, args.every, args.goal, args.lr, args.seed)
            wall = time.time() - t0
            acc = [a for _, a in curve]
            reached = next((u for u, a in curve if a >= args.goal), None)
            best[name, L] = max(acc)
            rows.append(f"| {name} | {L} | {max(acc):.2f} | {acc[-1]:.2f} | {reached if reached is not None else ('fitted once' if curve[-1][0] == 0 else f'not in {curve[-1][0]}')} | "
                        f"{wall:.0f} | {' '.join(f'{a:.2f}' for a in acc)} |")
            print(rows[-1], flush=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name in models:
        ax.plot(lengths, [best[name, L] for L in lengths], marker="o", label=name)
    ax.axhline(1.0 / CUES, color="grey", ls="--", lw=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("L (steps between cue and query)")
    ax.set_ylabel("best answer accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    body = "\n".join([
        f"Budget: up to {args.updates} updates per (backbone, L), accuracy every {args.every} (128 episodes), stop at {args.goal}; "
        f"lr {args.lr}, seed {args.seed}, {EPISODES} random-policy episodes, {CUES} cues (chance 0.25), reward-loss weight {REWARD_WEIGHT:g}. Sizes: `SIZES` in mbrl/bench/memory.py "
        "(the CI learning tests' sizes). Transition models are fitted once (20 epochs), so their row has one check.",
        "", "| backbone | L | best accuracy | last accuracy | updates to the goal | wall (s) | accuracy at each check |",
        "|---|---|---|---|---|---|---|", *rows, "", f"Plot: [{png.name}]({png.name})", "", (__doc__ or "").strip()])
    cmd = " ".join(["python -m mbrl.bench memory", f"--models {args.models}", f"--lengths {args.lengths}", f"--updates {args.updates}",
                    f"--every {args.every}", f"--lr {args.lr}", f"--seed {args.seed}", f"--threads {args.threads}"])
    print(f"wrote {write_result(results_path(md), 'World-model memory on toy/memory-<L> (answer accuracy of a one-step planner on the model)', cmd, body)}")
    return 0
