"""What Redis raises, sorted by what a consumer does about it: retry, give up, or start over."""

from __future__ import annotations

from redis import exceptions as redis_errors

__all__ = ["CONNECTION_ERRORS", "FATAL_ERRORS", "is_vanished_group"]

# What a dropped or refused connection raises: redis-py's own errors (BusyLoadingError, raised
# while a restarted server loads its AOF, is a ConnectionError) and the socket's.
CONNECTION_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)

# What no retry can mend, so RedisConsumer.run() raises it: Redis refused the credentials (a
# wrong or missing password or user) or the user lacks the rights (ACL NOPERM). redis-py
# makes the first two ConnectionError subclasses, so they are caught before those.
FATAL_ERRORS: tuple[type[redis_errors.RedisError], ...] = (
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.AuthenticationWrongNumberOfArgsError,
    redis_errors.NoPermissionError,
)


def is_vanished_group(exc: redis_errors.ResponseError) -> bool:
    """
    Return whether *exc* says the stream or its group is gone.

    A stream deleted (maybe under a blocked read), or a server restarted without persistence:
    the consumer creates the groups again and goes on.
    """
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))
