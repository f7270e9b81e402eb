"""Ranking data: row parsing with line-numbered errors, Criteo TSV / CSV / Parquet / JSON-lines readers,
columnar in-memory tables and torchrec batches (dense tensor + ``KeyedJaggedTensor`` + labels).

Every reader streams: it holds at most ``chunk_rows`` parsed rows at a time, so a Criteo day file (tens of
GB, optionally ``.gz``) is read with bounded memory. Bad rows (wrong column count, non-hexadecimal ids,
NaN, numbers beyond float32's range, negative counts, labels other than 0/1, ...) raise :class:`DataError`
naming the file, line and column with ``on_error="reject"``, or are skipped and counted in a
:class:`ReadReport` with ``on_error="skip"``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from .schema import FLOAT32_MAX, DenseField, Schema, SparseField

if TYPE_CHECKING:
    from torchrec.datasets.utils import Batch

__all__ = [
    "DataError",
    "ReadReport",
    "RowParser",
    "RankingTable",
    "TableBuilder",
    "iter_criteo_tsv",
    "iter_csv",
    "iter_parquet",
    "iter_json_lines",
    "iter_libfm",
    "iter_table",
    "load_table",
    "OnError",
    "FLOAT32_MAX",
    "plural",
]

OnError = Literal["reject", "skip"]
CRITEO_COLUMNS = 40


class DataError(ValueError):
    """A bad input row; the message names the file, the line and the column."""


@dataclass
class ReadReport:
    """What a reader saw: rows read, rows skipped, and the first error messages."""

    rows: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    max_errors: int = 20

    def add_error(self, message: str) -> None:
        self.skipped += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(message)

    def summary(self) -> str:
        """One line, e.g. ``1000 rows read, 3 bad rows skipped (first: data.tsv:7: ...)`` or
        ``1 row read, no bad rows``."""
        text = f"{plural(self.rows, 'row')} read, "
        if not self.skipped:
            return text + "no bad rows"
        first = f" (first: {self.errors[0]})" if self.errors else ""
        return text + f"{plural(self.skipped, 'bad row')} skipped{first}"


def plural(n: int, noun: str) -> str:
    """``"1 row"``, ``"3 rows"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class _BadCellError(ValueError):
    pass


def _shown(cell: Any) -> str:
    """A cell as an error message shows it: floats as ``1e+300``, long texts and integers cut to 24 characters."""
    text = repr(cell) if isinstance(cell, float) else str(cell)
    return text if len(text) <= 24 else text[:20] + "..."


def _out_of_range(name: str, cell: Any, what: str = "") -> _BadCellError:
    return _BadCellError(
        f"field {name!r} = {_shown(cell)}{what} is outside the range float32 can represent (|x| <= 3.4e38)"
    )


def _dense_value(f: DenseField, cell: Any) -> float:
    """A dense cell as the model reads it (after the transform); it must fit float32, the model's dtype, both
    before and after the transform (:data:`FLOAT32_MAX`)."""
    if cell is None or (isinstance(cell, str) and cell.strip() == ""):
        return f.default
    if isinstance(cell, bool):
        raise _BadCellError(f"column {f.name!r}: {cell!r} is not a number")
    try:
        x = float(cell)
    except OverflowError:  # an integer beyond float64
        raise _out_of_range(f.name, cell) from None
    except (TypeError, ValueError):
        raise _BadCellError(f"column {f.name!r}: {cell!r} is not a number") from None
    if math.isnan(x) or (math.isinf(x) and (isinstance(cell, float) or "inf" in str(cell).lower())):
        raise _BadCellError(f"column {f.name!r}: {cell!r} is not finite (NaN or inf)")
    if not abs(x) <= FLOAT32_MAX:  # finite in float64 (or a text such as 1e400), but inf in float32
        raise _out_of_range(f.name, cell)
    if f.transform == "log1p":
        if x < 0:
            if f.negative == "error":
                raise _BadCellError(f"column {f.name!r}: negative count {cell!r}")
            x = 0.0
        x = math.log1p(x)
    if not abs(x) <= FLOAT32_MAX:  # no transform overflows today; kept for any future one
        raise _out_of_range(f.name, cell, f" ({f.transform}: {x:.3g})")
    return x


def _one_id(f: SparseField, token: Any) -> int:
    if f.encoding == "hash":
        return zlib.crc32(str(token).encode("utf-8")) % f.num_embeddings
    if isinstance(token, bool) or (not isinstance(token, (str, int))):
        raise _BadCellError(f"column {f.name!r}: {token!r} is not an id")
    if f.encoding == "hex":
        text = token if isinstance(token, str) else format(token, "x")
        try:
            v = int(text, 16)
        except ValueError:
            raise _BadCellError(f"column {f.name!r}: {token!r} is not hexadecimal") from None
        if text.strip().startswith("-"):
            raise _BadCellError(f"column {f.name!r}: {token!r} is not hexadecimal")
        return v % f.num_embeddings
    try:
        v = int(token)
    except ValueError:
        raise _BadCellError(f"column {f.name!r}: {token!r} is not an integer id") from None
    if v < 0:
        raise _BadCellError(f"column {f.name!r}: negative id {token!r}")
    return v % f.num_embeddings


def _sparse_ids(f: SparseField, cell: Any) -> list[int]:
    if cell is None:
        return []
    if isinstance(cell, (list, tuple)):
        if not f.multi_hot and len(cell) > 1:
            raise _BadCellError(f"column {f.name!r}: {len(cell)} ids in a single-hot column")
        return [_one_id(f, t) for t in cell]
    if isinstance(cell, str):
        cell = cell.strip()
        if cell == "":
            return []
        tokens = [t for t in cell.split(f.separator)] if f.multi_hot else [cell]
        return [_one_id(f, t.strip()) for t in tokens if t.strip() != ""]
    return [_one_id(f, cell)]


def _label_value(cell: Any, name: str, rule: str = "binary") -> float:
    """A label cell by the schema's ``label_rule``: ``binary`` 0 / 1, ``sign`` 1 vs -1 / 0, ``positive`` count > 0."""
    try:
        y = float(cell)
    except (TypeError, ValueError):
        raise _BadCellError(f"column {name!r}: label {cell!r} is not a number") from None
    if rule == "positive":
        if not math.isfinite(y) or y < 0:
            raise _BadCellError(f"column {name!r}: count {cell!r} is not a non-negative number")
        return 1.0 if y > 0 else 0.0
    if rule == "sign":
        if y not in (1.0, 0.0, -1.0):
            raise _BadCellError(f"column {name!r}: label {cell!r} is not 1, 0 or -1")
        return 1.0 if y > 0 else 0.0
    if y not in (0.0, 1.0):
        raise _BadCellError(f"column {name!r}: label {cell!r} is not 0 or 1")
    return y


class RowParser:
    """Parses one row (cells by column name or in schema order) into label, dense values and sparse ids.

    Args:
        schema: the columns. with_label: whether rows carry the label (scoring rows do not).
    """

    def __init__(self, schema: Schema, with_label: bool = True) -> None:
        self.schema, self.with_label = schema, with_label

    def parse_cells(
        self, label: Any, dense: Sequence[Any], sparse: Sequence[Any], where: str
    ) -> tuple[float, list[float], list[list[int]]]:
        """Cells in schema order; raises :class:`DataError` prefixed with ``where`` (``file:line``)."""
        try:
            y = _label_value(label, self.schema.label, self.schema.label_rule) if self.with_label else 0.0
            d = [_dense_value(f, c) for f, c in zip(self.schema.dense, dense)]
            s = [_sparse_ids(f, c) for f, c in zip(self.schema.sparse, sparse)]
        except _BadCellError as exc:
            raise DataError(f"{where}: {exc}") from None
        return y, d, s

    def parse_mapping(self, row: Mapping[str, Any], where: str) -> tuple[float, list[float], list[list[int]]]:
        """Cells by column name (CSV / Parquet / JSON); missing columns are errors, extra ones are ignored."""
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: expected an object with the feature columns, got {type(row).__name__}")
        needed = ([self.schema.label] if self.with_label else []) + self.schema.dense_names + self.schema.sparse_names
        missing = [c for c in needed if c not in row]
        if missing:
            raise DataError(f"{where}: missing columns {missing}")
        return self.parse_cells(
            row.get(self.schema.label),
            [row[n] for n in self.schema.dense_names],
            [row[n] for n in self.schema.sparse_names],
            where,
        )


@dataclass
class RankingTable:
    """Columnar rows: labels ``(N,)``, dense ``(N, D)`` and, per sparse feature, concatenated ids + lengths."""

    schema: Schema
    labels: np.ndarray
    dense: np.ndarray
    values: list[np.ndarray]
    lengths: list[np.ndarray]

    def __post_init__(self) -> None:
        self.offsets = [np.concatenate([[0], np.cumsum(n, dtype=np.int64)]) for n in self.lengths]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Rows ``idx``: labels, dense, and per-feature ids / lengths in row order."""
        idx = np.asarray(idx, dtype=np.int64)
        vals, lens = [], []
        for v, n, off in zip(self.values, self.lengths, self.offsets):
            ln = n[idx]
            if ln.size and (ln == 1).all() and v.size == n.size:  # single-hot fast path
                vals.append(v[idx])
            else:
                starts = off[idx]
                total = int(ln.sum())
                first = np.repeat(starts - np.concatenate([[0], np.cumsum(ln)[:-1]]), ln)
                vals.append(v[first + np.arange(total)] if total else np.zeros(0, np.int64))
            lens.append(ln)
        return self.labels[idx], self.dense[idx], vals, lens

    def batch(self, idx: np.ndarray | None = None) -> Batch:
        """A torchrec ``Batch`` (dense ``(B, D)``, ``KeyedJaggedTensor`` feature-major, labels ``(B,)``)."""
        import torch
        from torchrec.datasets.utils import Batch
        from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

        if idx is None:
            idx = np.arange(len(self))
        y, d, vals, lens = self.take(idx)
        kjt = KeyedJaggedTensor(
            keys=self.schema.sparse_names,
            values=torch.from_numpy(np.concatenate(vals).astype(np.int64)),
            lengths=torch.from_numpy(np.concatenate(lens).astype(np.int32)),
        )
        return Batch(dense_features=torch.from_numpy(d.copy()), sparse_features=kjt, labels=torch.from_numpy(y.copy()))

    @staticmethod
    def concat(tables: Sequence[RankingTable], schema: Schema) -> RankingTable:
        """One table from several (an empty list gives an empty table)."""
        if not tables:
            return TableBuilder(schema).build()
        nf = len(schema.sparse)
        return RankingTable(
            schema,
            np.concatenate([t.labels for t in tables]),
            np.concatenate([t.dense for t in tables]),
            [np.concatenate([t.values[f] for t in tables]) for f in range(nf)],
            [np.concatenate([t.lengths[f] for t in tables]) for f in range(nf)],
        )


class TableBuilder:
    """Accumulates parsed rows and builds a :class:`RankingTable`."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.labels: list[float] = []
        self.dense: list[list[float]] = []
        self.values: list[list[int]] = [[] for _ in schema.sparse]
        self.lengths: list[list[int]] = [[] for _ in schema.sparse]

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, label: float, dense: list[float], sparse: list[list[int]]) -> None:
        self.labels.append(label)
        self.dense.append(dense)
        for f, ids in enumerate(sparse):
            self.values[f].extend(ids)
            self.lengths[f].append(len(ids))

    def build(self) -> RankingTable:
        n, nd = len(self.labels), len(self.schema.dense)
        return RankingTable(
            self.schema,
            np.asarray(self.labels, dtype=np.float32),
            np.asarray(self.dense, dtype=np.float32).reshape(n, nd),
            [np.asarray(v, dtype=np.int64) for v in self.values],
            [np.asarray(v, dtype=np.int32) for v in self.lengths],
        )


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _numbered_lines(path: Path) -> Iterator[tuple[str, str]]:
    """``("file:line", line)`` of a text file (``.gz`` allowed), line ends stripped, empty lines skipped."""
    with _open_text(path) as fh:
        for i, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if line:
                yield f"{path}:{i}", line


def _chunked(
    rows: Iterable[tuple[str, Any]],
    parse: Any,
    schema: Schema,
    on_error: OnError,
    report: ReadReport,
    chunk_rows: int,
) -> Iterator[RankingTable]:
    if on_error not in ("reject", "skip"):
        raise ValueError(f"on_error must be 'reject' or 'skip', got {on_error!r}")
    builder = TableBuilder(schema)
    for where, raw in rows:
        try:
            parsed = parse(raw, where)
        except DataError as exc:
            if on_error == "reject":
                raise
            report.add_error(str(exc))
            continue
        builder.add(*parsed)
        report.rows += 1
        if len(builder) >= chunk_rows:
            yield builder.build()
            builder = TableBuilder(schema)
    if len(builder):
        yield builder.build()


def iter_criteo_tsv(
    path: str | Path,
    schema: Schema,
    on_error: OnError = "reject",
    report: ReadReport | None = None,
    chunk_rows: int = 65536,
    with_label: bool = True,
) -> Iterator[RankingTable]:
    """Streams a Criteo TSV file (``.gz`` allowed): label, the dense columns, the sparse columns, tab-separated,
    empty cells missing; columns are positional in schema order (Criteo: 1 + 13 + 26 = 40)."""
    path = Path(path)
    report = report if report is not None else ReadReport()
    parser = RowParser(schema, with_label)
    nd, ns = len(schema.dense), len(schema.sparse)
    ncols = int(with_label) + nd + ns

    def rows() -> Iterator[tuple[str, list[str]]]:
        for where, line in _numbered_lines(path):
            yield where, line.split("\t")

    def parse(cells: list[str], where: str) -> tuple[float, list[float], list[list[int]]]:
        if len(cells) != ncols:
            raise DataError(f"{where}: {len(cells)} tab-separated columns, expected {ncols}")
        o = int(with_label)
        return parser.parse_cells(cells[0] if with_label else None, cells[o : o + nd], cells[o + nd :], where)

    yield from _chunked(rows(), parse, schema, on_error, report, chunk_rows)


def iter_csv(
    path: str | Path,
    schema: Schema,
    on_error: OnError = "reject",
    report: ReadReport | None = None,
    chunk_rows: int = 65536,
    with_label: bool = True,
    delimiter: str | None = None,
) -> Iterator[RankingTable]:
    """Streams a CSV file with a header row; columns are found by the schema's names (separator: ``delimiter``,
    default the schema's, e.g. a tab for Frappe's original log)."""
    delimiter = delimiter or schema.delimiter
    path = Path(path)
    report = report if report is not None else ReadReport()
    parser = RowParser(schema, with_label)
    needed = ([schema.label] if with_label else []) + schema.dense_names + schema.sparse_names

    def rows() -> Iterator[tuple[str, Any]]:
        with _open_text(path) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            missing = [c for c in needed if c not in header]
            if missing:
                raise DataError(f"{path}:1: header lacks the schema columns {missing}")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    yield f"{path}:{line}", len(row)
                    continue
                yield f"{path}:{line}", dict(zip(header, row))

    def parse(row: Any, where: str) -> tuple[float, list[float], list[list[int]]]:
        if isinstance(row, int):
            raise DataError(f"{where}: {row} columns, the header has a different count")
        return parser.parse_mapping(row, where)

    yield from _chunked(rows(), parse, schema, on_error, report, chunk_rows)


def iter_parquet(
    path: str | Path,
    schema: Schema,
    on_error: OnError = "reject",
    report: ReadReport | None = None,
    chunk_rows: int = 65536,
    with_label: bool = True,
) -> Iterator[RankingTable]:
    """Streams a Parquet file batch by batch; errors name the row number (1-based)."""
    import pyarrow.parquet as pq

    path = Path(path)
    report = report if report is not None else ReadReport()
    parser = RowParser(schema, with_label)
    needed = ([schema.label] if with_label else []) + schema.dense_names + schema.sparse_names
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc
    missing = [c for c in needed if c not in pf.schema_arrow.names]
    if missing:
        raise DataError(f"{path}: lacks the schema columns {missing}")

    def rows() -> Iterator[tuple[str, Any]]:
        n = 0
        for rb in pf.iter_batches(batch_size=min(chunk_rows, 65536), columns=needed):
            for row in rb.to_pylist():
                n += 1
                yield f"{path}:row {n}", row

    yield from _chunked(rows(), parser.parse_mapping, schema, on_error, report, chunk_rows)


def iter_json_lines(
    lines: Iterable[str],
    schema: Schema,
    on_error: OnError = "reject",
    report: ReadReport | None = None,
    chunk_rows: int = 65536,
    with_label: bool = False,
    source: str = "<stdin>",
) -> Iterator[RankingTable]:
    """Streams JSON lines (one object per line: column name -> value; multi-hot as a list or a joined string)."""
    report = report if report is not None else ReadReport()
    parser = RowParser(schema, with_label)

    def rows() -> Iterator[tuple[str, Any]]:
        for i, line in enumerate(lines, 1):
            if line.strip() == "":
                continue
            yield f"{source}:{i}", line

    def parse(line: str, where: str) -> tuple[float, list[float], list[list[int]]]:
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{where}: invalid JSON: {exc}") from None
        return parser.parse_mapping(obj, where)

    yield from _chunked(rows(), parse, schema, on_error, report, chunk_rows)


def iter_libfm(
    path: str | Path,
    schema: Schema,
    on_error: OnError = "reject",
    report: ReadReport | None = None,
    chunk_rows: int = 65536,
    with_label: bool = True,
) -> Iterator[RankingTable]:
    """Streams libfm / libsvm rows ``label idx:val idx:val ...`` (``.gz`` allowed).

    Labels ``1`` / ``-1`` and ``1`` / ``0`` both read as 1 / 0. Features are one-hot (``val`` must be 1) and map
    to the schema's sparse fields either by **index range** (every sparse field has ``index_range: [lo, hi)``;
    the local id is ``idx - lo``; the built-in ``frappe`` schema) or by **position** (the k-th token belongs to
    the k-th sparse field; the id is ``idx`` modulo the table size). Dense columns are not supported here.
    """
    path = Path(path)
    report = report if report is not None else ReadReport()
    if schema.dense:
        raise ValueError(f"{path}: libfm rows carry one-hot sparse features only; the schema has dense columns")
    fields = schema.sparse
    by_range = all(f.index_range is not None for f in fields)
    bounds = sorted((f.index_range[0], f.index_range[1], k) for k, f in enumerate(fields) if f.index_range)

    def field_of(idx: int) -> int | None:
        for lo, hi, k in bounds:
            if lo <= idx < hi:
                return k
        return None

    def rows() -> Iterator[tuple[str, list[str]]]:
        for where, line in _numbered_lines(path):
            tokens = line.split()
            if tokens:  # whitespace-only lines carry no row
                yield where, tokens

    def parse(tokens: list[str], where: str) -> tuple[float, list[float], list[list[int]]]:
        try:  # both libfm conventions: 1 / -1 and 1 / 0
            y = _label_value(tokens[0], "label", "sign") if with_label else 0.0
        except _BadCellError as exc:
            raise DataError(f"{where}: {exc}") from None
        feats = tokens[1:] if with_label else tokens
        ids: list[list[int]] = [[] for _ in fields]
        if not by_range and len(feats) != len(fields):
            raise DataError(f"{where}: {len(feats)} features, the schema has {len(fields)} fields (by position)")
        for pos, tok in enumerate(feats):
            idx_s, sep, val_s = tok.partition(":")
            try:
                idx, val = int(idx_s), float(val_s) if sep else 1.0
            except ValueError:
                raise DataError(f"{where}: feature {tok!r} is not idx:value") from None
            if idx < 0:
                raise DataError(f"{where}: negative feature index {idx}")
            if val != 1.0:
                raise DataError(f"{where}: feature {tok!r}: only one-hot (value 1) features are supported")
            if by_range:
                k = field_of(idx)
                if k is None:
                    raise DataError(f"{where}: feature index {idx} lies in no field's index_range")
                lo = fields[k].index_range[0]  # type: ignore[index]
                ids[k].append(idx - lo)
            else:
                k = pos
                ids[k].append(idx % fields[k].num_embeddings)
        for f, got in zip(fields, ids):
            if not got:
                raise DataError(f"{where}: no id for field {f.name!r}")
            if len(got) > 1 and not f.multi_hot:
                raise DataError(f"{where}: {len(got)} ids for the single-valued field {f.name!r}")
        return y, [], ids

    yield from _chunked(rows(), parse, schema, on_error, report, chunk_rows)


def iter_table(
    path: str | Path,
    schema: Schema,
    on_error: OnError = "reject",
    report: ReadReport | None = None,
    chunk_rows: int = 65536,
    with_label: bool = True,
) -> Iterator[RankingTable]:
    """Picks the reader by suffix: ``.parquet``, ``.csv(.gz)`` (header row, the schema's delimiter), ``.jsonl``,
    ``.libfm`` / ``.libsvm`` / ``.svm`` (``label idx:val ...``), else Criteo-style positional TSV (``.tsv``,
    ``.txt``, ``.gz`` day files)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such data file")
    suffixes = [s for s in p.suffixes if s != ".gz"]
    kind = suffixes[-1] if suffixes else ""
    if kind == ".parquet":
        return iter_parquet(p, schema, on_error, report, chunk_rows, with_label)
    if kind == ".csv":
        return iter_csv(p, schema, on_error, report, chunk_rows, with_label)
    if kind in (".libfm", ".libsvm", ".svm"):
        return iter_libfm(p, schema, on_error, report, chunk_rows, with_label)
    if kind == ".jsonl":
        fh = _open_text(p)
        return iter_json_lines(fh, schema, on_error, report, chunk_rows, with_label, str(p))
    return iter_criteo_tsv(p, schema, on_error, report, chunk_rows, with_label)


def load_table(
    path: str | Path,
    schema: Schema,
    on_error: OnError = "reject",
    report: ReadReport | None = None,
    with_label: bool = True,
) -> RankingTable:
    """Reads a whole file into memory (small and medium sets; stream big ones with :func:`iter_table`)."""
    return RankingTable.concat(list(iter_table(path, schema, on_error, report, with_label=with_label)), schema)
