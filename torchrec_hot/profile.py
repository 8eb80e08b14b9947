"""Row popularity profiles (see `torchrec_hot.profiling`): this module keeps the import path
`torchrec_hot.profile` that the planner and users rely on."""

from torchrec_hot.profiling import (
    DEFAULT_WINDOW,
    FORMAT_VERSION,
    HotShare,
    IdChunk,
    IdTrace,
    PopularityProfile,
    ProfileFormatError,
    TableSpec,
    Window,
    table_differences,
)

__all__ = [
    "DEFAULT_WINDOW",
    "FORMAT_VERSION",
    "HotShare",
    "IdChunk",
    "IdTrace",
    "PopularityProfile",
    "ProfileFormatError",
    "TableSpec",
    "Window",
    "table_differences",
]
