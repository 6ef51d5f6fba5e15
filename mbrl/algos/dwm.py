"""DWM: Diffusion World Model with diffusion model-based value expansion (Diffusion-MVE) for the offline
learners. `python -m mbrl.train env=d4rl/<dataset> algo=dwm [learner=iql] [algo.dwm.model=ensemble]`

Paper: Ding, Zhang, Tian, Zheng 2024, "Diffusion World Model: Future Modeling Beyond Step-by-Step Rollout
for Offline Reinforcement Learning" (arXiv:2402.03570; the settings below are from the version in Z. Ding's
Princeton thesis, chapter 6, "Implementation Details" 6.6.1 and Algorithms 17-22).

1. A conditional diffusion model over whole future segments (`SegmentModel`): given the current state s_t,
   action a_t and a return-to-go y it generates x = (r_t, s_t+1), (r_t+1, s_t+2), ..., (r_t+L-1, s_t+L) — L
   steps in one sampling pass, no recursion (paper eq. 6.3: T = 8 gives r_t .. r_t+7 and s_t+1 .. s_t+7; L = 7
   here is the same segment without its last reward, which no horizon H <= 7 uses). The denoiser is a 1-D
   temporal U-Net over the L steps (paper: Decision Diffuser's temporal U-Net, residual blocks of two temporal
   convolutions, group norm and Mish; the noise level through a 2-layer MLP of its Fourier features, the RTG and
   (s_t, a_t) through 3-layer MLPs, the embeddings concatenated), wrapped by the project's EDM machinery
   (mbrl/models/edm.py: preconditioning, log-normal training noise, Karras schedule, Euler/Heun sampler).
   Training: segments of the dataset, states and rewards standardised with the dataset's statistics, the
   condition y = the discounted return-to-go g_t = sum_k gamma^k r_t+k to the end of the recorded episode
   divided by `rtg_scale` (paper 6.3 / Fig. 6.6: "normalized discounted return", reward scales 400 hopper,
   550 walker2d, 1200 halfcheetah), dropped with probability `p_uncond` = 0.25 (classifier-free guidance;
   paper 6.6.1). Datasets with terminations get one more channel per step, the termination flag (rows after
   a termination are padding: reward 0, the terminal state, flag set) — not in the paper, whose D4RL runs
   ignore terminals; without it the value expansion would bootstrap through a fall.
2. The offline learner (TD3+BC by default, `learner=iql`) with its critic target replaced by the H-step
   Diffusion-MVE target (paper Definition 49, Algorithms 21 / 22) on a segment generated per batch from the
   batch's (s_t, a_t) and the target RTG `rtg_eval` with guidance weight `guidance`:
       y = sum_{h<H} gamma^h r̂_t+h + gamma^H bootstrap(ŝ_t+H)
   where bootstrap is the learner's own (TD3+BC: min_i Q̄_i(s, π̄(s) + clipped noise); IQL: V(s)), masked
   after a generated termination; `lam` < 1 gives the lambda-return variant (paper eq. 6.15, the default of
   DWM-IQL with lambda 0.95). No gradient flows through the sampler. The learner's actor loss is its own.
   The learner reads the batch's `target` (mbrl/learners/td3bc.py, iql.py).
3. `algo.dwm.model=ensemble`: the baseline of the paper's Table 6.2 (OneStep-TD3BC / OneStep-IQL), the same
   learner with MVE on the one-step probabilistic ensemble (`model=ensemble` of the registry, fitted by
   ModelFitter on the dataset): a_t from the data, then H - 1 steps under the learner's policy (on-policy,
   Feinberg et al. 2018), with the ensemble's predicted rewards and terminations.

Not reproduced: the paper's DDPM (K = 5 cosine steps, stride sampling N = 3, temperature 0.5) is replaced by
EDM with `edm.steps` = 3 Euler steps (3 network evaluations, as the paper's N = 3); its CDF state normaliser by
standardisation; the reward normalisation of its IQL runs; DWM-PQL.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from mbrl.algos.base import resolve_device
from mbrl.algos.common import build_learner, build_model, to_dict
from mbrl.algos.offline import OfflineAlgorithm, dataset_and_env, obs_stats, offline_loop_config
from mbrl.data.batch import Batch
from mbrl.errors import UserError
from mbrl.learners.offline_nets import soft_update
from mbrl.models.edm import EDM, AdaNorm, FourierFeatures
from mbrl.models.nets import mlp

#: what generates the segments of the value expansion
MODELS = ("diffusion", "ensemble")
#: learners whose critic target takes a precomputed `target` and that expose `bootstrap(next_obs)`
LEARNERS = ("td3bc", "iql")
#: lambda of the lambda-return per learner when `lam` is null (paper 6.9.9: vanilla Diff-MVE for TD3+BC, 0.95 for IQL)
DEFAULT_LAM = {"td3bc": 1.0, "iql": 0.95}
EDM_KEYS = ("sigma_data", "train_loc", "train_scale", "train_min", "train_max", "sigma_min", "sigma_max", "rho", "steps", "sampler")


# ----------------------------------------------------------------------------------- the target

def mve_target(rewards: torch.Tensor, dones: torch.Tensor, values: torch.Tensor, gamma: float, lam: float = 1.0) -> torch.Tensor:
    """The H-step value-expansion target [B] of generated rewards [B, H] (r̂_t+h), terminations [B, H] (the step
    into ŝ_t+h+1 ends the episode) and bootstrap values [B, H] (V(ŝ_t+h+1); only the last column is read when
    lam == 1). Recursively G_H = V(ŝ_t+H), G_h = r̂_t+h + gamma (1 - d_h) [(1 - lam) V(ŝ_t+h+1) + lam G_h+1]
    (paper eq. 6.15); lam = 1 is sum_{h<H} gamma^h r̂_t+h + gamma^H V(ŝ_t+H) with the terms after a
    termination dropped (Definition 49)."""
    if rewards.dim() != 2 or dones.shape != rewards.shape or values.shape != rewards.shape:
        raise ValueError(f"mve_target: rewards, dones, values must all be [B, H]; got {tuple(rewards.shape)}, {tuple(dones.shape)}, {tuple(values.shape)}")
    H = rewards.shape[1]
    g = values[:, -1].float()
    for h in reversed(range(H)):
        boot = g if h == H - 1 else (1.0 - lam) * values[:, h].float() + lam * g
        g = rewards[:, h].float() + gamma * (1.0 - dones[:, h].float()) * boot
    return g


def discounted_rtg(reward: np.ndarray, episode_ends: np.ndarray, gamma: float) -> np.ndarray:
    """Per step the discounted return-to-go to the end of its recorded episode, g_t = r_t + gamma g_t+1 (paper 6.3)."""
    out = np.zeros(len(reward), np.float64)
    g = 0.0
    for t in range(len(reward) - 1, -1, -1):
        if episode_ends[t]:
            g = 0.0
        g = float(reward[t]) + gamma * g
        out[t] = g
    return out


# ----------------------------------------------------------------------------------- the denoiser

def _mish(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.mish(x)


class ResBlock1d(nn.Module):
    """[AdaNorm (group norm + scale/shift from the condition), Mish, temporal Conv1d] x 2 + skip (the second
    convolution zero-initialised, so a block starts as its skip)."""

    def __init__(self, cin: int, cout: int, cond: int, kernel: int):
        super().__init__()
        self.n1, self.c1 = AdaNorm(cin, cond, math.gcd(8, cin)), nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.n2, self.c2 = AdaNorm(cout, cond, math.gcd(8, cout)), nn.Conv1d(cout, cout, kernel, padding=kernel // 2)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.c1(_mish(self.n1(x, cond)))
        return self.skip(x) + self.c2(_mish(self.n2(h, cond)))


class TemporalUNet(nn.Module):
    """The segment denoiser F(c_in x, c_noise, s_t, a_t, y, keep) -> [N, L, D] of EDM (mbrl/models/edm.py).

    x [N, L, D]: the noisy segment, one row per step. The time axis is zero-padded to a multiple of
    2^(levels - 1); the input convolution sees each row with the (normalised) s_t beside it, plus a learned
    position embedding. Per level two ResBlock1d then a stride-2 convolution (none after the last), two in
    the middle, and the mirror path up with the skips concatenated (Diffuser / Decision Diffuser's temporal
    U-Net; with 3 levels, 6 residual blocks down as the paper's). The condition vector, given to every
    block's AdaNorm, concatenates MLP embeddings of the noise level (Fourier features), of (s_t, a_t) and of
    the RTG y — or a learned null embedding where `keep` is False (classifier-free guidance)."""

    def __init__(self, x_dim: int, obs_dim: int, act_dim: int, length: int, channels=(64, 128, 256), emb: int = 128, kernel: int = 5):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or int(emb) < 2 or int(emb) % 2 or int(kernel) < 1 or int(kernel) % 2 == 0:
            raise UserError(f"algo.dwm: channels={channels}, emb={emb}, kernel={kernel}; valid: a non-empty list of widths >= 1, "
                            f"an even emb >= 2, an odd kernel >= 1")
        self.length, self.x_dim, self.obs_dim = int(length), int(x_dim), int(obs_dim)
        mult = 2 ** (len(channels) - 1)
        self.padded = int(math.ceil(self.length / mult) * mult)
        emb = int(emb)
        self.noise_emb = FourierFeatures(emb)
        self.noise_mlp = mlp(emb, emb, emb, 1, act=nn.Mish)        # paper: 2-layer MLP of the step encoding
        self.sa_mlp = mlp(obs_dim + act_dim, emb, emb, 2, act=nn.Mish)  # paper: 3-layer MLP of the action (here with s_t)
        self.rtg_mlp = mlp(1, emb, emb, 2, act=nn.Mish)             # paper: 3-layer MLP of the RTG
        self.null_rtg = nn.Parameter(torch.zeros(emb))
        cond = 3 * emb
        self.inp = nn.Conv1d(x_dim + obs_dim, channels[0], kernel, padding=kernel // 2)
        self.pos = nn.Parameter(torch.zeros(1, channels[0], self.padded))
        self.down = nn.ModuleList()
        prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(nn.ModuleList([ResBlock1d(prev, c, cond, kernel), ResBlock1d(c, c, cond, kernel),
                                            nn.Conv1d(c, c, 3, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity()]))
            prev = c
        self.mid = nn.ModuleList([ResBlock1d(prev, prev, cond, kernel), ResBlock1d(prev, prev, cond, kernel)])
        self.up = nn.ModuleList()
        for i in reversed(range(len(channels))):
            c = channels[i]
            self.up.append(nn.ModuleList([ResBlock1d(2 * c, c, cond, kernel), ResBlock1d(c, c, cond, kernel),
                                          nn.ConvTranspose1d(c, channels[i - 1], 4, stride=2, padding=1) if i > 0 else nn.Identity()]))
        self.n_out = AdaNorm(channels[0], cond, math.gcd(8, channels[0]))
        self.out = nn.Conv1d(channels[0], x_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, obs: torch.Tensor, act: torch.Tensor, rtg: torch.Tensor,
                keep: torch.Tensor) -> torch.Tensor:
        n, L, _ = x.shape
        e_rtg = torch.where(keep.reshape(n, 1), self.rtg_mlp(rtg.reshape(n, 1).float()), self.null_rtg.expand(n, -1))
        cond = torch.cat([self.noise_mlp(self.noise_emb(c_noise)), self.sa_mlp(torch.cat([obs, act], -1).float()), e_rtg], -1)
        h = nn.functional.pad(x.transpose(1, 2).float(), (0, self.padded - L))
        h = torch.cat([h, obs.float().unsqueeze(-1).expand(n, self.obs_dim, self.padded)], 1)
        h = self.inp(h) + self.pos
        skips = []
        for b1, b2, down in self.down:
            h = b2(b1(h, cond), cond)
            skips.append(h)
            h = down(h)
        for b in self.mid:
            h = b(h, cond)
        for b1, b2, up in self.up:
            h = b2(b1(torch.cat([h, skips.pop()], 1), cond), cond)
            h = up(h)
        h = self.out(_mish(self.n_out(h, cond)))
        return h[:, :, :L].transpose(1, 2)


# ----------------------------------------------------------------------------------- the segment model

class SegmentModel(nn.Module):
    """The diffusion world model: segments of the dataset, their standardisation, the denoiser (and its EMA
    copy, which generates), its optimiser, the EDM wrapper; `fit_step`, `generate`. `state_dict` holds the
    optimiser too (a checkpoint resumes the fit exactly)."""

    def __init__(self, dataset, length: int, gamma: float, device: torch.device | str = "cpu", rtg_scale: Optional[float] = None,
                 p_uncond: float = 0.25, lr: float = 1e-4, batch_size: int = 64, ema: float = 0.995, channels=(64, 128, 256),
                 emb: int = 128, kernel: int = 5, edm: Optional[dict] = None, seed: int = 0):
        super().__init__()
        if int(length) < 1:
            raise UserError(f"algo.dwm.segment={length}; valid: an integer >= 1 (steps per generated segment; paper T = 8, i.e. 7 here)")
        if not 0.0 <= float(p_uncond) <= 1.0 or not 0.0 <= float(ema) < 1.0 or int(batch_size) < 1 or not float(lr) > 0:
            raise UserError(f"algo.dwm: p_uncond={p_uncond}, ema={ema}, fit_batch={batch_size}, lr={lr}; "
                            f"valid: 0 <= p_uncond <= 1, 0 <= ema < 1, fit_batch >= 1, lr > 0")
        if dataset.obs.ndim != 2:
            raise UserError(f"algo=dwm needs vector observations (a 1-D Box); dataset {dataset.name!r} has observations of shape {dataset.obs.shape[1:]}")
        edm = dict(edm or {})
        bad = sorted(set(edm) - set(EDM_KEYS))
        if bad:
            raise UserError(f"unknown algo.dwm.edm keys {bad}; valid: {', '.join(EDM_KEYS)}")
        self.length, self.p_uncond, self.batch_size, self.ema_decay = int(length), float(p_uncond), int(batch_size), float(ema)
        self.device_ = torch.device(device)
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed) + 7)
        n = len(dataset)
        obs_dim, act_dim = int(dataset.obs.shape[1]), int(dataset.action.shape[1])
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.terminals = bool(np.asarray(dataset.terminated).any())
        self.x_dim = 1 + obs_dim + int(self.terminals)
        # ---- the data: flat arrays, each step's episode end, the valid segment starts, the RTG labels
        ends = np.asarray(dataset.episode_ends, bool)
        end_idx = np.append(np.flatnonzero(ends), n - 1)  # (a final unfinished episode ends with the data)
        last = end_idx[np.searchsorted(end_idx, np.arange(n))]  # index of the last step of each step's episode
        term = np.asarray(dataset.terminated, bool)
        # a segment may run past its episode's end only where the episode terminated (the rest is padding)
        ok = (np.arange(n) + self.length - 1 <= last) | term[last]
        self.starts = torch.as_tensor(np.flatnonzero(ok))
        if len(self.starts) == 0:
            raise UserError(f"algo.dwm.segment={length} is longer than every episode of dataset {dataset.name!r} "
                            f"(longest: {int((last - np.arange(n)).max()) + 1} steps); valid: a shorter segment")
        rtg = discounted_rtg(np.asarray(dataset.reward, np.float64), ends, gamma)
        self.rtg_scale = float(rtg_scale) if rtg_scale is not None else float(max(np.abs(rtg).max(), 1e-6))
        if not self.rtg_scale > 0:
            raise UserError(f"algo.dwm.rtg_scale={rtg_scale}; valid: a number > 0, or null (the dataset's largest |RTG|)")
        self.rtg_max = float(rtg.max() / self.rtg_scale)  # the best normalised RTG in the data (the default target)
        to = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt)
        self.data = {"obs": to(dataset.obs), "action": to(dataset.scaled_actions()), "reward": to(dataset.reward), "next_obs": to(dataset.next_obs),
                     "terminated": to(term, torch.bool), "last": to(last, torch.long), "rtg": to(rtg / self.rtg_scale)}
        mean, std = obs_stats(dataset)
        self.register_buffer("obs_mean", to(mean))
        self.register_buffer("obs_std", to(std))
        # reward statistics of the segments as generated: the padding zeros after terminations included (the
        # dataset's own rewards may be constant, e.g. an alive bonus, and a zero would then lie far outside them)
        k = int(np.ceil(len(self.starts) / 65536))
        rows = torch.cat([self.segments(c)["reward"].reshape(-1).double().cpu() for c in self.starts.chunk(k)])
        self.register_buffer("rew_mean", torch.tensor(float(rows.mean())))
        self.register_buffer("rew_std", torch.tensor(float(rows.std(unbiased=False)) + 1e-3))
        # ---- networks
        self.net = TemporalUNet(self.x_dim, obs_dim, act_dim, self.length, channels, emb, kernel)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        e = {"sigma_data": 1.0, "train_loc": -1.2, "train_scale": 1.2, "sigma_max": 5.0, "steps": 3, "sampler": "euler"}
        e.update({k: v for k, v in edm.items() if v is not None})
        self.edm = EDM(**e)
        self.to(self.device_)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=float(lr))
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long, device=self.device_))

    # ------------------------------------------------------------------ data
    def segments(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dataset segments starting at step indices idx [B]: obs, action [B, ...] of the start, rewards
        [B, L], next_obs [B, L, D], dones [B, L] (rows after a termination: reward 0, the terminal next obs,
        done), rtg [B] (normalised)."""
        d = self.data
        steps = idx.reshape(-1, 1) + torch.arange(self.length)
        last = d["last"][idx].reshape(-1, 1)
        over = steps > last
        s = torch.minimum(steps, last)
        out = {"obs": d["obs"][idx], "action": d["action"][idx], "reward": d["reward"][s].masked_fill(over, 0.0),
               "next_obs": d["next_obs"][s], "done": d["terminated"][s] | over, "rtg": d["rtg"][idx]}
        return {k: v.to(self.device_) for k, v in out.items()}

    def sample_segments(self, batch_size: int) -> dict[str, torch.Tensor]:
        i = torch.randint(len(self.starts), (int(batch_size),), generator=self.generator)
        return self.segments(self.starts[i])

    def encode(self, seg: dict[str, torch.Tensor]) -> torch.Tensor:
        """The standardised segment x0 [B, L, D]: (r - mean) / std, (s' - mean) / std[, done as +-1]."""
        parts = [((seg["reward"] - self.rew_mean) / self.rew_std).unsqueeze(-1), (seg["next_obs"] - self.obs_mean) / self.obs_std]
        if self.terminals:
            parts.append(seg["done"].float().unsqueeze(-1) * 2.0 - 1.0)
        return torch.cat(parts, -1)

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rewards [B, L], next_obs [B, L, D], dones [B, L] bool) in the data's units."""
        r = x[..., 0] * self.rew_std + self.rew_mean
        s = x[..., 1:1 + self.obs_dim] * self.obs_std + self.obs_mean
        d = x[..., -1] > 0 if self.terminals else torch.zeros_like(r, dtype=torch.bool)
        return r, s, d

    # ------------------------------------------------------------------ training
    def loss(self, seg: dict[str, torch.Tensor]) -> torch.Tensor:
        """The EDM loss (mean over rows) with the RTG dropped with probability p_uncond."""
        keep = torch.rand(seg["rtg"].shape[0], device=self.device_) >= self.p_uncond
        obs_n = (seg["obs"] - self.obs_mean) / self.obs_std
        return self.edm.loss(self.net, self.encode(seg), obs_n, seg["action"], seg["rtg"], keep).mean()

    def fit_step(self) -> float:
        loss = self.loss(self.sample_segments(self.batch_size))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        # EMA of the weights (paper: decay 0.995), warmed up as min(decay, (1 + k) / (10 + k)) so short fits work
        k = int(self.ema_updates.item())
        decay = min(self.ema_decay, (1.0 + k) / (10.0 + k))
        soft_update(self.ema, self.net, 1.0 - decay)
        with torch.no_grad():
            for be, bn in zip(self.ema.buffers(), self.net.buffers()):
                be.copy_(bn)
        self.ema_updates += 1
        return float(loss.item())

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, obs: torch.Tensor, action: torch.Tensor, rtg: float | torch.Tensor, guidance: float = 1.0,
                 steps: Optional[int] = None, noise: Optional[torch.Tensor] = None, net: Optional[nn.Module] = None):
        """Segments from (s_t [B, D], a_t [B, A]) at normalised RTG `rtg` (a number or [B]) with classifier-free
        guidance F = F(∅) + w (F(y) - F(∅)) (paper Algorithm 19: w ε(y) + (1 - w) ε(∅)); w = 1 is purely
        conditional (one network pass per step), w = 0 unconditional. Returns (rewards [B, L], next_obs [B, L, D],
        dones [B, L]) in the data's units. `net`: the denoiser (default: the EMA copy)."""
        net = self.ema if net is None else net
        b = obs.shape[0]
        obs_n = (obs.float().to(self.device_) - self.obs_mean) / self.obs_std
        act = action.float().to(self.device_)
        y = torch.as_tensor(rtg, dtype=torch.float32, device=self.device_).expand(b).contiguous()
        w = float(guidance)
        ones, zeros = torch.ones(b, dtype=torch.bool, device=self.device_), torch.zeros(b, dtype=torch.bool, device=self.device_)

        def guided(x, c_noise):
            if w == 1.0 or w == 0.0:
                return net(x, c_noise, obs_n, act, y, ones if w == 1.0 else zeros)
            f = net(torch.cat([x, x]), torch.cat([c_noise, c_noise]), torch.cat([obs_n, obs_n]), torch.cat([act, act]),
                    torch.cat([y, y]), torch.cat([ones, zeros]))
            fc, fu = f.chunk(2)
            return fu + w * (fc - fu)

        x = self.edm.sample(guided, (b, self.length, self.x_dim), steps=steps, device=self.device_, noise=noise)
        return self.decode(x)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return {"modules": super().state_dict(*args, **kwargs), "opt": self.opt.state_dict(), "rng": self.generator.get_state()}

    def load_state_dict(self, sd, strict: bool = True):  # type: ignore[override]
        super().load_state_dict(sd["modules"], strict=strict)
        self.opt.load_state_dict(sd["opt"])
        self.generator.set_state(sd["rng"].cpu())  # a CPU generator (the checkpoint may be mapped to a GPU)


# ----------------------------------------------------------------------------------- the algorithm

def check_horizon(horizon: Any, segment: Optional[int]) -> None:
    """H >= 1, and H <= the generated segment's length for the diffusion model (the ensemble rolls any H)."""
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1 or (segment is not None and horizon > segment):
        limit = f" <= algo.dwm.segment = {segment}" if segment is not None else ""
        raise UserError(f"algo.dwm.horizon={horizon!r}; valid: an integer 1 <= horizon{limit} (the simulation horizon H; paper: 1, 3, 5, 7 with T = 8)")


class DWM(OfflineAlgorithm):
    """Fit the segment model (or the one-step ensemble) once, then train the learner with MVE targets."""

    name = "dwm"

    def __init__(self, eval_env, dataset, buffer, learner, loop, batch_size: int = 128, run_dir=None, segment_model: Optional[SegmentModel] = None,
                 world_model=None, fitter=None, horizon: int = 5, lam: float = 1.0, guidance: float = 1.2, rtg_eval: Optional[float] = None,
                 fit_steps: int = 100_000, log_every: int = 1000):
        super().__init__(eval_env, dataset, buffer, loop, batch_size, run_dir)
        if (segment_model is None) == (world_model is None):
            raise ValueError("DWM: give exactly one of segment_model (algo.dwm.model=diffusion) and world_model (ensemble)")
        check_horizon(horizon, segment_model.length if segment_model is not None else None)
        if not 0.0 <= float(lam) <= 1.0 or float(guidance) < 0 or int(fit_steps) < 0:
            raise UserError(f"algo.dwm: lam={lam}, guidance={guidance}, fit_steps={fit_steps}; valid: 0 <= lam <= 1, guidance >= 0, fit_steps >= 0")
        self.learner = learner.to(self.device)
        self.learner.obs_norm.set(*obs_stats(dataset))
        self.segment_model, self.world_model, self.fitter = segment_model, world_model, fitter
        if world_model is not None:
            self.world_model = world_model.to(self.device)
        self.horizon, self.lam, self.guidance = int(horizon), float(lam), float(guidance)
        self.fit_steps, self.fit_log_every = int(fit_steps), max(1, int(log_every))
        if segment_model is not None:
            self.rtg_eval = float(segment_model.rtg_max if rtg_eval is None else rtg_eval)

    def policy(self, obs, explore):
        return self.learner.act(obs, explore=False)

    def modules(self) -> dict[str, Any]:
        mods = {"learner": self.learner, "segment_model": self.segment_model, "model": self.world_model, "model_fit": self.fitter}
        return {k: v for k, v in mods.items() if v is not None}

    # ------------------------------------------------------------------ stage 1: the model
    def pretrain(self) -> dict[str, float]:
        t0 = time.time()
        if self.world_model is not None:
            m = self.fitter.fit(self.buffer)
            m["time/model_fit_s"] = time.time() - t0
            return m
        sm = self.segment_model
        losses = []
        for i in range(self.fit_steps):
            losses.append(sm.fit_step())
            if (i + 1) % self.fit_log_every == 0 and self.logger is not None:
                self.logger.log(0, {"dwm/fit_loss": float(np.mean(losses[-self.fit_log_every:])), "dwm/fit_step": float(i + 1)})
        tail = losses[-max(1, len(losses) // 10):] if losses else [float("nan")]
        return {"dwm/fit_loss": float(np.mean(tail)) if losses else 0.0, "dwm/fit_steps": float(len(losses)), "time/dwm_fit_s": time.time() - t0,
                "dwm/rtg_eval": self.rtg_eval, "dwm/rtg_data_max": sm.rtg_max}

    # ------------------------------------------------------------------ stage 2: the learner
    @torch.no_grad()
    def expand(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rewards [B, H], states [B, H, D] = ŝ_t+1 .. ŝ_t+H, dones [B, H]) from the dataset's (s_t, a_t)."""
        H = self.horizon
        if self.segment_model is not None:
            r, s, d = self.segment_model.generate(obs, action, self.rtg_eval, self.guidance)
            return r[:, :H], s[:, :H], d[:, :H]
        wm = self.world_model
        first = torch.ones(obs.shape[0], 1, dtype=torch.bool, device=self.device)
        act = wm.action_input(action.to(self.device))
        start = wm.observe(obs.float().to(self.device).unsqueeze(1), act.unsqueeze(1), first)[:, 0]
        s1 = wm.step(start, act)
        rewards, states, conts = [wm.reward(s1)], [wm.features(s1)], [wm.cont(s1)]
        if H > 1:
            traj = wm.imagine(s1, lambda f: self.learner.act(f, explore=False), H - 1, keep_states=False)
            rewards += list(traj.rewards.unbind(0))
            states += list(traj.features[1:].unbind(0))
            conts += list(traj.conts.unbind(0))
        dones = (1.0 - torch.stack(conts, 1).float()) > 0.5
        return torch.stack(rewards, 1).float(), torch.stack(states, 1).float(), dones

    def train_step(self) -> dict[str, float]:
        b = self.buffer.sample(self.batch_size).to(self.device)
        r, s, d = self.expand(b["obs"], b["action"])
        B, H = r.shape
        if self.lam < 1.0:
            values = self.learner.bootstrap(s.reshape(B * H, -1)).reshape(B, H)
        else:
            values = torch.zeros_like(r)
            values[:, -1] = self.learner.bootstrap(s[:, -1])
        target = mve_target(r, d, values, float(self.learner.gamma), self.lam)
        m = self.learner.update(Batch({**b, "target": target}))
        m.update({"dwm/target": float(target.mean()), "dwm/model_reward": float(r.mean()), "dwm/model_done": float(d.any(1).float().mean())})
        return m


# ----------------------------------------------------------------------------------- config

def from_config(cfg: Any, run_dir=None) -> DWM:
    a = to_dict(cfg.algo)
    o = dict(a.get("dwm") or {})
    kind = str(o.get("model", "diffusion"))
    if kind not in MODELS:
        raise UserError(f"algo.dwm.model={kind!r}; valid: {', '.join(MODELS)} (diffusion: DWM's segment model; ensemble: one-step MVE baseline)")
    lname = str((cfg.get("learner") or {}).get("name") or "")
    if lname not in LEARNERS:
        raise UserError(f"algo=dwm: learner={lname or None} has no value-expansion hook; valid: {', '.join(LEARNERS)}")
    check_horizon(o.get("horizon", 5), int(o.get("segment", 7)) if kind == "diffusion" else None)  # before the data is read
    ds, eval_env, buffer, obs_dim, _ = dataset_and_env(cfg)
    learner = build_learner(cfg, obs_dim, eval_env.single_action_space, "algo=dwm")
    seed = int(cfg.get("seed", 0) or 0)
    lc = offline_loop_config(cfg)
    lam = o.get("lam")
    kw: dict[str, Any] = dict(horizon=int(o.get("horizon", 5)), lam=float(DEFAULT_LAM[lname] if lam is None else lam),
                              guidance=float(o.get("guidance", 1.2)), rtg_eval=o.get("rtg_eval"), fit_steps=int(o.get("fit_steps", 0)),
                              log_every=int(lc.log_every))
    if kind == "diffusion":
        sm = SegmentModel(ds, int(o.get("segment", 7)), float(learner.gamma), device=resolve_device(lc.device),
                          rtg_scale=o.get("rtg_scale"), p_uncond=float(o.get("p_uncond", 0.25)), lr=float(o.get("lr", 1e-4)),
                          batch_size=int(o.get("fit_batch", 64)), ema=float(o.get("ema", 0.995)), channels=o.get("channels", (64, 128, 256)),
                          emb=int(o.get("emb", 128)), kernel=int(o.get("kernel", 5)), edm=o.get("edm"), seed=seed)
        kw["segment_model"] = sm
    else:
        from mbrl.algos.model_fit import fitter_from_config

        ens = {"name": "ensemble", **dict(o.get("ensemble") or {})}
        model = build_model({"model": ens, "seed": seed}, (eval_env.single_observation_space, eval_env.single_action_space), "algo=dwm")
        if not model.markov_obs:
            raise UserError("algo.dwm.model=ensemble needs an observation-space model (markov_obs)")
        kw["world_model"], kw["fitter"] = model, fitter_from_config(model, a.get("fit"), seed)
    return DWM(eval_env, ds, buffer, learner, lc, batch_size=int(a["batch_size"]), run_dir=run_dir, **kw)


__all__ = ["DWM", "SegmentModel", "TemporalUNet", "mve_target", "discounted_rtg", "from_config"]
