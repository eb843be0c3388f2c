"""PostgreSQL access: one async engine per service, bound to its own schema,
and Alembic migrations whose version table lives inside that schema."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from libs.config import Settings


def async_url(url: str) -> str:
    """Accept postgres://, postgresql:// or postgresql+asyncpg:// URLs."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(
        hide_password=False
    )


def _ssl_context(settings: Settings) -> ssl.SSLContext | bool:
    if settings.database_ssl == "disable":
        return False
    context = ssl.create_default_context(cafile=settings.database_ca_cert)
    if settings.database_ssl == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def create_engine(
    settings: Settings, schema: str, url: str | None = None
) -> AsyncEngine:
    database_url = url or settings.database_url
    if not database_url:
        raise RuntimeError("DATABASE_URL is not set")
    return create_async_engine(
        async_url(database_url),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        # No ping before every checkout (a round trip per request): a dead
        # connection fails its statement instead, SQLAlchemy drops the pool,
        # and the call fails as UNAVAILABLE, which callers may retry.
        pool_pre_ping=False,
        pool_recycle=1800,
        # A failed statement's error quotes its bound values, and errors are
        # logged with their traceback: values may be tokens, hashes or what
        # users wrote, so they are left out.
        hide_parameters=True,
        connect_args={
            "ssl": _ssl_context(settings),
            "server_settings": {
                "search_path": schema,
                "application_name": f"omnihub-{schema}",
            },
        },
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# A Core statement runs the same on either; the hottest reads skip the ORM.
Executor = AsyncSession | AsyncConnection


async def fetch_row(db: Executor, sql: str, *args: object) -> Any:
    """One SELECT straight on the asyncpg connection under the pool, as a
    prepared statement: for the reads behind every page view, where
    SQLAlchemy's statement machinery cost more than the query (GetMe and
    GetBalance: about 0.35 ms of CPU each). Returns an asyncpg Record or None."""
    connection = await db.connection() if isinstance(db, AsyncSession) else db
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    try:
        return await driver.fetchrow(sql, *args)
    except Exception as error:
        # Whatever the driver raised (which depends on when it noticed), a
        # closed connection means the server went away under the pool.
        # SQLAlchemy would drop this connection for its own statements;
        # without that, every later checkout of it fails the same way.
        if not driver.is_closed():
            raise
        await connection.invalidate()
        raise ConnectionResetError("the database connection was lost") from error


def autocommit_engine(engine: AsyncEngine) -> AsyncEngine:
    """The same pool, without BEGIN and ROLLBACK round trips around each
    statement. Only for reads that need no transaction; never write on it."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """ORM sessions on the autocommit engine, for single-statement reads."""
    return async_sessionmaker(autocommit_engine(engine), expire_on_commit=False)


def alembic_config(migrations_dir: Path, schema: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["schema"] = schema
    return config


async def migrate(engine: AsyncEngine, migrations_dir: Path, schema: str) -> None:
    """Bring `schema` to the newest revision. Safe to run from several
    processes at once: an advisory lock serialises them."""
    async with engine.connect() as connection:
        await connection.execute(
            text("SELECT pg_advisory_lock(hashtext(:s))"), {"s": schema}
        )
        try:
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.commit()
            await connection.run_sync(_upgrade, migrations_dir, schema)
            await connection.commit()
        finally:
            await connection.execute(
                text("SELECT pg_advisory_unlock(hashtext(:s))"), {"s": schema}
            )
            await connection.commit()


def _upgrade(connection: object, migrations_dir: Path, schema: str) -> None:
    config = alembic_config(migrations_dir, schema)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def ping(connection: AsyncConnection) -> None:
    await connection.execute(text("SELECT 1"))
