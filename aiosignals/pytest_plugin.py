"""
The aiosignals pytest plugin, registered through the ``pytest11`` entry point.

Its fixtures are thin layers over :mod:`aiosignals.testing`:

- ``capture``: ``capture(signal, sender=ANY)`` records the sends of *signal* from now to
  the end of the test and returns the :class:`~aiosignals.testing.Capture`.
- ``muted_signals``: ``muted_signals(*signals)`` delivers their sends to no receiver from
  now to the end of the test.

Both apply to every task, not only the test's own: a fixture is set up and torn down
outside the task an async test runs in, so it cannot scope itself to that task, and tests
of one process run one at a time anyway. For a task-scoped block inside a test, use
:func:`aiosignals.testing.capture` and :func:`aiosignals.testing.muted` directly.

The annotations :class:`CaptureFixture` and :class:`MutedSignalsFixture` type the fixtures
in a test's signature. Nothing of aiosignals is imported until a fixture is used.

.. versionadded:: 0.1
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from collections.abc import Generator

    from ._signal import Signal
    from ._types import P
    from .testing import Capture

__all__ = ["CaptureFixture", "MutedSignalsFixture", "capture", "muted_signals"]


class CaptureFixture(Protocol):
    """
    The type of the ``capture`` fixture.

    .. versionadded:: 0.1
    """

    def __call__(self, signal: Signal[P], /, sender: Any = ...) -> Capture[P]:
        """Record the sends of *signal* (from *sender* only, if given) until the test ends."""
        ...


class MutedSignalsFixture(Protocol):
    """
    The type of the ``muted_signals`` fixture.

    .. versionadded:: 0.1
    """

    def __call__(self, *signals: Signal[Any]) -> None:
        """Deliver the sends of *signals* to no receiver until the test ends."""
        ...


@pytest.fixture
def capture() -> Generator[CaptureFixture]:
    """
    Return ``capture(signal, sender=ANY)``, which records sends until the test ends.

    .. versionadded:: 0.1
    """
    # Imported here: the plugin loads in every pytest run of an environment with
    # aiosignals installed, and most of those never use these fixtures.
    from ._options import ANY
    from .testing import capture as start

    with ExitStack() as stack:

        def capture(signal: Signal[P], /, sender: Any = ANY) -> Capture[P]:
            return stack.enter_context(start(signal, sender, all_tasks=True))

        yield capture


@pytest.fixture
def muted_signals() -> Generator[MutedSignalsFixture]:
    """
    Return ``muted_signals(*signals)``, which mutes them in every task until the test ends.

    .. versionadded:: 0.1
    """
    from .testing import muted

    with ExitStack() as stack:

        def muted_signals(*signals: Signal[Any]) -> None:
            stack.enter_context(muted(*signals, all_tasks=True))

        yield muted_signals
