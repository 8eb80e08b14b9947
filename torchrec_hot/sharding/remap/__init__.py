"""Id remap of a KJT into hot slots and compact cold rows: the remapper, its per-table layout,
and the CPU (per feature, batched) and vectorised (accelerator) paths."""
