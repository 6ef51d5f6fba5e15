"""DreamerV3 training-step time vs sheeprl 0.8.4 (same size, same batch), and imagination throughput.

One full training step = world-model update on a [16, 64] batch of 64x64x3 pixel sequences +
actor + critic updates on 16 x 64 imagined trajectories of horizon 15, at DreamerV3 size S
(GRU 512, dense 512, CNN depth 32, 2 MLP layers, 32 x 32 latents), continuous actions (6-D).
Both sides run the same number of torch threads on the same random data; sheeprl in a subprocess
of its own venv. Writes results/bench_dreamer.md.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mbrl.bench.peers import ROOT, run_peer, write_result

PEER_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
a = json.loads(sys.argv[1])
if a["mallopt"]:  # the glibc settings mbrl's CLIs use (mbrl/utils/memory.py SETTINGS), for equal conditions
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    assert all(libc.mallopt(param, value) == 1 for param, value in a["mallopt"])
import torch
torch.set_num_threads(a["threads"])
import gymnasium as gym, numpy as np
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from lightning.fabric import Fabric
from sheeprl.utils.utils import dotdict
from sheeprl.algos.dreamer_v3.agent import build_agent
from sheeprl.algos.dreamer_v3.dreamer_v3 import train
from sheeprl.algos.dreamer_v3.utils import Moments
import hydra
with initialize_config_module(config_module="sheeprl.configs", version_base="1.3"):
    cfg = compose(config_name="config", overrides=[
        "exp=dreamer_v3", f"algo=dreamer_v3_{a['size']}", "env=dummy", "env.id=continuous_dummy",
        "algo.cnn_keys.encoder=[rgb]", "algo.mlp_keys.encoder=[]", "fabric.accelerator=cpu",
        f"algo.per_rank_batch_size={a['B']}", f"algo.per_rank_sequence_length={a['L']}", f"algo.horizon={a['H']}",
        "metric.log_level=0", f"fabric.precision={a['precision']}"])
cfg = dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
fabric = Fabric(accelerator="cpu", devices=1, precision=cfg.fabric.precision)
fabric.launch() if hasattr(fabric, "launch") else None
A = a["A"]
obs_space = gym.spaces.Dict({"rgb": gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)})
wm, actor, critic, target_critic, player = build_agent(fabric, (A,), True, cfg, obs_space)
inst = lambda c, p: hydra.utils.instantiate(c, params=p, _convert_="all")
wo = inst(cfg.algo.world_model.optimizer, wm.parameters())
ao = inst(cfg.algo.actor.optimizer, actor.parameters())
co = inst(cfg.algo.critic.optimizer, critic.parameters())
wo, ao, co = fabric.setup_optimizers(wo, ao, co)
m = cfg.algo.actor.moments
moments = Moments(m.decay, m.max, m.percentile.low, m.percentile.high)
L, B = a["L"], a["B"]
g = torch.Generator().manual_seed(0)
def batch():
    return {"rgb": torch.randint(0, 256, (L, B, 3, 64, 64), generator=g, dtype=torch.uint8).float(),
            "actions": torch.rand(L, B, A, generator=g) * 2 - 1, "rewards": torch.randn(L, B, 1, generator=g),
            "terminated": torch.zeros(L, B, 1), "truncated": torch.zeros(L, B, 1), "is_first": torch.zeros(L, B, 1)}
times = []
for i in range(a["warmup"] + a["steps"]):
    d = batch()
    t = time.perf_counter()
    train(fabric, wm, actor, critic, target_critic, wo, ao, co, d, None, cfg, True, (A,), moments)
    times.append(time.perf_counter() - t)
times = times[a["warmup"]:]
from torch.utils.flop_counter import FlopCounterMode
with FlopCounterMode(display=False) as fc:  # one more (untimed) step, counted
    train(fabric, wm, actor, critic, target_critic, wo, ao, co, batch(), None, cfg, True, (A,), moments)
nparams = sum(p.numel() for p in wm.parameters()) + sum(p.numel() for p in actor.parameters()) + sum(p.numel() for p in critic.parameters())
print(json.dumps({"step_s": float(np.median(times)), "min_s": float(min(times)), "params": nparams, "flops": fc.get_total_flops()}))
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="S", help="DreamerV3 size XS|S|M|L (default S)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per side (median kept)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--imagine-batch", type=int, default=1024)
    p.add_argument("--no-peer", action="store_true", help="skip sheeprl")
    p.add_argument("--no-write", action="store_true", help="do not write results/bench_dreamer.md")
    p.add_argument("--report-run", default=None, metavar="RUN_DIR",
                   help="instead of timing: write results/dreamer_<env>.md from a training run's metrics.csv (learning curve, wall-clock)")
    p.add_argument("--report-name", default=None, metavar="NAME", help="with --report-run: results/NAME.md and .png instead of dreamer_<env>")


def _ours(size: str, B: int, L: int, H: int, A: int, steps: int, warmup: int, precision: str, model: str = "rssm") -> dict:
    import gymnasium as gym
    import torch

    from mbrl.algos.dreamer import Dreamer  # noqa: F401  (import cost outside timing)
    from mbrl.data.batch import Batch
    from mbrl.learners.actor_critic import ActorCritic
    from mbrl.models.rssm import RSSM
    from mbrl.utils.optim import Optim
    import contextlib

    torch.manual_seed(0)
    obs_space = gym.spaces.Box(0, 255, (3, 64, 64), np.uint8)
    act_space = gym.spaces.Box(-1, 1, (A,), np.float32)
    if model == "rssm":
        wm = RSSM(obs_space, act_space, size=size)
    else:  # another backbone from its config group (bench imagine --train-step)
        from mbrl.bench.imagine import build_model
        wm = build_model(model, {"size": size}, obs_space, act_space)
    ac = ActorCritic(wm.feat_dim, act_space, units=wm.hidden, layers=wm.layers, horizon=H)
    opt = Optim(wm.parameters(), kind="adam", lr=1e-4, eps=1e-8, clip=1000.0)
    g = torch.Generator().manual_seed(0)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

    def batch():
        first = torch.zeros(B, L, dtype=torch.bool)
        first[:, 0] = True
        return Batch(obs=torch.randint(0, 256, (B, L, 3, 64, 64), generator=g, dtype=torch.uint8),
                     action=torch.rand(B, L, A, generator=g) * 2 - 1, reward=torch.randn(B, L, generator=g),
                     terminated=torch.zeros(B, L, dtype=torch.bool), is_first=first)

    def step(b):
        with ctx():
            loss, _, start = wm.loss(b)  # start: the batch's (detached) posterior states
        opt.step(loss)
        ac.imagine_and_update(wm, start, 1.0 - b["terminated"].float(), autocast=ctx())

    times = []
    for i in range(warmup + steps):
        b = batch()
        t = time.perf_counter()
        step(b)
        times.append(time.perf_counter() - t)
    times = times[warmup:]
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:  # one more (untimed) step, counted
        step(batch())
    nparams = sum(p.numel() for p in wm.parameters()) + sum(p.numel() for p in ac.actor.parameters()) + sum(p.numel() for p in ac.critic.parameters())
    return {"step_s": float(np.median(times)), "min_s": float(min(times)), "params": nparams, "flops": fc.get_total_flops(), "wm": wm, "ac": ac}


def peak_matmul(dtype, reps: int = 20) -> float:
    """GFLOP/s of a [1024 x 1536] @ [1536 x 512] matmul (the shape of the model's dense layers) in this process."""
    import torch

    a, b = torch.randn(1024, 1536, dtype=dtype), torch.randn(1536, 512, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * 1024 * 1536 * 512 / best / 1e9


def _imagination(wm, ac, n: int, H: int, precision: str, reps: int = 3) -> float:
    import contextlib

    import torch

    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    start = wm.initial(n)
    best = float("inf")
    with torch.no_grad():
        for _ in range(reps + 1):
            t = time.perf_counter()
            with ctx():
                wm.imagine(start, lambda f: ac.act(f, explore=True), H)
            best = min(best, time.perf_counter() - t)
    return n * H / best


def _precision_label(p: str) -> str:
    """`auto` as this machine resolves it (reports are written where the run ran)."""
    import torch

    from mbrl.algos.dreamer import resolve_precision

    return f"auto (= {resolve_precision(p, torch.device('cpu'))} on this machine)" if p == "auto" else p


def _model_line(m) -> str:
    """The run's backbone and sizes (the RSSM as its runs were always described; other backbones by their keys)."""
    name = str(m.get("name", "rssm"))
    if name == "rssm":
        return f"- model: size preset {m.size} with deter {m.deter}, hidden {m.hidden}, {m.stoch} x {m.classes} latents, {m.blocks} GRU blocks"
    keys = ("size", "width", "d_model", "layers", "attn_heads", "window", "context", "d_state", "hidden", "stoch", "classes")
    sizes = ", ".join(f"{k} {m.get(k)}" for k in keys if m.get(k, None) is not None)
    return f"- model: {name}, {sizes}"


def report_run(run_dir: str, name: str | None = None) -> int:
    """Learning curve and wall-clock of a Dreamer training run -> results/dreamer_<env>.md (+ .png)."""
    import csv
    from pathlib import Path

    from omegaconf import OmegaConf

    from mbrl import envs
    from mbrl.plot import plot

    from mbrl.bench.common import claim

    d = Path(run_dir)
    cfg = OmegaConf.load(d / "config.yaml")
    env = str(cfg.env)
    given, name = name, name or "dreamer_" + env.replace("/", "_").replace("-", "_")
    md_path, png_path = claim(f"{name}.md", f"{name}.png")  # refuse existing results before any work
    rows = list(csv.DictReader(open(d / "metrics.csv")))
    evals = [(int(r["step"]), float(r["value"]), float(r["wall_time"])) for r in rows if r["key"] == "eval/return"]
    train = [(int(r["step"]), float(r["value"])) for r in rows if r["key"] == "train/return"]
    upd = [(int(r["step"]), float(r["value"])) for r in rows if r["key"] == "time/updates"]
    last_step = max(int(r["step"]) for r in rows)
    wall = max(float(r["wall_time"]) for r in rows)
    repeat = int((cfg.get("env_kwargs") or {}).get("action_repeat") or envs.suite_defaults(env.split("/", 1)[0]).get("action_repeat", 1))
    m, a = cfg.model, cfg.algo
    ac = cfg.learner if cfg.get("learner") is not None else a.actor_critic  # runs from before the learner group: algo.actor_critic
    command = (d / "command.txt").read_text().strip() if (d / "command.txt").is_file() else f"python -m mbrl.train env={env} model=rssm"
    lines = [f"- env: `{env}`, action repeat {repeat} (env steps = agent steps x {repeat})",
             _model_line(m),
             f"- algo: train_ratio {a.train_ratio}, batch {a.batch_size} x {a.batch_length}, horizon {ac.horizon}, precision {_precision_label(str(a.get('precision', 'fp32')))}, "
             f"lr world model {a.wm_opt.lr}, actor {ac.actor_opt.lr}, critic {ac.critic_opt.lr}, actor gradient {ac.actor_grad}, torch threads {cfg.get('threads')}",
             f"- reached {last_step} agent steps = {last_step * repeat} env steps of {(cfg.steps if cfg.get('steps') else a.steps) * repeat}; "
             f"gradient updates: {int(upd[-1][1]) if upd else 'n/a'}; wall-clock {wall / 60:.1f} min (metrics.csv `wall_time` of the last row)",
             "", "| agent steps | env steps | eval return (mean of eval episodes) | wall-clock (min) |", "|---|---|---|---|"]
    lines += [f"| {s} | {s * repeat} | {v:.1f} | {w / 60:.1f} |" for s, v, w in evals]
    lines += ["", "| agent steps | train episode return |", "|---|---|"]
    lines += [f"| {s} | {v:.1f} |" for s, v in train]
    if evals:
        png = plot([d], png_path, key="eval/return", labels=[f"Dreamer ({env})"], title=f"Dreamer on {env} (agent steps x {repeat} = env steps)")
        lines += ["", f"Curve: [{png.name}]({png.name})"]
    p = write_result(md_path, f"Dreamer learning run on {env}", f"{command} (report: python -m mbrl.bench dreamer --report-run {run_dir}{f' --report-name {given}' if given else ''})", "\n".join(lines))
    print(f"wrote {p}")
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from mbrl.algos.dreamer import resolve_precision

    if args.report_run:
        return report_run(args.report_run, args.report_name)
    if not args.no_write:
        from mbrl.bench.common import claim

        claim("bench_dreamer.md")  # refused before the measurement, not after it

    torch.set_num_threads(args.threads)
    B, L, H, A = 16, 64, 15, 6
    results = {}
    from mbrl.utils.memory import SETTINGS, keep_freed_memory

    keep_memory = keep_freed_memory()  # as `python -m mbrl.train` runs (python -m mbrl.bench has applied it)
    peak = {"fp32": peak_matmul(torch.float32), "bf16": peak_matmul(torch.bfloat16)}
    print(f"matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s", flush=True)
    for precision in ("fp32", "bf16"):
        r = _ours(args.size, B, L, H, A, args.steps, args.warmup, precision)
        r["imag"] = _imagination(r.pop("wm"), r.pop("ac"), args.imagine_batch, H, precision)
        results[precision] = r
        print(f"ours {precision}: {r['step_s']:.2f} s/step, {r['flops'] / 1e9:.0f} GFLOP/step, imagination {r['imag']:.0f} states/s", flush=True)
    sheep = {}  # (precision, with mbrl's malloc settings) -> sheeprl result
    if not args.no_peer:
        for precision, sp in (("fp32", "32-true"), ("bf16", "bf16-mixed")):
            for keep in sorted({keep_memory, False}, reverse=True):
                try:
                    r = run_peer("sheeprl", PEER_SCRIPT, json.dumps(dict(size=args.size, B=B, L=L, H=H, A=A, threads=args.threads, steps=args.steps,
                                                                         warmup=args.warmup, precision=sp, mallopt=SETTINGS if keep else [])), timeout=3600)
                    sheep[precision, keep] = r
                    print(f"sheeprl {precision}{' (keep_freed_memory)' if keep else ''}: {r['step_s']:.2f} s/step, {r['flops'] / 1e9:.0f} GFLOP/step", flush=True)
                except Exception as e:  # report, keep our numbers
                    print(f"sheeprl {precision} failed: {str(e).strip().splitlines()[-1]}", flush=True)
    peer = {pp: r for (pp, k), r in sheep.items() if k == keep_memory}  # same conditions as ours
    shipped = {pp: r for (pp, k), r in sheep.items() if not k}  # as installed (glibc defaults)

    def eff(r, prec):  # achieved GFLOP/s and its share of the matmul peak
        g = r["flops"] / 1e9 / r["step_s"]
        return f"{g:.0f} ({100 * g / peak[prec]:.0f}%)"

    lines = ["| ours | sheeprl | ours s/step | sheeprl s/step | speed-up | ours GFLOP/step | sheeprl GFLOP/step | ours GFLOP/s (% of matmul peak) | sheeprl GFLOP/s (%) | floor s/step (ours GFLOP at matmul peak) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    default = resolve_precision("auto", torch.device("cpu"))
    pairs = [("fp32", "fp32", "equal precision"), ("bf16", "bf16", "equal precision"), (default, "fp32", "defaults")]
    for ours_p, peer_p, what in pairs:
        o, q = results[ours_p], (shipped if what == "defaults" else peer).get(peer_p)
        label_o = f"{ours_p}" + (" (default `precision: auto`)" if what == "defaults" else "")
        label_q = {"fp32": "32-true", "bf16": "bf16-mixed"}[peer_p] + (" (default, as installed)" if what == "defaults" else "")
        floor = o["flops"] / 1e9 / peak[ours_p]
        if q:
            lines.append(f"| {label_o} | {label_q} | {o['step_s']:.2f} | {q['step_s']:.2f} | **{q['step_s'] / o['step_s']:.2f}x** | {o['flops'] / 1e9:.0f} | "
                         f"{q['flops'] / 1e9:.0f} | {eff(o, ours_p)} | {eff(q, peer_p)} | {floor:.2f} |")
        else:
            lines.append(f"| {label_o} | {label_q} | {o['step_s']:.2f} | n/a | n/a | {o['flops'] / 1e9:.0f} | n/a | {eff(o, ours_p)} | n/a | {floor:.2f} |")
    if shipped and keep_memory:
        lines += ["", "| sheeprl precision | s/step with mbrl's malloc setting | s/step as installed |", "|---|---|---|"]
        lines += [f"| {pp} | {peer[pp]['step_s']:.2f} | {shipped[pp]['step_s']:.2f} |" for pp in ("fp32", "bf16") if pp in peer and pp in shipped]
    lines += ["", f"| precision | ours params | sheeprl params | ours imagination states/s (batch {args.imagine_batch}, no gradients) |", "|---|---|---|---|"]
    for precision in ("fp32", "bf16"):
        o, q = results[precision], peer.get(precision)
        lines.append(f"| {precision} | {o['params'] / 1e6:.1f}M | {q['params'] / 1e6 if q else float('nan'):.1f}M | {o['imag']:.0f} |")
    body = "\n".join(lines) + (
        f"\n\nOne full training step (world model + actor + critic), DreamerV3 size {args.size}, 64x64x3 pixels, batch {B} x {L}, "
        f"horizon {H}, 6-D continuous actions (dynamics backprop for the actor on both sides), random data; median of {args.steps} "
        f"steps after {args.warmup} warm-up, {args.threads} torch threads on both sides, in one run. sheeprl 0.8.4 `dreamer_v3.train` "
        f"with `exp=dreamer_v3 algo=dreamer_v3_{args.size}` (Lightning Fabric precision 32-true, its default, or bf16-mixed). "
        "Ours: mbrl RSSM (block-diagonal GRU as the reference, blocks=8) + ActorCritic, fp32 or torch.autocast(bfloat16). "
        "Our default `precision: auto` is bf16 where the hardware computes it natively (here: AVX512-BF16), as the DreamerV3 reference "
        "computes in bfloat16 (`jax.compute_dtype: bfloat16` in dreamerv3/configs.yaml); sheeprl's default is 32-true.\n\n"
        f"GFLOP/step: counted by torch.utils.flop_counter.FlopCounterMode over one extra step on each side (matmuls and convolutions, "
        f"forward and backward). Matmul peak: a [1024 x 1536] @ [1536 x 512] matmul in this process, {args.threads} thread(s): "
        f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s. The floor is the time the counted FLOPs take at that peak: "
        "at equal precision and equal work no implementation gets below it, so the equal-precision speed-up is bounded by "
        "sheeprl s/step / floor.\n\n"
        f"Memory: mbrl's CLIs keep freed memory in the process heap (`mbrl/utils/memory.py`: glibc mallopt M_MMAP_MAX=0, "
        f"M_TRIM_THRESHOLD=2^31-1; {'in effect' if keep_memory else 'NOT in effect'} in this run) so large activations are not "
        "page-faulted in again every step; the equal-precision rows give sheeprl the same setting (same two mallopt calls in its "
        "process), the defaults row runs sheeprl as installed.\n\n"
        "Imagination throughput: imagined states per second (no gradients) from a batch of start states, horizon 15, policy sampling included. "
        "Parameter counts differ slightly (ours follows the newer reference's block-diagonal GRU core; sheeprl a dense LayerNorm GRU).\n")
    print(body)
    if not args.no_write:
        p = write_result("bench_dreamer.md", "DreamerV3 training step vs sheeprl 0.8.4", f"python -m mbrl.bench dreamer --size {args.size} --steps {args.steps} --threads {args.threads}", body)
        print(f"wrote {p}")
    return 0
