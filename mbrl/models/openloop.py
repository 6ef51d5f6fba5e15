"""Open-loop prediction videos of any world model with a decoder (DreamerV3's `openl` report).

`open_loop_video(model, obs, action, is_first, context)` takes real sequences [B, T] in the replay
buffer's layout (`action[:, t]` taken at `obs[:, t]`) and uses the WorldModel protocol only:
`observe` on the first `context` frames, `imagine` from the last posterior with the real actions
`action[:, context-1 : T-1]` (open loop: the model never sees frames after the context), `decode`
of the posterior (context) and the imagined states. The video is one frame per time step with,
top to bottom, the real frames, the model's frames (reconstructions in the context, green border;
predictions after it, red border) and their difference ((model - real) / 2 + 0.5 of the range), the
sequences side by side, as in the DreamerV2/V3 reports (`video_pred`: 5 context frames, truth /
model / error rows). So a backbone gains these videos by implementing `decode` (`has_decoder`).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from mbrl.data.batch import tree_map
from mbrl.errors import UserError

CONTEXT = 5  # DreamerV2/V3 reports: 5 context frames, then open-loop predictions
GREEN, RED = (0, 200, 0), (220, 0, 0)


def image_of(obs: Any, lead: int = 2) -> Optional[torch.Tensor]:
    """The image part of observations [*lead, C, H, W] (the first image key of a dict), or None."""
    if isinstance(obs, dict):
        for v in obs.values():
            if torch.is_tensor(v) and v.dim() == lead + 3:
                return v
        return None
    return obs if torch.is_tensor(obs) and obs.dim() == lead + 3 else None


def _decode(model: Any, states: Any) -> Optional[torch.Tensor]:
    """Decoded images of states with leading [B, T] (decoded flat, then reshaped back)."""
    B, T = states.batch_shape[:2]
    out = model.decode(states.reshape(-1))
    img = image_of(out, lead=1) if out is not None else None
    return None if img is None else img.float().reshape(B, T, *img.shape[1:])


def _rgb(x: torch.Tensor) -> np.ndarray:
    """[B, T, C, H, W] values in 0..255 -> uint8 [B, T, H, W, 3]."""
    x = x.float().clamp(0, 255).round().to(torch.uint8).cpu().numpy()
    x = np.moveaxis(x, 2, -1)
    return np.repeat(x, 3, -1) if x.shape[-1] == 1 else x[..., :3]


def _border(frames: np.ndarray, color: tuple[int, int, int]) -> None:
    """A 1-pixel coloured border on frames [..., H, W, 3], in place."""
    c = np.asarray(color, np.uint8)
    frames[..., 0, :, :] = c
    frames[..., -1, :, :] = c
    frames[..., :, 0, :] = c
    frames[..., :, -1, :] = c


def require_decoder(model: Any) -> None:
    """A UserError (one line) unless the model can draw what it predicts (`has_decoder`)."""
    if not getattr(model, "has_decoder", False):
        who = getattr(model, "name", "") or type(model).__name__
        raise UserError(f"model={who} has no decoder, so it cannot draw what it predicts; valid: a backbone with decode (e.g. model=rssm)")


@torch.no_grad()
def open_loop_video(model: Any, obs: Any, action: torch.Tensor, is_first: torch.Tensor, context: int = CONTEXT) -> np.ndarray:
    """uint8 video [T, 3 * H, B * W, 3] of real / model / difference rows (see the module docstring)."""
    require_decoder(model)
    who = getattr(model, "name", "") or type(model).__name__
    truth = image_of(obs)
    if truth is None:
        raise UserError(f"world-model videos need image observations; this run's observations are {type(obs).__name__} without an image "
                        "(valid: a pixel env, e.g. env_kwargs.pixels=true or toy/point-pixels)")
    B, T = truth.shape[:2]
    if T < 2:
        raise UserError(f"world-model video: a sequence of {T} step(s); valid: at least 2 (context + prediction)")
    ctx = max(1, min(int(context), T - 1))
    act = model.action_input(action)
    first = is_first.bool().clone()
    first[:, 0] = True  # every sequence starts from a fresh state
    post = model.observe(tree_map(lambda x: x[:, :ctx], obs), act[:, :ctx], first[:, :ctx])
    recon = _decode(model, post)
    if recon is None:
        raise UserError(f"model={who}: decode gives no image for these observations; world-model videos need image observations")
    traj = model.imagine(post[:, -1], act[:, ctx - 1 : T - 1], T - ctx)
    pred = _decode(model, traj.states[1:].reshape(T - ctx, B))  # [H, B] states -> images [H, B, ...]
    pred = pred.transpose(0, 1)  # [B, H, ...]
    real = _rgb(truth)
    mod = _rgb(torch.cat([recon, pred], 1))
    err = _rgb(((torch.cat([recon, pred], 1) - truth.float()) / 2 + 127.5))
    if mod.shape[-3] >= 8:
        _border(mod[:, :ctx], GREEN)
        _border(mod[:, ctx:], RED)
    video = np.concatenate([real, mod, err], axis=2)  # [B, T, 3H, W, 3]
    return np.ascontiguousarray(np.moveaxis(video, 0, 2).reshape(T, video.shape[2], B * video.shape[3], 3))
