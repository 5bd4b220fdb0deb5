"""SB3's update schedule (``learning_starts``, ``train_freq``, ``gradient_steps``), interpreted in
one place for every caller: the trainer and MACS's stage 2 both collect through the agent and
ask it what is due.

Units are SB3's: ``learning_starts`` counts user-steps (transitions collected), ``train_freq``
counts vector steps, and ``gradient_steps=-1`` means one gradient step per user-step collected
since the previous update, ``N x train_freq`` with N users per vector step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class UpdateSchedule:
    learning_starts: int
    train_freq: int
    gradient_steps: int
    # User-steps and vector steps collected so far.
    collected: int = 0
    vec_steps: int = 0
    # The vector step up to which due updates have been handed out.
    _settled: int = 0
    _users: int = 1

    def warming_up(self) -> bool:
        """Whether the next vector step is still collected with random actions."""
        return self.collected < self.learning_starts

    def record(self, users: int) -> None:
        """Counts one vector step of ``users`` user-steps."""
        self.collected += users
        self.vec_steps += 1
        self._users = users

    def due(self) -> tuple[int, int]:
        """``(updates, gradient_steps)``: how many updates are due since the previous call, and
        how many gradient steps each takes. Nothing is due before ``learning_starts`` user-steps,
        and the vector steps collected until then are never made up for.

        Called after each vector step (the trainer) this is SB3's rule, one update every
        ``train_freq`` vector steps; called after a window of steps (stage 2, whose rewards are
        known only when its window closes) it catches up with every update the window made due.
        """
        start, self._settled = self._settled, self.vec_steps
        if self.collected < self.learning_starts:
            return 0, 0
        updates = self.vec_steps // self.train_freq - start // self.train_freq
        grad_steps = self.gradient_steps if self.gradient_steps > 0 else self._users * self.train_freq
        return updates, grad_steps

    def state(self) -> dict[str, int]:
        return asdict(self)

    def load_state(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))
