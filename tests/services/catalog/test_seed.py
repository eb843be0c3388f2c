"""Seeding the catalog: every model once, and never over an operator's edit."""

from __future__ import annotations

import asyncio
import collections
import os
import sys
from collections.abc import AsyncIterator

import pytest
from omnihub.catalog.v1 import catalog_pb2
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from libs.config import Settings
from libs.db import create_engine, session_factory
from libs.process import migrate_service
from services.catalog import repository
from services.catalog.main import CatalogProcess
from services.catalog.models import SCHEMA, Model
from services.catalog.seed import load_seed
from tests.database import ROOT
from tests.services.catalog.harness import CatalogCaller


@pytest.fixture
async def db(catalog_settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = create_engine(catalog_settings, SCHEMA)
    async with session_factory(engine)() as session:
        yield session
    await engine.dispose()


async def stored_row(db: AsyncSession, model_id: str) -> Model:
    db.expire_all()
    row = await db.get(Model, model_id, populate_existing=True)
    assert row is not None
    return row


class TestSeedFile:
    def test_holds_72_models_35_image_26_video_11_chat(self) -> None:
        counts = collections.Counter(row["type"] for row in load_seed())
        assert counts == {"image": 35, "video": 26, "chat": 11}

    def test_costs_are_whole_micro_dollars(self) -> None:
        rows = {row["id"]: row for row in load_seed()}
        assert rows["fal-flux-pro-v1.1"]["base_cost_micros"] == 40_000
        assert rows["deepseek/deepseek-r1"]["output_cost_micros_per_1k"] == 2_190

    def test_missing_wait_times_default_by_type(self) -> None:
        rows = {row["id"]: row for row in load_seed()}
        assert rows["fal-flux-dev"]["max_wait_seconds"] == 300
        assert rows["fal-hunyuan-video"]["max_wait_seconds"] == 900
        assert rows["fal-kling-v1.5-standard"]["max_wait_seconds"] == 420

    def test_options_keep_the_catalog_order(self) -> None:
        rows = {row["id"]: row for row in load_seed()}
        keys = [option["key"] for option in rows["fal-veo3.1-t2v"]["options"]]
        assert keys == ["duration", "resolution", "aspect_ratio", "generate_audio"]


class TestSeededCatalog:
    async def test_every_model_is_stored_once(self, catalog: CatalogCaller) -> None:
        reply = await catalog.call(
            "ListModels", catalog_pb2.ListModelsRequest(include_disabled=True)
        )
        counts = collections.Counter(model.type for model in reply.models)
        assert len(reply.models) == 72
        assert counts == {"image": 35, "video": 26, "chat": 11}

    async def test_reseeding_inserts_nothing_and_keeps_the_version(
        self, catalog: CatalogCaller, catalog_settings: Settings, db: AsyncSession
    ) -> None:
        before = await repository.catalog_version(db)
        await migrate_service(CatalogProcess(), catalog_settings)
        await db.rollback()
        assert await repository.catalog_version(db) == before
        count = await db.scalar(select(func.count()).select_from(Model))
        assert count == 72

    async def test_reseeding_keeps_an_operator_edit(
        self, catalog: CatalogCaller, catalog_settings: Settings, db: AsyncSession
    ) -> None:
        await catalog.edit_model("fal-recraft-v3", name="Recraft (house style)")
        try:
            await migrate_service(CatalogProcess(), catalog_settings)
            row = await stored_row(db, "fal-recraft-v3")
            assert row.name == "Recraft (house style)"
        finally:
            await catalog.edit_model("fal-recraft-v3", name="Recraft V3")

    async def test_reseeding_does_not_enable_a_disabled_model(
        self, catalog: CatalogCaller, catalog_settings: Settings, db: AsyncSession
    ) -> None:
        await catalog.edit_model("fal-kolors", enabled=False)
        try:
            await migrate_service(CatalogProcess(), catalog_settings)
            assert (await stored_row(db, "fal-kolors")).enabled is False
        finally:
            await catalog.edit_model("fal-kolors", enabled=True)

    async def test_reseeding_restores_a_deleted_model_and_bumps_the_version(
        self, catalog: CatalogCaller, catalog_settings: Settings, db: AsyncSession
    ) -> None:
        await db.execute(delete(Model).where(Model.id == "fal-playground-v3"))
        await db.commit()
        before = await repository.catalog_version(db)
        await migrate_service(CatalogProcess(), catalog_settings)
        await db.rollback()
        assert await repository.catalog_version(db) == before + 1
        assert (await stored_row(db, "fal-playground-v3")).base_cost_micros == 15_000

    async def test_migrate_command_seeds_a_fresh_schema(
        self, catalog_settings: Settings, db: AsyncSession
    ) -> None:
        """The real `python -m services.catalog.main migrate`, as deployments run it."""
        await db.execute(delete(Model).where(Model.type == "chat"))
        await db.commit()
        environment = {
            **os.environ,
            "DATABASE_URL": str(catalog_settings.database_url),
            "PYTHONPATH": f"{ROOT}:{ROOT / 'protos'}",
            "LOG_LEVEL": "WARNING",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.catalog.main",
            "migrate",
            cwd=ROOT,
            env=environment,
        )
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
        await db.rollback()
        chat = await db.scalar(
            select(func.count()).select_from(Model).where(Model.type == "chat")
        )
        assert chat == 11
