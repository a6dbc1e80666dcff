"""Versioned wire contracts of xdrec and the one validator that checks them."""

from __future__ import annotations

from schemas.contracts import (
    FEEDBACK_ONLY,
    SCHEMA_VERSION,
    ZERO_SHOT_VERSION,
    CatalogItem,
    Contribution,
    DeadLetter,
    ErasureRequest,
    ModelUpdate,
    Recommendation,
    RecommendedItem,
    TrainingRequest,
    Trigger,
    UserEvent,
)
from schemas.validation import EventLimits, EventValidator, Rejection

__all__ = [
    "FEEDBACK_ONLY",
    "SCHEMA_VERSION",
    "ZERO_SHOT_VERSION",
    "CatalogItem",
    "Contribution",
    "DeadLetter",
    "ErasureRequest",
    "EventLimits",
    "EventValidator",
    "ModelUpdate",
    "Recommendation",
    "RecommendedItem",
    "Rejection",
    "TrainingRequest",
    "Trigger",
    "UserEvent",
]
