import Config

# One pool geometry for the whole test run (the native pool is allocated once per VM):
# small enough that exhaustion is quick to reach, large enough for the load tests.
config :breakwater,
  # A spool directory per test run: subjects are named per run, and a run must never
  # recover another run's events (test_helper.exs prunes old ones).
  spool_dir: Path.join([System.tmp_dir!(), "breakwater-test", "run-#{System.os_time()}"]),
  max_subjects: 20_000,
  tick_ms: 20,
  # Removed subjects' memory is kept the shortest time allowed, so that tests see their
  # room freed quickly.
  reclaim_grace_ms: 1_000,
  ring_pool: [segments: 64, segment_capacity: 256, segment_bytes: 65_536, max_event_bytes: 4_096]

config :logger, level: :error
