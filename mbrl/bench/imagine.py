"""Imagination throughput of every registered backbone, side by side; KV cache vs recomputation for the transformer.

Rows: every backbone of the registry (`mbrl.models.names()`) at its config defaults, plus any
`--variant NAME:key=value[,key=value...]` (model keys, `model.` prefix optional; repeatable, e.g.
`--variant diffusion:model.sampler_steps=1`). Each row: imagined states per second, no gradients,
batch `--batch` (1024) start states, horizon `--horizon` (15), each start the posterior after
`--context` (8) real steps of a random sequence, a fixed random tanh policy on the features,
`imagine(..., keep_states=False)` as planners and Dyna call it; best of `--reps` after one warm-up,
fp32 and bf16 autocast. Vector observations (24-D) and 6-D continuous actions, so every backbone
(including the ensemble, whose states are observations) takes the same inputs.

Then, for `model=transformer`: imagination with the KV cache in the state against recomputing the
transformer over the whole window of tokens at every step (as a cache-less transformer world model
must), at `--kv-context` (64) real steps of context and window 64, batch `--kv-batch`.

`--train-step`: one full Dreamer training step (world model + actor + critic) at size S on 64x64x3
pixels, batch 16 x 64, horizon 15, for the transformer beside the RSSM, with FLOPs counted and the
matmul peak measured in this process (the helpers of `bench dreamer`). Writes results/bench_imagine.md
(and results/bench_transformer_step.md with --train-step).
"""
from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

OBS, ACT = 24, 6


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--context", type=int, default=8, help="real steps observed before imagination starts")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=None, help="comma-separated backbones (default: every registered one)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:key=value[,key=value]",
                   help="an extra row for backbone NAME with these model keys (repeatable)")
    p.add_argument("--precision", default="fp32,bf16", help="comma-separated: fp32, bf16")
    p.add_argument("--kv-context", type=int, default=64)
    p.add_argument("--kv-batch", type=int, default=128)
    p.add_argument("--no-kv", action="store_true", help="skip the KV-cache vs recomputation comparison")
    p.add_argument("--train-step", action="store_true", help="also time the size-S pixel training step (transformer and RSSM)")
    p.add_argument("--train-step-only", action="store_true", help="only the training step (no imagination rows)")
    p.add_argument("--steps", type=int, default=3, help="with --train-step: timed steps per model (median kept)")
    p.add_argument("--no-write", action="store_true")


def parse_variant(text: str) -> tuple[str, dict]:
    """'NAME:key=value,key=value' -> (NAME, {key: value}) with YAML-typed values."""
    import yaml

    from mbrl.errors import UserError

    if ":" not in text:
        raise UserError(f"--variant {text!r}; valid: NAME:key=value[,key=value] (e.g. diffusion:model.sampler_steps=1)")
    name, rest = text.split(":", 1)
    kw = {}
    for part in filter(None, rest.split(",")):
        if "=" not in part:
            raise UserError(f"--variant {text!r}: {part!r} is not key=value; valid: NAME:key=value[,key=value]")
        k, v = part.split("=", 1)
        kw[k.strip().removeprefix("model.")] = yaml.safe_load(v)
    return name.strip(), kw


def build_model(name: str, overrides: dict, obs_space=None, action_space=None):
    """A backbone from its config group (as the CLI builds it) with `overrides`, for the bench spaces."""
    import gymnasium as gym
    from omegaconf import OmegaConf

    import mbrl.models as models
    from mbrl.config import load_group

    cfg = OmegaConf.to_container(load_group("model", name), resolve=True)
    cfg.update(overrides)
    obs_space = obs_space or gym.spaces.Box(-1.0, 1.0, (OBS,), np.float32)
    action_space = action_space or gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)
    return models.build(cfg, obs_space, action_space, seed=0)


def _autocast(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def _policy(model):
    import torch

    w = torch.randn(model.feat_dim, model.action_dim, generator=torch.Generator().manual_seed(0)) / model.feat_dim**0.5
    return lambda f: torch.tanh(f.float() @ w)


def _starts(model, n: int, context: int):
    """Posterior states after `context` steps of a random vector sequence (the last step of each row)."""
    import torch

    from mbrl.data.batch import Batch

    g = torch.Generator().manual_seed(1)
    first = torch.zeros(n, context, dtype=torch.bool)
    first[:, 0] = True
    b = Batch(obs=torch.rand(n, context, OBS, generator=g) * 2 - 1, action=torch.rand(n, context, ACT, generator=g) * 2 - 1, is_first=first)
    with torch.no_grad():
        if model.markov_obs:
            return model.observe(b.obs[:, -1:], b.action[:, -1:], first[:, -1:] | True)[:, -1], b
        return model.observe(b.obs, b.action, b.is_first)[:, -1], b


def _best(fn, reps: int) -> float:
    best = float("inf")
    for i in range(reps + 1):
        t = time.perf_counter()
        fn()
        if i:  # the first call is a warm-up
            best = min(best, time.perf_counter() - t)
    return best


def imagine_rate(model, n: int, horizon: int, context: int, precision: str, reps: int) -> float:
    import torch

    start, _ = _starts(model, n, context)
    policy = _policy(model)

    def go():
        with torch.no_grad(), _autocast(precision), model.inference():
            model.imagine(start, policy, horizon, keep_states=False)

    return n * horizon / _best(go, reps)


def recompute_imagine(model, z_ctx, a_ctx, first_action, policy, horizon: int) -> None:
    """Imagination without a cache: every step reruns the transformer over the last `window` tokens."""
    import torch

    zs, acts = [z_ctx[:, i] for i in range(z_ctx.shape[1])], [a_ctx[:, i] for i in range(a_ctx.shape[1] - 1)] + [first_action]
    W = model.window
    for _ in range(horizon):
        h = model.hidden_states(torch.stack(zs[-W:], 1), torch.stack(acts[-W:], 1), span=W)[:, -1]
        logp = model.latent.mix(model.prior_head(h))
        z = model.latent.sample(logp)
        feat = torch.cat([z, h.to(z.dtype)], -1)
        model.reward_head.mean(feat), model.cont_head.prob(feat)
        zs.append(z)
        acts.append(policy(feat))


def kv_vs_recompute(n: int, context: int, horizon: int, precision: str, reps: int) -> dict:
    import torch

    model = build_model("transformer", dict(window=context, imag_context=context, context=max(context, 64))).eval()
    start, b = _starts(model, n, context)
    policy = _policy(model)
    with torch.no_grad():
        post = model.observe(b.obs, b.action, b.is_first)
    a0 = policy(model.features(start))

    def cached():
        with torch.no_grad(), _autocast(precision):
            model.imagine(start, policy, horizon, keep_states=False)

    def recompute():
        with torch.no_grad(), _autocast(precision):
            recompute_imagine(model, post.stoch, model.action_input(b.action), a0, policy, horizon)

    tc, tr = _best(cached, reps), _best(recompute, max(1, reps - 1))
    return {"cached": n * horizon / tc, "recompute": n * horizon / tr, "speedup": tr / tc}


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def train_step_rows(steps: int, threads: int) -> tuple[str, dict]:
    """One Dreamer training step at size S, 64x64x3 pixels, batch 16 x 64, horizon 15, per backbone."""
    import torch

    from mbrl.bench.dreamer import _ours, peak_matmul

    peak = {"fp32": peak_matmul(torch.float32), "bf16": peak_matmul(torch.bfloat16)}
    rows, out = [], {}
    for name in ("transformer", "rssm"):
        for precision in ("fp32", "bf16"):
            r = _ours("S", 16, 64, 15, 6, steps, 1, precision, model=name)
            r.pop("wm"), r.pop("ac")
            g = r["flops"] / 1e9 / r["step_s"]
            rows.append(f"| {name} | {precision} | {r['step_s']:.2f} | {r['flops'] / 1e9:.0f} | {g:.0f} ({100 * g / peak[precision]:.0f}%) | "
                        f"{r['flops'] / 1e9 / peak[precision]:.2f} | {r['params'] / 1e6:.1f}M |")
            out[name, precision] = r
            print(rows[-1], flush=True)
    body = ("| backbone | precision | s/step | GFLOP/step | GFLOP/s (% of matmul peak) | floor s/step (GFLOP at matmul peak) | params (model + actor + critic) |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows) +
            f"\n\nOne full Dreamer training step (world model + actor + critic), size S (transformer: STORM's 2 layers, width 512, 8 heads, "
            f"window 24, imagination from the last 8 real steps; RSSM: DreamerV3 S), 64x64x3 pixels, batch 16 x 64, horizon 15, 6-D continuous "
            f"actions (dynamics backprop for the actor), random data; median of {steps} steps after 1 warm-up, {threads} torch thread(s), in one run "
            "(the step of `bench dreamer`, mbrl/bench/dreamer.py `_ours`). GFLOP/step counted by torch.utils.flop_counter.FlopCounterMode over "
            f"one extra step. Matmul peak in this process: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s "
            "([1024 x 1536] @ [1536 x 512]).\n")
    return body, out


def run(args: argparse.Namespace) -> int:
    import torch

    import mbrl.models as models
    from mbrl.bench.peers import write_result
    from mbrl.errors import UserError

    if not args.no_write:  # refuse committed results before the measurement, not after it
        from mbrl.bench.common import claim

        claim("bench_imagine.md", *(["bench_transformer_step.md"] if args.train_step else []))
    torch.set_num_threads(args.threads)
    if args.train_step_only:
        args.train_step = True
        return _train_step(args)
    names = models.names() if not args.only else [s.strip() for s in args.only.split(",") if s.strip()]
    rows = [(n, {}) for n in names] + [parse_variant(v) for v in args.variant]
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16")]
    if bad:
        raise UserError(f"--precision {args.precision!r}; valid: fp32, bf16 (comma-separated)")
    lines = ["| backbone | variant | params | " + " | ".join(f"states/s {p}" for p in precisions) + " |",
             "|---|---|---|" + "---|" * len(precisions)]
    for name, kw in rows:
        label = ", ".join(f"{k}={v}" for k, v in kw.items()) or "config defaults"
        try:
            model = build_model(name, kw).eval()
        except UserError as e:
            lines.append(f"| {name} | {label} | refused: {str(e).strip()} |" + " |" * len(precisions))
            print(lines[-1], flush=True)
            continue
        rates = [imagine_rate(model, args.batch, args.horizon, args.context, p, args.reps) for p in precisions]
        lines.append(f"| {name} | {label} | {_params(model) / 1e6:.2f}M | " + " | ".join(f"{r:.0f}" for r in rates) + " |")
        print(lines[-1], flush=True)
    body = "\n".join(lines) + (
        f"\n\nImagined states per second, no gradients: batch {args.batch}, horizon {args.horizon}, starts after {args.context} real "
        f"steps of a random sequence, {OBS}-D vector observations, {ACT}-D continuous actions, a fixed random tanh policy on the features, "
        f"`imagine(keep_states=False)` inside `model.inference()`; best of {args.reps} after one warm-up; {args.threads} torch thread(s). "
        "Each backbone at its configs/model/<name>.yaml defaults (sizes: rssm S, transformer S = STORM's setting, window 24).\n")
    if not args.no_kv and "transformer" in models.names():
        kv_lines = ["", f"KV cache vs recomputation (model=transformer size S, context {args.kv_context} real steps, window {args.kv_context}, "
                    f"batch {args.kv_batch}, horizon {args.horizon}):", "",
                    "| precision | states/s with the KV cache | states/s recomputing the window every step | cache speed-up |", "|---|---|---|---|"]
        for p in precisions:
            r = kv_vs_recompute(args.kv_batch, args.kv_context, args.horizon, p, args.reps)
            kv_lines.append(f"| {p} | {r['cached']:.0f} | {r['recompute']:.0f} | **{r['speedup']:.1f}x** |")
            print(kv_lines[-1], flush=True)
        body += "\n".join(kv_lines) + ("\n\nRecomputation: each imagined step runs the transformer (`hidden_states`) over the last "
                                       "`window` tokens with the same attention mask and takes the newest output, so both produce the same "
                                       "states (tests/test_transformer.py checks the equality to 1e-5 in fp32).\n")
    print(body)
    cmd = "python -m mbrl.bench imagine " + " ".join(
        [f"--threads {args.threads}", f"--reps {args.reps}", f"--precision {args.precision}"] + [f"--variant {v}" for v in args.variant] + ([f"--only {args.only}"] if args.only else []))
    if not args.no_write:
        p = write_result("bench_imagine.md", "Imagination throughput of every backbone", cmd, body)
        print(f"wrote {p}")
    return _train_step(args) if args.train_step else 0


def _train_step(args: argparse.Namespace) -> int:
    from mbrl.bench.peers import write_result

    tbody, _ = train_step_rows(args.steps, args.threads)
    print(tbody)
    if not args.no_write:
        p = write_result("bench_transformer_step.md", "Dreamer training step at size S on pixels: transformer beside RSSM",
                         f"python -m mbrl.bench imagine --train-step-only --steps {args.steps} --threads {args.threads}", tbody)
        print(f"wrote {p}")
    return 0
