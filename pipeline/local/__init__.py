"""Stand-ins for the outside world, for the demo, the tests and the benchmarks.

- `samples` (with `clock`, `traits`, `events`, `hot_user`, `archive`,
  `samples_cli`):
  realistic Segment S3-layout archives.

Nothing here runs in a job: the jobs in `pipeline/` only talk to what these
modules imitate.
"""
