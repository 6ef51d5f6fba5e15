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

The encoder, decoder, latent and heads are the shared parts (mbrl/models/parts.py); this file holds
the sequence core: the GRU, the posterior and prior nets, and observe / step / backbone_loss.
"""
from __future__ import annotations

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
from mbrl.models.nets import BlockLinear, dreamer_mlp, norm_act_linear
from mbrl.models.parts import CategoricalLatent, ContinueHead, ObsDecoder, ObsEncoder, RewardHead, action_spec, latent_model_loss

SIZES: dict[str, dict[str, int]] = {
    # DreamerV3 paper (arXiv:2301.04104v1), appendix table "Model sizes"
    "XS": dict(deter=256, hidden=256, depth=24, layers=1),
    "S": dict(deter=512, hidden=512, depth=32, layers=2),
    "M": dict(deter=1024, hidden=640, depth=48, layers=3),
    "L": dict(deter=2048, hidden=768, depth=64, layers=4),
    "XL": dict(deter=4096, hidden=1024, depth=96, layers=5),
}


@dataclass
class RSSMState(State):
    deter: torch.Tensor  # [*, deter]
    stoch: torch.Tensor  # [*, stoch * classes] one-hot sample (flattened)
    logits: torch.Tensor  # [*, stoch * classes] log-probabilities (after unimix) it was drawn from


@register("rssm")
class RSSM(WorldModel):
    default_algo = "dreamer"
    has_decoder = True
    native_signals = frozenset()
    markov_obs = False
    train_on = "sequences"
    #: smoke / contract tests: works for 16x16 and 64x64 pixels, vectors and dicts
    tiny = dict(size="XS", deter=32, hidden=32, depth=4, layers=1, stoch=4, classes=4, blocks=2, bins=31)

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
        seed: Optional[int] = None,  # accepted for the registry; WorldModel.from_config seeds the init
    ):
        super().__init__()
        if size not in SIZES:
            raise UserError(f"model=rssm: unknown size {size!r}; valid: {', '.join(SIZES)}")
        preset = SIZES[size]
        self.deter_dim = int(deter or preset["deter"])
        self.hidden = int(hidden or preset["hidden"])
        self.depth = int(depth or preset["depth"])
        self.layers = int(layers if layers is not None else preset["layers"])
        ints = dict(deter=self.deter_dim, hidden=self.hidden, depth=self.depth, stoch=stoch, classes=classes, blocks=blocks)
        bad = {k: v for k, v in ints.items() if int(v) < 1}
        if bad or self.layers < 0 or imglayers < 0 or bins < 2 or not 0 <= unimix < 1:
            raise UserError(f"model=rssm: bad sizes {bad or dict(layers=self.layers, imglayers=imglayers, bins=bins, unimix=unimix)}; "
                            "valid: deter, hidden, depth, stoch, classes, blocks >= 1; layers, imglayers >= 0; bins >= 2; 0 <= unimix < 1")
        if self.deter_dim % blocks:
            raise UserError(f"model=rssm: deter={self.deter_dim} is not divisible by blocks={blocks}; valid: blocks dividing deter (e.g. blocks=8)")
        self.blocks = int(blocks)
        self.free_nats, self.kl_dyn, self.kl_rep = free_nats, kl_dyn, kl_rep
        self.rec_scale, self.rew_scale, self.con_scale = rec_scale, rew_scale, con_scale
        self.discrete, self.action_dim = action_spec(action_space, "rssm")
        self.latent = CategoricalLatent(stoch, classes, unimix)
        self.stoch_dim = self.latent.dim
        self.feat_dim = self.deter_dim + self.stoch_dim
        H, D, L = self.hidden, self.deter_dim, max(1, self.layers)

        self.encoder = ObsEncoder(obs_space, self.depth, H, L, who="rssm")
        self.decoder = ObsDecoder(self.feat_dim, obs_space, self.depth, H, L, who="rssm")
        self.embed_dim = self.encoder.out_dim

        # recurrent core (reference RSSM._core)
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
        self.obs_e = nn.Linear(self.embed_dim, H, bias=False)
        self.obs_norm = nn.LayerNorm(H, eps=1e-3)
        self.obs_logit = nn.Linear(H, self.stoch_dim)
        self.prior_net = dreamer_mlp(D, self.stoch_dim, H, imglayers)

        self.reward_head = RewardHead(self.feat_dim, H, L, bins)
        self.cont_head = ContinueHead(self.feat_dim, H, L)

    def action_input(self, action: Any) -> torch.Tensor:
        """The base encoding (discrete indices -> one-hot), continuous actions divided by
        max(1, |a|) as the reference does."""
        a = super().action_input(action)
        if not self.discrete:
            a = a / a.abs().clamp_min(1.0).detach()
        return a

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
        return self.latent.mix(self.prior_net(deter))

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
        emb = self.obs_e(self.encoder(obs))  # [B, T, H]
        act = self.action_input(action)
        prev0 = self.action_input(prev_action).reshape(B, 1, -1) if prev_action is not None else torch.zeros_like(act[:, :1])
        prev = torch.cat([prev0, act[:, :-1]], 1) * keep  # action that led to obs t; zero on resets
        act_in = self.dynin2(prev)  # [B, T, H]
        if state is None:
            state = self.initial(B)
        deter, stoch = state.deter, state.stoch
        latent = self.latent
        deters, stochs, logps = [], [], []
        for t in range(T):
            k = keep[:, t]
            deter, stoch = deter * k, stoch * k
            deter = self._core(deter, stoch, act_in[:, t])
            x = F.silu(self.obs_norm(self.obs_h(deter) + emb[:, t]))
            logp = latent.mix(self.obs_logit(x))
            stoch = latent.sample(logp)
            deters.append(deter)
            stochs.append(stoch)
            logps.append(logp)
        return RSSMState(deter=torch.stack(deters, 1), stoch=torch.stack(stochs, 1), logits=torch.stack(logps, 1))

    def step(self, state: RSSMState, action: torch.Tensor) -> RSSMState:
        deter = self._core(state.deter, state.stoch, self.dynin2(self.action_input(action)))
        logp = self.prior_logp(deter)
        return RSSMState(deter=deter, stoch=self.latent.sample(logp), logits=logp)

    def features(self, state: RSSMState) -> torch.Tensor:
        return torch.cat([state.deter, state.stoch], -1)

    def reward(self, state: RSSMState) -> torch.Tensor:
        return self.reward_head.mean(self.features(state))

    def cont(self, state: RSSMState) -> torch.Tensor:
        return self.cont_head.prob(self.features(state))

    def decode(self, state: RSSMState) -> Any:
        """Reconstructed observations in the env's scale (uint8-range floats for images)."""
        return self.decoder.decode(self.features(state))

    # ------------------------------------------------------------------------------------------
    def backbone_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float], RSSMState]:
        """DreamerV3 world-model loss on a [B, T] sequence batch (buffer stream layout); also returns
        the posterior states of the batch (the imagination starts)."""
        post = self.observe(batch["obs"], batch["action"], batch["is_first"])
        feat = self.features(post)
        total, metrics = latent_model_loss(self, post.logits, self.prior_logp(post.deter), feat, self.decoder.loss(feat, batch["obs"]), batch)
        return total, metrics, post
