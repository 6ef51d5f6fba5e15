"""RSSM world model of DreamerV3 (Hafner et al. 2023, arXiv:2301.04104; reference code
github.com/danijar/dreamerv3, `dreamerv3/rssm.py` and `configs.yaml`).

What makes it DreamerV3 (each point cites the paper section or the reference config key):
- discrete latents: `stoch` x `classes` (32 x 32) one-hot categoricals, sampled with
  straight-through gradients, mixed with 1% uniform (`rssm.unimix: 0.01`, paper sec. "World model").
- deterministic state: the reference's GRU core (`RSSM._core`): deter, stoch and action each pass
  Linear -> LayerNorm -> SiLU (`dynin0..2`), then a block-diagonal hidden layer and block-diagonal
  GRU gates (`blocks: 8`, `dynhid`, `dyngru`), update gate biased by -1.
- symlog inputs (MLP encoder) and symlog targets (MLP decoder) for vector observations (paper
  eq. 1, `enc.simple.symlog: True`); pixels through a 4-stage CNN with LayerNorm (paper table of
  sizes: depth 24/32/48/64 for XS/S/M/L).
- reward head: two-hot over 255 symexp-spaced bins with zero-initialised output
  (`rewhead: {output: symexp_twohot, outscale: 0.0, bins: 255}`); continue head: Bernoulli.
- KL balancing with free bits: 0.5 * max(1, KL[sg(post) || prior]) + 0.1 * max(1, KL[post || sg(prior)])
  (paper sec. "World model learning", beta_dyn = 0.5, beta_rep = 0.1, free nats 1; the newer
  reference uses `loss_scales.dyn: 1.0` - set `kl_dyn: 1.0` for that).
- `is_first` resets the carried state (deter, stoch, previous action) to the initial zeros
  (reference `_observe`: `nn.mask(carry, ~reset)`).
Sizes XS / S / M / L / XL follow the paper's model-size table (GRU units 256/512/1024/2048/4096,
hidden units 256/512/640/768/1024, CNN depth 24/32/48/64/96, MLP layers 1/2/3/4/5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from mbrl.data.batch import Batch
from mbrl.models.base import State, WorldModel
from mbrl.models.dists import TwoHot, categorical_kl, kl_free_bits, straight_through, symexp, symexp_bins, symlog
from mbrl.models.nets import BlockLinear, ConvDecoder, ConvEncoder, dreamer_mlp, norm_act_linear

SIZES: dict[str, dict[str, int]] = {
    # DreamerV3 paper (arXiv:2301.04104v1), appendix table "Model sizes"
    "XS": dict(deter=256, hidden=256, depth=24, layers=1),
    "S": dict(deter=512, hidden=512, depth=32, layers=2),
    "M": dict(deter=1024, hidden=640, depth=48, layers=3),
    "L": dict(deter=2048, hidden=768, depth=64, layers=4),
    "XL": dict(deter=4096, hidden=1024, depth=96, layers=5),
}


class ConfigError(ValueError):
    pass


@dataclass
class RSSMState(State):
    deter: torch.Tensor  # [*, deter]
    stoch: torch.Tensor  # [*, stoch * classes] one-hot sample (flattened)
    logits: torch.Tensor  # [*, stoch * classes] log-probabilities (after unimix) it was drawn from


def _obs_keys(space: gym.Space) -> tuple[list[str], list[str], dict[str, gym.Space]]:
    spaces = dict(space.spaces) if isinstance(space, gym.spaces.Dict) else {"obs": space}
    img, vec = [], []
    for k, s in spaces.items():
        if not isinstance(s, gym.spaces.Box):
            raise ConfigError(f"rssm: observation {k!r} is {s}; valid: Box vectors [D] or images [C, H, W] (or a Dict of them)")
        if len(s.shape) == 3:
            img.append(k)
        elif len(s.shape) <= 1:
            vec.append(k)
        else:
            raise ConfigError(f"rssm: observation {k!r} has shape {s.shape}; valid: [D] vectors or [C, H, W] images")
    return img, vec, spaces


class RSSM(WorldModel):
    has_decoder = True
    default_algo = "dreamer"

    def __init__(
        self,
        obs_space: gym.Space,
        action_space: gym.Space,
        size: str = "S",
        deter: Optional[int] = None,
        hidden: Optional[int] = None,
        depth: Optional[int] = None,
        layers: Optional[int] = None,
        stoch: int = 32,
        classes: int = 32,
        blocks: int = 8,
        unimix: float = 0.01,
        free_nats: float = 1.0,
        kl_dyn: float = 0.5,
        kl_rep: float = 0.1,
        rec_scale: float = 1.0,
        rew_scale: float = 1.0,
        con_scale: float = 1.0,
        bins: int = 255,
        imglayers: int = 2,
    ):
        super().__init__()
        if size not in SIZES:
            raise ConfigError(f"rssm: unknown size {size!r}; valid: {', '.join(SIZES)}")
        preset = SIZES[size]
        self.deter_dim = int(deter or preset["deter"])
        self.hidden = int(hidden or preset["hidden"])
        self.depth = int(depth or preset["depth"])
        self.layers = int(layers if layers is not None else preset["layers"])
        if self.deter_dim % blocks:
            raise ConfigError(f"rssm: deter={self.deter_dim} must be divisible by blocks={blocks}")
        self.stoch_n, self.classes, self.blocks = stoch, classes, blocks
        self.stoch_dim = stoch * classes
        self.unimix, self.free_nats = unimix, free_nats
        self.kl_dyn, self.kl_rep = kl_dyn, kl_rep
        self.rec_scale, self.rew_scale, self.con_scale = rec_scale, rew_scale, con_scale
        self.feat_dim = self.deter_dim + self.stoch_dim

        # actions
        if isinstance(action_space, gym.spaces.Discrete):
            self.discrete, self.action_dim = True, int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.discrete, self.action_dim = False, int(action_space.shape[0])
        else:
            raise ConfigError(f"rssm: action space {action_space}; valid: Discrete(n) or a 1-D Box")

        # encoders / decoders
        self.img_keys, self.vec_keys, spaces = _obs_keys(obs_space)
        self.dict_obs = isinstance(obs_space, gym.spaces.Dict)
        embed = 0
        if self.img_keys:
            shapes = {tuple(spaces[k].shape[1:]) for k in self.img_keys}
            hw = next(iter(shapes))
            if len(shapes) != 1 or hw[0] != hw[1]:
                raise ConfigError(f"rssm: image observations must be square and share one size; got {[spaces[k].shape for k in self.img_keys]}")
            self.img_channels = [int(spaces[k].shape[0]) for k in self.img_keys]
            self.image_size = int(spaces[self.img_keys[0]].shape[1])
            self.cnn_enc = ConvEncoder(sum(self.img_channels), self.depth, image_size=self.image_size)
            self.cnn_dec = ConvDecoder(self.feat_dim, sum(self.img_channels), self.depth, image_size=self.image_size)
            embed += self.cnn_enc.out_dim
        if self.vec_keys:
            self.vec_dims = [int(max(1, int(torch.tensor(spaces[k].shape).prod().item()))) for k in self.vec_keys]
            vdim = sum(self.vec_dims)
            self.mlp_enc = dreamer_mlp(vdim, None, self.hidden, max(1, self.layers))
            self.mlp_dec = dreamer_mlp(self.feat_dim, vdim, self.hidden, max(1, self.layers))
            embed += self.hidden
        self.embed_dim = embed

        # recurrent core (reference RSSM._core)
        H, D = self.hidden, self.deter_dim
        self.dynin0 = norm_act_linear(D, H)
        self.dynin1 = norm_act_linear(self.stoch_dim, H)
        self.dynin2 = norm_act_linear(self.action_dim, H)
        # the reference's BlockLinear over [deter_g, x0, x1, x2] per group == dense(x) + blockdiag(deter)
        self.dynhid_x = nn.Linear(3 * H, D, bias=False)
        self.dynhid_h = BlockLinear(D, D, blocks, bias=True)
        self.dynhid_norm = nn.LayerNorm(D, eps=1e-3)
        self.dyngru = BlockLinear(D, 3 * D, blocks, bias=True)
        # posterior (obslayers: 1) and prior (imglayers: 2)
        self.obs_h = nn.Linear(D, H, bias=False)
        self.obs_e = nn.Linear(embed, H, bias=False)
        self.obs_norm = nn.LayerNorm(H, eps=1e-3)
        self.obs_logit = nn.Linear(H, self.stoch_dim)
        self.prior_net = dreamer_mlp(D, self.stoch_dim, H, imglayers)

        # heads
        self.register_buffer("bins", symexp_bins(bins), persistent=False)
        self.rew_head = dreamer_mlp(self.feat_dim, bins, H, max(1, self.layers), out_scale=0.0)
        self.con_head = dreamer_mlp(self.feat_dim, 1, H, max(1, self.layers))
        self.last_states: Optional[RSSMState] = None

    # ------------------------------------------------------------------------------------------
    # latent distribution
    def _mix(self, logits: torch.Tensor) -> torch.Tensor:
        """[*, S*C] raw logits -> [*, S*C] log-probs of the unimix categoricals."""
        shp = logits.shape
        probs = torch.softmax(logits.float().reshape(*shp[:-1], self.stoch_n, self.classes), -1)
        if self.unimix > 0:
            probs = (1 - self.unimix) * probs + self.unimix / self.classes
        return torch.log(probs).reshape(shp)

    def _sample(self, logp: torch.Tensor) -> torch.Tensor:
        """One-hot sample per categorical (Gumbel-max), straight-through gradient."""
        shp = logp.shape
        lg = logp.reshape(*shp[:-1], self.stoch_n, self.classes)
        u = torch.rand_like(lg).clamp_(1e-20, 1.0)
        idx = (lg.detach() - torch.log(-torch.log(u))).argmax(-1)
        hard = F.one_hot(idx, self.classes).to(lg.dtype)
        return straight_through(hard, lg.exp()).reshape(shp)

    def _kl(self, lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """Sum over the `stoch` categoricals of KL(p || q); inputs are log-probs [*, S*C]."""
        shp = lp.shape[:-1]
        lp = lp.reshape(*shp, self.stoch_n, self.classes)
        lq = lq.reshape(*shp, self.stoch_n, self.classes)
        return categorical_kl(lp, lq).sum(-1)

    # ------------------------------------------------------------------------------------------
    # encoder
    def _flat_obs(self, obs: Any, keys: list[str]) -> list[torch.Tensor]:
        if self.dict_obs:
            if not isinstance(obs, dict):
                raise ValueError(f"rssm: expected dict observations with keys {keys}")
            return [obs[k] for k in keys]
        return [obs]

    def embed(self, obs: Any, lead: int = 2) -> torch.Tensor:
        """Observation embedding [*lead, E]."""
        parts = []
        if self.img_keys:
            imgs = self._flat_obs(obs, self.img_keys)
            ld = imgs[0].shape[:lead]
            x = torch.cat([i.reshape(-1, *i.shape[lead:]) for i in imgs], 1)
            parts.append(self.cnn_enc(x).reshape(*ld, -1))
        if self.vec_keys:
            vecs = self._flat_obs(obs, self.vec_keys)
            ld = vecs[0].shape[:lead]
            x = torch.cat([v.reshape(*ld, -1).float() for v in vecs], -1)
            parts.append(self.mlp_enc(symlog(x)))
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def action_input(self, action: torch.Tensor) -> torch.Tensor:
        """Float action encoding: discrete indices -> one-hot; continuous as is (reference divides
        by max(1, |a|))."""
        if self.discrete and (action.dtype in (torch.int64, torch.int32, torch.long) or action.shape[-1] != self.action_dim):
            if action.shape and action.shape[-1] == 1 and action.dtype != torch.float32:
                action = action.squeeze(-1)
            return F.one_hot(action.long(), self.action_dim).float()
        action = action.float()
        if not self.discrete:
            action = action / action.abs().clamp_min(1.0).detach()
        return action

    # ------------------------------------------------------------------------------------------
    # core
    def _core(self, deter: torch.Tensor, stoch: torch.Tensor, act_in: torch.Tensor) -> torch.Tensor:
        """One GRU step. `act_in` is dynin2(action) (precomputed over time by observe())."""
        x = torch.cat([self.dynin0(deter), self.dynin1(stoch), act_in], -1)
        x = self.dynhid_x(x) + self.dynhid_h(deter)
        x = F.silu(self.dynhid_norm(x))
        g = self.dyngru(x).reshape(*deter.shape[:-1], self.blocks, 3, self.deter_dim // self.blocks)
        reset, cand, update = g.unbind(-2)
        shp = deter.shape
        reset = torch.sigmoid(reset).reshape(shp)
        cand = torch.tanh(reset * cand.reshape(shp))
        update = torch.sigmoid(update.reshape(shp) - 1.0)
        return update * cand + (1 - update) * deter

    def prior_logp(self, deter: torch.Tensor) -> torch.Tensor:
        return self._mix(self.prior_net(deter))

    # ------------------------------------------------------------------------------------------
    # WorldModel protocol
    def initial(self, batch_size: int) -> RSSMState:
        p = self.obs_logit.weight
        z = lambda d: torch.zeros(batch_size, d, device=p.device, dtype=torch.float32)  # noqa: E731
        return RSSMState(deter=z(self.deter_dim), stoch=z(self.stoch_dim), logits=z(self.stoch_dim))

    def observe(self, obs: Any, action: torch.Tensor, is_first: torch.Tensor, state: Optional[RSSMState] = None,
                prev_action: Optional[torch.Tensor] = None) -> RSSMState:
        """Posterior states [B, T]. `action[:, t]` is the action taken at obs[:, t]; step t uses
        action[:, t-1], and step 0 uses `prev_action` (the action taken in `state`; zeros if None)."""
        B, T = is_first.shape[:2]
        first = is_first.bool()
        keep = (~first).float().unsqueeze(-1)  # [B, T, 1]
        emb = self.obs_e(self.embed(obs))  # [B, T, H]
        act = self.action_input(action)
        prev0 = self.action_input(prev_action).reshape(B, 1, -1) if prev_action is not None else torch.zeros_like(act[:, :1])
        prev = torch.cat([prev0, act[:, :-1]], 1) * keep  # action that led to obs t; zero on resets
        act_in = self.dynin2(prev)  # [B, T, H]
        if state is None:
            state = self.initial(B)
        deter, stoch = state.deter, state.stoch
        deters, stochs, logps = [], [], []
        for t in range(T):
            k = keep[:, t]
            deter, stoch = deter * k, stoch * k
            deter = self._core(deter, stoch, act_in[:, t])
            x = F.silu(self.obs_norm(self.obs_h(deter) + emb[:, t]))
            logp = self._mix(self.obs_logit(x))
            stoch = self._sample(logp)
            deters.append(deter)
            stochs.append(stoch)
            logps.append(logp)
        return RSSMState(deter=torch.stack(deters, 1), stoch=torch.stack(stochs, 1), logits=torch.stack(logps, 1))

    def step(self, state: RSSMState, action: torch.Tensor) -> RSSMState:
        deter = self._core(state.deter, state.stoch, self.dynin2(self.action_input(action)))
        logp = self.prior_logp(deter)
        return RSSMState(deter=deter, stoch=self._sample(logp), logits=logp)

    def features(self, state: RSSMState) -> torch.Tensor:
        return torch.cat([state.deter, state.stoch], -1)

    def reward(self, state: RSSMState) -> torch.Tensor:
        return TwoHot(self.rew_head(self.features(state)), self.bins).mean()

    def cont(self, state: RSSMState) -> torch.Tensor:
        return torch.sigmoid(self.con_head(self.features(state)).squeeze(-1).float())

    def decode(self, state: RSSMState) -> Any:
        """Reconstructed observations in the env's scale (uint8-range floats for images)."""
        feat = self.features(state)
        lead = feat.shape[:-1]
        out: dict[str, torch.Tensor] = {}
        if self.img_keys:
            img = self.cnn_dec(feat.reshape(-1, self.feat_dim))
            img = ((img.float() + 0.5) * 255.0).clamp(0, 255)
            for k, part in zip(self.img_keys, img.split(self.img_channels, 1)):
                out[k] = part.reshape(*lead, *part.shape[1:])
        if self.vec_keys:
            vec = symexp(self.mlp_dec(feat).float())
            for k, part in zip(self.vec_keys, vec.split(self.vec_dims, -1)):
                out[k] = part
        return out if self.dict_obs else next(iter(out.values()))

    # ------------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """DreamerV3 world-model loss on a [B, T] sequence batch (buffer stream layout).
        The (detached) posterior states are kept in `self.last_states` as imagination starts."""
        post = self.observe(batch["obs"], batch["action"], batch["is_first"])
        B, T = post.deter.shape[:2]
        prior = self.prior_logp(post.deter)
        dyn = kl_free_bits(self._kl(post.logits.detach(), prior), self.free_nats)
        rep = kl_free_bits(self._kl(post.logits, prior.detach()), self.free_nats)
        feat = self.features(post)
        rec = torch.zeros(B, T, device=feat.device)
        obs = batch["obs"]
        if self.img_keys:
            pred = self.cnn_dec(feat.reshape(B * T, -1)).float()
            imgs = self._flat_obs(obs, self.img_keys)
            tgt = torch.cat([i.reshape(B * T, *i.shape[2:]) for i in imgs], 1)
            tgt = tgt.float() / 255.0 - 0.5 if tgt.dtype == torch.uint8 else tgt.float()
            rec = rec + (pred - tgt).square().sum((1, 2, 3)).reshape(B, T)
        if self.vec_keys:
            vecs = self._flat_obs(obs, self.vec_keys)
            tgt = symlog(torch.cat([v.reshape(B, T, -1).float() for v in vecs], -1))
            rec = rec + (self.mlp_dec(feat).float() - tgt).square().sum(-1)
        rew_loss = TwoHot(self.rew_head(feat), self.bins).loss(batch["reward"].float())
        con_target = 1.0 - batch["terminated"].float()
        con_logit = self.con_head(feat).squeeze(-1).float()
        con_loss = F.binary_cross_entropy_with_logits(con_logit, con_target, reduction="none")
        total = (self.rec_scale * rec + self.rew_scale * rew_loss + self.con_scale * con_loss
                 + self.kl_dyn * dyn + self.kl_rep * rep).mean()
        self.last_states = post.detach()
        with torch.no_grad():
            metrics = {
                "wm/loss": total.detach(),
                "wm/rec": rec.mean(),
                "wm/rew": rew_loss.mean(),
                "wm/con": con_loss.mean(),
                "wm/kl": self._kl(post.logits, prior).mean(),
                "wm/dyn": dyn.mean(),
                "wm/rep": rep.mean(),
                "wm/prior_ent": -(prior.exp() * prior).sum(-1).mean(),
            }
            vals = torch.stack([v.float() for v in metrics.values()]).tolist()
        return total, dict(zip(metrics.keys(), vals))


def from_config(cfg: Any, obs_space: gym.Space, action_space: gym.Space) -> RSSM:
    """Build an RSSM from the `model` config group (configs/model/rssm.yaml)."""
    keys = ("size", "deter", "hidden", "depth", "layers", "stoch", "classes", "blocks", "unimix", "free_nats",
            "kl_dyn", "kl_rep", "rec_scale", "rew_scale", "con_scale", "bins", "imglayers")
    kw = {k: cfg[k] for k in keys if k in cfg and cfg[k] is not None}
    unknown = [k for k in cfg if k not in keys and k not in ("name",)]
    if unknown:
        raise ConfigError(f"rssm: unknown model keys {unknown}; valid: {', '.join(keys)}")
    return RSSM(obs_space, action_space, **kw)
