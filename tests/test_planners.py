import pytest
import torch

from mbrl.planners import PLANNERS, colored_noise, make_planner
from mbrl.errors import UserError

TARGET = torch.tensor([[0.3, -0.5], [0.6, 0.1], [-0.2, 0.4], [0.0, -0.7]])  # [H=4, A=2]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: see conftest


def quad(a: torch.Tensor) -> torch.Tensor:
    return -((a - TARGET) ** 2).sum((1, 2))


OPTS = {
    "random": dict(population=20000),
    "cem": dict(population=400, iterations=6),
    "icem": dict(population=400, iterations=6, noise_beta=1.0),
    "mppi": dict(population=500, iterations=6, gamma=50.0, sigma=0.5),
}
TOL = {"random": 0.35, "cem": 0.05, "icem": 0.05, "mppi": 0.1}


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_finds_quadratic_optimum(name):
    torch.manual_seed(0)
    p = make_planner(name, 2, seed=1, **OPTS[name])
    sol = p.plan(quad, -1.0, 1.0, 4)
    assert sol.shape == (4, 2)
    err = (sol - TARGET).abs().max().item()
    assert err < TOL[name], (name, err)
    # strictly better than doing nothing and than a random sequence
    assert quad(sol[None]).item() > quad(torch.zeros(1, 4, 2)).item()


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_action_bounds(name):
    # optimum outside the box: the solution must sit on the bounds and never leave them
    lo, hi = torch.tensor([-0.2, 0.0]), torch.tensor([0.1, 0.5])
    seen = []

    def score(a):
        seen.append(a.clone())
        return -((a - torch.tensor([1.0, -1.0])) ** 2).sum((1, 2))

    p = make_planner(name, 2, seed=0, **OPTS[name])
    sol = p.plan(score, lo, hi, 3)
    allc = torch.cat([s.reshape(-1, 2) for s in seen])
    assert (allc >= lo - 1e-6).all() and (allc <= hi + 1e-6).all()
    assert (sol >= lo - 1e-6).all() and (sol <= hi + 1e-6).all()
    if name != "random":
        assert torch.allclose(sol[:, 0], torch.full((3,), 0.1), atol=0.06), sol
        assert torch.allclose(sol[:, 1], torch.full((3,), 0.0), atol=0.06), sol


@pytest.mark.parametrize("name", ["cem", "icem", "mppi"])
def test_warm_start_shifts_previous_solution(name):
    # a time-varying optimum that moves one step each call: the warm-started planner, with a
    # single cheap iteration, tracks it far better than a cold one
    H = 6
    traj = torch.linspace(-0.8, 0.8, 40).unsqueeze(-1)
    opts = dict(OPTS[name], iterations=1, population=200)

    def run(warm: bool) -> float:
        p = make_planner(name, 1, seed=3, **opts)
        for k in range(3):  # let it converge on the first window
            p.plan(lambda a: -((a - traj[0:H]) ** 2).sum((1, 2)), -1, 1, H)
        errs = []
        for t in range(1, 20):
            if not warm:
                p.reset()
            tgt = traj[t : t + H]
            sol = p.plan(lambda a, tgt=tgt: -((a - tgt) ** 2).sum((1, 2)), -1, 1, H)
            errs.append((sol[0] - tgt[0]).abs().item())
        return sum(errs) / len(errs)

    assert run(True) < 0.5 * run(False)


def test_warm_start_is_shifted_by_one():
    p = make_planner("cem", 1, population=4000, iterations=1, seed=0)
    p._prev = torch.arange(5.0).unsqueeze(-1) / 10
    seen = []
    p.plan(lambda a: (seen.append(a.clone()), torch.zeros(a.shape[0]))[1], -1, 1, 5)
    mean = seen[0].mean(0).squeeze(-1)
    assert torch.allclose(mean, torch.tensor([0.1, 0.2, 0.3, 0.4, 0.4]), atol=0.05)
    p.reset()
    assert p._prev is None


def test_colored_noise_spectrum():
    g = torch.Generator().manual_seed(0)
    white = colored_noise(0.0, (4000, 32, 1), g)
    red = colored_noise(2.0, (4000, 32, 1), g)
    for x in (white, red):
        assert abs(x.std().item() - 1.0) < 0.05
    lag1 = lambda x: (x[:, 1:] * x[:, :-1]).mean().item()
    assert abs(lag1(white)) < 0.05 and lag1(red) > 0.8


def test_bad_options_one_line_errors():
    with pytest.raises(UserError, match="valid"):
        make_planner("nope", 2)
    with pytest.raises(UserError, match="unknown option"):
        make_planner("cem", 2, popsize=3)
    with pytest.raises(UserError):
        make_planner("cem", 2).plan(quad, 1.0, -1.0, 4)


@pytest.mark.parametrize("name", sorted(PLANNERS))
def test_every_planner_takes_proposals(name):
    """Proposals [P, H, A] are scored among the candidates (a perfect one is found at once) and bad shapes fail in one line."""
    seen = []

    def score(a):
        seen.append(a.shape[0])
        return quad(a)

    opts = dict(OPTS[name], population=64, **({} if name == "random" else {"iterations": 1}))
    p = make_planner(name, 2, seed=0, **opts)
    sol = p.plan(score, -1.0, 1.0, 4, proposals=TARGET.unsqueeze(0))
    assert (sol - TARGET).abs().max().item() < (0.35 if name == "mppi" else 1e-6), name  # mppi executes a weighted mean
    assert seen == [64] or name == "icem"
    with pytest.raises(UserError, match="proposals"):
        make_planner(name, 2, **dict(OPTS[name], population=64)).plan(quad, -1.0, 1.0, 4, proposals=torch.zeros(2, 3, 2))


def test_mppi_with_a_good_proposal_finds_the_optimum_faster():
    """TD-MPC2's MPPI (512 samples, 64 elites, temperature 0.5, std in [0.05, 2]) on a known quadratic: with 24
    proposals near the optimum (a good policy prior), 2 iterations get closer than 6 iterations without them."""
    g = torch.Generator().manual_seed(0)
    opts = dict(population=512, num_elites=64, gamma=0.5, std_min=0.05, std_max=2.0, beta=1.0)
    sharp = lambda a: 50.0 * quad(a)  # noqa: E731  (returns in the scale of a value function)

    def err(iterations, proposals):
        errs = []
        for s in range(5):
            p = make_planner("mppi", 2, seed=s, iterations=iterations, **opts)
            errs.append((p.plan(sharp, -1.0, 1.0, 4, proposals=proposals) - TARGET).abs().max().item())
        return sum(errs) / len(errs)

    good = (TARGET + 0.05 * torch.randn(24, 4, 2, generator=g)).clamp(-1, 1)
    with_prop, without = err(2, good), err(6, None)
    assert with_prop < 0.6 * without, (with_prop, without)
    # the adaptive std stays inside its bounds (units of half the action range)
    p = make_planner("mppi", 2, seed=0, iterations=6, **opts)
    p.plan(sharp, -1.0, 1.0, 4)
    assert 0.05 - 1e-6 <= float(p.last_std.min()) and float(p.last_std.max()) <= 2.0 + 1e-6
