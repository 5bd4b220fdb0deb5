"""VirtualTaobao (Shi et al., AAAI 2019), re-implemented from a behavioural specification.

The released simulator is three small networks: G samples a user, L samples the user's
hidden page budget ("leave"), and A turns (user, page index, 27-d ranking weights) into a
click count 0..10 plus an unused second output "b". The original code is not used; the
weights ship in ``assets/virtual_taobao`` (see CREDITS.md there).

Everything runs in one batched core over N users, so the single gymnasium env (N=1) and
the vectorised env share the arithmetic. The core samples in one of two ways:

* exact (the single env; the vec env with ``exact_rng=True``): categorical draws are
  ``argmax(probs / E)`` with ``E ~ Exp(1)``, which is what ``torch.multinomial(probs, 1)``
  computes internally on CPU (torch 2.x), draw for draw and in RNG consumption, and users
  are drawn when needed. That lets the N=1 core replay the original simulator's
  trajectories exactly for a given seed, without any Python loop over users.
* fast (the vec env's default): inverse-CDF draws with one uniform each, and replacement
  users taken from a pool generated in bulk. Same per-user distribution, different random
  stream. The race needs an Exp(1) variate per class, and G and L forwards over the few users
  that finish each step are mostly call overhead; at N=256 the two took three times as long
  as the action model itself.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from torch import nn
from torch.nn import functional as F

ASSET_DIR = Path(__file__).parent / "assets" / "virtual_taobao"

USER_DIM = 88
NOISE_DIM = 128
ACTION_DIM = 27
OBS_DIM = USER_DIM + 3
N_CLICK_CLASSES = 11
N_B_CLASSES = 10
N_LEAVE_CLASSES = 101
ITEMS_PER_PAGE = 10
MAX_PAGES = N_LEAVE_CLASSES - 1
# The user vector is 11 concatenated one-hot groups.
GROUP_SIZES = (8, 8, 11, 11, 11, 11, 2, 2, 3, 18, 3)
_GROUP_OFFSETS = np.cumsum((0, *GROUP_SIZES[:-1]))

_METADATA: dict[str, Any] = {
    # A page shows 10 items, so CTR = clicks / (pages * 10) and a page yields 0..10 clicks.
    "items_per_page": ITEMS_PER_PAGE,
    "reward_range": (0.0, float(N_CLICK_CLASSES - 1)),
    # The MACS contract (envs/base.py): one histogram bin per click count, and the score is
    # clicks per page (10 x CTR), so the paper's "4 out of 10" threshold reads directly.
    "reward_bins": N_CLICK_CLASSES,
    "score": "mean_reward",
    "score_range": (0.0, float(N_CLICK_CLASSES - 1)),
}


def _group_runs(sizes: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """(first column, group count, group size) of each run of adjacent equal-size groups.

    A run can be viewed as (N, count, size) and soft-maxed in one call; doing so per row
    gives bit-identical probabilities to soft-maxing each group on its own, whereas padding
    groups to a common width does not (the reduction order changes).
    """
    runs: list[tuple[int, int, int]] = []
    column = 0
    for size in sizes:
        if runs and runs[-1][2] == size:
            start, count, _ = runs[-1]
            runs[-1] = (start, count + 1, size)
        else:
            runs.append((column, 1, size))
        column += size
    return tuple(runs)


class Networks(NamedTuple):
    generator: nn.Sequential
    leave: nn.Sequential
    action: nn.Sequential


_LEAKY_SLOPE = 0.01


def _mlp(*widths: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(widths)):
        if i:
            layers.append(nn.LeakyReLU(_LEAKY_SLOPE))
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _load(file_name: str, device: torch.device, *widths: int) -> nn.Sequential:
    # Built on the meta device so that no random initialisation runs: it would advance the
    # process-global torch RNG that the trainer seeds, and the weights overwrite it anyway.
    with torch.device("meta"):
        net = _mlp(*widths)
    state = torch.load(ASSET_DIR / file_name, weights_only=True, map_location=device)
    net.load_state_dict(state, strict=True, assign=True)
    return net.requires_grad_(False).eval()


@functools.cache
def load_networks(device: torch.device) -> Networks:
    """The three simulator networks on ``device``, loaded once per process and shared."""
    return Networks(
        generator=_load("generator_model.pt", device, NOISE_DIM, 128, USER_DIM),
        leave=_load("leave_model.pt", device, USER_DIM, 128, 256, N_LEAVE_CLASSES),
        action=_load(
            "action_model.pt", device, USER_DIM + 1 + ACTION_DIM, 128, 256, N_CLICK_CLASSES + N_B_CLASSES
        ),
    )


class _Forward:
    """Runs an ``_mlp`` network through functional calls, with the same arithmetic.

    ``nn.Module`` call dispatch costs microseconds per layer, a tenth of a single-user step.
    """

    def __init__(self, net: nn.Sequential) -> None:
        self._layers = tuple((m.weight, m.bias) for m in net if isinstance(m, nn.Linear))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        first, *rest = self._layers
        x = F.linear(x, *first)
        for weight, bias in rest:
            x = F.linear(F.leaky_relu(x, _LEAKY_SLOPE, inplace=True), weight, bias)
        return x


class _Heads:
    """Categorical heads laid side by side in one row of logits, in both samplers' layouts."""

    def __init__(self, sizes: tuple[int, ...], device: torch.device) -> None:
        self.count = len(sizes)
        self.width = max(sizes)
        # (first column, end column, shape of a row) of each run, a lone head kept 2-D because
        # softmax and argmax cost more on 3-D views at N=1.
        self.runs = tuple(
            (start, start + count * size, (count, size) if count > 1 else (size,))
            for start, count, size in _group_runs(sizes)
        )
        # The fast sampler views all heads as one (N, count, width) block, narrower heads padded
        # with -inf. If only the last head is narrower, appending -inf columns is enough;
        # otherwise the columns are gathered, pads taken from one appended -inf column.
        starts = np.cumsum((0, *sizes[:-1]))
        self.offsets = torch.as_tensor(starts, device=device)
        total = sum(sizes)
        index = [
            start + k if k < size else total
            for start, size in zip(starts.tolist(), sizes, strict=True)
            for k in range(self.width)
        ]
        if any(size < self.width for size in sizes[:-1]):
            self.pad = 1
            self.padded_index: torch.Tensor | None = torch.tensor(index, device=device)
        else:
            self.pad = self.count * self.width - total
            self.padded_index = None


def _race(logits: torch.Tensor, exp_noise: torch.Tensor) -> torch.Tensor:
    """One draw per row of the last dim, identical to ``multinomial(softmax(logits), 1)``."""
    return (logits.softmax(-1) / exp_noise).argmax(-1)


def _sample_exact(logits: torch.Tensor, heads: _Heads, generator: torch.Generator) -> torch.Tensor:
    """One draw per head, (N, heads) int64, equal to one ``multinomial`` per row and head in
    order, random numbers included."""
    n = logits.shape[0]
    noise = torch.empty_like(logits).exponential_(generator=generator)
    draws = [
        _race(logits[:, start:stop].view(n, *shape), noise[:, start:stop].view(n, *shape)).view(n, -1)
        for start, stop, shape in heads.runs
    ]
    return torch.cat(draws, dim=1) if len(draws) > 1 else draws[0]


# Log-weights more than this far below the row's maximum are raised to it. exp() of such
# inputs takes a slow path (~20x; A's logit spreads reach 1e4..1e5 nats), and the change is
# invisible: a weight of e^-80 next to the maximum's 1 vanishes when added into the CDF.
_MIN_LOG_WEIGHT = -80.0


def _inverse_cdf(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One draw per row of the last dim of ``logits`` (..., K), by one uniform in [0, 1) each
    (``uniform`` is (..., 1)); ``logits`` is overwritten, sparing the allocations.

    Class k is drawn when v = (1 - u) * total lies in (cdf[k-1], cdf[k]]. Unnormalised weights
    suffice, and 0 < v <= total, so the index never runs past the last class and a class whose
    weight vanishes in the float32 sum (-inf padding, say) is never drawn, not even at u = 0.
    float32 suffices: its rounding shifts class probabilities by ~1e-7 of the total.
    """
    cdf = logits.sub_(logits.amax(-1, keepdim=True)).clamp_(min=_MIN_LOG_WEIGHT).exp_().cumsum_(-1)
    total = cdf[..., -1:]
    return torch.searchsorted(cdf, torch.addcmul(total, uniform, total, value=-1)).squeeze(-1)


def _sample_inverse_cdf(logits: torch.Tensor, heads: _Heads, generator: torch.Generator) -> torch.Tensor:
    """One draw per head, (N, heads) int64, with the same distribution as ``_sample_exact``
    but one uniform per draw and all heads in a single batched computation. ``logits`` may be
    overwritten."""
    n = logits.shape[0]
    if heads.pad:
        logits = F.pad(logits, (0, heads.pad), value=-math.inf)
    if heads.padded_index is not None:
        logits = logits.index_select(1, heads.padded_index)
    uniform = torch.rand(n, heads.count, 1, generator=generator, device=logits.device)
    return _inverse_cdf(logits.view(n, heads.count, heads.width), uniform)


# Each user's float state is one row: A's input first, so that it is a view at offset 0 (laid
# out like a standalone input, hence computed identically), then the latest page's outcome:
# [user (88) | pages | action (27) | last clicks | last b]. Fresh sessions are rows too, so
# replacing finished users is one row copy.
_PAGES = USER_DIM
_A_IN_WIDTH = USER_DIM + 1 + ACTION_DIM
_ROW_WIDTH = _A_IN_WIDTH + 2
_OBS_COLUMNS = (*range(USER_DIM), _A_IN_WIDTH, _A_IN_WIDTH + 1, _PAGES)


class UserPool(NamedTuple):
    """Fresh sessions (new user, zero counters) in the core's state layout, drawn ahead of use.

    Never written to once made (a refill makes a new pool), so snapshots share it instead of
    copying it.
    """

    rows: torch.Tensor  # (P, 118) float32 state rows: [user one-hot, zeros]
    counters: torch.Tensor  # (P, 2) int64 [leave, total clicks = 0]


# Users generated per refill on the fast path, enough for the refill's per-call overheads to
# vanish per user (a step costs the same with pools of 512 to 4096).
USER_POOL_SIZE = 2048


@dataclass(frozen=True)
class VirtualTaobaoState:
    """Complete simulator state of N users; tensors are private copies, except the pool."""

    user: torch.Tensor  # (N, 88) float32 one-hot
    pages: torch.Tensor  # (N,) float32 pages shown this session (an input of A, hence float)
    leave: torch.Tensor  # (N,) int64 hidden page budget
    total_clicks: torch.Tensor  # (N,) int64 clicks this session
    last: torch.Tensor  # (N, 2) float32 (clicks, b) of the latest page
    rng_state: torch.Tensor  # state of the core's private generator
    user_pool: UserPool  # shared with the core: pools are immutable
    pool_position: int  # next unused row of user_pool


class VirtualTaobaoCore:
    """The simulator state of ``num_users`` independent users and the dynamics, batched.

    All randomness comes from the private ``generator``, never from torch's global stream, so
    envs neither disturb nor depend on the trainer's random draws. ``exact_rng`` selects the
    sampler (see the module docstring): True replays the original's random stream, False is
    the fast path, with users drawn ``USER_POOL_SIZE`` at a time.
    """

    def __init__(self, num_users: int, device: str | torch.device = "cpu", *, exact_rng: bool = True) -> None:
        self.num_users = num_users
        self.device = torch.device(device)
        self.networks = load_networks(self.device)
        self._generator_net, self._leave_net, self._action_net = map(_Forward, self.networks)
        self.generator = torch.Generator(self.device)
        # A fresh Generator has a fixed default seed; unseeded envs in different processes
        # would otherwise replay identical users.
        self.generator.seed()
        self._sample = _sample_exact if exact_rng else _sample_inverse_cdf
        # A pool of 0 makes every request generate exactly the users asked for, when asked:
        # the exact stream's order.
        self._pool_size = 0 if exact_rng else USER_POOL_SIZE
        self._pool = UserPool(
            torch.zeros(0, _ROW_WIDTH, device=self.device),
            torch.zeros(0, 2, dtype=torch.int64, device=self.device),
        )
        self._pool_position = 0
        self._user_heads = _Heads(GROUP_SIZES, self.device)
        self._leave_head = _Heads((N_LEAVE_CLASSES,), self.device)
        self._page_heads = _Heads((N_CLICK_CLASSES, N_B_CLASSES), self.device)
        self._obs_columns = torch.tensor(_OBS_COLUMNS, device=self.device)
        self._all_rows = torch.arange(num_users, device=self.device)
        self._rows = torch.zeros(num_users, _ROW_WIDTH, device=self.device)
        self._a_in = self._rows[:, :_A_IN_WIDTH]
        self.user = self._rows[:, :USER_DIM]
        self.pages = self._rows[:, _PAGES]
        self._actions = self._rows[:, _PAGES + 1 : _A_IN_WIDTH]
        self.last = self._rows[:, _A_IN_WIDTH:]
        self._counters = torch.zeros(num_users, 2, dtype=torch.int64, device=self.device)
        self.leave = self._counters[:, 0]
        self.total_clicks = self._counters[:, 1]
        # Like the original constructor: the state is a valid population before any reset.
        self.new_episodes()

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)
        # Users left in the pool came from the old stream; a seeded run must depend on the seed only.
        self._pool_position = len(self._pool.rows)

    @torch.no_grad()
    def _generate_users(self, n: int) -> UserPool:
        g = self.generator
        logits = self._generator_net(torch.rand(n, NOISE_DIM, generator=g, device=self.device))
        groups = self._sample(logits, self._user_heads, g)
        rows = torch.zeros(n, _ROW_WIDTH, device=self.device)
        user = rows[:, :USER_DIM].scatter_(1, groups + self._user_heads.offsets, 1.0)
        leave = self._sample(self._leave_net(user), self._leave_head, g)
        return UserPool(rows, F.pad(leave, (0, 1)))

    def _take_users(self, n: int) -> UserPool:
        """The next ``n`` users of the pool, refilling it when fewer remain.

        The leftovers of a pool are dropped rather than carried over: which users are dropped
        depends on counts only, never on their values, so the users handed out stay i.i.d.
        """
        if self._pool_position + n > len(self._pool.rows):
            self._pool = self._generate_users(max(n, self._pool_size))
            self._pool_position = 0
        start = self._pool_position
        self._pool_position += n
        return UserPool(self._pool.rows[start : start + n], self._pool.counters[start : start + n])

    def sample_users(self, rows: torch.Tensor | None = None) -> None:
        """Draw new users and their page budgets for ``rows`` (all if None) and clear ``last``.

        Session counters are left alone on purpose: the original env re-samples the user at
        episode end without resetting them (see ``VirtualTaobaoEnv``).
        """
        rows = self._all_rows if rows is None else rows
        new = self._take_users(rows.numel())
        self.user.index_copy_(0, rows, new.rows[:, :USER_DIM])
        self.leave.index_copy_(0, rows, new.counters[:, 0])
        self.last.index_fill_(0, rows, 0.0)

    def new_episodes(self, rows: torch.Tensor | None = None) -> None:
        """Start fresh sessions (new user, zero counters) for ``rows`` (all if None)."""
        rows = self._all_rows if rows is None else rows
        new = self._take_users(rows.numel())
        # The action columns are overwritten too, harmlessly: a step writes them before use.
        self._rows.index_copy_(0, rows, new.rows)
        self._counters.index_copy_(0, rows, new.counters)

    @torch.no_grad()
    def step(self, actions: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Show one page to every user; returns (clicks (N,) int64, done (N,) bool).

        Actions are used as given, without clipping, because the original does so and A's
        output changes outside [-1, 1]. The RNG use per step does not depend on the actions,
        which is what makes counterfactual branches from a snapshot share random numbers.
        """
        self._actions.copy_(torch.as_tensor(actions))
        page = self._sample(self._action_net(self._a_in), self._page_heads, self.generator)
        clicks = page[:, 0]
        self.total_clicks += clicks
        self.pages += 1.0
        self.last.copy_(page)
        # A budget of 0 behaves like 1, as in the original.
        return clicks, self.pages >= self.leave

    @torch.no_grad()
    def expected_clicks(self, actions: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Exact E[clicks] of the next page under ``actions``, (N,) float32; no RNG, no state change.

        The action affects nothing but the current page's clicks, so this is the exact
        expected reward of the action (no sampling noise).
        """
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device).expand(
            self.num_users, ACTION_DIM
        )
        logits = self._action_net(torch.cat((self._a_in[:, : USER_DIM + 1], actions), dim=1))
        values = torch.arange(N_CLICK_CLASSES, dtype=torch.float32, device=self.device)
        return logits[:, :N_CLICK_CLASSES].softmax(-1) @ values

    def observation(self) -> torch.Tensor:
        """``[user, last_clicks, last_b, pages]``, (N, 91) float32.

        A new tensor on every call, so handed-out observations never alias the live state.
        """
        return self._rows.index_select(1, self._obs_columns)

    def snapshot(self) -> VirtualTaobaoState:
        return VirtualTaobaoState(
            user=self.user.clone(),
            pages=self.pages.clone(),
            leave=self.leave.clone(),
            total_clicks=self.total_clicks.clone(),
            last=self.last.clone(),
            rng_state=self.generator.get_state(),
            user_pool=self._pool,
            pool_position=self._pool_position,
        )

    def restore(self, state: VirtualTaobaoState) -> None:
        # copy_ broadcasts, so a snapshot of another population size would load silently.
        if state.user.shape != self.user.shape:
            raise ValueError(f"snapshot holds {state.user.shape[0]} users, this core {self.num_users}")
        self.user.copy_(state.user)
        self.pages.copy_(state.pages)
        self.leave.copy_(state.leave)
        self.total_clicks.copy_(state.total_clicks)
        self.last.copy_(state.last)
        self.generator.set_state(state.rng_state)
        self._pool = state.user_pool
        self._pool_position = state.pool_position


def _observation_space() -> gym.spaces.Box:
    # obs[88] (last page's clicks) is bounded by the click head at 10; the original declares
    # 29, a leftover of an older 30-class click head. obs[90] (pages) stays <= 100 as long as
    # the env is reset after termination.
    high = np.array([1.0] * USER_DIM + [N_CLICK_CLASSES - 1, N_B_CLASSES - 1, MAX_PAGES], dtype=np.float32)
    return gym.spaces.Box(low=0.0, high=high, shape=(OBS_DIM,), dtype=np.float32)


def _action_space() -> gym.spaces.Box:
    # Declared like the original but, also like the original, not enforced: A reacts
    # strongly to values outside [-1, 1], and the env passes them through unclipped.
    return gym.spaces.Box(low=-1.0, high=1.0, shape=(ACTION_DIM,), dtype=np.float32)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.cpu().numpy()


class VirtualTaobaoEnv(gym.Env[np.ndarray, np.ndarray]):
    """One user at a time, reproducing the original ``VirtualTB-v0`` behaviour exactly.

    Faithful quirks: when the user leaves (terminated=True) the env immediately samples a
    new user, consuming random numbers, and returns ``[new_user, 0, 0, p_final]`` while
    keeping the page and click counters; ``reset()`` then samples yet another user. Keeping
    the discarded draw is what keeps the random stream aligned with the original, so that
    ``reset(seed=s)`` replays ``VirtualTB(); seed(s); reset()`` bit for bit on the same
    torch version. Actions are not clipped to the action space.
    """

    # render_fps means nothing for text, but gymnasium's checker wants it whenever a render mode exists.
    # An instance attribute in gymnasium: each env extends its own copy.
    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4, **_METADATA}  # noqa: RUF012

    def __init__(self, render_mode: str | None = None, device: str | torch.device = "cpu") -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = _observation_space()
        self.action_space = _action_space()
        self._core = VirtualTaobaoCore(1, device)

    @property
    def core(self) -> VirtualTaobaoCore:
        return self._core

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        # Sets gymnasium's np_random bookkeeping only; the simulator draws from the core's generator.
        super().reset(seed=seed)
        if seed is not None:
            self._core.seed(seed)
        self._core.new_episodes()
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        clicks, done = self._core.step(action)
        terminated = bool(done.item())
        if terminated:
            self._core.sample_users()
        return self._observation(), float(clicks.item()), terminated, False, self._info()

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        core = self._core
        groups = (np.flatnonzero(_numpy(core.user[0])) - _GROUP_OFFSETS).tolist()
        clicks, b = (int(v) for v in core.last[0].tolist())
        return (
            f"user groups {groups}  page {int(core.pages.item())}  last clicks {clicks} (b={b})  "
            f"total clicks {int(core.total_clicks.item())}  CTR {self._info()['CTR']:.4f}\n"
        )

    def snapshot(self) -> VirtualTaobaoState:
        return self._core.snapshot()

    def restore(self, state: VirtualTaobaoState) -> None:
        self._core.restore(state)

    def _observation(self) -> np.ndarray:
        return _numpy(self._core.observation()[0])

    def _info(self) -> dict[str, Any]:
        # Computed on Python numbers, as the original does, so CTR matches it to the last bit.
        pages = int(self._core.pages.item())
        ctr = int(self._core.total_clicks.item()) / pages / ITEMS_PER_PAGE if pages else 0.0
        return {"CTR": ctr}


class VirtualTaobaoVecEnv(gym.vector.VectorEnv):
    """``num_envs`` users stepped at once with same-step autoreset (see ``envs.base``).

    A finished user is replaced by exactly one freshly sampled user (the single env's
    discarded extra draw has no purpose here), so every episode has the single env's
    per-user distribution. ``info["final_obs"]`` is a dense (N, 91) array holding the
    finished users' true last observations ``[user, c, b, p]`` where ``info["_final_obs"]``
    is set; other rows repeat the returned observation, so the key is always present and the
    trainer can select rows without branching. Actions are not clipped. Every returned array
    is new in each step, so callers may keep them across steps.

    ``exact_rng=False`` (the default) samples with the fast path: per user, the same
    distribution as the original, from a different random stream. ``exact_rng=True`` uses
    the original's draws instead, at about half the speed for N=256; at N=1 the env then
    replays the single env's stream, except that the single env's discarded user (drawn on
    termination) is the next episode's user here and ``reset()``'s extra draw is skipped.
    """

    # An instance attribute in gymnasium: each env extends its own copy.
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, **_METADATA}  # noqa: RUF012

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", *, exact_rng: bool = False) -> None:
        self.num_envs = num_envs
        self.single_observation_space = _observation_space()
        self.single_action_space = _action_space()
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._core = VirtualTaobaoCore(num_envs, device, exact_rng=exact_rng)

    @property
    def core(self) -> VirtualTaobaoCore:
        return self._core

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._core.seed(seed)
        self._core.new_episodes()
        return _numpy(self._core.observation()), {}

    # Inference mode drops autograd's per-op bookkeeping, ~5% of a step made of some forty
    # small ops. Tensors made here (the user pool among them) become inference tensors, which
    # is fine: none is ever modified in place or used for gradients.
    @torch.inference_mode()
    def step(
        self, actions: np.ndarray | torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        core = self._core
        _, done = core.step(actions)
        final_obs = core.observation()
        finished = done.nonzero().squeeze(1)
        if finished.numel():
            core.new_episodes(finished)
            obs = core.observation()
        else:
            obs = final_obs.clone()
        terminated = _numpy(done)
        final_obs_np = _numpy(final_obs)
        info = {"final_obs": final_obs_np, "_final_obs": terminated.copy()}
        # The final observations' last-clicks column is the reward; numpy copies it cheaper
        # than torch converts ``clicks``.
        rewards = final_obs_np[:, USER_DIM].copy()
        return _numpy(obs), rewards, terminated, np.zeros(self.num_envs, dtype=np.bool_), info

    def snapshot(self) -> VirtualTaobaoState:
        return self._core.snapshot()

    def restore(self, state: VirtualTaobaoState) -> None:
        self._core.restore(state)
