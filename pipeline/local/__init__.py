"""Stand-ins for the outside world, for the demo, the tests and the benchmarks.

- `sandbox`: a local, Loops-compatible API server. The Loops side is
  `account` (a team's data), `endpoints` (what each API call does), `rules`
  (what Loops accepts) and `csv_import` (the dashboard's audience import by
  CSV); the serving side is `api` (the order a request meets the key check,
  limits and faults; the request log), `traffic` (rate limit, latency,
  faults), `server` (HTTP) and `sandbox_cli` (the sandbox command).
- `samples`: realistic Segment S3-layout archives, made of `clock`, `traits`,
  `events`, `hot_user`, `archive`, and `samples_cli` (the generate command).

Nothing here runs in a job: the jobs in `pipeline/` only talk to what these
modules imitate.
"""
