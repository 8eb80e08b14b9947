"""Popularity profiling: exact or sketched per-row counts per window, sampling, traces, files,
merging across jobs and ranks (public names are exported by `torchrec_hot`)."""
