"""The named signals of this process, which transports and the outbox relay look up."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._receivers import DurableReceiver, Receivers
    from ._signal import Signal

__all__ = ["SignalRegistry", "registry"]


class SignalRegistry(weakref.WeakValueDictionary[str, "Signal[Any]"]):
    """
    The named signals of this process by name (the last one created wins).

    Transports resolve a message's signal here, and the outbox relay a stored row's
    receiver with :meth:`durable_receiver`. Signals are held weakly.
    """

    def __init__(self) -> None:
        super().__init__()
        self._receivers: weakref.WeakKeyDictionary[Signal[Any], Receivers] = (
            weakref.WeakKeyDictionary()
        )

    def add(self, signal: Signal[Any], receivers: Receivers) -> None:
        """Register *signal*, whose connections *receivers* keeps, under its name."""
        assert signal.name is not None
        self[signal.name] = signal
        self._receivers[signal] = receivers

    def durable_receiver(self, name: str, dispatch_uid: str) -> DurableReceiver | None:
        """
        Return the receiver connected under *dispatch_uid* to the signal named *name*.

        The durable receiver of that uid if there is one, else the first connected under
        it; ``None`` if there is no such signal or receiver in this process (any more).
        """
        signal = self.get(name)
        receivers = None if signal is None else self._receivers.get(signal)
        if signal is None or receivers is None:
            return None
        return receivers.durable(signal, dispatch_uid)


registry = SignalRegistry()
"""Named signals of this process by name (the last one created wins); used by transports."""
