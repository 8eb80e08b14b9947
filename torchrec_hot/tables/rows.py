"""The one split/merge codec of a logical table's rows, state and state-dict keys.

A logical table `T` (N rows) with sorted hot ids `h` (H rows, 0 < H < N) is held by two inner
tables ("parts", names from `split.py`): `T__hot`, whose row j is logical row h[j] (hot-slot
order), and `T__cold`, whose row c is the c-th logical row that is not hot (compact-cold-index
order). A table that is not split is held by one part, itself, rows in order.

`LogicalTable` converts between the two layouts for everything a part holds:
  * weights and 2-D optimizer state (rows, D): split / merged by rows;
  * TorchRec's 1-D row-wise optimizer state (rows * k,): one block of `rows` entries per column
    shard (k = 1 unless column-wise), split / merged block by block;
and names them: the logical weight key `<prefix>embedding_bags.<T>.weight` of a stock
EmbeddingBagCollection (`embeddings.` for an EmbeddingCollection), and each part's key
`<prefix>split_ebc.embedding_bags.<part>.weight` (`split_ec.embeddings.`) inside a hot/cold
module. Every state-dict hook, checkpoint path, row layout and migration
goes through this module; none spells the keys or the row order itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchrec_hot.tables.split import SPLIT_EC_ATTR, SPLIT_MODULE_ATTR, part_names

# Attribute of a stock EmbeddingBagCollection / EmbeddingCollection that holds its tables.
TABLES_ATTR = "embedding_bags"
EC_TABLES_ATTR = "embeddings"
_ATTRS = (TABLES_ATTR, EC_TABLES_ATTR)


def cold_mask(hot_ids: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """(num_embeddings,) bool: True for rows that are not in `hot_ids`."""
    mask = torch.ones(num_embeddings, dtype=torch.bool, device=hot_ids.device)
    mask[hot_ids] = False
    return mask


def cold_ids(hot_ids: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """(N - H,) int64: logical ids of the cold rows, in cold-table order (ascending)."""
    return torch.nonzero(cold_mask(hot_ids, num_embeddings)).flatten()


def split_rows(full: torch.Tensor, hot_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a logical (N, ...) tensor into its hot rows (H, ...) and cold rows (N - H, ...),
    in hot-slot and compact-cold-index order."""
    hot_ids = hot_ids.to(full.device)
    return full[hot_ids], full[cold_mask(hot_ids, full.shape[0])]


def merge_rows(hot: torch.Tensor, cold: torch.Tensor, hot_ids: torch.Tensor) -> torch.Tensor:
    """Inverse of `split_rows`: the logical (H + C, ...) tensor from hot (H, ...) and cold
    (C, ...) rows."""
    n = hot.shape[0] + cold.shape[0]
    hot_ids = hot_ids.to(hot.device)
    out = hot.new_empty((n, *hot.shape[1:]))
    out[hot_ids] = hot
    out[cold_mask(hot_ids, n)] = cold
    return out


def weight_key(prefix: str, table: str, attr: str = TABLES_ATTR) -> str:
    """State-dict key of `table`'s weight in the collection at `prefix` (`attr`: the
    collection's tables attribute, `TABLES_ATTR` or `EC_TABLES_ATTR`)."""
    return f"{prefix}{attr}.{table}.weight"


def is_weight_key(key: str) -> bool:
    """Whether `key` names a collection table's weight (`weight_key`)."""
    return key.endswith(".weight") and any(f"{a}." in key for a in _ATTRS)


def table_of_key(key: str) -> tuple[str, str]:
    """(head, table) of a key made by `weight_key`: head is everything before the table name
    (`<prefix><attr>.`), so `f"{head}{table}.weight"` is the key again."""
    head, _, table = key.rsplit(".weight", 1)[0].rpartition(".")
    return head + ".", table


def sibling_key(key: str, table: str) -> str:
    """The weight key of `table` in the same collection as `key`."""
    return f"{table_of_key(key)[0]}{table}.weight"


@dataclass(frozen=True)
class LogicalTable:
    """A logical table as a hot/cold module holds it.

    Attributes:
        name: logical table name `T`.
        num_embeddings: N, logical rows.
        embedding_dim: D.
        hot_ids: sorted, unique int64 ids (H,) of the hot rows when the table is split
            (0 < H < N), else None (one part, the table itself).
    """

    name: str
    num_embeddings: int
    embedding_dim: int
    hot_ids: torch.Tensor | None = None
    pooled: bool = True  # an EmbeddingBagCollection's table, else an EmbeddingCollection's

    @property
    def is_split(self) -> bool:
        return self.hot_ids is not None

    def parts(self) -> list[str]:
        """Inner table names: [T__hot, T__cold] when split, else [T]."""
        return part_names(self.name, self.is_split)

    def part_ids(self) -> list[torch.Tensor]:
        """For each part, the logical id (int64, CPU) of each of its rows."""
        if self.hot_ids is None:
            return [torch.arange(self.num_embeddings)]
        hot = self.hot_ids.cpu()
        return [hot, cold_ids(hot, self.num_embeddings)]

    def key(self, prefix: str) -> str:
        """The logical weight key, as a stock collection at `prefix` names it."""
        return weight_key(prefix, self.name, TABLES_ATTR if self.pooled else EC_TABLES_ATTR)

    def part_keys(self, prefix: str) -> list[str]:
        """Each part's weight key inside the hot/cold module at `prefix`."""
        split, attr = (
            (SPLIT_MODULE_ATTR, TABLES_ATTR) if self.pooled else (SPLIT_EC_ATTR, EC_TABLES_ATTR)
        )
        return [weight_key(f"{prefix}{split}.", p, attr) for p in self.parts()]

    def split(self, full: torch.Tensor) -> list[torch.Tensor]:
        """A logical tensor -> one tensor per part: (N, ...) by rows; 1-D row-wise state
        (N * k,) block by block. An unsplit table gives `[full]`."""
        if self.hot_ids is None:
            return [full]
        if full.dim() > 1:
            return list(split_rows(full, self.hot_ids))
        k = full.numel() // self.num_embeddings
        hot, cold = split_rows(full.reshape(k, self.num_embeddings).T, self.hot_ids)
        return [hot.T.reshape(-1), cold.T.reshape(-1)]

    def merge(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Inverse of `split`: one tensor per part -> the logical tensor (the part itself, not
        a copy, for an unsplit table). ValueError when 1-D row-wise halves do not split into
        the same number of column blocks (halves sharded differently)."""
        if self.hot_ids is None:
            (full,) = parts
            return full
        hot, cold = parts
        if hot.dim() > 1:
            return merge_rows(hot, cold, self.hot_ids)
        h = self.hot_ids.numel()
        k = hot.numel() // h
        c = cold.numel() // k if k else 0
        if hot.numel() != h * k or cold.numel() != c * k or h + c != self.num_embeddings:
            raise ValueError(
                f"table {self.name!r}: row-wise state of {hot.numel()} hot and {cold.numel()} "
                f"cold entries does not split into column blocks of {h} and "
                f"{self.num_embeddings - h} rows: hot and cold halves are sharded differently"
            )
        return merge_rows(hot.reshape(k, h).T, cold.reshape(k, c).T, self.hot_ids).T.reshape(-1)
