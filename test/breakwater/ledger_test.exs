defmodule Breakwater.LedgerTest do
  # Restarts the application and measures wall-clock detection: not beside async tests.
  use ExUnit.Case, async: false

  alias Breakwater.Ledger.Simulated, as: Ledger
  alias Breakwater.TestSubjects
  import Breakwater.TestSubjects, only: [wait_until: 1, wait_until: 2, drain_all: 2]

  setup_all do
    case Ledger.start_link() do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
    end

    :ok
  end

  defp subject(policy) do
    s = TestSubjects.subject(policy, "ledger")
    Ledger.set_mode(s, :up)
    s
  end

  defp elapsed_until(fun, timeout_ms) do
    t0 = System.monotonic_time(:millisecond)
    wait_until(fun, timeout_ms)
    System.monotonic_time(:millisecond) - t0
  end

  defp balanced?(s) do
    a = Breakwater.status(s).accounting
    a.enqueued == a.delivered + a.spooled_memory + a.spooled_disk + a.dropped + a.lost
  end

  defp events(range, tag), do: Enum.map(range, &"#{tag}-#{&1}")

  # Enqueues `events` at `per_second`, checking the accounting as it goes.
  defp produce(s, events, per_second) do
    parent = self()

    spawn_link(fn ->
      for e <- events do
        assert Breakwater.enqueue(s, e) in [:ok]
        assert balanced?(s)
        Process.sleep(div(1_000, per_second))
      end

      send(parent, :produced)
    end)
  end

  describe "outage with traffic" do
    test "the breaker opens within 1 s, recovers by itself, and every event arrives once, in order" do
      s = subject(open_timeout_ms: 300, health_check_ms: 200)
      :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 50)
      all = events(1..400, s)
      produce(s, all, 50)
      Process.sleep(600)

      Ledger.set_mode(s, :down)
      detection = elapsed_until(fn -> Breakwater.status(s).breaker == :open end, 5_000)

      # Writes fail fast while it is open; events wait in the spool.
      assert {:reject, :circuit_open, _} = Breakwater.admit(s)
      Process.sleep(1_000)
      assert Breakwater.status(s).accounting.spooled_memory > 0
      assert balanced?(s)

      Ledger.set_mode(s, :up)
      recovery = elapsed_until(fn -> Breakwater.status(s).breaker == :closed end, 5_000)

      assert_receive :produced, 15_000
      wait_until(fn -> Breakwater.status(s).accounting.delivered == length(all) end)

      assert Ledger.received(s) == all
      assert Ledger.duplicates(s) == 0
      a = Breakwater.status(s).accounting

      assert a == %{
               a
               | enqueued: 400,
                 delivered: 400,
                 spooled_memory: 0,
                 spooled_disk: 0,
                 dropped: 0,
                 lost: 0
             }

      breaker_events =
        for %{event_type: t} = e <- :router_intake_backpressure.get_backpressure_events(s),
            t in [:circuit_open, :circuit_half_open, :circuit_closed],
            do: {t, e.cause}

      # Opened by the outage's failures; probes may fail while it lasts and reopen it;
      # the probes' successes close it.
      assert hd(breaker_events) == {:circuit_open, :failures}
      assert List.last(breaker_events) == {:circuit_closed, :probe_successes}
      breaker_events = Enum.map(breaker_events, &elem(&1, 0))

      assert breaker_events
             |> Enum.chunk_every(2, 1, :discard)
             |> Enum.all?(fn
               [:circuit_open, :circuit_half_open] -> true
               [:circuit_half_open, next] -> next in [:circuit_open, :circuit_closed]
               _ -> false
             end)

      IO.puts(
        "\n[outage at 50 events/s] detection #{detection} ms, recovery #{recovery} ms (open_timeout_ms 300)"
      )

      assert detection < 1_000
    end

    test "a hanging ledger never blocks the worker: calls time out and count as failures" do
      s = subject(call_timeout_ms: 100, open_timeout_ms: 60_000)
      :ok = Breakwater.attach_ledger(s, Ledger)
      Ledger.set_mode(s, :hang)
      for e <- events(1..20, s), do: :ok = Breakwater.enqueue(s, e)

      wait_until(fn -> Breakwater.status(s).breaker == :open end)
      # The worker answers at once while its ledger hangs.
      {micros, info} = :timer.tc(fn -> Breakwater.Ledger.Worker.info(s) end)
      assert %{module: Ledger} = info
      assert micros < 1_000_000
      assert Breakwater.status(s).counters.failures >= 5
      assert balanced?(s)
      assert Breakwater.status(s).accounting.spooled_memory == 20
    end

    test "slow calls count as failures, a crashing ledger is a failure, the worker survives both" do
      s = subject(slow_call_ms: 20, call_timeout_ms: 1_000, open_timeout_ms: 60_000)
      :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 1)
      [{pid, _}] = Registry.lookup(Breakwater.Ledger.Names, s)
      Ledger.set_mode(s, {:slow, 40})
      for e <- events(1..10, s), do: :ok = Breakwater.enqueue(s, e)
      wait_until(fn -> Breakwater.status(s).breaker == :open end)
      assert Breakwater.status(s).counters.slow_calls >= 5

      c = subject(open_timeout_ms: 60_000)
      :ok = Breakwater.attach_ledger(c, Ledger)
      Ledger.set_mode(c, :crash)
      :ok = Breakwater.enqueue(c, "x")
      wait_until(fn -> Breakwater.status(c).breaker == :open end)
      assert [{^pid, _}] = Registry.lookup(Breakwater.Ledger.Names, s)
      assert %{failures: f} = Breakwater.Ledger.Worker.info(c)
      assert f >= 5
    end

    test "a flapping ledger gets everything eventually" do
      s = subject(open_timeout_ms: 50, failure_threshold: 2, success_threshold: 1)
      Ledger.set_mode(s, {:flapping, 60})
      :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 10)
      all = events(1..200, s)
      produce(s, all, 500)
      assert_receive :produced, 10_000
      wait_until(fn -> Breakwater.status(s).accounting.delivered == 200 end, 20_000)
      assert Ledger.received(s) == all
      assert balanced?(s)
    end
  end

  test "without traffic, a health check opens the breaker within 5 s" do
    s = subject([])
    :ok = Breakwater.attach_ledger(s, Ledger)
    Process.sleep(100)
    Ledger.set_mode(s, :down)
    detection = elapsed_until(fn -> Breakwater.status(s).breaker == :open end, 10_000)

    IO.puts(
      "\n[silent outage] detection #{detection} ms (health_check_ms 1000, failure_threshold 5)"
    )

    assert detection <= 5_000
    assert %{last_health_check: {{:error, :unavailable}, _}} = Breakwater.Ledger.Worker.info(s)
  end

  test "killing the worker mid-batch loses nothing: the batch returns to the spool" do
    s = subject([])
    Ledger.set_mode(s, {:slow, 300})
    all = events(1..30, s)
    for e <- all, do: :ok = Breakwater.enqueue(s, e)
    :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 10)
    wait_until(fn -> match?(%{in_flight: :write}, Breakwater.Ledger.Worker.info(s)) end)
    [{pid, _}] = Registry.lookup(Breakwater.Ledger.Names, s)
    Process.exit(pid, :kill)

    # The supervisor restarts it; the killed batch is delivered again.
    wait_until(fn ->
      match?([{p, _}] when p != pid, Registry.lookup(Breakwater.Ledger.Names, s))
    end)

    Ledger.set_mode(s, :up)
    wait_until(fn -> Breakwater.status(s).accounting.delivered == 30 end)
    assert Enum.sort(Ledger.received(s)) == Enum.sort(all)
    # The killed worker's call may have completed: at most one batch twice.
    assert Ledger.duplicates(s) <= 10
    a = Breakwater.status(s).accounting
    assert a.redelivered >= 10
    assert balanced?(s)
  end

  test "killing the ledger call mid-write is a failure; the batch is delivered later" do
    s = subject(call_timeout_ms: 60_000)
    Ledger.set_mode(s, :hang)
    all = events(1..20, s)
    for e <- all, do: :ok = Breakwater.enqueue(s, e)
    :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 5)
    wait_until(fn -> match?(%{in_flight: :write}, Breakwater.Ledger.Worker.info(s)) end)
    [{worker, _}] = Registry.lookup(Breakwater.Ledger.Names, s)
    # The process running the ledger's write_batch/2 (the "ledger" as the worker sees it).
    %{inflight: %{task: %Task{pid: ledger_call}}} = :sys.get_state(worker)
    failures = Breakwater.status(s).counters.failures
    Process.exit(ledger_call, :kill)

    wait_until(fn -> Breakwater.status(s).counters.failures == failures + 1 end)
    # The worker survived, the batch went back to the spool, nothing was delivered.
    assert [{^worker, _}] = Registry.lookup(Breakwater.Ledger.Names, s)
    assert Breakwater.status(s).accounting.delivered == 0
    assert balanced?(s)

    Ledger.set_mode(s, :up)
    wait_until(fn -> Breakwater.status(s).accounting.delivered == 20 end)
    assert Ledger.received(s) == all
    assert Ledger.duplicates(s) == 0
    assert balanced?(s)
  end

  test "detach stops the worker and keeps the spool; attach errors are clear" do
    s = subject([])
    assert {:error, :not_attached} = Breakwater.detach_ledger(s)
    assert {:error, {:invalid_ledger, String}} = Breakwater.attach_ledger(s, String)

    assert {:error, {:unknown_option, :url}} = Breakwater.attach_ledger(s, Ledger, url: "x")
    assert {:error, {:invalid_options, :nope}} = Breakwater.attach_ledger(s, Ledger, :nope)

    assert {:error, {:invalid_option, :batch_size, 0}} =
             Breakwater.attach_ledger(s, Ledger, batch_size: 0)

    :ok = Breakwater.attach_ledger(s, Ledger)
    assert {:error, :already_attached} = Breakwater.attach_ledger(s, Ledger)
    assert {s, Ledger} in Breakwater.ledgers()
    :ok = Breakwater.detach_ledger(s)
    for e <- events(1..5, s), do: :ok = Breakwater.enqueue(s, e)
    Process.sleep(50)
    assert Breakwater.status(s).accounting.spooled_memory == 5
    assert Ledger.received(s) == []
  end

  describe "disk overflow" do
    test "events the pool cannot hold go to overflow files and come back in order" do
      # One segment of 256 events from the pool; the rest goes to overflow files.
      s = subject(overflow: :disk, max_segments: 1)
      all = events(1..1_000, s)
      for e <- all, do: assert(:ok == Breakwater.enqueue(s, e))
      st = Breakwater.status(s)
      assert st.accounting.spooled_memory == 256
      assert st.accounting.spooled_disk == 744
      assert st.disk_pending
      assert st.counters.overflow_segments == 3
      assert balanced?(s)

      :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 100)
      wait_until(fn -> Breakwater.status(s).accounting.delivered == 1_000 end)
      assert Ledger.received(s) == all
      st = Breakwater.status(s)
      refute st.disk_pending

      assert st.accounting ==
               %{st.accounting | spooled_memory: 0, spooled_disk: 0, dropped: 0, lost: 0}

      assert st.counters.overflow_segments == 0
      assert st.segments == 0
    end

    test "events waiting on disk count in the depth, so intake still pushes back" do
      s =
        subject(overflow: :disk, max_segments: 1, warning_threshold: 300, critical_threshold: 600)

      for e <- events(1..700, s), do: :ok = Breakwater.enqueue(s, e)
      st = Breakwater.status(s)
      assert {st.accounting.spooled_memory, st.accounting.spooled_disk} == {256, 444}
      assert st.queue_depth == 700
      assert st.backpressure == :dropping
      assert {:backpressure_active, _} = :router_intake_backpressure.check_backpressure(s)

      # Delivered from disk too: the depth falls with it, and intake opens again.
      :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 100)
      wait_until(fn -> Breakwater.status(s).accounting.delivered == 700 end)
      assert Breakwater.status(s).queue_depth == 0
      refute Breakwater.status(s).backpressure in [:dropping, :pressure]
    end

    test "while events wait in overflow files, new ones are delivered after them" do
      s = subject(overflow: :disk, max_segments: 1)
      first = events(1..300, "#{s}-a")
      for e <- first, do: :ok = Breakwater.enqueue(s, e)
      # Drain the pool segment only: the pool has room again, but older events wait
      # in an overflow file; the new ones follow them.
      {:ok, id, batch} = Breakwater.Native.drain(s, 256)
      :ok = Breakwater.ack(s, id)
      later = events(1..10, "#{s}-b")
      for e <- later, do: :ok = Breakwater.enqueue(s, e)
      assert Breakwater.status(s).accounting.spooled_disk == 54

      rest = drain_all(s, 100)
      assert batch ++ rest == first ++ later
    end

    test "a file that cannot be created refuses with spool_unavailable: counted, logged once" do
      s = subject(overflow: :disk, max_segments: 1)
      for e <- events(1..256, s), do: :ok = Breakwater.enqueue(s, e)
      # No overflow file can be created: a file stands where the directory was. The
      # files made beforehand (the reserve) are used up first; the enqueue path never
      # creates one itself.
      dir = Path.join(:persistent_term.get({Breakwater, :config}).spool_dir, "overflow")
      aside = dir <> ".aside"
      File.rename!(dir, aside)
      File.write!(dir, "in the way")

      log =
        try do
          ExUnit.CaptureLog.capture_log(fn ->
            accepted =
              Enum.reduce_while(1..100_000, 0, fn i, n ->
                case Breakwater.enqueue(s, "reserve-#{i}") do
                  :ok -> {:cont, n + 1}
                  {:reject, :spool_unavailable, _} -> {:halt, n}
                end
              end)

            wait_until(fn -> Breakwater.Native.spool_info().reserve_failing end)
            assert Breakwater.Native.spool_info().reserve_overflow == 0
            results = for i <- 1..5, do: Breakwater.enqueue(s, "lost-#{i}")
            send(self(), {:results, accepted, results})
            :ok = Breakwater.Spool.Keeper.run_now()
          end)
        after
          File.rm!(dir)
          File.rename!(aside, dir)
        end

      assert_received {:results, accepted, results}
      assert accepted > 0
      assert Enum.all?(results, &match?({:reject, :spool_unavailable, retry} when retry > 0, &1))
      st = Breakwater.status(s)
      # The first refusal (the reserve found empty) and the five after it.
      assert st.counters.rejected_spool_unavailable == 6
      assert st.accounting.dropped == 6
      assert st.accounting.spooled_memory + st.accounting.spooled_disk == 256 + accepted
      assert balanced?(s)
      # One line for the outage, with the OS error; not one per event.
      assert [_] = Regex.scan(~r/spool unavailable: cannot create overflow file/, log)
      assert log =~ ~r/not a directory/i

      assert :events_dropped in Enum.map(
               :router_intake_backpressure.get_backpressure_events(s),
               & &1.event_type
             )

      # Once the directory is back, the reserve's thread creates files again (it
      # retries every 500 ms), events are accepted, and the end of the outage is logged
      # (a warning; the test configuration logs errors only).
      wait_until(fn -> Breakwater.Native.spool_info().reserve_overflow > 0 end)
      Logger.put_module_level(Breakwater.Spool.Keeper, :warning)
      on_exit(fn -> Logger.delete_module_level(Breakwater.Spool.Keeper) end)

      log =
        ExUnit.CaptureLog.capture_log(fn ->
          assert :ok = Breakwater.enqueue(s, "back")
          :ok = Breakwater.Spool.Keeper.run_now()
        end)

      assert log =~ "spool available again"
      assert log =~ ~r/[56] events were refused/
      refute Breakwater.Native.spool_info().reserve_failing
    end
  end

  test "restarting the application keeps every event spooled in pool segments and files" do
    s = subject(overflow: :disk, max_segments: 1)
    all = events(1..700, s)
    for e <- all, do: :ok = Breakwater.enqueue(s, e)
    before = Breakwater.status(s).accounting
    assert before.spooled_memory == 256 and before.spooled_disk == 444

    on_exit(fn -> Application.ensure_all_started(:breakwater) end)
    :ok = Application.stop(:breakwater)
    # Nothing is written out at stop: every event is in the spool's files already.
    assert Breakwater.Native.status(s).counters.spooled_events == 700
    {:ok, _} = Application.ensure_all_started(:breakwater)
    Ledger.set_mode(s, :up)

    assert Breakwater.status(s).accounting == before
    assert balanced?(s)

    :ok = Breakwater.attach_ledger(s, Ledger, batch_size: 128)
    wait_until(fn -> Breakwater.status(s).accounting.delivered == 700 end)
    assert Ledger.received(s) == all
    assert balanced?(s)
  end

  # Restarts the application with `env` put over its environment; restores it after.
  defp restart_with(env) do
    old = for {k, _} <- env, do: {k, Application.fetch_env(:breakwater, k)}

    on_exit(fn ->
      Application.stop(:breakwater)

      for {k, v} <- old do
        case v do
          {:ok, v} -> Application.put_env(:breakwater, k, v)
          :error -> Application.delete_env(:breakwater, k)
        end
      end

      Application.ensure_all_started(:breakwater)
    end)

    :ok = Application.stop(:breakwater)
    for {k, v} <- env, do: Application.put_env(:breakwater, k, v)
    {:ok, _} = Application.ensure_all_started(:breakwater)
  end

  test "a subject at disk_max_bytes refuses further events: counted, reported, never silent" do
    # Overflow files of one segment (4 KiB header + 64 KiB of records) each: room for
    # two of them, 512 events, on disk.
    restart_with(disk_max_bytes: 140_000)
    # The test configuration logs errors only; reaching the cap is a warning.
    Logger.put_module_level(Breakwater.Spool.Keeper, :warning)
    on_exit(fn -> Logger.delete_module_level(Breakwater.Spool.Keeper) end)
    s = subject(overflow: :disk, max_segments: 1)
    for e <- events(1..256, s), do: :ok = Breakwater.enqueue(s, e)

    log =
      ExUnit.CaptureLog.capture_log([level: :warning], fn ->
        results = for i <- 1..600, do: Breakwater.enqueue(s, "#{s}-d#{i}")
        send(self(), {:results, results})
        :ok = Breakwater.Spool.Keeper.run_now()
      end)

    assert_received {:results, results}
    stored = Enum.count(results, &(&1 == :ok))
    refused = Enum.count(results, &match?({:reject, :pool_exhausted, _}, &1))
    assert {stored, refused} == {512, 88}
    assert log =~ "reached disk_max_bytes"
    assert [_] = Regex.scan(~r/reached disk_max_bytes/, log)

    st = Breakwater.status(s)
    assert st.counters.dropped_disk_full_events == refused
    assert st.accounting.spooled_disk == stored
    assert st.accounting.dropped == refused
    assert balanced?(s)

    assert :events_dropped in Enum.map(
             :router_intake_backpressure.get_backpressure_events(s),
             & &1.event_type
           )
  end

  test "bypass admission latency does not rise while the breaker is open" do
    s = subject([])
    closed = latencies(s)
    :ok = Breakwater.force_open(s)
    open = latencies(s)
    :ok = Breakwater.reset(s)
    [c50, c99] = percentiles(closed)
    [o50, o99] = percentiles(open)

    IO.puts(
      "\n[control path] bypass admit p50/p99: closed #{c50}/#{c99} ns, open #{o50}/#{o99} ns " <>
        "(p99 ratio #{Float.round(o99 / max(c99, 1), 2)})"
    )

    # A generous bound only; the comparison that counts is in the bench.
    assert o99 < 20 * max(c99, 1_000)
  end

  defp latencies(s) do
    for _ <- 1..2_000, do: Breakwater.admit(s, priority: 9)

    for _ <- 1..20_000 do
      t0 = System.monotonic_time(:nanosecond)
      :ok = Breakwater.admit(s, priority: 9)
      System.monotonic_time(:nanosecond) - t0
    end
  end

  defp percentiles(samples) do
    sorted = Enum.sort(samples)
    n = length(sorted)
    for p <- [0.5, 0.99], do: Enum.at(sorted, min(trunc(p * n), n - 1))
  end
end
