"""Feature schemas: which columns are the label, the dense features and the sparse (categorical) features.

A schema is a small JSON/YAML document::

    {"label": "label",
     "dense": [{"name": "I1", "transform": "log1p"}, ...],
     "sparse": [{"name": "C1", "num_embeddings": 100000, "encoding": "hex"},
                {"name": "genres", "num_embeddings": 32, "encoding": "int", "multi_hot": true, "separator": "|",
                 "pooling": "mean"}]}

Encodings of sparse values: ``int`` (a non-negative integer id, modulo ``num_embeddings``), ``hex`` (a
hexadecimal id such as Criteo's ``68fd1e64``, modulo ``num_embeddings``) and ``hash`` (any string, hashed
with CRC-32, modulo ``num_embeddings``). Dense transforms: ``none`` or ``log1p`` (``log(x + 1)``, Criteo).

libfm / libsvm files (``label idx:val ...``) map their global feature indices to fields by each sparse field's
``index_range: [lo, hi)`` (the local id is ``idx - lo``) or, without ranges, by position. ``label_rule`` says how
a label cell reads: ``binary`` (0 / 1), ``sign`` (1 vs -1 or 0) or ``positive`` (a count: > 0 is 1, as Frappe's
``cnt``). ``delimiter`` is the CSV separator (Frappe's original CSV is tab-separated).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DenseField",
    "FLOAT32_MAX",
    "FRAPPE_FIELDS",
    "SparseField",
    "Schema",
    "criteo_schema",
    "frappe_csv_schema",
    "frappe_schema",
    "load_schema",
]

Encoding = Literal["int", "hex", "hash"]

#: the largest magnitude a dense value may have: the models compute in float32 (``numpy.finfo(float32).max``)
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class DenseField:
    """A numeric column.

    Attributes:
        name: column name. transform: ``none`` or ``log1p``. default: value of an empty cell.
        negative: what a negative value (a negative count) does: ``error`` (a bad row) or ``clip`` (to 0).
            Only checked with ``log1p``.
    """

    name: str
    transform: Literal["none", "log1p"] = "none"
    default: float = 0.0
    negative: Literal["error", "clip"] = "error"


@dataclass(frozen=True)
class SparseField:
    """A categorical column embedded through one table.

    Attributes:
        name: column (and torchrec feature) name. num_embeddings: table size (ids are taken modulo it).
        encoding: ``int``, ``hex`` or ``hash``. multi_hot: the cell holds several ids joined by ``separator``.
        pooling: ``sum`` or ``mean`` over the ids of a multi-hot cell.
    """

    name: str
    num_embeddings: int
    encoding: Encoding = "int"
    multi_hot: bool = False
    separator: str = "|"
    pooling: Literal["sum", "mean"] = "sum"
    index_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.index_range is not None:
            lo, hi = (int(v) for v in self.index_range)
            if not 0 <= lo < hi or hi - lo > self.num_embeddings:
                raise ValueError(
                    f"schema: sparse field {self.name!r}: index_range [{lo}, {hi}) must be non-empty, start at >= 0 "
                    f"and fit the {self.num_embeddings} table rows"
                )
            object.__setattr__(self, "index_range", (lo, hi))


@dataclass(frozen=True)
class Schema:
    """Label, dense and sparse columns of a ranking data set."""

    label: str = "label"
    dense: tuple[DenseField, ...] = ()
    sparse: tuple[SparseField, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
    label_rule: Literal["binary", "sign", "positive"] = "binary"
    delimiter: str = ","

    def __post_init__(self) -> None:
        names = [self.label] + [f.name for f in self.dense] + [f.name for f in self.sparse]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"schema: duplicate column names {dup}")
        if not self.sparse:
            raise ValueError("schema: at least one sparse feature is needed")
        for f in self.sparse:
            if f.num_embeddings < 1:
                raise ValueError(f"schema: sparse field {f.name!r}: num_embeddings must be >= 1")
            if f.encoding not in ("int", "hex", "hash"):
                raise ValueError(f"schema: sparse field {f.name!r}: unknown encoding {f.encoding!r}")
        if self.label_rule not in ("binary", "sign", "positive"):
            raise ValueError(f"schema: unknown label_rule {self.label_rule!r} (binary, sign or positive)")
        if len(self.delimiter) != 1:
            raise ValueError(f"schema: delimiter must be one character, got {self.delimiter!r}")
        for d in self.dense:
            if d.transform not in ("none", "log1p"):
                raise ValueError(f"schema: dense field {d.name!r}: unknown transform {d.transform!r}")
            if not abs(float(d.default)) <= FLOAT32_MAX:
                raise ValueError(f"schema: dense field {d.name!r}: default {d.default!r} is not a float32 number")

    @property
    def sparse_names(self) -> list[str]:
        """torchrec feature names, in table order."""
        return [f.name for f in self.sparse]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the inverse of :meth:`from_dict`)."""
        return {
            "label": self.label,
            "dense": [asdict(f) for f in self.dense],
            "sparse": [asdict(f) for f in self.sparse],
            "extra": dict(self.extra),
            "label_rule": self.label_rule,
            "delimiter": self.delimiter,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "schema") -> Schema:
        """Builds a schema from a mapping; errors name ``where`` and the field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
        unknown = set(data) - {"label", "dense", "sparse", "extra", "label_rule", "delimiter"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        try:
            dense = tuple(DenseField(**d) for d in data.get("dense", []))
            sparse = tuple(SparseField(**s) for s in data.get("sparse", []))
        except TypeError as exc:
            raise ValueError(f"{where}: bad field entry: {exc}") from exc
        try:
            return cls(
                str(data.get("label", "label")),
                dense,
                sparse,
                dict(data.get("extra", {})),
                data.get("label_rule", "binary"),
                str(data.get("delimiter", ",")),
            )
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


def criteo_schema(table_size: int = 1_000_000, negative: Literal["error", "clip"] = "clip") -> Schema:
    """Criteo (Kaggle / 1TB): label, ``I1..I13`` counts (``log(x + 1)``), ``C1..C26`` hexadecimal ids.

    Criteo's ``I2`` holds a few negative values; ``negative="clip"`` maps them to 0 (the usual recipe),
    ``"error"`` treats them as bad rows.
    """
    dense = tuple(DenseField(f"I{i}", "log1p", 0.0, negative) for i in range(1, 14))
    sparse = tuple(SparseField(f"C{i}", table_size, "hex") for i in range(1, 27))
    return Schema("label", dense, sparse)


#: Frappe (Baltrunas et al. 2015): its 10 categorical fields in the libfm files' order, with the number of values
FRAPPE_FIELDS: tuple[tuple[str, int], ...] = (
    ("user", 957),
    ("item", 4082),
    ("daytime", 7),
    ("weekday", 7),
    ("isweekend", 2),
    ("homework", 3),
    ("cost", 2),
    ("weather", 9),
    ("country", 80),
    ("city", 233),
)


def frappe_schema() -> Schema:
    """Frappe's libfm files (the NFM / AFM split): label ``1`` / ``-1``, ten one-hot fields whose global indices
    follow each other in :data:`FRAPPE_FIELDS` order (user 0-956, item 957-5038, ..., city 5149-5381)."""
    sparse, lo = [], 0
    for name, n in FRAPPE_FIELDS:
        sparse.append(SparseField(name, n, "int", index_range=(lo, lo + n)))
        lo += n
    return Schema("label", (), tuple(sparse), label_rule="sign")


def frappe_csv_schema(table_size: int = 1024) -> Schema:
    """The original Frappe CSV (tab-separated, header ``user item cnt daytime ...``): the label is ``cnt > 0``;
    ``user`` and ``item`` are integer ids, the other fields are names (``morning``, ``sunny``...) hashed into
    ``table_size`` rows."""
    sparse = tuple(
        SparseField(name, n, "int") if name in ("user", "item") else SparseField(name, table_size, "hash")
        for name, n in FRAPPE_FIELDS
    )
    return Schema("cnt", (), sparse, label_rule="positive", delimiter="\t")


def load_schema(path: str | Path) -> Schema:
    """Reads a schema from JSON or YAML; built-in names: ``criteo`` / ``criteo:<table_size>``, ``frappe`` (libfm)
    and ``frappe-csv`` (the original tab-separated log)."""
    text = str(path)
    if text == "frappe":
        return frappe_schema()
    if text == "frappe-csv":
        return frappe_csv_schema()
    if text == "criteo" or text.startswith("criteo:"):
        size = int(text.split(":", 1)[1]) if ":" in text else 1_000_000
        return criteo_schema(size)
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"{p}: cannot read schema: {exc}") from exc
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(raw)
    else:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"{p}: invalid JSON: {exc}") from exc
    return Schema.from_dict(data, str(p))
