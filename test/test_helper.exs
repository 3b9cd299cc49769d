# Breakwater logs through OTP's :logger and does not start Elixir's Logger (see mix.exs);
# the tests do, for ExUnit's log capture and config/test.exs's level.
{:ok, _} = Application.ensure_all_started(:logger)

# Tests that move the native clock (Breakwater.Native.advance_clock/1) run in modules
# with `async: false`; ExUnit runs those after, never beside, the async ones.
# Remove spool directories of earlier test runs (older than an hour: a concurrent run
# may still be using a recent one).
spool_root = Path.join(System.tmp_dir!(), "breakwater-test")
current = :persistent_term.get({Breakwater, :config}).spool_dir

an_hour_ago = System.os_time(:second) - 3_600

for dir <- Path.wildcard(Path.join(spool_root, "run-*")), dir != current do
  case File.stat(dir, time: :posix) do
    {:ok, %{mtime: mtime}} when mtime < an_hour_ago -> File.rm_rf(dir)
    _ -> :ok
  end
end

# The shipping tests (test/ship: host projects, releases, `make dist`) build whole
# projects; `make test-ship` runs them (`mix test --only ship`), `make test` too.
ExUnit.start(exclude: [:ship])
