"""The `torchrec-hot` command line: `main` (plan, report, dispatch) and `profiling` (profile,
merge, evaluate, plot)."""
