"""Stored passwords: argon2id at or above the OWASP floor, never the password itself."""

from __future__ import annotations

import re

import redis
from sqlalchemy.orm import Session

from app.auth.throttle import LoginThrottle, ThrottlePolicy
from app.embedded import free_port
from app.security import hash_password, verify_password
from tests.factories import PASSWORD, make_person

ENCODED = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$")


def test_password_hash_is_argon2id_at_or_above_the_floor(db: Session) -> None:
    person = make_person(db)
    encoded = person.user.password_hash
    assert PASSWORD not in encoded
    found = ENCODED.match(encoded)
    assert found, encoded
    memory_kib, time_cost, parallelism = (int(g) for g in found.groups())
    assert memory_kib >= 19 * 1024
    assert time_cost >= 2
    assert parallelism >= 1
    assert verify_password(encoded, PASSWORD)
    assert not verify_password(encoded, PASSWORD + " ")


def test_same_password_hashes_differently_each_time() -> None:
    assert hash_password(PASSWORD) != hash_password(PASSWORD)


def test_throttle_lets_sign_ins_through_when_redis_is_unreachable() -> None:
    nowhere = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    throttle = LoginThrottle(
        policy=ThrottlePolicy(
            free_per_account=1, free_per_address=1, base_delay_s=60, max_delay_s=60
        ),
        client=nowhere,
    )
    assert throttle.record_failure("a@example.com", "198.51.100.1") == 0
    assert throttle.record_failure("a@example.com", "198.51.100.1") == 0
    assert throttle.wait_seconds("a@example.com", "198.51.100.1") == 0
