"""The refusals of job operations, in the studio's error family (app/errors.py)."""

from __future__ import annotations

from app.errors import FieldProblem, StudioError, status_for


class JobError(StudioError):
    """A refused job operation: a stable `code` (its HTTP status from `app.errors`) and, where
    one input is at fault, its `field` path."""

    def __init__(self, message: str, code: str, field: str | None = None) -> None:
        fields = [FieldProblem(field=field, message=message)] if field else []
        super().__init__(status_for(code), code, message, fields)
        self.field = field


class JobNotFound(JobError):
    """No such job in the caller's team: another team's, a deleted one, or none at all (404)."""

    def __init__(self) -> None:
        super().__init__("That job was not found in this team.", "not_found")


__all__ = ["JobError", "JobNotFound"]
