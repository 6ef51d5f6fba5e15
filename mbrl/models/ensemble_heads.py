"""An ensemble of small heads over a backbone's features: `model.heads=K` on any backbone.

K Gaussian MLP heads (one batched matmul, `EnsembleLinear`) each predict the next step's features
and reward from (features(s_t), a_t), trained by Gaussian NLL on the backbone's own posterior
features of real sequences, detached (the heads never shape the representation; Plan2Explore's
one-step ensemble, Sekar et al. 2020, over the model's features instead of its embedding). They give
every backbone the uncertainty signals that the offline methods and optimistic exploration need:
- `disagreement` [B]: norm over feature dims of the std across heads of the predicted means;
- `aleatoric` [B]: max over heads of the norm of the predicted std (MOPO's penalty);
- `members`: each head's next features [K, B, F] and reward [K, B] (MOBILE's Bellman targets).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from mbrl.data.batch import Batch
from mbrl.models.dists import soft_clamp_logvar
from mbrl.models.nets import ensemble_mlp

#: the model config keys the heads take (defined in configs/model/_shared/heads.yaml)
HEAD_KEYS = ("heads", "heads_hidden", "heads_layers")


class FeatureHeads(nn.Module):
    def __init__(self, num_heads: int, feat_dim: int, action_dim: int, hidden: int = 256, layers: int = 2):
        super().__init__()
        self.k, self.feat_dim = int(num_heads), int(feat_dim)
        out = feat_dim + 1  # next features, reward
        self.net = ensemble_mlp(self.k, feat_dim + action_dim, 2 * out, hidden=hidden, layers=layers, act=nn.SiLU)
        self.min_logvar = nn.Parameter(-10.0 * torch.ones(out))
        self.max_logvar = nn.Parameter(0.5 * torch.ones(out))

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [N, F], action [N, A] -> mean, logvar [K, N, F+1] (next features, reward)."""
        h = self.net(torch.cat([features.float(), action.float()], -1)).float()
        mean, logvar = h.chunk(2, -1)
        return mean, soft_clamp_logvar(logvar, self.min_logvar, self.max_logvar)

    def loss_from(self, model: Any, batch: Batch, post: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Gaussian NLL of every head on the posterior transitions of `batch` (detached features)."""
        feat = model.features(post).detach().float()
        if "next_obs" in batch:  # a transition batch of an observation-space model
            f, f2 = feat.reshape(-1, feat.shape[-1]), batch["next_obs"].float().reshape(-1, feat.shape[-1])
            a, r = model.action_input(batch["action"]).reshape(f.shape[0], -1), batch["reward"].float().reshape(-1)
            mask = torch.ones_like(r)
        else:  # sequences [B, T]: transition t -> t+1 where t+1 is not an episode start
            f, f2 = feat[:, :-1].reshape(-1, feat.shape[-1]), feat[:, 1:].reshape(-1, feat.shape[-1])
            a = model.action_input(batch["action"][:, :-1]).reshape(f.shape[0], -1)
            r = batch["reward"][:, 1:].float().reshape(-1)
            mask = (~batch["is_first"][:, 1:].bool()).float().reshape(-1)
        mean, logvar = self(f, a)
        target = torch.cat([f2, r.unsqueeze(-1)], -1)
        nll = (((mean - target) ** 2) * torch.exp(-logvar) + logvar).mean(-1)  # [K, N]
        nll = (nll * mask).sum(-1) / mask.sum().clamp(min=1.0)
        loss = nll.sum() + 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        return loss, {"heads/nll": float(nll.detach().mean())}

    @torch.no_grad()
    def uncertainty(self, features: torch.Tensor, action: torch.Tensor, names: Iterable[str]) -> dict[str, Any]:
        from mbrl.models.base import Members

        lead = features.shape[:-1]
        mean, logvar = self(features.reshape(-1, features.shape[-1]), action.reshape(-1, action.shape[-1]))
        d = self.feat_dim
        out: dict[str, Any] = {}
        for name in names:
            if name == "disagreement":
                out[name] = mean[..., :d].std(0, unbiased=False).norm(dim=-1).reshape(lead)
            elif name == "aleatoric":
                out[name] = torch.exp(0.5 * logvar[..., :d]).norm(dim=-1).amax(0).reshape(lead)
            elif name == "members":
                out[name] = Members(features=mean[..., :d].reshape(self.k, *lead, d), reward=mean[..., d].reshape(self.k, *lead))
        return out
