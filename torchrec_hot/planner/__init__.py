"""Hot-row planning: budget allocation, TorchRec constraints and placement, the resulting
HotPlan and its comparison with stock TorchRec; `strategy/` chooses a static split, a cache or
look-forward prefetch per table (public names are exported by `torchrec_hot`)."""
