"""The sharding report: `rows` computes it from a `HotPlan` (data), `text` formats it.
Public names: `torchrec_hot`."""
