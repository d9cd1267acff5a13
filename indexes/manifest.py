"""The manifest: what an index holds and which model and corpus made it."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from starbucks.errors import InputError
from starbucks.sizes import Size, parse_sizes

FORMAT_VERSION = 2  # 2: narrower sizes of a layer may be stored as prefixes of its widest (``prefixes``)
READABLE_VERSIONS = (1, 2)
MANIFEST = "manifest.json"
INDEX_TYPES = ("flat", "hnsw", "ivfpq")
BINARY_INDEX_TYPES = ("flat", "hnsw", "ivf")  # FAISS types of the binary shortlists


@dataclasses.dataclass
class Manifest:
    model_name: str  # "default", a folder, or a hub id
    model_fingerprint: str
    model_config: dict
    shortlist: list[Size]  # sizes with a FAISS index
    rerank: list[Size]  # sizes stored only as vectors
    index_type: str
    num_docs: int
    corpus: str
    corpus_fingerprint: str
    files: dict[str, dict]  # relative path -> {"bytes", "sha256"}
    format_version: int = FORMAT_VERSION
    # documents without text: {"policy": "index" | "skip", "count": n, "ids": [first 1000 ids]}
    empty_docs: dict = dataclasses.field(default_factory=dict)
    binary_index: str = "flat"  # the FAISS index type of the binary shortlists (shortlist/bLxD.faiss), if any
    # sizes stored as prefixes of their layer's widest stored size: {size: widest} (see indexes.prefixes)
    prefixes: dict = dataclasses.field(default_factory=dict)

    @property
    def normalized(self) -> bool:
        """Whether the model makes unit-length vectors (as ``ModelConfig.normalized``)."""
        return bool(self.model_config.get("normalize") or self.model_config.get("similarity") == "cosine")

    @property
    def sizes(self) -> list[Size]:
        """Every stored size, smallest first."""
        return sorted(set(self.shortlist) | set(self.rerank))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shortlist"] = [str(s) for s in self.shortlist]
        d["rerank"] = [str(s) for s in self.rerank]
        d["prefixes"] = {str(s): str(w) for s, w in self.prefixes.items()}
        return d

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST
        if not folder.is_dir():
            raise InputError("no such index folder", folder)
        if not path.is_file():
            hint = " (an unfinished build? rerun the same index command to resume)" if Path(f"{folder}.partial").exists() else ""
            raise InputError(f"not an index: no {MANIFEST}{hint}", folder)
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"corrupt manifest ({e})", path) from None
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise InputError(
                f"index format version {version} is not supported (this release reads "
                f"{', '.join(map(str, READABLE_VERSIONS))}); rebuild the index",
                path,
            )
        try:
            data["shortlist"] = parse_sizes(data["shortlist"]) if data["shortlist"] else []
            data["rerank"] = parse_sizes(data["rerank"]) if data["rerank"] else []
            data["prefixes"] = {Size.parse(s): Size.parse(w) for s, w in data.get("prefixes", {}).items()}
            return cls(**data)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"corrupt manifest ({e})", path) from None
