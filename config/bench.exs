import Config

# `make bench-beam` (MIX_ENV=bench mix run benches/beam_bench.exs).
config :breakwater,
  # A spool directory per run, named after the VM's OS pid: a bench must never replay
  # another run's events, and (several benches may run at once on one machine) never
  # delete a running one's directory (benches/beam_bench.exs removes those of VMs that
  # are gone).
  spool_dir:
    Path.join([
      System.tmp_dir!(),
      "breakwater-bench-spools",
      "run-#{System.pid()}-#{System.os_time()}"
    ]),
  # The bench's own subjects plus the 10_000 of the memory measurement.
  max_subjects: 20_000,
  # 512 segments of 1024 events of 256 B (128 MiB): room for every process's rounds of
  # enqueues and for the drain bench's prefilled batches, with the default geometry of
  # a segment.
  ring_pool: [
    segments: 512,
    segment_capacity: 1024,
    segment_bytes: 262_144,
    max_event_bytes: 65_536
  ]

config :logger, level: :warning
