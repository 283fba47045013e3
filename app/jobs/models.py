"""Jobs (one requested image each), their stored images, favourites and idempotency records."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ColumnElement,
    Computed,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    and_,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, Timestamped, new_id


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    PENDING = "pending"
    READY = "ready"
    MODERATED = "moderated"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.READY, JobStatus.MODERATED, JobStatus.FAILED, JobStatus.CANCELLED}
)
#: States that occupy a slot of the account's active-task cap at BFL, until BFL says Ready:
#: a pending job with `bfl_ready_at` set is only being downloaded and stored, and no longer
#: counts (`holds_slot`).
ACTIVE_STATUSES = frozenset({JobStatus.SUBMITTING, JobStatus.PENDING})

#: States the dispatcher and sweeper still have work for (the partial index ix_jobs_outstanding).
OUTSTANDING_STATUSES = (JobStatus.QUEUED, JobStatus.SUBMITTING, JobStatus.PENDING)


def status_sql(statuses: tuple[JobStatus, ...] | frozenset[JobStatus]) -> str:
    """`statuses` as an SQL list of literals, e.g. `'queued', 'pending'`, in declaration order.

    For SQL text and partial-index predicates: literals (not bound parameters) so PostgreSQL
    can match a query's predicate against a partial index's with any plan.
    """
    return ", ".join(f"'{s.value}'" for s in JobStatus if s in statuses)


def holds_slot() -> ColumnElement[bool]:
    """SQL: the job holds a slot of the active-task cap (at BFL, and BFL has not said Ready)."""
    return and_(
        Job.status.in_(tuple(s for s in JobStatus if s in ACTIVE_STATUSES)),
        Job.bfl_ready_at.is_(None),
    )


def _status_values(enum_class: type[JobStatus]) -> list[str]:
    return [member.value for member in enum_class]


def _team_default_project(context: Any) -> uuid.UUID | None:
    """The default project of the row's team, for inserts that name no project."""
    team_id = context.get_current_parameters().get("team_id")
    found: uuid.UUID | None = context.connection.scalar(
        text("SELECT id FROM projects WHERE team_id = :team AND is_default"), {"team": team_id}
    )
    return found


class Job(Timestamped, Base):
    """One image requested from BFL. `created_at` is when it was queued."""

    __tablename__ = "jobs"
    __table_args__ = (
        # Gallery: newest first within a team, keyset on (created_at, id).
        Index("ix_jobs_team_created", "team_id", text("created_at DESC"), text("id DESC")),
        Index("ix_jobs_team_user_created", "team_id", "user_id", text("created_at DESC")),
        # The dispatcher and sweeper look only at unfinished jobs.
        Index(
            "ix_jobs_outstanding",
            "status",
            "created_at",
            postgresql_where=text(f"status IN ({status_sql(OUTSTANDING_STATUSES)})"),
        ),
        # Search: one GIN index over the team, the person (one-element arrays: built-in
        # array_ops, no extension) and the prompt's words, so a search reads only the asking
        # team's or person's matches (gallery service, in_search_index).
        Index(
            "ix_jobs_team_search",
            text("(ARRAY[team_id])"),
            text("(ARRAY[user_id])"),
            "prompt_tsv",
            postgresql_using="gin",
        ),
        Index("ix_jobs_batch", "batch_id"),
        # Gallery and prompt history filtered by project.
        Index("ix_jobs_team_project_created", "team_id", "project_id", text("created_at DESC")),
        # Prompt history: every use of a page's prompts, by the prompt (any length: hash).
        Index("ix_jobs_prompt_hash", "prompt", postgresql_using="hash"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    #: The team's project (cost centre) the job is paid from; a row inserted without one goes
    #: to its team's default project.
    project_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("projects.id", ondelete="RESTRICT"),
        nullable=False,
        default=_team_default_project,
    )
    # A CHECK-constrained VARCHAR rather than a native PostgreSQL enum: a new state is a new
    # CHECK (drop and add in one migration), with no ALTER TYPE ... ADD VALUE, which cannot run
    # inside a transaction block on older servers and can never remove a value. The constraint
    # keeps its historic name (ck_jobs_status_valid) and stores the lower-case values.
    status: Mapped[JobStatus] = mapped_column(
        Enum(
            JobStatus,
            name="status_valid",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=_status_values,
            validate_strings=True,
        ),
        nullable=False,
        default=JobStatus.QUEUED,
    )
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    prompt_tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', prompt)", persisted=True)
    )
    #: The validated request sent to BFL, reference images replaced by their storage keys.
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    #: The seed asked for (None: BFL picks one); the seed BFL used is `result_seed`.
    seed: Mapped[int | None] = mapped_column(BigInteger)
    output_format: Mapped[str] = mapped_column(String(8), nullable=False, default="jpeg")
    reference_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    batch_id: Mapped[uuid.UUID | None] = mapped_column()
    batch_index: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    retry_of_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL")
    )

    estimated_credits: Mapped[Decimal] = mapped_column(
        Numeric(12, 4), nullable=False, default=Decimal(0)
    )
    #: The cost BFL reported when it accepted the task: the truth for the ledger.
    cost_credits: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))

    bfl_task_id: Mapped[str | None] = mapped_column(String(128))
    polling_url: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float | None] = mapped_column(Float)
    result_seed: Mapped[int | None] = mapped_column(BigInteger)
    #: When the next poll is due; Postgres, not Redis, says what is outstanding.
    next_poll_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    poll_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: How many times a worker started processing this job; bounds redelivery loops.
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: Polls that started and never finished (worker killed, crash); reset by a clean poll.
    #: A job whose poll keeps crashing is given up after a few instead of looping forever.
    unfinished_polls: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: Submissions refused before BFL created a task (429, connect errors): safe re-queues.
    requeues: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Set while the job's owner (or a manager) holds it back: a paused job is never claimed.
    paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: A manager moved it to the front: it goes before every job not moved there.
    queue_front: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default="false"
    )
    #: Its place in line when moved to the front or back (None: when it was queued).
    queue_key: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    #: The filters BFL named for a moderated task (its details["Moderation Reasons"]).
    moderation_reasons: Mapped[list[str] | None] = mapped_column(JSONB)

    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    bfl_ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    image: Mapped[Image | None] = relationship(back_populates="job", uselist=False)


class Image(Timestamped, Base):
    """The stored result of a ready job: the original and a WebP thumbnail under our own keys."""

    __tablename__ = "images"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False, index=True
    )
    storage_key: Mapped[str] = mapped_column(Text, nullable=False)
    thumb_key: Mapped[str] = mapped_column(Text, nullable=False)
    content_type: Mapped[str] = mapped_column(String(32), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)

    job: Mapped[Job] = relationship(back_populates="image")


class ReferenceImage(Timestamped, Base):
    """A reference image stored once per team, named by the sha256 of its normalised bytes.

    Jobs point at it through `JobReference`; it is kept while any job (deleted or not) does,
    and only an unused one past its grace period is removed (`app.jobs.references`).
    """

    __tablename__ = "reference_images"
    __table_args__ = (UniqueConstraint("team_id", "sha256", name="uq_reference_images_team_sha"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    storage_key: Mapped[str] = mapped_column(Text, nullable=False)
    thumb_key: Mapped[str] = mapped_column(Text, nullable=False)
    content_type: Mapped[str] = mapped_column(String(32), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer, nullable=False)


class JobReference(Base):
    """Reference image `position` (1 = input_image, 2 = input_image_2, ...) of a job."""

    __tablename__ = "job_references"
    __table_args__ = (Index("ix_job_references_reference", "reference_id"),)

    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    # RESTRICT: a reference some job uses can never be removed from under it.
    reference_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reference_images.id", ondelete="RESTRICT"), nullable=False
    )


class Favourite(Timestamped, Base):
    __tablename__ = "favourites"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )


class IdempotencyRecord(Timestamped, Base):
    """Remembers which jobs an Idempotency-Key created, so a replay creates (and pays) nothing."""

    __tablename__ = "idempotency_records"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), nullable=False
    )
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    job_ids: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list)


class BFLAccountState(Base):
    """The one row of what the studio knows about its BFL account's health and limits.

    Every worker on every host reads and updates this row (under a row lock), so an outage or
    a rate limit is noticed once for the whole account instead of by each job on its own.
    """

    __tablename__ = "bfl_account_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    #: When BFL stopped answering (connect errors, 503, 5xx); None while it answers.
    outage_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: What the last failed call met, for people ("connection refused", "HTTP 503").
    outage_reason: Mapped[str | None] = mapped_column(Text)
    #: When the next probe of BFL may go (also the lease of the probe in flight).
    next_probe_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Probes failed in a row in this outage; sets the probe back-off.
    probe_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: No POST before this time: BFL said 429 (Retry-After, capped) or X-RateLimit-Remaining 0.
    rate_limited_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: When BFL last refused us for active tasks.
    last_rate_limit_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Our jobs at BFL (pending) when it last refused: fewer later means one of ours ended.
    active_at_rate_limit: Mapped[int | None] = mapped_column(Integer)
    #: BFL's effective cap as learned from 429s and X-RateLimit-Limit (None: the configured one).
    learned_cap: Mapped[int | None] = mapped_column(Integer)
    #: When the learned cap last changed (it is raised by one after a quiet while).
    learned_cap_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The last X-RateLimit-Limit / -Remaining / -Reset BFL sent, as received.
    rate_limit_headers: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TeamQueuePause(Base):
    """A team's queue held by a manager: none of its queued jobs is claimed while the row
    exists (jobs already at BFL finish)."""

    __tablename__ = "team_queue_pauses"

    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    paused_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    paused_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
