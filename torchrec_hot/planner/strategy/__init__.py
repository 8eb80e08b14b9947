"""Per-table strategy choice: trace simulation (static split, FBGEMM LRU/LFU caches,
look-forward prefetch), TorchRec `CacheStatistics` from profiles, the cost model, and the
budgeted choice over the whole model."""
