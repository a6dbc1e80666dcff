"""Generates the JSON Schema files in ``schemas/json/`` from the pydantic contracts.

Producers in other languages validate against these files; Python code uses the models. The
files are generated, never edited by hand, and a test checks that they match the models.
"""

from __future__ import annotations

import json
from pathlib import Path

from schemas.contracts import CONTRACTS, SCHEMA_VERSION

SCHEMA_DIR = Path(__file__).with_name("json")


def schema_documents() -> dict[str, str]:
    """File name → JSON text for every contract at the current schema version."""
    documents = {}
    for name, model in CONTRACTS.items():
        schema = model.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://xdrec.dev/schemas/{name}.v{SCHEMA_VERSION}.json"
        documents[f"{name}.v{SCHEMA_VERSION}.json"] = json.dumps(schema, indent=2, sort_keys=True)
    return documents


def export_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema document; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, text in schema_documents().items():
        path = directory / file_name
        path.write_text(text + "\n", encoding="utf-8")
        written.append(path)
    return written
