"""TD-MPC2 time per env step, split into planning and update, against the matmul peak of this process.

The agent is `python -m mbrl.train env=<env> model=tdmpc model.size=<size>` as the CLI builds it (planner
mppi_tdmpc2: 512 samples x 6 iterations, 24 policy proposals, horizon 3; updates on [256, 4] batches).
The replay buffer is filled with `--fill` random env steps, then `--steps` acting steps (one plan each)
and `--steps` updates are timed (medians kept). FLOPs of one plan and of one update (forward + backward)
are counted with torch.utils.flop_counter.FlopCounterMode; every plan is checked to call its score
function once per MPPI iteration (all 512 samples in one batch). Writes results/bench_tdmpc2.md.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from mbrl.bench.dreamer import peak_matmul
from mbrl.bench.peers import write_result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="dmc/walker-walk", help="task (default dmc/walker-walk: 24-d observations, 6-d actions)")
    p.add_argument("--size", default="5", help="model size 1|5|19|48|317 (default 5)")
    p.add_argument("--steps", type=int, default=5, help="timed plans and updates (medians kept)")
    p.add_argument("--fill", type=int, default=600, help="random env steps put in the buffer first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pixels", action="store_true", help="pixel observations (env_kwargs.pixels=true, 64x64, shared CNN)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-write", action="store_true", help="do not write results/bench_tdmpc2.md")


def _agent(args: argparse.Namespace):
    from mbrl.config import compose
    from mbrl.train import build

    o = [f"env={args.env}", "model=tdmpc", f"model.size={args.size}", "progress=false", "tensorboard=false", f"device={args.device}"]
    if args.pixels:
        o.append("+env_kwargs.pixels=true")
    return build(compose(o), tempfile.mkdtemp(prefix="bench_tdmpc2_"))


def _fill(algo, n: int):
    """`n` random env steps into the buffer; returns the last observation."""
    from mbrl.algos.base import _stack_final_obs

    env = algo.env
    obs, _ = env.reset(seed=0)
    first = np.ones(env.num_envs, dtype=bool)
    for _ in range(n):
        a = env.action_space.sample()
        nxt, r, term, trunc, info = env.step(a)
        done = np.logical_or(term, trunc)
        algo.buffer.add(obs, a, r, _stack_final_obs(nxt, info, done), term, trunc, reset=first)
        obs, first = nxt, done
    return obs


def _counting(plan, calls: list[int]):
    def wrapped(score_fn, *a, **k):
        return plan(lambda acts: (calls.append(int(acts.shape[0])), score_fn(acts))[1], *a, **k)

    return wrapped


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(args.threads)
    peak = peak_matmul(torch.float32)
    print(f"matmul peak fp32: {peak:.0f} GFLOP/s ({args.threads} threads)", flush=True)
    algo = _agent(args)
    model = algo.model
    nparams = sum(p.numel() for p in model.parameters() if p.requires_grad)
    obs = _fill(algo, args.fill)
    model.discount = 0.99
    first = np.ones(algo.num_envs, dtype=bool)
    state = None
    plan_t, upd_t = [], []
    calls: list[int] = []
    for i in range(args.steps + 1):
        if i == 1:  # after the warm-up step: count each plan's score calls and their batch sizes
            for pl in state[1]:
                pl.plan = _counting(pl.plan, calls)
        t = time.perf_counter()
        with torch.no_grad():
            action, state = algo.act(obs, first, state, explore=True)
        plan_t.append(time.perf_counter() - t)
        obs, _, term, trunc, _ = algo.env.step(action)
        first = np.logical_or(term, trunc)
        t = time.perf_counter()
        algo.train_step()
        upd_t.append(time.perf_counter() - t)
    per_plan = calls[: len(calls) // max(args.steps, 1)]
    plan_s, upd_s = float(np.median(plan_t[1:])), float(np.median(upd_t[1:]))
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            algo.act(obs, first, state, explore=True)
    plan_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        algo.train_step()
    upd_flops = fc.get_total_flops()
    pg, ug = plan_flops / 1e9 / plan_s, upd_flops / 1e9 / upd_s
    print(f"params {nparams / 1e6:.2f} M; planning {plan_s * 1e3:.0f} ms ({plan_flops / 1e9:.2f} GFLOP, {pg:.1f} GFLOP/s, {100 * pg / peak:.0f}% of peak); "
          f"update {upd_s * 1e3:.0f} ms ({upd_flops / 1e9:.2f} GFLOP, {ug:.1f} GFLOP/s, {100 * ug / peak:.0f}% of peak); "
          f"score calls per plan {len(per_plan)} of batch {sorted(set(per_plan))}", flush=True)
    if not args.no_write:
        step = plan_s + upd_s
        obs_kind = "pixels 64x64 (shared CNN, random shift)" if args.pixels else "proprio"
        body = "\n".join([
            f"TD-MPC2 agent `model=tdmpc model.size={args.size}` ({nparams / 1e6:.2f} M trainable parameters) on `{args.env}` ({obs_kind}), "
            f"{args.threads} torch thread(s), device {args.device}; planner `mppi_tdmpc2` (512 samples x 6 iterations, 64 elites, 24 policy "
            f"proposals, horizon 3), updates on [256, 4] batches. Medians of {args.steps} plans / updates after one warm-up, buffer filled "
            f"with {args.fill} random env steps.",
            "",
            "| part | time per env step | GFLOP (counted) | GFLOP/s | % of fp32 matmul peak |",
            "|---|---|---|---|---|",
            f"| planning (one `act`) | {plan_s * 1e3:.0f} ms | {plan_flops / 1e9:.2f} | {pg:.1f} | {100 * pg / peak:.0f}% |",
            f"| update (model + policy, forward + backward + Adam) | {upd_s * 1e3:.0f} ms | {upd_flops / 1e9:.2f} | {ug:.1f} | {100 * ug / peak:.0f}% |",
            f"| env step total (planning + one update) | {step * 1e3:.0f} ms ({1 / step:.2f} env steps/s; 100k env steps ≈ {1e5 * step / 3600:.1f} h) | | | |",
            "",
            f"Matmul peak: a [1024 x 1536] @ [1536 x 512] fp32 matmul in this process: {peak:.0f} GFLOP/s. Goal: the update at ≥ 50% of it.",
            f"Batching: each plan called its score function {len(per_plan)} times (one per MPPI iteration), each with "
            f"{sorted(set(per_plan))} candidates; the 24 proposals are one batched policy rollout.",
            "FLOPs: torch.utils.flop_counter.FlopCounterMode (matmuls and convolutions) over one extra plan and one extra update.",
        ])
        name = "bench_tdmpc2_pixels.md" if args.pixels else "bench_tdmpc2.md"
        cmd = f"python -m mbrl.bench tdmpc2 --env {args.env} --size {args.size} --steps {args.steps} --threads {args.threads}" + (" --pixels" if args.pixels else "")
        print(f"wrote {write_result(name, 'TD-MPC2: time per env step (planning / update) vs the matmul peak', cmd, body)}")
    return 0
