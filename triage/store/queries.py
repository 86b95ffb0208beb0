"""Bulk statements the ORM's unit of work is too slow for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session


def insert_returning_ids(session: Session, model, objects: Sequence[Any]) -> list[int]:
    """Bulk INSERT the column values of transient ``objects``; their new ids, in order."""
    table = model.__table__
    columns = [c.key for c in table.columns if c.key != "id"]
    rows = [{name: getattr(obj, name) for name in columns} for obj in objects]
    statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
    return list(session.connection().execute(statement, rows).scalars())
