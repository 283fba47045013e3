"""Every feature's models in one place, so `metadata` is complete (Alembic, tests).

Features import `app.db` for `Base`; app.db never imports a feature back.
"""

from __future__ import annotations

from sqlalchemy import MetaData

import app.access.models
import app.alerts.models
import app.audit.models
import app.auth.models
import app.boards.models
import app.costs.models
import app.jobs.models
import app.projects.models  # noqa: F401 (registers its tables)
from app.db import Base

#: Every table of the studio.
metadata: MetaData = Base.metadata
