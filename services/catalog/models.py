"""Tables of the catalog service, all in the `catalog` schema.

Money is stored as integer micro-US-dollars (BIGINT): a model's cost per job,
or per 1,000 tokens for chat. Margins are NUMERIC percentages.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA = "catalog"


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Model(Base):
    """One AI model users can pick: how to call it and what it costs."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32))
    # The platform that runs it (Fal.ai, OpenRouter) and the maker shown in the UI.
    provider: Mapped[str] = mapped_column(String(64))
    provider_name: Mapped[str] = mapped_column(String(128))
    endpoint: Mapped[str] = mapped_column(Text)
    text_to_image_endpoint: Mapped[str | None] = mapped_column(Text)
    image_to_image_endpoint: Mapped[str | None] = mapped_column(Text)
    image_input: Mapped[str] = mapped_column(String(16), server_default="none")
    max_input_images: Mapped[int] = mapped_column(Integer, server_default="0")
    image_param_name: Mapped[str] = mapped_column(
        String(64), server_default="image_url"
    )
    image_param_type: Mapped[str] = mapped_column(String(16), server_default="single")
    video_input: Mapped[str] = mapped_column(String(16), server_default="none")
    max_wait_seconds: Mapped[int] = mapped_column(Integer)
    base_cost_micros: Mapped[int] = mapped_column(BigInteger)
    input_cost_micros_per_1k: Mapped[int] = mapped_column(
        BigInteger, server_default="0"
    )
    output_cost_micros_per_1k: Mapped[int] = mapped_column(
        BigInteger, server_default="0"
    )
    # A JSON array, not an object, so the order the UI shows them in is kept.
    options: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    display_order: Mapped[int] = mapped_column(Integer, server_default="100")
    doc_url: Mapped[str | None] = mapped_column(Text)
    thumbnail: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    updated_by: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint("type IN ('image', 'video', 'chat')", name="models_type"),
        CheckConstraint(
            "image_input IN ('none', 'optional', 'required')", name="models_image_input"
        ),
        CheckConstraint(
            "video_input IN ('none', 'optional', 'required')", name="models_video_input"
        ),
        CheckConstraint(
            "image_param_type IN ('single', 'array')", name="models_image_param_type"
        ),
        CheckConstraint(
            "base_cost_micros >= 0 AND input_cost_micros_per_1k >= 0 "
            "AND output_cost_micros_per_1k >= 0",
            name="models_costs_not_negative",
        ),
        CheckConstraint("max_wait_seconds > 0", name="models_max_wait_positive"),
        Index("models_type_order", "type", "display_order"),
    )


class PricingSettings(Base):
    """The one row of margins and the credit price every price is made from."""

    __tablename__ = "pricing_settings"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    profit_margin: Mapped[Decimal] = mapped_column(Numeric(9, 4))
    profit_margin_image: Mapped[Decimal] = mapped_column(Numeric(9, 4))
    profit_margin_video: Mapped[Decimal] = mapped_column(Numeric(9, 4))
    profit_margin_chat: Mapped[Decimal] = mapped_column(Numeric(9, 4))
    # US dollars per credit in millionths: 1,000,000 is one dollar per credit.
    credit_price_micros: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = _now()
    updated_by: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        CheckConstraint("id = 1", name="pricing_settings_single_row"),
        CheckConstraint(
            "credit_price_micros > 0", name="pricing_settings_credit_price_positive"
        ),
    )


class CatalogState(Base):
    """A counter bumped in the same transaction as every model or pricing
    edit; replicas poll it to know when their in-memory copy is stale."""

    __tablename__ = "catalog_state"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="catalog_state_single_row"),)
