"""The access rules: which models, how large and how many images a role or a person may ask for.

The job service asks `check_request` before anything is stored or reserved, for the pages
and the API alike; `caller_access` says the same rules to the generate page and
GET /api/v1/models. Managers change the rules with `set_rule` and a person's monthly credit
quota with `set_quota` (the person's budget in `app.costs`, held by the same reservations);
each change is written to the audit log in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.access.models import AccessRule
from app.audit import service as audit
from app.auth.models import Membership, Role, User
from app.bfl.catalogue import MEGAPIXEL, ModelSpec, Sizing, get_model, list_models
from app.costs import service as costs
from app.db import utcnow
from app.errors import FieldProblem, NotFound, StudioError, status_for

#: The roles a rule may name; admins follow the managers' rule.
RULE_ROLES = ("member", "manager")
_PLURAL = {"member": "members", "manager": "managers"}


class AccessLimited(StudioError):
    """A request this person may not make in their team (403 `access_limited`).

    `fields` names what to change (`model`, `count`, `params.width`); a manager may approve
    the request anyway (`app.access.approvals`).
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(
            status_for("access_limited"),
            "access_limited",
            message,
            [FieldProblem(field=field, message=message)],
        )


@dataclass(frozen=True)
class Limits:
    """One person's limits in one team after their own rule is laid over their role's.

    None means no limit. `*_by` says whose rule set the limit: `members`, `managers` or `you`.
    """

    role: str
    allowed_models: frozenset[str] | None = None
    models_by: str = ""
    max_megapixels: Decimal | None = None
    megapixels_by: str = ""
    max_side: int | None = None
    side_by: str = ""
    max_count: int | None = None
    count_by: str = ""
    #: Models the other role's rule allows (for "limited to managers"); None: all.
    managers_models: frozenset[str] | None = None


def rule_role(role: str) -> str:
    """The rule a team role follows: `member`, or `manager` for managers and admins."""
    return "member" if role == Role.MEMBER.value else "manager"


def _role_of(db: Session, team_id: uuid.UUID, user_id: uuid.UUID) -> str:
    role = db.scalar(
        select(Membership.role).where(Membership.team_id == team_id, Membership.user_id == user_id)
    )
    if role is None:
        raise NotFound("That person")
    return role


def limits_for(db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID) -> Limits:
    """The limits in force for a person of the team; NotFound if they are not in it."""
    role = rule_role(_role_of(db, team_id, user_id))
    rules = db.scalars(
        select(AccessRule).where(
            AccessRule.team_id == team_id,
            (AccessRule.user_id == user_id) | AccessRule.role.in_(RULE_ROLES),
        )
    ).all()
    by_role = {r.role: r for r in rules if r.role is not None}
    own = next((r for r in rules if r.user_id == user_id), None)
    mine = by_role.get(role)
    values: dict[str, Any] = {"role": role}
    for attr, by in (
        ("allowed_models", "models_by"),
        ("max_megapixels", "megapixels_by"),
        ("max_side", "side_by"),
        ("max_count", "count_by"),
    ):
        for rule, whose in ((own, "you"), (mine, _PLURAL[role])):
            value = getattr(rule, attr) if rule is not None else None
            if value is not None:
                values[attr] = frozenset(value) if attr == "allowed_models" else value
                values[by] = whose
                break
    managers = by_role.get("manager")
    if managers is not None and managers.allowed_models is not None:
        values["managers_models"] = frozenset(managers.allowed_models)
    return Limits(**values)


def model_problem(limits: Limits, model: str) -> str | None:
    """Why this person may not use `model` (a sentence naming what to do), or None."""
    if limits.allowed_models is None or model in limits.allowed_models:
        return None
    others = [m.name for m in list_models() if m.name in limits.allowed_models]
    choose = f"choose {others[0]}" if others else "no model is open to you yet"
    if limits.models_by == "you":
        return (
            f"{model} is not among the models open to you in this team; ask a manager or {choose}"
        )
    if limits.role == "member" and (
        limits.managers_models is None or model in limits.managers_models
    ):
        return f"{model} is limited to managers in this team; ask a manager or {choose}"
    return f"{model} is not open to {limits.models_by} in this team; ask a manager or {choose}"


def _size_field(spec: ModelSpec) -> str:
    return "params.width" if spec.sizing == Sizing.PIXELS else "params.aspect_ratio"


def _whose(by: str) -> str:
    return "you" if by == "you" else by


def size_problem(limits: Limits, width: int, height: int) -> str | None:
    """Why a `width` x `height` pixel image is larger than this person may ask for, or None."""
    if limits.max_side is not None and max(width, height) > limits.max_side:
        return (
            f"Images for {_whose(limits.side_by)} in this team are at most {limits.max_side} "
            f"pixels on a side, and {width} x {height} is larger; choose a smaller size "
            "or ask a manager."
        )
    megapixels = Decimal(width * height) / MEGAPIXEL
    if limits.max_megapixels is not None and megapixels > limits.max_megapixels:
        return (
            f"Images for {_whose(limits.megapixels_by)} in this team are at most "
            f"{limits.max_megapixels} MP, and {width} x {height} is {megapixels:.2f} MP "
            "(1 MP = 1,048,576 pixels); choose a smaller size or ask a manager."
        )
    return None


def count_problem(limits: Limits, count: int) -> str | None:
    """Why `count` images in one request are more than this person may ask for, or None."""
    if limits.max_count is not None and count > limits.max_count:
        return (
            f"Requests by {_whose(limits.count_by)} in this team are at most "
            f"{limits.max_count} images; ask for fewer or ask a manager."
        )
    return None


def check_request(
    db: Session,
    *,
    team_id: uuid.UUID,
    user_id: uuid.UUID,
    model: str,
    width: int,
    height: int,
    count: int,
) -> None:
    """Refuse, before anything is stored or paid, what this person's rules do not allow.

    `width` and `height` are the output's pixels. Raises AccessLimited naming the field at
    fault (`model`, `params.width` or `params.aspect_ratio`, `count`).
    """
    limits = limits_for(db, team_id=team_id, user_id=user_id)
    problem = model_problem(limits, model)
    if problem is not None:
        raise AccessLimited(problem, "model")
    problem = size_problem(limits, width, height)
    if problem is not None:
        raise AccessLimited(problem, _size_field(get_model(model)))
    problem = count_problem(limits, count)
    if problem is not None:
        raise AccessLimited(problem, "count")


@dataclass(frozen=True)
class ModelAccess:
    """Whether the caller may use one model, and why not."""

    name: str
    available: bool
    reason: str | None


def caller_access(
    db: Session, *, team_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[Limits, list[ModelAccess]]:
    """The caller's limits and, for every catalogue model, whether they may use it."""
    limits = limits_for(db, team_id=team_id, user_id=user_id)
    models = []
    for spec in list_models():
        reason = model_problem(limits, spec.name)
        models.append(ModelAccess(spec.name, reason is None, reason))
    return limits, models


def mark_catalogue(catalogue: dict[str, Any], models: Sequence[ModelAccess]) -> dict[str, Any]:
    """Add `available` and `unavailable_reason` to each model of an advertised catalogue
    (GET /api/v1/models and the generate page's script read the same), in place."""
    by_name = {entry.name: entry for entry in models}
    for model in catalogue["models"]:
        entry = by_name.get(model["name"])
        model["available"] = entry.available if entry is not None else True
        model["unavailable_reason"] = entry.reason if entry is not None else None
    return catalogue


# --- managers' changes -----------------------------------------------------------------------


def rules(db: Session, team_id: uuid.UUID) -> list[tuple[AccessRule, str | None]]:
    """The team's rules, roles first, then people by name, each with the person's name."""
    rows = db.execute(
        select(AccessRule, User.name)
        .outerjoin(User, User.id == AccessRule.user_id)
        .where(AccessRule.team_id == team_id)
        .order_by(AccessRule.user_id.is_not(None), AccessRule.role, User.name)
    ).all()
    return [(rule, name) for rule, name in rows]


def _rule_values(rule: AccessRule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {
        "allowed_models": sorted(rule.allowed_models) if rule.allowed_models is not None else None,
        "max_megapixels": rule.max_megapixels,
        "max_side": rule.max_side,
        "max_count": rule.max_count,
    }


def _check_models(names: Sequence[str]) -> list[str]:
    known = {m.name for m in list_models()}
    unknown = [n for n in names if n not in known]
    if unknown:
        message = f"Unknown model {unknown[0]}; choose from GET /api/v1/models."
        raise StudioError(
            422, "invalid_request", message, [FieldProblem(field="allowed_models", message=message)]
        )
    return sorted(set(names))


def _find_rule(
    db: Session, team_id: uuid.UUID, role: str | None, user_id: uuid.UUID | None
) -> AccessRule | None:
    stmt = select(AccessRule).where(AccessRule.team_id == team_id).with_for_update()
    if user_id is not None:
        stmt = stmt.where(AccessRule.user_id == user_id)
    else:
        stmt = stmt.where(AccessRule.role == role, AccessRule.user_id.is_(None))
    return db.scalars(stmt).first()


def _subject(
    db: Session, team_id: uuid.UUID, role: str | None, user_id: uuid.UUID | None
) -> tuple[str | None, uuid.UUID | None]:
    if (role is None) == (user_id is None):
        message = "Name either a role (member or manager) or a person (user_id), not both."
        raise StudioError(
            422, "invalid_request", message, [FieldProblem(field="role", message=message)]
        )
    if user_id is not None:
        costs.require_member(db, team_id=team_id, user_id=user_id)
        return None, user_id
    if role not in RULE_ROLES:
        message = "role must be member or manager (admins follow the managers' rule)."
        raise StudioError(
            422, "invalid_request", message, [FieldProblem(field="role", message=message)]
        )
    return role, None


def _upsert_rule(
    db: Session,
    team_id: uuid.UUID,
    role: str | None,
    user_id: uuid.UUID | None,
    values: dict[str, Any],
) -> AccessRule:
    # Upsert on the partial unique index, so two managers saving at once cannot collide.
    stmt = insert(AccessRule).values(
        id=uuid.uuid4(), team_id=team_id, role=role, user_id=user_id, created_at=utcnow(), **values
    )
    if user_id is None:
        stmt = stmt.on_conflict_do_update(
            index_elements=[AccessRule.team_id, AccessRule.role],
            index_where=AccessRule.user_id.is_(None),
            set_=values,
        )
    else:
        stmt = stmt.on_conflict_do_update(
            index_elements=[AccessRule.team_id, AccessRule.user_id],
            index_where=AccessRule.user_id.is_not(None),
            set_=values,
        )
    rule_id = db.scalar(stmt.returning(AccessRule.id))
    db.flush()
    rule = db.get(AccessRule, rule_id, populate_existing=True)
    assert rule is not None
    return rule


def set_rule(
    db: Session,
    *,
    team_id: uuid.UUID,
    by: User,
    role: str | None = None,
    user_id: uuid.UUID | None = None,
    allowed_models: Sequence[str] | None = None,
    max_megapixels: Decimal | None = None,
    max_side: int | None = None,
    max_count: int | None = None,
) -> AccessRule | None:
    """Set a role's or a person's rule (None fields: no limit; all None removes the rule).

    Writes an audit entry (`access.rule_set` / `access.rule_removed`) in the same transaction.
    Raises StudioError 422 for an unknown model or role, NotFound for a person outside the team.
    """
    role, user_id = _subject(db, team_id, role, user_id)
    models = _check_models(allowed_models) if allowed_models is not None else None
    existing = _find_rule(db, team_id, role, user_id)
    before = _rule_values(existing)
    rule: AccessRule | None = None
    if models is None and max_megapixels is None and max_side is None and max_count is None:
        if existing is None:
            return None
        db.delete(existing)
        db.flush()
    else:
        values = {
            "allowed_models": models,
            "max_megapixels": max_megapixels,
            "max_side": max_side,
            "max_count": max_count,
            "updated_by_id": by.id,
        }
        rule = _upsert_rule(db, team_id, role, user_id, values)
    audit.record(
        db,
        team_id=team_id,
        actor_id=by.id,
        actor_email=by.email,
        action="access.rule_set" if rule is not None else "access.rule_removed",
        target_type="access_rule",
        target_id=str(user_id) if user_id is not None else f"role:{role}",
        before=before,
        after=_rule_values(rule),
    )
    return rule


def set_quota(
    db: Session,
    *,
    team_id: uuid.UUID,
    by: User,
    user_id: uuid.UUID,
    monthly_credits: Decimal | None,
) -> None:
    """Set (None: remove) a person's monthly credit quota, audited in the same transaction.

    The quota is the person's monthly budget: charges this month plus held reservations
    count against it, and `app.costs.service.reserve_for_jobs` refuses what would cross it.
    Raises NotFound for a person outside the team, StudioError 422 for a negative amount.
    """
    if monthly_credits is not None and monthly_credits < 0:
        message = "A monthly quota cannot be negative; use 0 to allow nothing."
        raise StudioError(
            422,
            "invalid_request",
            message,
            [FieldProblem(field="monthly_credits", message=message)],
        )
    existing = costs.budget_for(db, team_id=team_id, user_id=user_id)
    before = None if existing is None else {"monthly_credits": existing.monthly_credits}
    costs.set_budget(
        db, team_id=team_id, user_id=user_id, monthly_credits=monthly_credits, set_by=by.id
    )
    audit.record(
        db,
        team_id=team_id,
        actor_id=by.id,
        actor_email=by.email,
        action="access.quota_set",
        target_type="user",
        target_id=user_id,
        before=before,
        after=None if monthly_credits is None else {"monthly_credits": monthly_credits},
    )
