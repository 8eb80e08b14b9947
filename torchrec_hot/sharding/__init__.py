"""Hot/cold tables as TorchRec runs them: the hot/cold module and its state hooks, applying a
plan, the merge of hot and cold outputs (after or before the output all-to-all), `remap/` (ids
to hot slots and compact cold rows) and `rows/` (where each logical row of a DMP model lives,
moved between ranks in plan-independent row blocks). Public names: `torchrec_hot`."""
