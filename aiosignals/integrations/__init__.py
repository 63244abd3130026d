"""
Web framework integrations, each opt-in and imported only on request.

- :mod:`aiosignals.integrations.fastapi` (the ``fastapi`` extra): ``lifespan(...)`` runs the
  :class:`~aiosignals.EventBus` and its services (an outbox relay, a consumer: any
  :class:`~aiosignals.Service`) with the app, ``DepBus`` hands the bus
  to handlers, ``transaction_dependency(db)`` wraps a handler in a database transaction.
- :mod:`aiosignals.integrations.aiohttp` (the ``aiohttp`` extra): ``init_app(app, ...)``
  does the same through ``app.cleanup_ctx``, ``BUS_KEY`` / ``get_bus`` hand out the bus and
  ``transaction_middleware(db)`` wraps handlers in a transaction.

``import aiosignals`` imports none of them, nor the frameworks.
"""
