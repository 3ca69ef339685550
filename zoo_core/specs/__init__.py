"""The comparison specs zoo ships (`zoo list specs`, `zoo compare NAME`), as package data.

Each `NAME.yaml` here is a `zoo compare` spec (docs/compare.md); its first comment line is the
one-line description `zoo list specs` prints. The checkout's benchmarks/scaling/ and
benchmarks/recall/ hold symbolic links to these files, so there is one copy of each.
"""
