"""The table contract every stage imports (and nothing below it):

  spec.py        `TableSpec`, the shape of a logical table, and how two sets of tables differ;
  split.py       `Placement`, the hot/cold split of a table into `T__hot` / `T__cold` TorchRec
                 tables and features, and the split module's name in a plan (`split_ebc`);
  rows.py        `LogicalTable`, the one codec of a split table's rows, optimizer state and
                 state-dict keys (hot-slot order, compact cold order);
  hottest.py     the one order of a table's hottest rows (count descending, then smaller id);
  allocation.py  how many hot rows each table gets under one byte budget (lookups per byte).
"""
