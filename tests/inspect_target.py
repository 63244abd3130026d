"""A module of signals and receivers for the ``aiosignals inspect`` tests."""

from __future__ import annotations

from aiosignals import Concurrent, Event, Phase, Signal, receiver


class UserRegistered(Event):
    user_id: int


class OrderPlaced(Event):
    order_id: int


class AccountService:
    async def on_registered(self, sender: object, payload: UserRegistered) -> None:
        pass


user_registered = Signal(UserRegistered, name="user_registered")
order_placed = Signal(OrderPlaced, mode=Concurrent(limit=4), errors="collect", timeout=2.5)
renamed = Signal(OrderPlaced, name="orders.cancelled")
quiet = Signal(UserRegistered, name="quiet")

# Not signals, or not new ones: the listing skips or de-duplicates them.
alias = user_registered
NOT_A_SIGNAL = "user_registered"


@receiver(user_registered, dispatch_uid="welcome-mail", priority=10)
async def send_welcome(sender: object, payload: UserRegistered) -> None:
    pass


@receiver(user_registered, sender=AccountService, once=True)
async def audit(sender: object, payload: UserRegistered) -> None:
    pass


@receiver(user_registered, phase=Phase.AFTER_COMMIT, durable=True, dispatch_uid="crm-sync")
async def sync_crm(sender: object, payload: UserRegistered) -> None:
    pass


service = AccountService()
user_registered.connect(service.on_registered, priority=-1)


@receiver(order_placed, thread=True, errors="log")
def log_order(sender: object, payload: OrderPlaced) -> None:
    pass


@receiver(renamed, sender="checkout", weak=True)
async def on_cancelled(sender: object, payload: OrderPlaced) -> None:
    pass
