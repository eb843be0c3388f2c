"""All SQL of the catalog service."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog.models import CatalogState, Model, PricingSettings

STATE_ROW = 1


@dataclass(frozen=True)
class CatalogRows:
    """Everything the service keeps in memory, read in one snapshot."""

    version: int
    models: list[Model]
    settings: PricingSettings


async def catalog_version(db: AsyncSession) -> int:
    statement = select(CatalogState.version).where(CatalogState.id == STATE_ROW)
    return int((await db.execute(statement)).scalar_one())


async def bump_version(db: AsyncSession) -> int:
    """Mark the catalog changed; the row lock also orders concurrent edits."""
    statement = (
        update(CatalogState)
        .where(CatalogState.id == STATE_ROW)
        .values(version=CatalogState.version + 1)
        .returning(CatalogState.version)
    )
    return int((await db.execute(statement)).scalar_one())


async def catalog_rows(db: AsyncSession) -> CatalogRows:
    """The version, every model and the pricing settings as of one moment.

    REPEATABLE READ makes the three reads one snapshot, so the models can
    never be newer or older than the version they are cached under.
    """
    await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    version = await catalog_version(db)
    statement = select(Model).order_by(
        Model.type, Model.display_order, Model.base_cost_micros, Model.id
    )
    models = list((await db.execute(statement)).scalars())
    settings = await pricing_settings(db)
    return CatalogRows(version, models, settings)


async def insert_missing_models(
    db: AsyncSession, rows: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Insert the models whose id is not stored yet; returns the ids inserted.
    Stored models, edited or not, are left exactly as they are."""
    if not rows:
        return []
    statement = (
        pg_insert(Model)
        .values([dict(row) for row in rows])
        .on_conflict_do_nothing(index_elements=[Model.id])
        .returning(Model.id)
    )
    return list((await db.execute(statement)).scalars())


async def update_model(
    db: AsyncSession, model_id: str, values: Mapping[str, Any], actor: str | None
) -> Model | None:
    statement = (
        update(Model)
        .where(Model.id == model_id)
        .values(**values, updated_at=func.now(), updated_by=actor)
        .returning(Model)
    )
    return (await db.execute(statement)).scalar_one_or_none()


async def model_exists(db: AsyncSession, model_id: str) -> bool:
    statement = select(Model.id).where(Model.id == model_id)
    return (await db.execute(statement)).scalar_one_or_none() is not None


async def pricing_settings(db: AsyncSession) -> PricingSettings:
    statement = select(PricingSettings).where(PricingSettings.id == STATE_ROW)
    return (await db.execute(statement)).scalar_one()


async def update_pricing_settings(
    db: AsyncSession, values: Mapping[str, Any], actor: str | None
) -> PricingSettings:
    statement = (
        update(PricingSettings)
        .where(PricingSettings.id == STATE_ROW)
        .values(**values, updated_at=func.now(), updated_by=actor)
        .returning(PricingSettings)
    )
    return (await db.execute(statement)).scalar_one()
