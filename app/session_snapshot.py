"""A copy of everything an update may change in a session, to put back when the update fails.

The training functions refuse cleanly on their own (app.training), but an update can also fail
where no one planned: memory runs out half-way through an optimizer step, or the disk is full
when the store saves the result. Whatever the failure, the session must be the one the client
last saw acknowledged, so ``app.deps.locked_session`` takes a snapshot before an update and
restores it if anything raises.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np

from app.sessions import History, Session

# Restored by their own rules below; the lock is the live one and never replaced.
_SPECIAL = {"network", "optimizer", "history", "lock"}


@dataclasses.dataclass
class SessionSnapshot:
    weights: dict[str, np.ndarray]
    optimizer: Any
    optimizer_state: dict[str, Any] | None
    history: History
    fields: dict[str, Any]

    @classmethod
    def of(cls, session: Session) -> "SessionSnapshot":
        history = session.history
        optimizer = session.optimizer
        return cls(
            weights=session.network.state_dict(),
            optimizer=optimizer,
            optimizer_state=None if optimizer is None else optimizer.state_dict(),
            history=History(steps=list(history.steps), loss=list(history.loss),
                            accuracy=list(history.accuracy),
                            evaluations=list(history.evaluations)),
            # Every other field (step, cursor, times, whatever a later version adds): a shallow
            # copy, as the update replaces these values rather than editing them in place.
            fields={field.name: copy.copy(getattr(session, field.name))
                    for field in dataclasses.fields(session) if field.name not in _SPECIAL},
        )

    def restore(self, session: Session) -> None:
        session.network.load_state_dict(self.weights)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(self.optimizer_state)
        session.optimizer = self.optimizer
        session.history = self.history
        for name, value in self.fields.items():
            setattr(session, name, value)
