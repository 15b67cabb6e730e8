"""The request record is declared once (``gateway.records.RequestRecord``); every other
declaration of it is derived from it or, where it must be written out, held to it here."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Union, get_args, get_origin, get_type_hints

from sqlalchemy import Column

from gateway.admin.flags import EVIDENCE_FIELDS, EvidenceRequest
from gateway.admin.schemas import RequestOut
from gateway.proxy.validation import RequestParams
from gateway.records import PARAMETER_FIELDS, RequestRecord
from gateway.store.models import RequestRow

RECORD_FIELDS = {f.name: f for f in dataclasses.fields(RequestRecord)}
RECORD_TYPES = get_type_hints(RequestRecord)


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None``, else ``(annotation, False)``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def test_the_table_has_exactly_the_records_fields_in_order() -> None:
    assert [c.name for c in RequestRow.__table__.columns] == list(RECORD_FIELDS)


def test_each_column_holds_its_fields_type_and_nullability() -> None:
    for column in RequestRow.__table__.columns:
        assert isinstance(column, Column)
        kind, optional = _split_optional(RECORD_TYPES[column.name])
        assert column.type.python_type is kind, column.name
        assert column.nullable == optional, column.name


def test_a_column_default_is_the_fields_default() -> None:
    for column in RequestRow.__table__.columns:
        field = RECORD_FIELDS[column.name]
        if column.default is None or not column.default.is_scalar:
            continue
        assert column.default.arg == field.default, column.name


def test_the_proxy_copies_parameters_declared_with_the_records_types() -> None:
    """Each fits its field: the same type, optional in the record where it is in the request
    (the record may be optional where the request is not: records of refused requests)."""
    params = get_type_hints(RequestParams)
    for name in PARAMETER_FIELDS:
        kind, optional = _split_optional(params[name])
        record_kind, record_optional = _split_optional(RECORD_TYPES[name])
        assert kind is record_kind, name
        assert record_optional or not optional, name


def test_the_admin_views_are_built_from_the_record() -> None:
    assert list(RequestOut.model_fields) == list(RECORD_FIELDS)
    assert list(EvidenceRequest.model_fields) == list(EVIDENCE_FIELDS)
    assert set(EVIDENCE_FIELDS) <= set(RECORD_FIELDS)
    assert "prompt_text" not in EVIDENCE_FIELDS
    for name, info in RequestOut.model_fields.items():
        assert info.is_required(), name
        if name != "created_at":
            assert info.annotation == RECORD_TYPES[name], name
