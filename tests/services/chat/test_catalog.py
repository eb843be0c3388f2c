"""services/chat/catalog.py: a catalog model as chat reads it."""

from __future__ import annotations

from google.protobuf import struct_pb2
from omnihub.catalog.v1 import catalog_pb2

from services.chat.catalog import DEFAULT_MAX_CONTEXT, DEFAULT_MAX_OUTPUT, chat_model_of


def _model(**capabilities: bool | int | str) -> catalog_pb2.Model:
    model = catalog_pb2.Model(id="vendor/model", name="Model", endpoint="vendor/m1")
    model.capabilities.update(capabilities)
    return model


def test_capabilities_are_read_from_the_catalog() -> None:
    model = chat_model_of(
        _model(vision=True, webSearch=True, maxContext=200000, maxOutput=8192)
    )

    assert model.endpoint == "vendor/m1"
    assert model.vision is True
    assert model.web_search is True
    assert (model.max_context, model.max_output) == (200_000, 8192)


def test_missing_or_odd_capabilities_take_safe_defaults() -> None:
    model = chat_model_of(_model(vision="yes", maxOutput=-1, maxContext=True))

    assert model.vision is False
    assert model.web_search is False
    assert (model.max_context, model.max_output) == (
        DEFAULT_MAX_CONTEXT,
        DEFAULT_MAX_OUTPUT,
    )


def test_a_model_without_an_endpoint_is_called_by_its_id() -> None:
    model = catalog_pb2.Model(id="vendor/model", capabilities=struct_pb2.Struct())

    assert chat_model_of(model).endpoint == "vendor/model"
