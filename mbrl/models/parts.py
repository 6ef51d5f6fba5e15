"""Parts shared by world-model backbones, so that a backbone file holds only its sequence core.

- `action_spec(space, who)`: (discrete, action_dim) of an action space.
- `obs_layout(space, who)`: the validated layout of an observation space (vectors, images, dicts).
- `ObsEncoder`: observations -> one embedding (symlog MLP for vectors, CNN for images, both for dicts).
- `ObsDecoder`: features -> observations; its `loss` is the reconstruction term of the model loss.
- `CategoricalLatent`: `stoch` x `classes` one-hot latents with unimix, straight-through samples, KL.
- `RewardHead`: two-hot symexp regression head (zero-initialised); `ContinueHead`: Bernoulli head.
- `latent_model_loss`: the DreamerV3-style loss of a latent backbone (reconstruction, reward, continue,
  balanced KL with free bits) and its metrics.

Everything follows DreamerV3 (Hafner et al. 2023, arXiv:2301.04104; reference github.com/danijar/dreamerv3):
symlog inputs and targets for vectors (eq. 1), pixels in [-0.5, 0.5] through a 4-stage CNN, 1% unimix
categoricals, `symexp_twohot` reward head with `outscale: 0.0`. Every user mistake (an unusable space, a
dict observation without a key) raises `UserError` with one line naming what is valid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Union

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from mbrl.errors import UserError
from mbrl.models.dists import TwoHot, categorical_kl, kl_free_bits, straight_through, symexp, symexp_bins, symlog, unimix_logits
from mbrl.models.nets import ConvDecoder, ConvEncoder, dreamer_mlp

#: CNN stages of the image encoder / decoder (image sides must be multiples of 2**STAGES)
STAGES = 4


def action_spec(space: Union[gym.Space, int], who: str) -> tuple[bool, int]:
    """(discrete, action_dim) for Discrete(n) (one-hot size n) or a 1-D Box; an int is the size of a
    continuous space."""
    if isinstance(space, int) and not isinstance(space, bool) and space > 0:
        return False, int(space)
    if isinstance(space, gym.spaces.Discrete):
        return True, int(space.n)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return False, int(space.shape[0])
    raise UserError(f"model={who}: action space {space}; valid: Discrete(n) or a 1-D Box")


def _cat(xs: list[torch.Tensor], dim: int) -> torch.Tensor:
    return xs[0] if len(xs) == 1 else torch.cat(xs, dim)


@dataclass(frozen=True)
class ObsLayout:
    """Which observation keys are images [C, H, W] (concatenated over channels) and which are vectors
    (flattened and concatenated); a non-dict space is the single key "obs"."""

    dict_obs: bool
    img_keys: tuple[str, ...]
    img_channels: tuple[int, ...]
    image_size: int  # 0 without images
    vec_keys: tuple[str, ...]
    vec_shapes: tuple[tuple[int, ...], ...]
    who: str = "model"

    @property
    def vec_dims(self) -> tuple[int, ...]:
        return tuple(max(1, math.prod(s)) for s in self.vec_shapes)

    def parts(self, obs: Any, keys: tuple[str, ...]) -> list[torch.Tensor]:
        """The tensors of `keys` in `obs` (a dict for dict spaces, else the tensor itself)."""
        if not self.dict_obs:
            return [obs]
        if not isinstance(obs, Mapping):
            raise UserError(f"model={self.who}: expected dict observations with keys {list(keys)}; got {type(obs).__name__}")
        missing = [k for k in keys if k not in obs]
        if missing:
            raise UserError(f"model={self.who}: observation dict lacks keys {missing}; valid: a dict with keys "
                            f"{list(self.img_keys + self.vec_keys)} (the env's observation space)")
        return [obs[k] for k in keys]


def obs_layout(space: gym.Space, who: str = "model") -> ObsLayout:
    """Validate an observation space: Box vectors [D] (or scalars), Box images [C, H, W] (square, all
    of one size, side a multiple of 16), or a gymnasium Dict of them."""
    spaces = dict(space.spaces) if isinstance(space, gym.spaces.Dict) else {"obs": space}
    if not spaces:
        raise UserError(f"model={who}: the observation Dict space is empty; valid: Box vectors [D] or images [C, H, W] (or a Dict of them)")
    img, vec = [], []
    for k, s in spaces.items():
        if not isinstance(s, gym.spaces.Box):
            raise UserError(f"model={who}: observation {k!r} is {s}; valid: Box vectors [D] or images [C, H, W] (or a Dict of them)")
        if len(s.shape) == 3:
            img.append(k)
        elif len(s.shape) <= 1:
            vec.append(k)
        else:
            raise UserError(f"model={who}: observation {k!r} has shape {s.shape}; valid: [D] vectors or [C, H, W] images")
    size = 0
    if img:
        shapes = {tuple(spaces[k].shape[1:]) for k in img}
        h, w = next(iter(shapes))
        m = 2**STAGES
        if len(shapes) != 1 or h != w or h % m:
            raise UserError(f"model={who}: image observations {[tuple(spaces[k].shape) for k in img]}; valid: channel-first "
                            f"[C, H, W], square, all of one size, side a multiple of {m} (e.g. [3, 64, 64])")
        size = int(h)
    return ObsLayout(dict_obs=isinstance(space, gym.spaces.Dict), img_keys=tuple(img),
                     img_channels=tuple(int(spaces[k].shape[0]) for k in img), image_size=size,
                     vec_keys=tuple(vec), vec_shapes=tuple(tuple(int(d) for d in spaces[k].shape) for k in vec), who=who)


class ObsEncoder(nn.Module):
    """Observations -> embedding [*lead, out_dim]. Vectors: symlog, then `layers` x (Linear, LayerNorm,
    SiLU) of `hidden` units; images: `ConvEncoder` with `depth` (uint8 mapped to [-0.5, 0.5]); dicts:
    both, concatenated (images first)."""

    def __init__(self, obs_space: gym.Space, depth: int, hidden: int, layers: int, who: str = "model"):
        super().__init__()
        self.layout = lay = obs_layout(obs_space, who)
        self.out_dim = 0
        if lay.img_keys:
            self.cnn = ConvEncoder(sum(lay.img_channels), depth, stages=STAGES, image_size=lay.image_size)
            self.out_dim += self.cnn.out_dim
        if lay.vec_keys:
            self.mlp = dreamer_mlp(sum(lay.vec_dims), None, hidden, layers)
            self.out_dim += hidden if layers else sum(lay.vec_dims)

    def forward(self, obs: Any, lead: int = 2) -> torch.Tensor:
        lay, out = self.layout, []
        if lay.img_keys:
            imgs = lay.parts(obs, lay.img_keys)
            ld = imgs[0].shape[:lead]
            x = _cat([i.reshape(-1, *i.shape[lead:]) for i in imgs], 1)
            out.append(self.cnn(x).reshape(*ld, -1))
        if lay.vec_keys:
            vecs = lay.parts(obs, lay.vec_keys)
            ld = vecs[0].shape[:lead]
            out.append(self.mlp(symlog(_cat([v.reshape(*ld, -1).float() for v in vecs], -1))))
        return _cat(out, -1)


class ObsDecoder(nn.Module):
    """Features [*lead, feat_dim] -> observations. Images: `ConvDecoder` in the encoder's [-0.5, 0.5]
    scale; vectors: an MLP predicting symlog(obs)."""

    def __init__(self, feat_dim: int, obs_space: gym.Space, depth: int, hidden: int, layers: int, who: str = "model"):
        super().__init__()
        self.layout = lay = obs_layout(obs_space, who)
        self.feat_dim = int(feat_dim)
        if lay.img_keys:
            self.cnn = ConvDecoder(feat_dim, sum(lay.img_channels), depth, stages=STAGES, image_size=lay.image_size)
        if lay.vec_keys:
            self.mlp = dreamer_mlp(feat_dim, sum(lay.vec_dims), hidden, layers)

    def loss(self, feat: torch.Tensor, obs: Any) -> torch.Tensor:
        """Reconstruction loss [*lead]: squared error summed over pixels (targets in [-0.5, 0.5]; uint8
        images are mapped there) plus squared error of symlog(vectors) summed over dims."""
        lay, lead = self.layout, feat.shape[:-1]
        rec = None
        if lay.img_keys:
            n = lead.numel()
            pred = self.cnn(feat.reshape(n, -1)).float()
            tgt = _cat([i.reshape(n, *i.shape[len(lead):]) for i in lay.parts(obs, lay.img_keys)], 1)
            tgt = tgt.float() / 255.0 - 0.5 if tgt.dtype == torch.uint8 else tgt.float()
            rec = (pred - tgt).square().sum((1, 2, 3)).reshape(lead)
        if lay.vec_keys:
            tgt = symlog(_cat([v.reshape(*lead, -1).float() for v in lay.parts(obs, lay.vec_keys)], -1))
            r = (self.mlp(feat).float() - tgt).square().sum(-1)
            rec = r if rec is None else rec + r
        return rec

    def decode(self, feat: torch.Tensor) -> Any:
        """Observations in the env's scale (images as uint8-range floats [0, 255]); a dict for dict
        spaces, else the tensor."""
        lay, lead = self.layout, feat.shape[:-1]
        out: dict[str, torch.Tensor] = {}
        if lay.img_keys:
            img = self.cnn(feat.reshape(-1, self.feat_dim))
            img = ((img.float() + 0.5) * 255.0).clamp(0, 255)
            for k, part in zip(lay.img_keys, img.split(list(lay.img_channels), 1)):
                out[k] = part.reshape(*lead, *part.shape[1:])
        if lay.vec_keys:
            vec = symexp(self.mlp(feat).float())
            for k, shape, part in zip(lay.vec_keys, lay.vec_shapes, vec.split(list(lay.vec_dims), -1)):
                out[k] = part.reshape(*lead, *shape)
        return out if lay.dict_obs else next(iter(out.values()))


class CategoricalLatent(nn.Module):
    """`stoch` one-hot categoricals of `classes` classes each, flattened to [*, dim] (dim = stoch *
    classes); log-probabilities are mixed with `unimix` uniform (DreamerV3 `rssm.unimix: 0.01`).
    No parameters."""

    def __init__(self, stoch: int, classes: int, unimix: float = 0.01):
        super().__init__()
        self.stoch, self.classes, self.unimix = int(stoch), int(classes), float(unimix)
        self.dim = self.stoch * self.classes

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(*x.shape[:-1], self.stoch, self.classes)

    def mix(self, logits: torch.Tensor) -> torch.Tensor:
        """Raw logits [*, dim] -> log-probs [*, dim] of (1 - unimix) * softmax + unimix / classes."""
        lg = self._split(logits)
        lp = unimix_logits(lg, self.unimix) if self.unimix > 0 else torch.log_softmax(lg.float(), -1)
        return lp.reshape(logits.shape)

    def sample(self, logp: torch.Tensor) -> torch.Tensor:
        """One-hot sample per categorical (Gumbel-max) [*, dim], straight-through gradient to the probs."""
        lg = self._split(logp)
        u = torch.rand_like(lg).clamp_(1e-20, 1.0)
        idx = (lg.detach() - torch.log(-torch.log(u))).argmax(-1)
        hard = F.one_hot(idx, self.classes).to(lg.dtype)
        return straight_through(hard, lg.exp()).reshape(logp.shape)

    def kl(self, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
        """KL(p || q) summed over the categoricals: log-probs [*, dim] -> [*]."""
        return categorical_kl(self._split(logp), self._split(logq)).sum(-1)

    def entropy(self, logp: torch.Tensor) -> torch.Tensor:
        """Entropy summed over the categoricals: log-probs [*, dim] -> [*]."""
        return -(logp.exp() * logp).sum(-1)


class RewardHead(nn.Module):
    """Two-hot regression over `bins` symexp-spaced bins (reference `symexp_twohot`), `layers` x `units`
    MLP with a zero-initialised output, so every initial prediction is exactly 0."""

    def __init__(self, feat_dim: int, units: int, layers: int, bins: int = 255):
        super().__init__()
        self.net = dreamer_mlp(feat_dim, bins, units, layers, out_scale=0.0)
        self.register_buffer("bins", symexp_bins(bins), persistent=False)

    def dist(self, feat: torch.Tensor) -> TwoHot:
        return TwoHot(self.net(feat), self.bins)

    def mean(self, feat: torch.Tensor) -> torch.Tensor:
        """Predicted value [*] of features [*, F]."""
        return self.dist(feat).mean()

    def loss(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Two-hot cross-entropy [*] of `target` [*]."""
        return self.dist(feat).loss(target.float())


class ContinueHead(nn.Module):
    """Bernoulli continue flag (1 - terminated) from features: `layers` x `units` MLP, one logit."""

    def __init__(self, feat_dim: int, units: int, layers: int):
        super().__init__()
        self.net = dreamer_mlp(feat_dim, 1, units, layers)

    def logit(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat).squeeze(-1).float()

    def prob(self, feat: torch.Tensor) -> torch.Tensor:
        """P(continue) [*] of features [*, F]."""
        return torch.sigmoid(self.logit(feat))

    def loss(self, feat: torch.Tensor, cont_target: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy [*] against continue targets in [0, 1]."""
        return F.binary_cross_entropy_with_logits(self.logit(feat), cont_target.float(), reduction="none")


def latent_model_loss(model: Any, post_logits: torch.Tensor, prior_logits: torch.Tensor, feat: torch.Tensor, rec: torch.Tensor,
                      batch: Mapping) -> tuple[torch.Tensor, dict[str, float]]:
    """rec_scale * rec + rew_scale * reward + con_scale * continue + kl_dyn * max(free, KL[sg(post) || prior])
    + kl_rep * max(free, KL[post || sg(prior)]), averaged over [B, T] (DreamerV3 sec. "World model learning").
    `model` has `latent`, `reward_head`, `cont_head` and those scales; `feat` are what the heads read and
    `rec` the decoder's loss [B, T]. Returns (loss, metrics)."""
    latent = model.latent
    dyn = kl_free_bits(latent.kl(post_logits.detach(), prior_logits), model.free_nats)
    rep = kl_free_bits(latent.kl(post_logits, prior_logits.detach()), model.free_nats)
    rew_loss = model.reward_head.loss(feat, batch["reward"])
    con_loss = model.cont_head.loss(feat, 1.0 - batch["terminated"].float())
    total = (model.rec_scale * rec + model.rew_scale * rew_loss + model.con_scale * con_loss
             + model.kl_dyn * dyn + model.kl_rep * rep).mean()
    with torch.no_grad():
        metrics = {
            "wm/loss": total.detach(),
            "wm/rec": rec.mean(),
            "wm/rew": rew_loss.mean(),
            "wm/con": con_loss.mean(),
            "wm/kl": latent.kl(post_logits, prior_logits).mean(),
            "wm/dyn": dyn.mean(),
            "wm/rep": rep.mean(),
            "wm/prior_ent": latent.entropy(prior_logits).mean(),
        }
        vals = torch.stack([v.float() for v in metrics.values()]).tolist()
    return total, dict(zip(metrics.keys(), vals))


def episode_tokens(z: torch.Tensor, act: torch.Tensor, is_first: torch.Tensor, stoch0: torch.Tensor, prev_act: torch.Tensor,
                   fresh: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The (z, a) token sequence of a token-per-step backbone (Mamba-2, S5) over a [B, T] batch in stream
    layout: token k = (z_{k-1}, a_{k-1}), token 0 = (stoch0, prev_act) from the state the call continues
    (`stoch0` [B, S], `prev_act` [B, A], both already in the backbone's input form). Returns (tokens [B, T, S+A],
    drop [B, T] bool): token k belongs to an episode that ended before step k (`is_first[:, k]`), or, when the
    call continues no state (`fresh`), token 0 stands for nothing."""
    B = z.shape[0]
    tokens = torch.cat([torch.cat([stoch0.reshape(B, 1, -1).to(z.dtype), prev_act.reshape(B, 1, -1).to(z.dtype)], -1),
                        torch.cat([z[:, :-1], act[:, :-1].to(z.dtype)], -1)], 1)
    drop = is_first.bool().clone()
    if fresh:
        drop[:, 0] = True
    return tokens, drop
