defmodule Breakwater.LifecycleTest do
  # Subjects have a lifecycle: reads create nothing, remove/1 removes what has nothing
  # spooled, idle subjects expire, and a flood of subjects never locks an operator out.
  # Moves the native clock, counts the node's subjects and restarts the application:
  # async: false.
  use ExUnit.Case, async: false

  alias Breakwater.Ledger.Simulated, as: Ledger
  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log
  @moduletag timeout: 300_000

  @router :router_intake_backpressure

  defp subjects, do: MapSet.new(Breakwater.Native.subjects())

  describe "reads create nothing" do
    test "status, check, detailed status, policy, events, metrics, drain, ack and nack of an unknown subject" do
      s = T.unique("never")
      before = subjects()

      assert Breakwater.status(s) == {:error, :unknown_subject}
      assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
      # The router's callers ask before any traffic: a subject at rest, zero metrics.
      default = @router.get_default_backpressure_policy()
      latency = default.latency_overload_ms
      inflight = default.inflight_overload

      assert %{
               subject: ^s,
               status: :backpressure_inactive,
               metrics: %{pending_messages: 0, latency_p95_ms: 0, inflight_messages: 0},
               thresholds: %{latency_overload_ms: ^latency, inflight_overload: ^inflight},
               recovery: %{recovered: false, recovery_time: :undefined}
             } = @router.get_detailed_backpressure_status(s)

      assert @router.get_backpressure_policy(s) == @router.get_default_backpressure_policy()
      assert Breakwater.policy(s) == :persistent_term.get({Breakwater, :config}).default_policy
      assert @router.get_backpressure_events(s) == []
      assert %{total_events: 0} = @router.get_backpressure_metrics(s)

      assert %{recovering: false, status: :backpressure_inactive, recovered: false} =
               @router.get_backpressure_recovery_status(s)

      assert @router.check_backpressure_recovery(s) == {:ok, false}
      assert @router.get_backpressure_status(s) == :backpressure_inactive
      assert @router.get_processing_latency_p95(s) == 0
      assert @router.get_inflight_count(s) == 0
      assert @router.get_jetstream_pending(s) == 0
      assert Breakwater.drain(s, 10) == :empty
      assert Breakwater.ack(s, 1) == {:error, :unknown_batch}
      assert Breakwater.nack(s, 1) == {:error, :unknown_batch}
      assert Breakwater.detach_ledger(s) == {:error, :not_attached}
      assert is_binary(Breakwater.Metrics.prometheus())
      assert %{} = Breakwater.Metrics.health()

      assert subjects() == before
      refute Breakwater.Native.exists(s)
    end

    test "ack and nack of an unknown batch of a known subject change nothing" do
      s = T.subject()
      before = Breakwater.status(s)
      assert Breakwater.ack(s, 12_345) == {:error, :unknown_batch}
      assert Breakwater.nack(s, 12_345) == {:error, :unknown_batch}
      assert Breakwater.status(s).counters == before.counters
    end

    test "writes create the subject" do
      for write <- [
            &Breakwater.admit/1,
            &Breakwater.record(&1, :success),
            &Breakwater.report_depth(&1, 1),
            &Breakwater.enqueue(&1, "e"),
            &Breakwater.reset/1,
            &@router.track_backpressure_event(&1, :tracked)
          ] do
        s = T.unique("write")
        assert write.(s) == :ok
        assert Breakwater.Native.exists(s)
        T.drain_all(s)
      end
    end
  end

  describe "remove/1" do
    test "removes a subject with its history, alarms and policy; refuses while events are spooled" do
      s = T.subject(warning_threshold: 10, critical_threshold: 20, failure_threshold: 1)
      :ok = Breakwater.record(s, :failure)
      :ok = Breakwater.report_depth(s, 25)
      assert :circuit_open in for(a <- Breakwater.alerts(), a.subject == s, do: a.alert)
      assert Breakwater.History.history(s) != []

      :ok = Breakwater.enqueue(s, "waiting")
      assert Breakwater.remove(s) == {:error, :spooled}
      {:ok, id, ["waiting"]} = Breakwater.drain(s, 10)
      assert Breakwater.remove(s) == {:error, :spooled}, "a batch in flight"
      :ok = Breakwater.ack(s, id)

      assert Breakwater.remove(s) == :ok
      assert Breakwater.remove(s) == {:error, :unknown_subject}
      assert Breakwater.status(s) == {:error, :unknown_subject}
      refute Breakwater.Native.exists(s)
      assert Breakwater.History.history(s) == []
      assert @router.get_backpressure_events(s) == []
      assert %{total_events: 0} = @router.get_backpressure_metrics(s)
      assert Breakwater.History.recovery_record(s).recovery_count == 0
      T.wait_until(fn -> for(a <- Breakwater.alerts(), a.subject == s, do: a) == [] end)
      refute Enum.any?(:alarm_handler.get_alarms(), &match?({{:breakwater, _, ^s}, _}, &1))
      refute :ets.member(:breakwater_log, s)

      # The name is free: a router writing to it gets a fresh subject, default policy.
      assert Breakwater.admit(s) == :ok
      assert Breakwater.status(s).breaker == :closed
      assert Breakwater.policy(s).warning_threshold == 10_000
      assert Breakwater.status(s).counters.failures == 0
    end

    test "a subject with an attached ledger: removed with its ledger detached, or left attached when refused" do
      case Ledger.start_link() do
        {:ok, _} -> :ok
        {:error, {:already_started, _}} -> :ok
      end

      s = T.subject()
      Ledger.set_mode(s, :down)
      :ok = Breakwater.attach_ledger(s, Ledger, poll_ms: 5)
      :ok = Breakwater.enqueue(s, "kept")

      assert Breakwater.remove(s) == {:error, :spooled}
      assert {s, Ledger} in Breakwater.ledgers()
      assert Breakwater.Ledger.Worker.info(s)

      Ledger.set_mode(s, :up)
      T.wait_until(fn -> Breakwater.status(s).accounting.delivered == 1 end)
      assert Breakwater.remove(s) == :ok
      refute {s, Ledger} in Breakwater.ledgers()
      assert Breakwater.Ledger.Worker.info(s) == nil
      refute Breakwater.Native.exists(s)
      assert Ledger.received(s) == ["kept"]
    end

    test "bad subjects raise ArgumentError" do
      for bad <- [nil, 1, "", :binary.copy("x", 1025), {:a}, ["a"]] do
        assert_raise ArgumentError, ~r/subject/, fn -> Breakwater.remove(bad) end
      end
    end
  end

  describe "idle expiry" do
    setup do
      config = :persistent_term.get({Breakwater, :config})
      :persistent_term.put({Breakwater, :config}, %{config | subject_idle_ms: 60_000})
      on_exit(fn -> :persistent_term.put({Breakwater, :config}, config) end)
    end

    test "subjects created by traffic and idle for subject_idle_ms expire; busy, configured, spooled, restless and attached ones stay" do
      case Ledger.start_link() do
        {:ok, _} -> :ok
        {:error, {:already_started, _}} -> :ok
      end

      idle = T.unique("idle")
      :ok = Breakwater.report_depth(idle, 3)
      :ok = @router.track_backpressure_event(idle, :tracked)
      busy = T.unique("busy")
      :ok = Breakwater.admit(busy)
      configured = T.subject()
      spooled = T.unique("spooled")
      :ok = Breakwater.enqueue(spooled, "e")
      open = T.unique("open")
      :ok = Breakwater.force_open(open)
      attached = T.unique("attached")
      :ok = Breakwater.admit(attached)
      :ok = Breakwater.attach_ledger(attached, Ledger, poll_ms: 5)

      # A sweep notes every subject's activity; then, 61 s later by the native clock,
      # only busy has been used again.
      Breakwater.Ticker.sweep()
      :ok = Breakwater.Native.advance_clock(61_000)
      :ok = Breakwater.admit(busy)
      # Reads are not use: the idle subject is only read.
      assert @router.check_backpressure(idle) == {:backpressure_inactive, 0}
      assert %{queue_depth: 3} = Breakwater.status(idle)

      # (The timer's own sweep may come first: what counts is what is left.)
      removed = Breakwater.Ticker.sweep()
      refute Breakwater.Native.exists(idle)
      assert @router.get_backpressure_events(idle) == []

      for s <- [busy, configured, spooled, open, attached] do
        refute s in removed
        assert Breakwater.Native.exists(s), "#{s} expired"
      end

      :ok = Breakwater.detach_ledger(attached)
      :ok = Breakwater.reset(open)
      T.drain_all(spooled)
    end
  end

  describe "a flood of subjects" do
    setup do
      case Ledger.start_link() do
        {:ok, _} -> :ok
        {:error, {:already_started, _}} -> :ok
      end

      :ok
    end

    @tag timeout: 600_000
    test "1 000 000 junk subjects through admit, then a legitimate subject is created or configured at once" do
      # The test node's registry takes 20 000 subjects created by traffic: the flood
      # fills that room and is refused beyond it, with the error the router sees.
      config = :persistent_term.get({Breakwater, :config})
      max = config.max_subjects
      prefix = T.unique("junk")
      err = {:error, {:too_many_subjects, max}}

      {micros, refused} =
        :timer.tc(fn ->
          Enum.reduce(1..1_000_000, 0, fn i, refused ->
            case Breakwater.admit("#{prefix}-#{i}") do
              :ok -> refused
              ^err -> refused + 1
            end
          end)
        end)

      IO.puts("\n[flood] 1 000 000 admits of junk subjects in #{div(micros, 1_000)} ms")

      try do
        assert refused > 900_000
        info = Breakwater.Native.pool_info()
        assert info.dynamic_subjects <= max

        # The operator configures a legitimate subject: it has a room of its own.
        legit = T.unique("legit")

        assert Breakwater.configure(legit, warning_threshold: 100, critical_threshold: 200) ==
                 :ok

        assert Breakwater.admit(legit) == :ok
        assert :ok = Breakwater.enqueue(legit, "e")
        assert [_] = T.drain_all(legit)

        # A ledger attached at run time takes the configured room too.
        ledgered = T.unique("legit-ledger")
        assert Breakwater.attach_ledger(ledgered, Ledger, poll_ms: 50) == :ok
        assert :ok = Breakwater.detach_ledger(ledgered)

        # A new subject created by traffic is refused while the junk is there...
        assert Breakwater.admit(T.unique("late")) == err
      after
        # ...and gets in once the junk expires (here: removed by hand) and the grace
        # period of the removed subjects' memory (1 s in the test configuration) is
        # over: the timer frees them.
        junk = for s <- Breakwater.Native.subjects(), String.starts_with?(s, prefix), do: s
        for s <- junk, do: :ok = Breakwater.remove(s)
        T.wait_until(fn -> Breakwater.Native.pool_info().retired_subjects == 0 end, 30_000)
      end

      assert Breakwater.admit(T.unique("late")) == :ok
    end
  end
end
