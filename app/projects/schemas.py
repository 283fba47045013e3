"""Shapes of projects in the JSON API (and its OpenAPI)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from app.projects.models import PROJECT_NAME_MAX_CHARS, Project
from app.timestamps import UtcDatetime


class ProjectOut(BaseModel):
    """One of the team's projects (cost centres)."""

    id: uuid.UUID
    name: str
    is_default: bool = Field(description="The team's default project; it cannot be archived.")
    archived: bool = Field(description="An archived project takes no new jobs.")
    created_at: UtcDatetime

    @classmethod
    def of(cls, project: Project) -> ProjectOut:
        return cls(
            id=project.id,
            name=project.name,
            is_default=project.is_default,
            archived=project.archived,
            created_at=project.created_at,
        )


class ProjectCreate(BaseModel):
    """A new project: its name, unique in the team whatever its case."""

    name: str = Field(min_length=1, max_length=PROJECT_NAME_MAX_CHARS)


class ProjectChange(BaseModel):
    """Rename a project and/or archive (true) or restore (false) it."""

    name: str | None = Field(default=None, min_length=1, max_length=PROJECT_NAME_MAX_CHARS)
    archived: bool | None = None
