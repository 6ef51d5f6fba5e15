"""Mamba-2 sequence core: training tokens/s and imagination steps/s, ours beside mambapy, against the matmul peak.

Ours: the sequence core of `model=mamba` (mbrl/models/mamba.py) at Drama's size (`--size S`: d_model 512,
2 layers, d_state 16, expand 2, headdim 64, chunk 64), its input stem replaced by the identity so that it
reads d_model-wide inputs as the peer does: `n_layer` x (RMSNorm -> Mamba-2 mixer, residual), final RMSNorm.
- training: forward (chunked SSD) + backward of mean(h^2) over a [batch, length, d_model] random input,
  tokens/s = batch * length / time (best of `--reps` after one warm-up);
- imagination: the recurrent step (`core_step`) from the zero state, each step's output fed back as
  the next input, `--imag-batch` rows x `--horizon` steps, no gradients; steps/s = rows * horizon / time;
- the chunked scan alone (`ssd_chunked`, forward + backward) at the layer's shapes.

Peer: `mambapy` (PyPI, pure-PyTorch Mamba) at the same width, depth, d_state and expand. Its Mamba-2
module imports `mamba_ssm` (CUDA only), so on CPU its pure-PyTorch model is Mamba-1 (`mambapy.mamba.Mamba`,
selective scan by a parallel scan, `pscan=True`); it runs in a subprocess of its own venv
(`--mambapy-venv`, default `.bench_venvs/mambapy`; absent: the rows say "not installed"). Make it with
`python3.11 -m venv V && V/bin/pip install torch==2.13.0 mambapy==1.2.0`.

FLOPs: `torch.utils.flop_counter.FlopCounterMode` on one extra (untimed) call (matmuls, bmm and
convolutions, forward and backward; elementwise work is not counted), for both. The analytic forward
count of our core, `core_flops`, which the counter reproduces (tests/test_bench_ssm.py), per layer with
B*T tokens (T padded to C chunks of Q = min(chunk, T) steps), d_inner = expand * d_model, H = d_inner /
headdim heads of width P, N = d_state:
  projections 2*B*T*d_model*(2*d_inner + 2*N + H) + 2*B*T*d_inner*d_model
  chunked SSD  2*B*C*Q*(Q*N + H*Q*P + 2*H*P*N)   (C^T B, its masked product with x, chunk states, state outputs)
The matmul peak is measured in this process (`bench dreamer`'s `peak_matmul`). Writes results/bench_ssm.md.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mbrl.bench.peers import ROOT

RESULT = "bench_ssm.md"

PEER_SCRIPT = r"""
import json, sys, time
import torch
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
from mambapy.mamba import Mamba, MambaConfig
from torch.utils.flop_counter import FlopCounterMode
m = Mamba(MambaConfig(d_model=cfg["d_model"], n_layers=cfg["n_layer"], d_state=cfg["d_state"], expand_factor=cfg["expand"], pscan=True))
B, T, D, reps = cfg["batch"], cfg["length"], cfg["d_model"], cfg["reps"]
x = torch.randn(B, T, D)
def train():
    m.zero_grad(set_to_none=True)
    m(x).square().mean().backward()
def best(fn):
    out = float("inf")
    for i in range(reps + 1):
        t = time.perf_counter(); fn(); dt = time.perf_counter() - t
        if i:
            out = min(out, dt)
    return out
t_train = best(train)
with FlopCounterMode(display=False) as fc:
    train()
f_train = fc.get_total_flops()
n, Hz = cfg["imag_batch"], cfg["horizon"]
ED, K = cfg["expand"] * D, 4
def imagine():
    with torch.no_grad():
        caches = [(torch.zeros(n, ED, cfg["d_state"]), torch.zeros(n, ED, K - 1)) for _ in range(cfg["n_layer"])]
        u = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
        for _ in range(Hz):
            u, caches = m.step(u, caches)
t_imag = best(imagine)
with FlopCounterMode(display=False) as fc:
    imagine()
print(json.dumps({"train_s": t_train, "train_flops": f_train, "imag_s": t_imag, "imag_flops": fc.get_total_flops(),
                  "params": sum(p.numel() for p in m.parameters()), "torch": torch.__version__}))
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", default="S", help="model=mamba size preset (S: Drama's)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--imag-batch", type=int, default=1024, help="imagination rows")
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mambapy-venv", default=str(ROOT / ".bench_venvs" / "mambapy"),
                   help="venv with torch and mambapy (absent: the peer rows say 'not installed')")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--no-write", action="store_true")


def core_flops(batch: int, length: int, d_model: int, n_layer: int, d_state: int, expand: int = 2, headdim: int = 64,
               chunk: int = 64) -> int:
    """Forward matmul FLOPs of the Mamba-2 core (stem excluded) on [batch, length] tokens (module docstring)."""
    B, T, D, N = batch, length, d_model, d_state
    d_inner = expand * D
    H, P = d_inner // headdim, headdim
    Q = max(1, min(int(chunk), T))
    C = math.ceil(T / Q)
    proj = 2 * B * T * D * (2 * d_inner + 2 * N + H) + 2 * B * T * d_inner * D
    ssd = 2 * B * C * Q * (Q * N + H * Q * P + 2 * H * P * N)
    return n_layer * (proj + ssd)


def build_core(size: str = "S", **overrides):
    """`model=mamba` at `size` with its stem replaced by the identity (inputs d_model wide)."""
    from torch import nn

    from mbrl.bench.imagine import build_model

    model = build_model("mamba", {"size": size, **overrides})
    model.stem = nn.Identity()
    return model


def _counted(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def ours(args) -> dict:
    import torch

    from mbrl.bench.imagine import _best
    from mbrl.models.mamba import direct_heads, ssd_chunked

    model = build_core(args.size)
    B, T, D = args.batch, args.length, model.d_model
    m0 = model.mixers[0]
    x = torch.randn(B, T, D, generator=torch.Generator().manual_seed(0))
    seg = torch.zeros(B, T, dtype=torch.long)

    def carry(n):
        return model._unpack(model.initial(n))

    def train():
        model.zero_grad(set_to_none=True)
        h, _ = model.core(x, seg, carry(B))
        h.square().mean().backward()

    n, Hz = args.imag_batch, args.horizon

    def imagine():
        with torch.no_grad():
            c = carry(n)
            u = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
            for _ in range(Hz):
                u, c = model.core_step(u, c)

    # the chunked scan alone, at the layer's shapes, with gradients to all of its inputs
    # (decays dt * A of the layer's own initialisation; the gradient of y given, so no loss is timed with it)
    g = torch.Generator().manual_seed(2)
    sx = torch.randn(B, T, m0.H, m0.P, generator=g).requires_grad_()
    with torch.no_grad():
        dt = torch.nn.functional.softplus(m0.dt_bias.float() + 0.1 * torch.randn(B, T, m0.H, generator=g))
        sa = (-dt * m0.A_log.float().exp()).requires_grad_()
    sb = torch.randn(B, T, m0.N, generator=g).requires_grad_()
    sc = torch.randn(B, T, m0.N, generator=g).requires_grad_()
    gy = torch.randn(B, T, m0.H, m0.P, generator=g)

    def scan():
        y, _ = ssd_chunked(sx, sa, sb, sc, None, None, m0.chunk)
        y.backward(gy)

    r = {"train_s": _best(train, args.reps), "train_flops": _counted(train),
         "imag_s": _best(imagine, args.reps), "imag_flops": _counted(imagine),
         "scan_s": _best(scan, args.reps), "scan_flops": _counted(scan),
         "scan_direct": int(direct_heads(sa.detach(), m0.chunk).flatten(0, 1).any(0).sum()),
         "fwd_formula": core_flops(B, T, D, model.n_layer, model.d_state, m0.d_inner // D, m0.P, m0.chunk),
         "params": sum(p.numel() for p in model.norms.parameters()) + sum(p.numel() for p in model.mixers.parameters())
         + sum(p.numel() for p in model.norm_f.parameters()),
         "d_model": D, "H": m0.H, "n_layer": model.n_layer, "d_state": model.d_state, "expand": m0.d_inner // D, "headdim": m0.P,
         "chunk": m0.chunk}
    return r


def peer(args, cfg: dict) -> dict | str:
    """mambapy's timings, or a one-line reason why there are none."""
    from mbrl.bench.peers import run_python

    py = Path(args.mambapy_venv) / "bin" / "python"
    if args.no_peer:
        return "skipped (--no-peer)"
    if not py.exists():
        return f"not installed (no {py})"
    try:
        return run_python(py, "mambapy", PEER_SCRIPT, json.dumps(cfg), timeout=1800)
    except RuntimeError as e:
        return f"failed: {str(e).splitlines()[0]}"


def run(args) -> int:
    import torch

    from mbrl.bench.common import claim
    from mbrl.bench.dreamer import peak_matmul
    from mbrl.bench.peers import write_result
    from mbrl.errors import UserError

    for k in ("batch", "length", "imag_batch", "horizon", "reps", "threads"):
        if getattr(args, k) < 1:
            raise UserError(f"--{k.replace('_', '-')}={getattr(args, k)}; valid: an integer >= 1")
    if not args.no_write:
        claim(RESULT)  # refuse an existing result before any work
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = peak_matmul(torch.float32)
    print(f"matmul peak fp32: {peak:.0f} GFLOP/s ({args.threads} thread(s))", flush=True)
    o = ours(args)
    print(f"ours: {json.dumps({k: v for k, v in o.items()})}", flush=True)
    cfg = {k: o[k] for k in ("d_model", "n_layer", "d_state", "expand")} | {
        "batch": args.batch, "length": args.length, "imag_batch": args.imag_batch, "horizon": args.horizon, "reps": args.reps,
        "threads": args.threads}
    p = peer(args, cfg)
    print(f"mambapy: {p if isinstance(p, str) else json.dumps(p)}", flush=True)
    peak_after = peak_matmul(torch.float32)
    print(f"matmul peak fp32 after: {peak_after:.0f} GFLOP/s", flush=True)

    tok = args.batch * args.length
    steps = args.imag_batch * args.horizon

    def row(name, r, key, units):
        s, f = r[f"{key}_s"], r[f"{key}_flops"]
        g = f / s / 1e9
        return f"| {name} | {units / s:,.0f} | {s * 1e3:.1f} | {f / 1e9:.2f} | {g:.1f} ({100 * g / peak:.0f}%) |"

    def peer_row(name, key, units):
        return row(name, p, key, units) if isinstance(p, dict) else f"| {name} | {p} | | | |"

    lines = ["| what | tokens/s or steps/s | ms per call | GFLOP per call (counted) | GFLOP/s (% of matmul peak) |",
             "|---|---|---|---|---|",
             row(f"ours, training (fwd + bwd), {args.batch} x {args.length} tokens", o, "train", tok),
             peer_row(f"mambapy, training (fwd + bwd), {args.batch} x {args.length} tokens", "train", tok),
             row(f"ours, imagination (recurrent step), {args.imag_batch} rows x {args.horizon} steps", o, "imag", steps),
             peer_row(f"mambapy, imagination (`step`), {args.imag_batch} rows x {args.horizon} steps", "imag", steps),
             row(f"ours, chunked scan alone (`ssd_chunked`, fwd + bwd, one layer), {args.batch} x {args.length}", o, "scan", tok)]
    speed = ""
    if isinstance(p, dict):
        speed = (f"Ours / mambapy: training {p['train_s'] / o['train_s']:.2f}x, imagination {p['imag_s'] / o['imag_s']:.2f}x "
                 f"(> 1: ours is faster). Parameters of the core: ours {o['params'] / 1e6:.2f} M, mambapy {p['params'] / 1e6:.2f} M "
                 f"(Mamba-1: per-channel A [d_inner, N], x_proj/dt_proj; mambapy's venv: torch {p['torch']}).\n\n")
    body = ("\n".join(lines) + "\n\n" + speed +
            f"Size `{args.size}`: d_model {o['d_model']}, {o['n_layer']} layers, d_state {o['d_state']}, expand {o['expand']}, "
            f"headdim {o['headdim']}, chunk {o['chunk']}; fp32, {args.threads} torch thread(s), best of {args.reps} after a warm-up. "
            f"Matmul peak: a [1024 x 1536] @ [1536 x 512] fp32 matmul in this process: {peak:.0f} GFLOP/s before the runs, "
            f"{peak_after:.0f} after. FLOPs: `FlopCounterMode` (matmuls and convolutions, forward and backward; elementwise work, "
            f"e.g. mambapy's parallel scan, is not counted); the analytic forward count of our core (`core_flops`, formula in "
            f"mbrl/bench/ssm.py) is {o['fwd_formula'] / 1e9:.3f} GFLOP for the training batch. mambapy's pure-PyTorch model on "
            "CPU is Mamba-1 (its Mamba-2 module needs the CUDA-only mamba_ssm), at the same width, depth, d_state and expand. "
            f"Chunked-scan row: one layer's `ssd_chunked` at its shapes, decays dt * A from the layer's own initialisation "
            f"({o['scan_direct']} of {o['H']} heads over `FACTOR_SPAN` per chunk, so on the direct "
            "path), forward and backward from a given output gradient (no loss in the timing). "
            f"{'Not reduced (Drama size, batch and length)' if (args.size, args.batch, args.length) == ('S', 16, 64) else 'Reduced from Drama size S x 16 x 64'}; the machine's cores were shared with other jobs, so absolute rates are noisy.\n")
    if not args.no_write:
        cmd = "python -m mbrl.bench ssm " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                      if k not in ("no_write", "no_peer", "overwrite"))
        print(f"wrote {write_result(RESULT, 'Mamba-2 core (ours) vs mambapy: training tokens/s, imagination steps/s', cmd, body)}")
    else:
        print(body)
    return 0
