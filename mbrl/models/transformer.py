"""Transformer world model of the STORM family (Zhang et al. 2023, "STORM: Efficient Stochastic
Transformer based World Models for Reinforcement Learning", arXiv:2310.09615; reference code
github.com/weipu-zhang/STORM, `sub_models/world_models.py`, `sub_models/transformer_model.py`,
`config_files/STORM.yaml`), with a KV cache in the state.

What makes it STORM (each point cites the reference):
- each observation is encoded on its own (no history) into `stoch` x `classes` (32 x 32) one-hot
  categoricals with 1% unimix and straight-through samples (`DistHead.unimix(mixing_ratio=0.01)`,
  `stright_throught_gradient`): the shared `CategoricalLatent`.
- one token per step from (z_t, a_t): Linear -> LayerNorm -> act -> Linear (the reference `stem`),
  then a causal transformer of `layers` blocks, `attn_heads` heads, width `width`, feed-forward 2 x width
  (`AttentionBlockKVCache(hidden_dim=feat_dim*2)`), dropout 0.1 (`dropout=0.1`). Blocks here are
  pre-LayerNorm (the reference is post-LN; the issue asks for pre-LN) with a final LayerNorm.
- the output h_t at token t predicts the next latent's distribution (`DistHead.prior_head`, one
  Linear); the agent state is [z_t, h_{t-1}] (the reference's `torch.cat([latent, hidden])`).
- reward: symlog two-hot over 255 bins in [-20, 20] (`SymLogTwoHotLoss(255, -20, 20)`), continue:
  Bernoulli, both the shared heads on the agent state (the reference reads h only; the state also
  holds z_t, as DreamerV3's heads read the full model state); decoder on z_t (`ImageDecoder(stoch)`).
- KL: 0.5 * max(1, KL[sg(post) || prior]) + 0.1 * max(1, KL[post || sg(prior)]) (reference
  `CategoricalKLDivLossWithFreeBits(free_bits=1)`, weights 0.5 / 0.1 in `update`; DreamerV3's balance).
- STORM's sizes (`STORM.yaml`): 2 layers, width 512, 8 heads, max length 64, imagination from the
  last 8 real steps (`ImagineContextLength: 8`) for 16 steps (`ImagineBatchLength: 16`).

Positions are relative: a learned bias per head and distance (0 .. context-1) added to the attention
logits, so a cached key means the same wherever the window starts (the reference's learned absolute
positions would change meaning under a rolling window).

The KV cache lives in the state (`TransformerState.keys/values/valid`, [*, layers, window-1, width]):
`step` attends to the cached keys/values plus its own token (cost linear in the window), then rolls
the cache by one. So indexing, `repeat`, particles, `detach` and `imagine` work on it unchanged, and
acting keeps a rolling window of the last `window` steps. `observe` over a replayed sequence gives
every posterior state the cache of its previous steps; the posterior that `loss` returns (the
imagination starts) keeps only the last `imag_context` real steps (STORM: 8). `is_first` inside a
sequence masks attention across the boundary (segment ids), and zeroes h at the episode start.

Options of the same family (each one key, off by default):
- `context`: attention left-context window in training (TWISTER restricts attention to a left
  context; STORM: 64 = its sequence length).
- `cpc_steps` / `cpc_scale`: TWISTER's action-conditioned contrastive predictive coding (Burchi &
  Timofte 2025, arXiv:2503.04416): from h_t and the actions a_{t+1..t+k-1}, predict an embedding of
  the posterior latent z_{t+k} for k = 1..cpc_steps; InfoNCE against every other step of the batch.
- `reward_smooth`: DreamSmooth (Lee et al. 2023, arXiv:2311.01450): the reward head learns a
  Gaussian-smoothed reward (sigma in steps, within each episode of the sequence).

The encoder, decoder, latent and heads are the shared parts (mbrl/models/parts.py); this file holds
only the sequence core.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from mbrl.data.batch import Batch
from mbrl.errors import UserError
from mbrl.models import register
from mbrl.models.base import State, WorldModel
from mbrl.models.dists import kl_free_bits
from mbrl.models.parts import CategoricalLatent, ContinueHead, ObsDecoder, ObsEncoder, RewardHead, action_spec

SIZES: dict[str, dict[str, int]] = {
    # width / layers / heads of the transformer; hidden, mlp_layers, depth of encoder, decoder and heads
    # (DreamerV3's XS / S / M dense units, MLP layers and CNN depths); S is STORM's own setting
    "XS": dict(width=256, layers=1, attn_heads=4, hidden=256, mlp_layers=1, depth=24),
    "S": dict(width=512, layers=2, attn_heads=8, hidden=512, mlp_layers=2, depth=32),
    "M": dict(width=768, layers=4, attn_heads=12, hidden=640, mlp_layers=3, depth=48),
}


class _RollIn(torch.autograd.Function):
    """cat([cache[:, :, 1:], new], 2): drop the oldest of the cache's slots (dim 2), append `new`.

    The same values as slicing + torch.cat; its backward is one cat of the output's gradient (slot 0 of
    the cache gets zero), where autograd's slice backward first zero-fills a cache-sized tensor and then
    copies into it: at imagination sizes (1024 starts x 2 layers x 23 slots x 128) that fill was 37% of a
    Dreamer update's CPU time (torch.profiler)."""

    @staticmethod
    def forward(ctx, cache: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        ctx.k = new.shape[2]
        return torch.cat([cache[:, :, ctx.k:], new], 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        k, m = ctx.k, grad.shape[2]
        lead = grad.new_zeros(*grad.shape[:2], k, *grad.shape[3:])
        g_cache = torch.cat([lead, grad[:, :, : m - k]], 2) if ctx.needs_input_grad[0] else None
        return g_cache, grad[:, :, m - k:]


def _roll_in(cache: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    return _RollIn.apply(cache, new)


@dataclass
class TransformerState(State):
    stoch: torch.Tensor  # [*, stoch * classes] one-hot sample z_t
    logits: torch.Tensor  # [*, stoch * classes] log-probs it was drawn from
    hidden: torch.Tensor  # [*, width] h_{t-1}, the output at the previous token (zeros at an episode start)
    keys: torch.Tensor  # [*, layers, window - 1, width] KV cache of the previous tokens (newest last)
    values: torch.Tensor  # [*, layers, window - 1, width]
    valid: torch.Tensor  # [*, window - 1] bool: which cache slots hold a token of this episode


class _Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, width: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.norm2 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, ffn), nn.SiLU(), nn.Linear(ffn, width))


@register("transformer")
class TransformerWM(WorldModel):
    default_algo = "dreamer"
    has_decoder = True
    native_signals = frozenset()
    markov_obs = False
    train_on = "sequences"
    #: smoke / contract tests: 16x16 and 64x64 pixels, vectors and dicts in a few ms per step
    tiny = dict(size="XS", width=16, layers=1, attn_heads=2, hidden=16, mlp_layers=1, depth=4, stoch=4, classes=4, bins=31,
                context=8, window=8, imag_context=4, dropout=0.0)

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        size: str = "S",
        width: Optional[int] = None,
        layers: Optional[int] = None,
        attn_heads: Optional[int] = None,
        hidden: Optional[int] = None,
        mlp_layers: Optional[int] = None,
        depth: Optional[int] = None,
        stoch: int = 32,
        classes: int = 32,
        unimix: float = 0.01,
        dropout: float = 0.1,
        context: int = 64,
        window: int = 24,
        imag_context: int = 8,
        free_nats: float = 1.0,
        kl_dyn: float = 0.5,
        kl_rep: float = 0.1,
        rec_scale: float = 1.0,
        rew_scale: float = 1.0,
        con_scale: float = 1.0,
        bins: int = 255,
        cpc_steps: int = 0,
        cpc_scale: float = 1.0,
        cpc_dim: int = 128,
        reward_smooth: float = 0.0,
        seed: Optional[int] = None,  # accepted for the registry; WorldModel.from_config seeds the init
    ):
        super().__init__()
        if size not in SIZES:
            raise UserError(f"model=transformer: unknown size {size!r}; valid: {', '.join(SIZES)}")
        p = SIZES[size]
        pick = lambda v, k: int(v if v is not None else p[k])  # noqa: E731
        self.width, self.nlayers, self.nheads = pick(width, "width"), pick(layers, "layers"), pick(attn_heads, "attn_heads")
        # `hidden` / `layers`: the dense units and MLP layers (what Dreamer sizes its actor and critic by, as for RSSM)
        self.hidden, self.layers, self.depth = pick(hidden, "hidden"), pick(mlp_layers, "mlp_layers"), pick(depth, "depth")
        ints = dict(width=self.width, layers=self.nlayers, attn_heads=self.nheads, hidden=self.hidden, depth=self.depth, stoch=stoch,
                    classes=classes, imag_context=imag_context)
        bad = {k: v for k, v in ints.items() if int(v) < 1}
        if bad or self.layers < 0 or bins < 2 or not 0 <= unimix < 1 or not 0 <= dropout < 1 or cpc_steps < 0 or cpc_dim < 1 or reward_smooth < 0:
            raise UserError(f"model=transformer: bad settings {bad or dict(mlp_layers=self.layers, bins=bins, unimix=unimix, dropout=dropout, cpc_steps=cpc_steps, cpc_dim=cpc_dim, reward_smooth=reward_smooth)}; "
                            "valid: width, layers, attn_heads, hidden, depth, stoch, classes, imag_context >= 1; mlp_layers, cpc_steps, reward_smooth >= 0; "
                            "cpc_dim >= 1; bins >= 2; 0 <= unimix, dropout < 1")
        if self.width % self.nheads:
            raise UserError(f"model=transformer: width={self.width} is not divisible by attn_heads={self.nheads}; valid: attn_heads dividing width (e.g. attn_heads=8 for width 512)")
        if not 2 <= window <= context or not 1 <= imag_context <= window:
            raise UserError(f"model=transformer: context={context}, window={window}, imag_context={imag_context}; "
                            "valid: 1 <= imag_context <= window, 2 <= window <= context (e.g. STORM: 8, 24, 64)")
        self.context, self.window, self.imag_context = int(context), int(window), int(imag_context)
        self.slots = self.window - 1
        self.dropout = float(dropout)
        self.free_nats, self.kl_dyn, self.kl_rep = free_nats, kl_dyn, kl_rep
        self.rec_scale, self.rew_scale, self.con_scale = rec_scale, rew_scale, con_scale
        self.cpc_steps, self.cpc_scale, self.reward_smooth = int(cpc_steps), float(cpc_scale), float(reward_smooth)
        self.discrete, self.action_dim = action_spec(action_space, "transformer")
        self.latent = CategoricalLatent(stoch, classes, unimix)
        Z, W, H, L = self.latent.dim, self.width, self.hidden, max(1, self.layers)
        self.feat_dim = Z + W

        self.encoder = ObsEncoder(obs_space, self.depth, H, L, who="transformer")
        self.post_head = nn.Linear(self.encoder.out_dim, Z)  # reference DistHead.post_head
        self.decoder = ObsDecoder(Z, obs_space, self.depth, H, L, who="transformer")
        # token stem (reference StochasticTransformerKVCache.stem)
        self.stem = nn.Sequential(nn.Linear(Z + self.action_dim, W, bias=False), nn.LayerNorm(W), nn.SiLU(),
                                  nn.Linear(W, W, bias=False), nn.LayerNorm(W))
        self.blocks = nn.ModuleList([_Block(W, self.nheads, 2 * W) for _ in range(self.nlayers)])
        self.rel_bias = nn.Parameter(torch.zeros(self.nlayers, self.nheads, self.context))  # learned bias per distance
        self.final_norm = nn.LayerNorm(W)
        self.prior_head = nn.Linear(W, Z)  # reference DistHead.prior_head
        self.reward_head = RewardHead(self.feat_dim, H, L, bins)
        self.cont_head = ContinueHead(self.feat_dim, H, L)
        if self.cpc_steps:
            K, A, D = self.cpc_steps, self.action_dim, int(cpc_dim)
            # one predictor per offset k: [h_t, a_{t+1..t+k-1} (zero-padded)] -> embedding of z_{t+k}
            self.cpc_pred = nn.ModuleList([nn.Sequential(nn.Linear(W + (K - 1) * A, H), nn.LayerNorm(H), nn.SiLU(), nn.Linear(H, D))
                                           for _ in range(K)])
            self.cpc_target = nn.Sequential(nn.Linear(Z, H), nn.LayerNorm(H), nn.SiLU(), nn.Linear(H, D))

    def action_input(self, action: Any) -> torch.Tensor:
        """The base encoding (discrete indices -> one-hot), continuous actions divided by max(1, |a|)."""
        a = super().action_input(action)
        if not self.discrete:
            a = a / a.abs().clamp_min(1.0).detach()
        return a

    # ------------------------------------------------------------------------------------------
    # the transformer core
    def _tokens(self, stoch: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.stem(torch.cat([stoch, action.to(stoch.dtype)], -1))

    def _forward(self, x: torch.Tensor, ck: Optional[torch.Tensor], cv: Optional[torch.Tensor], allowed: torch.Tensor,
                 dist: torch.Tensor, train: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens x [B, N, W] after a prefix cache ck / cv [B, L, M, W] (or None): every query attends
        to the keys [cache, tokens] where `allowed` [B, N, M+N] is true, with the relative bias of
        `dist` [N, M+N] (long, clamped into the table). Returns the outputs h [B, N, W] and the new
        tokens' keys / values [B, L, N, W]."""
        B, N, W = x.shape
        nh, hd = self.nheads, W // self.nheads
        mask = torch.where(allowed, 0.0, -1e30).unsqueeze(1)  # [B, 1, N, M+N]; finite in bf16 too
        dist = dist.clamp(0, self.context - 1)
        ks, vs = [], []
        p = self.dropout if train else 0.0
        # unbind once: indexing ck[:, i] in the loop would zero-fill a cache-sized gradient per layer in backward
        cks, cvs = (ck.unbind(1), cv.unbind(1)) if ck is not None else (None, None)
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.qkv(blk.norm1(x)).chunk(3, -1)
            ks.append(k)
            vs.append(v)
            heads = lambda t: t.reshape(B, -1, nh, hd).transpose(1, 2)  # noqa: E731  [B, n, W] -> [B, nh, n, hd]
            qh, kh, vh = heads(q), heads(k), heads(v)
            # scores against the cache and against the new tokens, computed apart: concatenating the keys
            # would copy the whole cache per layer and step (only the small score tensors are joined)
            att = qh @ kh.transpose(-1, -2)
            if ck is not None:
                att = torch.cat([qh @ heads(cks[i].to(k.dtype)).transpose(-1, -2), att], -1)
            bias = self.rel_bias[i][:, dist]  # [nh, N, M+N]
            att = att * (hd ** -0.5) + (bias.unsqueeze(0) + mask).to(qh.dtype)
            att = torch.softmax(att.float(), -1).to(vh.dtype)
            if p:
                att = F.dropout(att, p)
            if ck is not None:
                Mc = cks[i].shape[1]
                o = att[..., :Mc] @ heads(cvs[i].to(v.dtype)) + att[..., Mc:] @ vh
            else:
                o = att @ vh
            o = o.transpose(1, 2).reshape(B, N, W)
            o = blk.out(o)
            x = x + (F.dropout(o, p) if p else o)
            f = blk.ffn(blk.norm2(x))
            x = x + (F.dropout(f, p) if p else f)
        return self.final_norm(x), torch.stack(ks, 1), torch.stack(vs, 1)

    def hidden_states(self, stoch: torch.Tensor, action: torch.Tensor, is_first: Optional[torch.Tensor] = None,
                      span: Optional[int] = None) -> torch.Tensor:
        """Full recomputation without a cache: the outputs h_j [B, N, W] of the tokens (z_j, a_j)
        [B, N, ...] under causal attention within each episode (`is_first` [B, N] starts one) and at
        most `span` tokens back including itself (default: `context`). The reference the KV cache is
        tested against, and the recomputation baseline of `bench imagine`."""
        B, N = stoch.shape[:2]
        first = torch.zeros(B, N, dtype=torch.bool, device=stoch.device) if is_first is None else is_first.bool()
        seg = first.long().cumsum(1)
        t = torch.arange(N, device=stoch.device)
        dist = t[:, None] - t[None, :]
        span = self.context if span is None else int(span)
        allowed = ((dist >= 0) & (dist < span)).unsqueeze(0) & (seg[:, :, None] == seg[:, None, :])
        h, _, _ = self._forward(self._tokens(stoch, self.action_input(action)), None, None, allowed, dist)
        return h

    # ------------------------------------------------------------------------------------------
    # WorldModel protocol
    def initial(self, batch_size: int) -> TransformerState:
        w = self.prior_head.weight
        z = lambda *s: torch.zeros(batch_size, *s, device=w.device, dtype=torch.float32)  # noqa: E731
        return TransformerState(stoch=z(self.latent.dim), logits=z(self.latent.dim), hidden=z(self.width),
                                keys=z(self.nlayers, self.slots, self.width), values=z(self.nlayers, self.slots, self.width),
                                valid=torch.zeros(batch_size, self.slots, dtype=torch.bool, device=w.device))

    def _posterior(self, obs: Any) -> torch.Tensor:
        return self.latent.mix(self.post_head(self.encoder(obs)))

    def observe(self, obs: Any, action: torch.Tensor, is_first: torch.Tensor, state: Optional[TransformerState] = None,
                prev_action: Optional[torch.Tensor] = None, train: bool = False, keep: Optional[int] = None) -> TransformerState:
        """Posterior states [B, T]. `action[:, t]` is the action taken at obs[:, t]; s_t.hidden is the
        output at token (z_{t-1}, a_{t-1}); token -1 is (state.stoch, prev_action) after state's cache.
        Each state carries the cache of its previous tokens in its episode (the last `keep`, default all
        the window holds)."""
        B, T = is_first.shape[:2]
        first = is_first.bool()
        logp = self._posterior(obs)  # [B, T, Z]
        # one draw per step in time order, as acting one step at a time draws them (Tracker == observe)
        stoch = torch.stack([self.latent.sample(logp[:, t]) for t in range(T)], 1)
        act = self.action_input(action)
        given = state is not None
        if state is None:
            state = self.initial(B)
        prev = self.action_input(prev_action).reshape(B, 1, -1) if prev_action is not None else torch.zeros_like(act[:, :1])
        zin = torch.cat([state.stoch.unsqueeze(1).to(stoch.dtype), stoch[:, :-1]], 1)  # tokens -1 .. T-2
        ain = torch.cat([prev.to(act.dtype), act[:, :-1]], 1)
        x = self._tokens(zin, ain)
        M, dev = self.slots, first.device
        # keys: [cache slots (times -M-1 .. -2), token -1 (time -1), tokens 0 .. T-2]; queries: tokens -1 .. T-2
        kvalid = torch.cat([state.valid, torch.full((B, 1), given, device=dev), torch.ones(B, T - 1, dtype=torch.bool, device=dev)], 1)
        seg_tok = first.long().cumsum(1)  # segment of obs / token t
        kseg = torch.cat([torch.zeros(B, M + 1, dtype=torch.long, device=dev), seg_tok[:, :-1]], 1)  # [B, M+T]
        qseg = kseg[:, M:]  # [B, T]
        ktime = torch.arange(M + T, device=dev) - M - 1
        qtime = torch.arange(T, device=dev) - 1
        dist = qtime[:, None] - ktime[None, :]  # [T, M+T]
        allowed = kvalid[:, None, :] & (qseg[:, :, None] == kseg[:, None, :]) & ((dist >= 0) & (dist < self.context)).unsqueeze(0)
        allowed = allowed | (dist == 0).unsqueeze(0)  # a query always sees itself (token -1 without a state: nothing else)
        h, nk, nv = self._forward(x, state.keys, state.values, allowed, dist, train=train)
        # s_t.hidden = output of token t-1, zero where an episode starts (or nothing came before)
        start = first.clone()
        if not given:
            start[:, 0] = True
        hidden = h * (~start).unsqueeze(-1).to(h.dtype)
        # each state's cache: the last M keys before it (tokens < t), restricted to its own episode
        with torch.no_grad():
            sk = torch.cat([state.keys.to(nk.dtype), nk.detach()], 2)[:, :, 1:]  # [B, L, M+T-1, W]: windows t = 0..T-1
            sv = torch.cat([state.values.to(nv.dtype), nv.detach()], 2)[:, :, 1:]
            keys = sk.unfold(2, M, 1).permute(0, 2, 1, 4, 3)  # [B, T, L, M, W]
            values = sv.unfold(2, M, 1).permute(0, 2, 1, 4, 3)
            wv = kvalid[:, 1:].unfold(1, M, 1)  # [B, T, M]
            wseg = kseg[:, 1:].unfold(1, M, 1)
            valid = wv & (wseg == seg_tok.unsqueeze(-1))
            if keep is not None and keep < M:
                valid[..., : M - keep] = False
        return TransformerState(stoch=stoch, logits=logp, hidden=hidden, keys=keys.contiguous(), values=values.contiguous(), valid=valid)

    def step(self, state: TransformerState, action: torch.Tensor) -> TransformerState:
        """One imagined step: the token (z_t, a_t) attends to the cache and itself; the cache rolls by one."""
        B, M = state.valid.shape[0], self.slots
        x = self._tokens(state.stoch, self.action_input(action)).unsqueeze(1)  # [B, 1, W]
        dev = x.device
        allowed = torch.cat([state.valid, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1).unsqueeze(1)  # [B, 1, M+1]
        dist = (M - torch.arange(M + 1, device=dev)).unsqueeze(0)  # slot m is M - m steps back
        h, nk, nv = self._forward(x, state.keys, state.values, allowed, dist)
        h = h[:, 0]
        keys = _roll_in(state.keys.to(nk.dtype), nk)
        values = _roll_in(state.values.to(nv.dtype), nv)
        valid = torch.cat([state.valid[:, 1:], torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
        logp = self.latent.mix(self.prior_head(h))
        return TransformerState(stoch=self.latent.sample(logp), logits=logp, hidden=h, keys=keys, values=values, valid=valid)

    def features(self, state: TransformerState) -> torch.Tensor:
        return torch.cat([state.stoch, state.hidden.to(state.stoch.dtype)], -1)

    def reward(self, state: TransformerState) -> torch.Tensor:
        return self.reward_head.mean(self.features(state))

    def cont(self, state: TransformerState) -> torch.Tensor:
        return self.cont_head.prob(self.features(state))

    def decode(self, state: TransformerState) -> Any:
        """Reconstructed observations in the env's scale (uint8-range floats for images)."""
        return self.decoder.decode(state.stoch)

    # ------------------------------------------------------------------------------------------
    def _smooth(self, reward: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """DreamSmooth: Gaussian smoothing (sigma `reward_smooth` steps) of the reward targets [B, T]
        within each episode of the sequence (weights renormalised at the borders)."""
        s = self.reward_smooth
        r = int(math.ceil(3 * s))
        T = reward.shape[1]
        off = torch.arange(-r, r + 1, device=reward.device)
        w = torch.exp(-0.5 * (off.float() / s) ** 2)
        idx = torch.arange(T, device=reward.device)[:, None] + off[None, :]  # [T, 2r+1]
        ok = (idx >= 0) & (idx < T)
        idx = idx.clamp(0, T - 1)
        seg = first.long().cumsum(1)
        same = ok.unsqueeze(0) & (seg[:, idx] == seg.unsqueeze(-1))  # [B, T, 2r+1]
        # the reward at an episode's first step is not a transition of that episode: leave it out
        same = same & ~first[:, idx]
        wt = w * same
        sm = (reward.float()[:, idx] * wt).sum(-1) / wt.sum(-1).clamp_min(1e-8)
        return torch.where(first, reward.float(), sm)

    def _cpc_loss(self, h: torch.Tensor, stoch: torch.Tensor, act: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """TWISTER's AC-CPC. h [B, T-1, W]: outputs at tokens j = 0..T-2 (h_j = hidden of state j+1);
        stoch / act / first [B, T]. h_j with the actions a_{j+1..j+k-1} predicts an embedding of
        z_{j+k}, k = 1..cpc_steps; InfoNCE (cosine / 0.1) against all B*T latents of the batch; pairs
        across an episode start are left out."""
        B, T = first.shape
        K, A = self.cpc_steps, self.action_dim
        tgt = F.normalize(self.cpc_target(stoch.float()).reshape(B * T, -1), dim=-1)
        seg = first.long().cumsum(1)
        total, count = h.new_zeros(()).float(), 0
        for k in range(1, min(K, T - 1) + 1):
            n = T - k
            fut = [act[:, i: i + n].to(h.dtype) for i in range(1, k)]  # a_{j+1} .. a_{j+k-1}
            pad = [h.new_zeros(B, n, A)] * (K - k)
            q = F.normalize(self.cpc_pred[k - 1](torch.cat([h[:, :n], *fut, *pad], -1)).float().reshape(B * n, -1), dim=-1)
            pos = (torch.arange(B, device=h.device)[:, None] * T + torch.arange(k, T, device=h.device)[None, :]).reshape(-1)
            ok = (seg[:, k:] == seg[:, :n]).reshape(-1)
            if ok.any():
                total = total + F.cross_entropy(q[ok] @ tgt.t() / 0.1, pos[ok])
                count += 1
        return total / max(count, 1)

    def backbone_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], TransformerState]:
        """World-model loss on a [B, T] sequence batch (buffer stream layout); returns the posterior
        states (imagination starts, each with its last `imag_context` real steps)."""
        first = batch["is_first"].bool()
        post = self.observe(batch["obs"], batch["action"], first, train=self.training, keep=self.imag_context - 1)
        latent = self.latent
        prior = latent.mix(self.prior_head(post.hidden))
        dyn = kl_free_bits(latent.kl(post.logits.detach(), prior), self.free_nats)
        rep = kl_free_bits(latent.kl(post.logits, prior.detach()), self.free_nats)
        feat = self.features(post)
        rec = self.decoder.loss(post.stoch, batch["obs"])
        reward = batch["reward"]
        if self.reward_smooth > 0:
            reward = self._smooth(reward, first)
        rew_loss = self.reward_head.loss(feat, reward)
        con_loss = self.cont_head.loss(feat, 1.0 - batch["terminated"].float())
        total = (self.rec_scale * rec + self.rew_scale * rew_loss + self.con_scale * con_loss
                 + self.kl_dyn * dyn + self.kl_rep * rep).mean()
        extra = {}
        if self.cpc_steps:
            cpc = self._cpc_loss(post.hidden[:, 1:], post.stoch, self.action_input(batch["action"]), first)
            total = total + self.cpc_scale * cpc
            extra["wm/cpc"] = cpc.detach()
        with torch.no_grad():
            metrics = {
                "wm/loss": total.detach(),
                "wm/rec": rec.mean(),
                "wm/rew": rew_loss.mean(),
                "wm/con": con_loss.mean(),
                "wm/kl": latent.kl(post.logits, prior).mean(),
                "wm/dyn": dyn.mean(),
                "wm/rep": rep.mean(),
                "wm/prior_ent": latent.entropy(prior).mean(),
                **extra,
            }
            vals = torch.stack([v.float() for v in metrics.values()]).tolist()
        return total, dict(zip(metrics.keys(), vals)), post
