"""The WorldModel contract, for every registered backbone (`mbrl.models.names()`).

A backbone that registers itself is tested here without a line of new test code: each is built at its
`tiny` size from its config group (`configs/model/<name>.yaml` merged with the class's `tiny` dict),
for a vector observation with continuous actions, a vector observation with Discrete(3) actions and
16x16 pixels with continuous actions. A space the backbone does not support must be refused at
construction with a one-line `UserError`; that case is skipped with the message as its reason.

Toy batches are [B=4, T=8] in the replay buffer's sequence layout (obs, action taken at obs, reward /
terminated / truncated of the transition that arrived at obs, is_first, is_last), with episode starts
at t=0 and mid-sequence resets (row 1: truncation, row 2: termination).
"""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import mbrl.models as models
from mbrl.config import load_group
from mbrl.data.batch import Batch
from mbrl.errors import UserError
from mbrl.models.base import SIGNALS, Members, State, Tracker, Trajectory

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, H = 4, 8, 3
RESET_ROW, RESET_T = 1, 4  # row 1: episode truncated at t=3, the next one starts at t=4
TERM_ROW, TERM_T = 2, 6  # row 2: episode terminated at t=5, the next one starts at t=6

SPACES = {
    "vector": (gym.spaces.Box(-1.0, 1.0, (5,), np.float32), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)),
    "discrete": (gym.spaces.Box(-1.0, 1.0, (5,), np.float32), gym.spaces.Discrete(3)),
    "pixels": (gym.spaces.Box(0, 255, (3, 16, 16), np.uint8), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)),
}
#: backbones left out of the per-space cases, with the reason (each is tested where named)
EXCLUDED = {"oracle": "the true simulator (model=oracle) needs the env whose state it sets (gym MuJoCo, toy/point), so it refuses "
                      "these synthetic spaces, and it has no parameters to train; tested in tests/test_offline_datasets.py"}
BACKBONES = [n for n in models.names() if n not in EXCLUDED]
CASES = [pytest.param(n, s, id=f"{n}-{s}") for n in BACKBONES for s in SPACES]
VECTOR = [pytest.param(n, "vector", id=f"{n}-vector") for n in BACKBONES]


# ------------------------------------------------------------------------------------------ helpers
def model_cfg(name: str, **extra) -> dict:
    """The backbone's config group merged with its `tiny` dict (and `extra` keys)."""
    cfg = OmegaConf.to_container(load_group("model", name), resolve=True)
    cfg.update(models.get(name).tiny)
    cfg.update(extra)
    return cfg


def one_line(msg: str) -> str:
    msg = str(msg)
    assert msg.strip() and len(msg.strip().splitlines()) == 1, f"a UserError must be one line: {msg!r}"
    return msg.strip()


def build(name: str, space: str, seed: int = 0, **extra):
    """The tiny model, or a skip when the backbone refuses the space (with a one-line UserError)."""
    obs_space, action_space = SPACES[space]
    try:
        return models.build(model_cfg(name, **extra), obs_space, action_space, seed=seed)
    except UserError as e:
        pytest.skip(f"model={name} does not support {space} ({obs_space}, {action_space}): {one_line(e)}")


def toy_batch(space: str, seed: int = 0) -> Batch:
    """A fixed [B, T] sequence batch in the buffer's stream layout."""
    g = torch.Generator().manual_seed(seed)
    obs_space, action_space = SPACES[space]
    if space == "pixels":
        obs = torch.randint(0, 256, (B, T, *obs_space.shape), generator=g, dtype=torch.uint8)
    else:
        obs = torch.rand(B, T, *obs_space.shape, generator=g) * 2 - 1
    if isinstance(action_space, gym.spaces.Discrete):
        action = torch.randint(0, int(action_space.n), (B, T), generator=g)
    else:
        action = torch.rand(B, T, *action_space.shape, generator=g) * 2 - 1
    reward = torch.rand(B, T, generator=g) - 0.5
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_last = torch.zeros(B, T, dtype=torch.bool)
    terminated = torch.zeros(B, T, dtype=torch.bool)
    truncated = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[RESET_ROW, RESET_T] = is_last[RESET_ROW, RESET_T - 1] = truncated[RESET_ROW, RESET_T - 1] = True
    is_first[TERM_ROW, TERM_T] = is_last[TERM_ROW, TERM_T - 1] = terminated[TERM_ROW, TERM_T - 1] = True
    reward[is_first] = 0.0
    action[is_last] = 0  # the buffer stores no action at an episode's last observation
    return Batch(obs=obs, action=action, reward=reward, terminated=terminated, truncated=truncated, is_first=is_first, is_last=is_last)


def transition_batch(space: str, n: int = 16, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs_space, action_space = SPACES[space]
    obs = torch.rand(n, *obs_space.shape, generator=g) * 2 - 1
    nxt = (obs + 0.1 * torch.randn(n, *obs_space.shape, generator=g)).clamp(-1, 1)
    if isinstance(action_space, gym.spaces.Discrete):
        action = torch.randint(0, int(action_space.n), (n,), generator=g)
    else:
        action = torch.rand(n, *action_space.shape, generator=g) * 2 - 1
    return Batch(obs=obs, action=action, reward=torch.rand(n, generator=g), next_obs=nxt, terminated=torch.zeros(n, dtype=torch.bool),
                 truncated=torch.zeros(n, dtype=torch.bool), is_first=torch.zeros(n, dtype=torch.bool))


def make_policy(model, seed: int = 0):
    """A fixed policy on features: tanh of a random projection (continuous) or its argmax one-hot."""
    w = torch.randn(model.feat_dim, model.action_dim, generator=torch.Generator().manual_seed(seed))

    def policy(f: torch.Tensor) -> torch.Tensor:
        h = f.float() @ w
        if model.discrete:
            return torch.nn.functional.one_hot(h.argmax(-1), model.action_dim).float()
        return torch.tanh(h)

    return policy


def open_loop_actions(model, n: int, horizon: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if model.discrete:
        return torch.nn.functional.one_hot(torch.randint(0, model.action_dim, (n, horizon), generator=g), model.action_dim).float()
    return torch.rand(n, horizon, model.action_dim, generator=g) * 2 - 1


def last_actions(model, batch: Batch) -> torch.Tensor:
    """Model-format actions [B, A] (float; one-hot for discrete) taken at the batch's last step."""
    a = model.action_input(batch.action[:, -1])
    assert a.dtype.is_floating_point and a.shape == (B, model.action_dim)
    return a


def posterior(model, batch: Batch, seed: int = 0) -> State:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.observe(batch.obs, batch.action, batch.is_first)


def finite(x: torch.Tensor) -> bool:
    return bool(torch.isfinite(x.float()).all())


# ------------------------------------------------------------------------------------------ the protocol
def test_registry():
    names = models.names()
    assert "ensemble" in names and names == sorted(names)
    for n in names:
        cls = models.get(n)
        assert cls.name == n and isinstance(cls.tiny, dict) and cls.tiny, f"model={n} needs a non-empty `tiny` dict"
        assert cls.train_on in ("transitions", "sequences")
        assert set(cls.native_signals) <= set(SIGNALS), (n, cls.native_signals)
        assert OmegaConf.to_container(load_group("model", n))["name"] == n
    with pytest.raises(UserError) as e:
        models.get("no-such-model")
    assert "valid:" in one_line(e.value)


@pytest.mark.parametrize("name,space", CASES)
def test_shapes(name, space):
    model = build(name, space)
    batch = toy_batch(space)
    F = model.feat_dim
    assert F > 0 and model.action_dim == (3 if space == "discrete" else 2) and model.discrete == (space == "discrete")
    post = posterior(model, batch)
    assert isinstance(post, State) and tuple(post.batch_shape) == (B, T)
    feats = model.features(post)
    assert feats.shape == (B, T, F) and finite(feats)
    with torch.no_grad():
        nxt = model.step(post[:, -1], last_actions(model, batch))
        assert tuple(nxt.batch_shape) == (B,) and model.features(nxt).shape == (B, F)
        r, c = model.reward(nxt), model.cont(nxt)
        assert r.shape == (B,) and c.shape == (B,) and finite(r) and finite(c)
        assert bool(((c >= 0) & (c <= 1)).all()), c
        init = model.initial(B)
        assert tuple(init.batch_shape) == (B,) and model.features(init).shape == (B, F)
        s2 = model.step(init, last_actions(model, batch))
        assert model.features(s2).shape == (B, F) and finite(model.features(s2))
        # states flattened over [B, T] step like a batch of B*T (how Dreamer imagines from every posterior state)
        flat = model.step(post.reshape(-1), model.action_input(batch.action).reshape(B * T, -1))
        assert tuple(flat.batch_shape) == (B * T,) and model.reward(flat).shape == (B * T,)
    if model.has_decoder:
        rec = model.decode(post)
        leaves = list(rec.values()) if isinstance(rec, dict) else [rec]
        assert all(torch.is_tensor(x) and x.shape[:2] == (B, T) for x in leaves)


@pytest.mark.parametrize("name,space", CASES)
def test_imagine(name, space):
    model = build(name, space)
    batch = toy_batch(space)
    F, A = model.feat_dim, model.action_dim
    start = posterior(model, batch)[:, -1]
    policy = make_policy(model)
    with torch.no_grad():
        traj = model.imagine(start, policy, H)
    assert isinstance(traj, Trajectory)
    assert traj.features.shape == (H + 1, B, F) and traj.actions.shape == (H + 1, B, A)
    assert traj.rewards.shape == (H, B) and traj.conts.shape == (H, B) and traj.signals == {}
    assert tuple(traj.states.batch_shape) == (H + 1, B)
    assert finite(traj.features) and finite(traj.rewards) and bool(((traj.conts >= 0) & (traj.conts <= 1)).all())
    # written on top of step: features / rewards / conts are those of the stored states, the policy's actions
    torch.testing.assert_close(traj.features[0], model.features(start))
    torch.testing.assert_close(traj.features, model.features(traj.states))
    torch.testing.assert_close(traj.rewards, model.reward(traj.states[1:]))
    torch.testing.assert_close(traj.conts, model.cont(traj.states[1:]))
    torch.testing.assert_close(traj.actions, policy(traj.features))
    # open loop: actions [B, H, A] are applied in order, the last (unapplied) action is zeros
    acts = open_loop_actions(model, B, H)
    with torch.no_grad():
        ol = model.imagine(start, acts, H)
        lean = model.imagine(start, acts, H, keep_states=False)
    assert ol.features.shape == (H + 1, B, F) and ol.rewards.shape == (H, B) and ol.conts.shape == (H, B)
    torch.testing.assert_close(ol.actions[:H], acts.transpose(0, 1))
    assert not ol.actions[H].any()
    assert lean.states is None and lean.features.shape == (H + 1, B, F) and lean.rewards.shape == (H, B)
    with pytest.raises(ValueError):
        model.imagine(start, acts[:, :1], H)
    # the predicted future depends on the actions
    other = open_loop_actions(model, B, H, seed=1)
    with torch.no_grad():
        torch.manual_seed(0)
        ya = model.imagine(start, acts, H, keep_states=False)
        torch.manual_seed(0)
        yb = model.imagine(start, other, H, keep_states=False)
    assert not torch.allclose(ya.features[1:], yb.features[1:]), "step ignores its action"


def _check_signal(name: str, value, lead: tuple, F: int) -> None:
    if name == "members":
        assert isinstance(value, Members)
        K = value.features.shape[1 if len(lead) > 1 else 0]
        if len(lead) == 1:  # [K, B, F]
            assert value.features.shape == (K, *lead, F) and value.reward.shape == (K, *lead)
            assert value.cont is None or value.cont.shape == (K, *lead)
        else:  # imagined: [H, K, B, F]
            assert value.features.shape == (lead[0], K, *lead[1:], F) and value.reward.shape == (lead[0], K, *lead[1:])
            assert value.cont is None or value.cont.shape == (lead[0], K, *lead[1:])
        assert K >= 2 and finite(value.features) and finite(value.reward)
    else:
        assert torch.is_tensor(value) and value.shape == lead and finite(value) and bool((value >= 0).all()), (name, value)


@pytest.mark.parametrize("name,space", CASES)
def test_uncertainty(name, space):
    model = build(name, space)
    batch = toy_batch(space)
    state, action = posterior(model, batch)[:, -1], last_actions(model, batch)
    assert set(model.signals) == set(model.native_signals) <= set(SIGNALS)
    for sig in sorted(model.signals):
        out = model.uncertainty(state, action, [sig])
        assert set(out) == {sig}
        _check_signal(sig, out[sig], (B,), model.feat_dim)
    for sig in [s for s in SIGNALS if s not in model.signals] + ["no-such-signal"]:
        with pytest.raises(UserError) as e:
            model.uncertainty(state, action, [sig])
        assert sig in one_line(e.value) and "model.heads" in str(e.value)


@pytest.mark.parametrize("name,space", CASES)
def test_heads_give_every_signal(name, space):
    model = build(name, space, heads=3, heads_hidden=16)
    assert model.heads is not None and set(SIGNALS) <= set(model.signals)
    batch = toy_batch(space)
    state, action = posterior(model, batch)[:, -1], last_actions(model, batch)
    out = model.uncertainty(state, action, list(SIGNALS))
    assert set(out) == set(SIGNALS)
    for sig in SIGNALS:
        _check_signal(sig, out[sig], (B,), model.feat_dim)
    # the heads themselves (they are what a backbone without native signals uses)
    own = model.heads.uncertainty(model.features(state), action, list(SIGNALS))
    for sig in SIGNALS:
        _check_signal(sig, own[sig], (B,), model.feat_dim)
    assert own["members"].features.shape[0] == 3
    with torch.no_grad():
        traj = model.imagine(state, make_policy(model), H, signals=list(SIGNALS), keep_states=False)
    assert set(traj.signals) == set(SIGNALS)
    for sig in SIGNALS:
        _check_signal(sig, traj.signals[sig], (H, B), model.feat_dim)
    # the heads are trained by the model's loss (on detached posterior features)
    model.zero_grad()
    loss, metrics, _ = model.loss(batch)
    loss.backward()
    grads = [p.grad for p in model.heads.parameters()]
    assert all(g is not None for g in grads) and any(bool(g.abs().sum() > 0) for g in grads)
    with pytest.raises(UserError) as e:
        models.build(model_cfg(name, heads=-1), *SPACES[space], seed=0)
    assert "model.heads" in one_line(e.value)


@pytest.mark.parametrize("name,space", VECTOR)
def test_state_ops(name, space):
    model = build(name, space)
    batch = toy_batch(space)
    post = posterior(model, batch)
    feats = model.features(post)
    F = model.feat_dim
    last = post[:, -1]
    assert tuple(last.batch_shape) == (B,)
    torch.testing.assert_close(model.features(last), feats[:, -1])
    assert tuple(post[0].batch_shape) == (T,) and tuple(post[1:3].batch_shape) == (2, T)
    torch.testing.assert_close(model.features(post[1:3]), feats[1:3])
    idx = torch.tensor([3, 0, 0])
    torch.testing.assert_close(model.features(last[idx]), feats[idx, -1])
    # detach: no tensor of the state requires grad any more
    _, _, live = model.loss(batch)
    g = model.observe(batch.obs, batch.action, batch.is_first)
    for s in (live, g.detach()):
        assert not any(torch.is_tensor(v) and v.requires_grad for v in (getattr(s, f.name) for f in dataclasses.fields(s)))
    # repeat: row-major (row i -> rows i*n .. i*n+n-1); tile: copy-major (row j*B + b is copy j of row b)
    n = 3
    rep, til = last.repeat(n), last.tile(n)
    assert tuple(rep.batch_shape) == (n * B,) and tuple(til.batch_shape) == (n * B,)
    torch.testing.assert_close(model.features(rep), feats[:, -1].repeat_interleave(n, 0))
    torch.testing.assert_close(model.features(til), feats[:, -1].repeat(n, 1))
    # reshape of the leading dims
    flat = post.reshape(-1)
    assert tuple(flat.batch_shape) == (B * T,)
    torch.testing.assert_close(model.features(flat), feats.reshape(B * T, F))
    assert tuple(flat.reshape(B, T).batch_shape) == (B, T)
    # stack / cat
    st = State.stack([last, post[:, 0]])
    assert tuple(st.batch_shape) == (2, B)
    torch.testing.assert_close(model.features(st), torch.stack([feats[:, -1], feats[:, 0]]))
    assert tuple(State.cat([last, last[:2]]).batch_shape) == (B + 2,)
    # particles: n copies of every row, copy-major; stepping them works
    part = model.repeat_particles(last, n)
    assert tuple(part.batch_shape) == (n * B,)
    torch.testing.assert_close(model.features(part), feats[:, -1].repeat(n, 1))
    with torch.no_grad(), model.inference():
        s = model.step(part, open_loop_actions(model, n * B, 1)[:, 0])
    assert tuple(s.batch_shape) == (n * B,) and model.reward(s).shape == (n * B,) and finite(model.reward(s))


@pytest.mark.parametrize("name,space", CASES)
def test_is_first_resets(name, space):
    """The posterior after a reset does not depend on what came before it; before the reset it does."""
    model = build(name, space)
    batch = toy_batch(space)
    post = posterior(model, batch, seed=3)
    feats = model.features(post)
    if model.markov_obs:  # a state is the observation itself: features(observe(obs)) == obs
        torch.testing.assert_close(feats, batch.obs.float().reshape(B, T, -1))
        return
    changed = Batch(batch)
    obs, act = batch.obs.clone(), batch.action.clone()
    if space == "pixels":
        obs[RESET_ROW, :RESET_T] = 255 - obs[RESET_ROW, :RESET_T]
    else:
        obs[RESET_ROW, :RESET_T] = -obs[RESET_ROW, :RESET_T]
    act[RESET_ROW, : RESET_T - 1] = (act[RESET_ROW, : RESET_T - 1] + 1) % 3 if space == "discrete" else -act[RESET_ROW, : RESET_T - 1]
    changed["obs"], changed["action"] = obs, act
    feats2 = model.features(posterior(model, changed, seed=3))
    torch.testing.assert_close(feats2[RESET_ROW, RESET_T:], feats[RESET_ROW, RESET_T:], msg="the posterior after is_first depends on the past")
    assert not torch.allclose(feats2[RESET_ROW, :RESET_T], feats[RESET_ROW, :RESET_T]), "the posterior ignores its observations"
    other = [i for i in range(B) if i != RESET_ROW]
    torch.testing.assert_close(feats2[other], feats[other])
    # a continuation with an explicit `state`: resetting there ignores the state carried in
    with torch.no_grad():
        torch.manual_seed(4)
        firsts = torch.ones(B, T - 4, dtype=torch.bool)
        a = model.observe(batch.obs[:, 4:], batch.action[:, 4:], firsts, state=post[:, 3], prev_action=model.action_input(batch.action[:, 3]))
        torch.manual_seed(4)
        b = model.observe(batch.obs[:, 4:], batch.action[:, 4:], firsts)
    torch.testing.assert_close(model.features(a), model.features(b))


@pytest.mark.parametrize("name,space", CASES)
def test_loss_trains(name, space):
    model = build(name, space)
    batch = toy_batch(space)
    loss, metrics, post = model.loss(batch)
    assert loss.dim() == 0 and finite(loss) and loss.requires_grad
    assert isinstance(metrics, dict) and metrics and all(isinstance(v, float) and np.isfinite(v) for v in metrics.values()), metrics
    assert tuple(post.batch_shape) == (B, T) and model.features(post).shape == (B, T, model.feat_dim)
    assert not model.features(post).requires_grad  # detached imagination starts
    # the loss trains the whole model: every parameter gets a gradient
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, f"parameters without a gradient from loss(): {dead}"
    model.zero_grad()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(30):
        loss, _, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    first, last5 = losses[0], float(np.mean(losses[-5:]))
    assert last5 < first - 0.05 * abs(first) - 1e-3, f"loss did not decrease: {losses}"
    if model.train_on == "transitions":
        tb = transition_batch(space)
        tl, tm, tpost = model.loss(tb)
        assert finite(tl) and tuple(tpost.batch_shape) == (16,) and all(np.isfinite(v) for v in tm.values())
        if model.num_members > 1:  # per-member rows [E, N] (a bootstrap)
            E = model.num_members
            rows = Batch({k: torch.stack([v] * E) for k, v in tb.items()})
            el, _, epost = model.loss(rows)
            assert finite(el) and tuple(epost.batch_shape) == (E, 16)


@pytest.mark.parametrize("name,space", CASES)
def test_state_dict_round_trip(name, space):
    batch = toy_batch(space)
    a, b = build(name, space, seed=0), build(name, space, seed=1)

    def outputs(m):
        m.eval()
        torch.manual_seed(5)
        with torch.no_grad():
            loss = m.loss(batch)[0]
            post = m.observe(batch.obs, batch.action, batch.is_first)
            out = [loss.reshape(1), m.features(post).flatten()]
            s = post[:, -1]
            for sig, v in sorted(m.uncertainty(s, last_actions(m, batch), sorted(m.signals)).items()):
                out += [v.features.flatten(), v.reward.flatten()] if isinstance(v, Members) else [v.flatten()]
        return torch.cat([x.float() for x in out])

    # fitting state that lives in buffers (normalisers, elites) must travel with the weights too
    if space != "pixels":
        a.set_statistics(transition_batch(space))
    a.select_elites(torch.arange(a.num_members, 0, -1).float())
    ya, yb = outputs(a), outputs(b)
    assert not torch.allclose(ya, yb), "two seeds give the same model"
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(outputs(b), ya)


@pytest.mark.parametrize("name,space", VECTOR)
def test_seed_determinism(name, space):
    batch = toy_batch(space)
    rng = torch.get_rng_state()
    a = build(name, space, seed=0)
    assert torch.equal(rng, torch.get_rng_state()), "building a model with a seed touched the global torch RNG"

    def first_loss(m):
        torch.manual_seed(7)
        return float(m.loss(batch)[0].detach())

    b, c = build(name, space, seed=0), build(name, space, seed=1)
    for (k, v), v2 in zip(a.state_dict().items(), b.state_dict().values()):
        assert (torch.equal(v, v2) if torch.is_tensor(v) else v.keys() == v2.keys()), k
    assert first_loss(a) == first_loss(b)
    assert first_loss(a) != first_loss(c)


@pytest.mark.parametrize("name,space", CASES)
def test_tracker(name, space):
    """The acting posterior, one step at a time, is `observe` over the whole sequence."""
    model = build(name, space)
    batch = toy_batch(space)
    tr = Tracker(model, B)
    torch.manual_seed(11)
    feats = []
    with torch.no_grad():
        for t in range(T):
            o = batch.obs[:, t].numpy() if t % 2 == 0 else batch.obs[:, t]  # numpy or torch
            s = tr.observe(o, batch.is_first[:, t].numpy())
            assert tuple(s.batch_shape) == (B,)
            feats.append(model.features(s))
            tr.acted(model.action_input(batch.action[:, t]))
    feats = torch.stack(feats, 1)
    ref = model.features(posterior(model, batch, seed=11))
    torch.testing.assert_close(feats, ref, msg="Tracker disagrees with observe over the sequence")
    # the first observe resets whatever is_first says
    tr2 = Tracker(model, B)
    torch.manual_seed(11)
    with torch.no_grad():
        s0 = tr2.observe(batch.obs[:, 0], np.zeros(B, bool))
    torch.testing.assert_close(model.features(s0), ref[:, 0])
