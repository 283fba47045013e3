"""Sign-in throttling per (account, address) pair and per address: growing delays, no lock-out.

No counter is kept per account alone: one that anybody could fill from anywhere would let a
stranger who knows an email keep its owner out. Guesses at one account from many addresses
are each slowed per address, and each address is slowed across all the accounts it tries.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from functools import lru_cache

import redis
import structlog

from app.settings import get_settings

log = structlog.get_logger(__name__)

# Failures are forgotten this long after the last one, so a person who mistypes now and then
# never accumulates a delay.
_FAILURE_WINDOW_S = 3600


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures are free and how the delay after that grows (doubling, capped)."""

    free_per_account: int
    free_per_address: int
    base_delay_s: float
    max_delay_s: float

    @classmethod
    def from_settings(cls) -> ThrottlePolicy:
        s = get_settings()
        return cls(
            free_per_account=s.LOGIN_FREE_ATTEMPTS_ACCOUNT,
            free_per_address=s.LOGIN_FREE_ATTEMPTS_ADDRESS,
            base_delay_s=s.LOGIN_DELAY_BASE_S,
            max_delay_s=s.LOGIN_DELAY_MAX_S,
        )

    def delay_after(self, failures: int, free: int) -> float:
        """Seconds to refuse further attempts after `failures` consecutive failures."""
        over = failures - free
        if over <= 0:
            return 0.0
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** min(over - 1, 30)))


@lru_cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)


def _address_bucket(address: str) -> str:
    # One IPv6 host usually holds a whole /64, so counting single addresses would let it
    # rotate past the limit; IPv4 addresses count one by one.
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


def _keys(email: str, address: str, *, account_wide: bool = False) -> tuple[str, str]:
    """(pair key, address key). The pair is one account tried from one address bucket, or
    from any address when `account_wide`."""
    prefix = f"{get_settings().CELERY_KEY_PREFIX}studio:login:"
    bucket = _address_bucket(address)
    scope = "*" if account_wide else bucket
    # Hash the email so Redis never holds a list of addresses people tried.
    pair = hashlib.sha256(f"{email.strip().lower()}\x00{scope}".encode()).hexdigest()
    return prefix + "pair:" + pair, prefix + "address:" + bucket


class LoginThrottle:
    """Counts failed sign-ins in Redis and says how long a caller must wait.

    Redis is coordination only: when it is unreachable the studio lets sign-ins through (and
    logs it) rather than locking every person out.

    `account_wide` counts an account's failures from every address together (besides each
    address's own count). Passwords never do, so a stranger cannot keep an owner out; second
    factor codes do, because whoever guesses them already holds the password, and six digits
    guessed from many addresses at once would otherwise fall quickly.
    """

    def __init__(
        self,
        policy: ThrottlePolicy | None = None,
        client: redis.Redis | None = None,
        *,
        account_wide: bool = False,
    ):
        self.policy = policy or ThrottlePolicy.from_settings()
        self.redis = client or _client(get_settings().redis_url)
        self.account_wide = account_wide

    def wait_seconds(self, email: str, address: str) -> int:
        """Whole seconds the caller must still wait before trying this account from this
        address; 0: go."""
        pair_key, address_key = _keys(email, address, account_wide=self.account_wide)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.pttl(pair_key + ":block")
            pipe.pttl(address_key + ":block")
            ttls = pipe.execute()
        except redis.RedisError as exc:
            log.warning("login_throttle_unavailable", error=str(exc))
            return 0
        longest = max(int(t) for t in ttls)
        return math.ceil(longest / 1000) if longest > 0 else 0

    def record_failure(self, email: str, address: str) -> int:
        """Count one failed attempt; returns the seconds the caller must now wait (0: none)."""
        pair_key, address_key = _keys(email, address, account_wide=self.account_wide)
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incr(pair_key)
            pipe.expire(pair_key, _FAILURE_WINDOW_S)
            pipe.incr(address_key)
            pipe.expire(address_key, _FAILURE_WINDOW_S)
            pair_failures, _, address_failures, _ = pipe.execute()
            pair_delay = self.policy.delay_after(int(pair_failures), self.policy.free_per_account)
            address_delay = self.policy.delay_after(
                int(address_failures), self.policy.free_per_address
            )
            delay = max(pair_delay, address_delay)
            if delay > 0:
                block = self.redis.pipeline(transaction=True)
                if pair_delay:
                    block.set(pair_key + ":block", 1, px=int(pair_delay * 1000))
                if address_delay:
                    block.set(address_key + ":block", 1, px=int(address_delay * 1000))
                block.execute()
        except redis.RedisError as exc:
            log.warning("login_throttle_unavailable", error=str(exc))
            return 0
        return math.ceil(delay)

    def record_success(self, email: str, address: str) -> None:
        """A correct password clears this account's failures from this address (not the
        address's own: one good account must not launder a spray of guesses at others)."""
        pair_key, _ = _keys(email, address, account_wide=self.account_wide)
        try:
            self.redis.delete(pair_key, pair_key + ":block")
        except redis.RedisError as exc:
            log.warning("login_throttle_unavailable", error=str(exc))
