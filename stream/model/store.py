"""Where artifacts live: a local folder by default, behind a URI so object stores can follow.

Versions are folder names under the store root; a version name that could escape the root
(``..``, slashes, absolute paths) is refused before any path is built from it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

from stream.model.artifacts import MANIFEST, ArtifactRefused

VERSION_PATTERN = re.compile(r"^v[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")


class ModelStore:
    """A model store at ``file:///path`` or a plain path."""

    def __init__(self, uri: str | Path) -> None:
        parsed = urlparse(str(uri))
        if parsed.scheme not in ("", "file"):
            raise ValueError(f"model store {uri!r}: only file:// or local paths are supported")
        self.root = Path(parsed.path if parsed.scheme == "file" else str(uri)).resolve()
        self.uri = self.root.as_uri()

    def path_of(self, version: str) -> Path:
        """The folder of ``version``; refuses names that could leave the store."""
        if not VERSION_PATTERN.match(version) or ".." in version:
            raise ArtifactRefused("path_escape", f"version name {version!r} is not allowed")
        path = (self.root / version).resolve()
        if path.parent != self.root:
            raise ArtifactRefused("path_escape", f"{version!r} resolves outside {self.root}")
        return path

    def resolve_uri(self, artifact_uri: str) -> Path:
        """The local folder of an artifact URI from a ModelUpdate; must lie inside the store."""
        parsed = urlparse(artifact_uri)
        if parsed.scheme != "file":
            raise ArtifactRefused("path_escape", f"{artifact_uri!r} is not a file:// URI")
        path = Path(parsed.path).resolve()
        if path.parent != self.root:
            raise ArtifactRefused("path_escape", f"{artifact_uri!r} lies outside {self.uri}")
        return self.path_of(path.name)

    def versions(self) -> list[dict]:
        """Manifests of every stored version, oldest first."""
        manifests = []
        if not self.root.is_dir():
            return manifests
        for folder in self.root.iterdir():
            if folder.is_dir() and VERSION_PATTERN.match(folder.name):
                try:
                    manifests.append(json.loads((folder / MANIFEST).read_text()))
                except (OSError, ValueError):
                    continue
        return sorted(manifests, key=lambda m: m.get("created_at", 0.0))
