defmodule Breakwater.AcceptanceTest do
  # Acceptance scenarios, through the public API only (`Breakwater` and
  # `:router_intake_backpressure`). Moves the native clock: async: false.
  use ExUnit.Case, async: false

  @moduletag :capture_log

  alias Breakwater.TestSubjects, as: T

  @router :router_intake_backpressure

  # Time steps stay well clear of every threshold: the native clock also runs in real
  # time, so a step that lands exactly on a threshold would depend on scheduling.

  defp counters(s), do: Breakwater.status(s).counters
  defp breaker(s), do: Breakwater.status(s).breaker
  defp history(s), do: Breakwater.History.history(s)
  defp event_types(s), do: s |> @router.get_backpressure_events() |> Enum.map(& &1.event_type)

  defp fail_calls(s, n) do
    for _ <- 1..n do
      assert {:error, :ledger_unavailable} =
               Breakwater.call(s, fn -> {:error, :ledger_unavailable} end)
    end
  end

  describe "A1 gateway ledger protection" do
    test "(1) slow ledger: depth up to the threshold activates backpressure and flags new events" do
      # through report_depth
      s = T.subject(warning_threshold: 10, critical_threshold: 20, stability_ms: 60_000)
      assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
      assert Breakwater.admit(s) == :ok

      :ok = Breakwater.report_depth(s, 9)
      assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
      :ok = Breakwater.report_depth(s, 10)
      assert @router.check_backpressure(s) == {:backpressure_warning, 0}
      assert Breakwater.admit(s) == :ok
      :ok = Breakwater.report_depth(s, 19)
      assert @router.check_backpressure(s) == {:backpressure_warning, 0}
      :ok = Breakwater.report_depth(s, 20)

      # check_backpressure/1 answers whole seconds, admit/2 milliseconds
      assert {:backpressure_active, retry} = @router.check_backpressure(s)
      assert retry == 30
      assert Breakwater.admit(s) == {:reject, :backpressure, 30_000}
      assert Breakwater.admit(s, priority: :high) == {:reject, :backpressure, 30_000}
      assert Breakwater.status(s).backpressure == :dropping
      assert counters(s).rejected_backpressure == 2
      assert :backpressure_active in event_types(s)

      # through enqueue: the depth is the number of events spooled
      e = T.subject(warning_threshold: 10, critical_threshold: 20, stability_ms: 60_000)

      for i <- 1..9, do: assert(Breakwater.enqueue(e, "event-#{i}") == :ok)
      assert @router.check_backpressure(e) == {:backpressure_inactive, 0}
      assert Breakwater.enqueue(e, "event-10") == :ok
      assert @router.check_backpressure(e) == {:backpressure_warning, 0}
      for i <- 11..20, do: assert(Breakwater.enqueue(e, "event-#{i}") == :ok)

      assert Breakwater.status(e).queue_depth == 20
      assert {:backpressure_active, retry} = @router.check_backpressure(e)
      assert retry > 0
      assert {:reject, :backpressure, r} = Breakwater.admit(e)
      assert r > 0
      # the control path still passes
      assert Breakwater.admit(e, priority: 9) == :ok

      # the ledger catches up: draining brings the subject into recovery
      assert T.drain_all(e) == for(i <- 1..20, do: "event-#{i}")
      assert Breakwater.status(e).queue_depth == 0
      assert @router.check_backpressure(e) == {:backpressure_warning, 0}
      assert Breakwater.status(e).backpressure == :recovery
      assert Breakwater.admit(e) == :ok
    end

    test "(2) ledger unavailable: the breaker opens after failure_threshold failures and writes fail fast" do
      s = T.subject()
      assert Breakwater.policy(s).failure_threshold == 5
      parent = self()

      fail_calls(s, 4)
      assert breaker(s) == :closed
      assert @router.check_backpressure(s) == {:backpressure_inactive, 0}

      fail_calls(s, 1)
      assert breaker(s) == :open
      assert {:backpressure_active, retry} = @router.check_backpressure(s)
      assert retry > 0 and retry <= 30

      for _ <- 1..3 do
        assert Breakwater.call(s, fn -> send(parent, :ledger_write_ran) end) ==
                 {:error, :circuit_open}
      end

      refute_receive :ledger_write_ran, 50
      assert {:reject, :circuit_open, retry} = Breakwater.admit(s)
      assert retry > 0 and retry <= 30_000

      c = counters(s)
      assert c.failures == 5
      assert c.circuit_opens == 1
      assert c.rejected_circuit_open == 4
      assert :circuit_open in event_types(s)
    end

    test "(3) restore: after the open time probes pass, the breaker closes and writes succeed" do
      s = T.subject()
      fail_calls(s, 5)
      assert breaker(s) == :open

      T.advance(25_000)
      assert breaker(s) == :open
      assert {:error, :circuit_open} = Breakwater.call(s, fn -> :written end)

      T.advance(5_000)
      assert breaker(s) == :half_open
      assert {:backpressure_warning, 0} = @router.check_backpressure(s)

      parent = self()
      assert {:ok, :written} = Breakwater.call(s, fn -> send(parent, :probe) && :written end)
      assert {:ok, :written} = Breakwater.call(s, fn -> send(parent, :probe) && :written end)
      assert breaker(s) == :half_open
      assert {:ok, :written} = Breakwater.call(s, fn -> send(parent, :probe) && :written end)
      assert breaker(s) == :closed
      for _ <- 1..3, do: assert_received(:probe)

      assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
      for _ <- 1..10, do: assert({:ok, 42} = Breakwater.call(s, fn -> {:ok, 42} end))

      c = counters(s)
      assert c.circuit_opens == 1
      assert c.recovery_attempts == 1
      assert c.successful_recoveries == 1
      assert c.successes == 13

      assert Enum.filter(event_types(s), &(&1 in [:circuit_half_open, :circuit_closed])) ==
               [:circuit_half_open, :circuit_closed]
    end

    test "(4) control path: with the breaker open, priorities 8 and 9 pass and are counted as bypassed" do
      s = T.subject(priorities: %{"critical-alarm" => :critical, "reconfigure" => 8})
      fail_calls(s, 5)
      assert breaker(s) == :open

      assert Breakwater.admit(s, priority: 8) == :ok
      assert Breakwater.admit(s, priority: 9) == :ok
      assert Breakwater.admit(s, priority: :critical) == :ok
      assert Breakwater.admit(s, event_type: "critical-alarm") == :ok
      assert Breakwater.admit(s, event_type: "reconfigure") == :ok
      assert {:reject, :circuit_open, _} = Breakwater.admit(s, priority: 7)
      assert {:reject, :circuit_open, _} = Breakwater.admit(s, event_type: "other")

      parent = self()

      assert {:ok, :done} =
               Breakwater.call(s, fn -> send(parent, :control) && :done end, priority: 9)

      assert_received :control

      c = counters(s)
      assert c.bypassed == 6
      assert c.rejected_circuit_open == 2
      # the 5 failed calls before the breaker opened
      assert c.accepted == 5
      # bypass leaves the breaker alone
      assert breaker(s) == :open
    end
  end

  describe "A2 event-bus breaker" do
    test "every transition, with its counters" do
      s = T.subject()
      p = Breakwater.policy(s)

      assert {p.failure_threshold, p.open_timeout_ms, p.half_open_max_calls, p.success_threshold} ==
               {5, 30_000, 3, 3}

      # failures must be consecutive
      for _ <- 1..4, do: :ok = Breakwater.record(s, :failure)
      :ok = Breakwater.record(s, :success)
      for _ <- 1..4, do: :ok = Breakwater.record(s, :failure)
      assert breaker(s) == :closed
      assert Breakwater.status(s).consecutive_failures == 4

      # 5 consecutive failures -> open
      :ok = Breakwater.record(s, :failure)
      assert breaker(s) == :open
      c = counters(s)
      assert {c.circuit_opens, c.recovery_attempts, c.successful_recoveries} == {1, 0, 0}

      assert {:reject, :circuit_open, _} = Breakwater.admit(s)
      assert Breakwater.admit(s, priority: 9) == :ok
      assert Breakwater.admit(s, priority: 8) == :ok
      c = counters(s)
      assert {c.rejected, c.bypassed} == {1, 2}

      # open -> half_open after 30 s (the timer does it without traffic)
      T.advance(25_000)
      assert breaker(s) == :open
      T.advance(5_000)
      assert breaker(s) == :half_open
      assert counters(s).recovery_attempts == 1

      # half_open admits at most 3 probes at once
      for _ <- 1..3, do: assert(Breakwater.admit(s) == :ok)
      assert {:reject, :half_open_limit, _} = Breakwater.admit(s)
      assert Breakwater.admit(s, priority: 9) == :ok
      assert Breakwater.status(s).probes_in_flight == 3

      # any failure in half_open -> open
      :ok = Breakwater.record(s, :success)
      :ok = Breakwater.record(s, {:failure, :still_down})
      assert breaker(s) == :open
      c = counters(s)
      assert {c.circuit_opens, c.recovery_attempts, c.successful_recoveries} == {2, 1, 0}
      assert {c.rejected, c.rejected_half_open_limit, c.bypassed} == {2, 1, 3}

      # the failure reason is kept with the transition
      assert %{reason: ":still_down"} = List.last(history(s))

      # again: half_open, 3 successes -> closed
      T.advance(30_000)
      assert breaker(s) == :half_open

      for i <- 1..3 do
        assert Breakwater.admit(s) == :ok
        :ok = Breakwater.record(s, :success)
        assert breaker(s) == if(i < 3, do: :half_open, else: :closed)
      end

      c = counters(s)
      assert {c.circuit_opens, c.recovery_attempts, c.successful_recoveries} == {2, 2, 1}
      assert c.breaker_transitions == 5
      assert c.rejected == 2
      assert c.bypassed == 3

      assert Enum.filter(
               event_types(s),
               &(&1 in [:circuit_open, :circuit_half_open, :circuit_closed])
             ) ==
               [
                 :circuit_open,
                 :circuit_half_open,
                 :circuit_open,
                 :circuit_half_open,
                 :circuit_closed
               ]

      # each entry says why: failures, the open time, a probe's failure, the open time,
      # the probes' successes
      assert Enum.map(history(s), &{&1.breaker, &1.cause}) == [
               {{:closed, :open}, :failures},
               {{:open, :half_open}, :open_timeout},
               {{:half_open, :open}, :probe_failure},
               {{:open, :half_open}, :open_timeout},
               {{:half_open, :closed}, :probe_successes}
             ]
    end
  end

  describe "A4 rule-engine queue manager" do
    test "default thresholds: warning 10 000, critical 50 000, recovery 5 000" do
      s = T.subject()

      steps = [
        {9_999, :normal},
        {10_000, :pressure},
        {49_999, :pressure},
        {50_000, :dropping},
        {5_001, :dropping},
        {5_000, :recovery}
      ]

      for {depth, state} <- steps do
        :ok = Breakwater.report_depth(s, depth)
        assert Breakwater.status(s).backpressure == state, "at depth #{depth}"
      end
    end

    test "low priorities are shed from 80% of critical; event types map to priorities" do
      s =
        T.subject(
          warning_threshold: 100,
          critical_threshold: 1_000,
          priorities: %{
            "critical-alarm" => :critical,
            "batch-operation" => :low,
            "audit" => 2,
            "report" => 3
          }
        )

      :ok = Breakwater.report_depth(s, 799)
      for p <- 0..9, do: assert(Breakwater.admit(s, priority: p) == :ok)

      :ok = Breakwater.report_depth(s, 800)
      assert Breakwater.status(s).backpressure == :pressure

      for p <- [0, 1, 2, :low] do
        assert {:reject, :shed_low_priority, retry} = Breakwater.admit(s, priority: p)
        assert retry > 0
      end

      for p <- [3, 4, 5, 6, 7, :normal, :high, 8, 9, :critical] do
        assert Breakwater.admit(s, priority: p) == :ok
      end

      assert Breakwater.admit(s) == :ok
      assert {:reject, :shed_low_priority, _} = Breakwater.admit(s, event_type: "batch-operation")
      assert {:reject, :shed_low_priority, _} = Breakwater.admit(s, event_type: "audit")
      assert Breakwater.admit(s, event_type: "report") == :ok
      assert Breakwater.admit(s, event_type: "critical-alarm") == :ok
      assert Breakwater.admit(s, event_type: "unknown-type") == :ok
      assert counters(s).rejected_shed_low_priority == 6

      # above critical every class is rejected with a retry hint except the most important
      :ok = Breakwater.report_depth(s, 1_000)
      assert {:reject, :backpressure, _} = Breakwater.admit(s, event_type: "report")
      assert {:reject, :backpressure, _} = Breakwater.admit(s, priority: 7)
      assert {:reject, :backpressure, _} = Breakwater.admit(s, event_type: "batch-operation")
      assert Breakwater.admit(s, event_type: "critical-alarm") == :ok
      assert Breakwater.admit(s, priority: 8) == :ok

      # the policy's priorities are what the subject uses
      assert Breakwater.policy(s).priorities["batch-operation"] == 1
    end
  end

  describe "A3 router intake backpressure" do
    test "recovery detection: each recovery is one event and one count, history once per transition" do
      s = T.subject(warning_threshold: 10, critical_threshold: 20, stability_ms: 10_000)
      rec = fn -> @router.get_backpressure_recovery_status(s) end
      recoveries = fn -> Enum.count(event_types(s), &(&1 == :recovery)) end

      assert rec.().recovery_count == 0
      assert @router.get_previous_backpressure_status(s) == :backpressure_inactive
      assert @router.check_backpressure_recovery(s) == {:ok, false}
      assert %{recovered: false, recovery_time: :undefined} = rec.()

      # inactive -> active: not a recovery
      :ok = Breakwater.report_depth(s, 20)
      assert {:backpressure_active, _} = @router.check_backpressure(s)
      assert rec.().recovery_count == 0
      assert @router.check_backpressure_recovery(s) == {:ok, false}

      # active -> warning (dropping -> recovery)
      :ok = Breakwater.report_depth(s, 5)
      assert @router.check_backpressure(s) == {:backpressure_warning, 0}
      r = rec.()
      assert r.recovery_count == 1

      assert {r.last_recovery_from, r.last_recovery_to} ==
               {:backpressure_active, :backpressure_warning}

      assert r.recovering == true
      assert r.status == :backpressure_warning
      assert recoveries.() == 1
      assert @router.get_previous_backpressure_status(s) == :backpressure_active

      assert @router.check_backpressure_recovery(s) == {:ok, true}
      assert %{recovered: true, recovery_time: at} = rec.()
      assert is_integer(at) and at == r.last_recovery_at

      # warning -> inactive (recovery -> normal after the stability period)
      T.advance(5_000)
      assert Breakwater.status(s).backpressure == :recovery
      T.advance(5_000)
      assert Breakwater.status(s).backpressure == :normal
      assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
      assert rec.().recovery_count == 2
      assert recoveries.() == 2
      assert @router.get_previous_backpressure_status(s) == :backpressure_warning

      assert @router.check_backpressure_recovery(s) == {:ok, true}
      assert rec.().last_recovery_from == :backpressure_warning

      # active -> inactive (an open breaker reset)
      :ok = Breakwater.force_open(s)
      assert {:backpressure_active, _} = @router.check_backpressure(s)
      assert rec.().recovery_count == 2
      :ok = Breakwater.reset(s)
      r = rec.()
      assert r.recovery_count == 3

      assert {r.last_recovery_from, r.last_recovery_to} ==
               {:backpressure_active, :backpressure_inactive}

      assert recoveries.() == 3

      # warning -> inactive (pressure -> normal) and warning -> active are told apart
      :ok = Breakwater.report_depth(s, 12)
      assert @router.check_backpressure(s) == {:backpressure_warning, 0}
      assert @router.check_backpressure_recovery(s) == {:ok, false}
      :ok = Breakwater.report_depth(s, 5)
      assert rec.().recovery_count == 4

      transitions = 7
      assert length(history(s)) == transitions
      assert Breakwater.status(s).counters.status_changes == transitions

      # a stable state writes nothing, however often it is checked
      events_before = @router.get_backpressure_events(s)

      for _ <- 1..1000 do
        assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
      end

      :ok = Breakwater.report_depth(s, 12)

      for _ <- 1..1000 do
        assert @router.check_backpressure(s) == {:backpressure_warning, 0}
        assert Breakwater.admit(s) == :ok
      end

      assert length(history(s)) == transitions + 1
      assert length(@router.get_backpressure_events(s)) == length(events_before) + 1
      assert rec.().recovery_count == 4

      # counts by type, total and windows
      m = @router.get_backpressure_metrics(s)

      assert m.events_by_type == %{
               backpressure_active: 2,
               backpressure_warning: 3,
               recovery: 4,
               circuit_open: 1,
               circuit_closed: 1
             }

      assert m.total_events == 11
      assert m.last_15m == 11 and m.last_5m == 11
      assert m.last_1m <= 11
      assert is_integer(m.last_event_at)
      assert m.subject == s

      # the history entries name both machines
      assert %{status: :backpressure_warning, previous_status: :backpressure_inactive} =
               List.last(history(s))
    end

    test "tracked events: query, metrics by type and time window" do
      s = T.subject()
      minute = div(System.system_time(:millisecond), 60_000)
      for _ <- 1..3, do: assert(@router.track_backpressure_event(s, :custom_a) == :ok)
      for _ <- 1..2, do: assert(@router.track_backpressure_event(s, "custom-b") == :ok)

      events = @router.get_backpressure_events(s)

      assert Enum.map(events, & &1.event_type) == [
               :custom_a,
               :custom_a,
               :custom_a,
               "custom-b",
               "custom-b"
             ]

      timestamps = Enum.map(events, & &1.timestamp)
      assert timestamps == Enum.sort(timestamps)

      m = @router.get_backpressure_metrics(s)
      assert m.events_by_type == %{:custom_a => 3, "custom-b" => 2}
      assert m.total_events == 5
      assert m.last_event_at == List.last(timestamps)
      assert {m.last_5m, m.last_15m} == {5, 5}

      if div(System.system_time(:millisecond), 60_000) == minute do
        assert m.last_1m == 5
      end

      # another subject's metrics are its own
      assert @router.get_backpressure_metrics(T.subject()).total_events == 0
    end

    test "ETS tables of the router API exist and are bounded per subject" do
      assert :ets.info(:router_backpressure_events, :type) == :ordered_set
      assert :ets.info(:router_backpressure_status_history, :type) != :undefined
      assert :ets.info(:router_backpressure_recovery, :type) != :undefined

      %{events_limit: events_limit, history_limit: history_limit} =
        :persistent_term.get({Breakwater, :limits})

      s = T.subject()
      other = T.subject()
      :ok = @router.track_backpressure_event(other, :kept)
      :ok = @router.track_backpressure_event(s, :oldest)
      for _ <- 1..(events_limit + 50), do: :ok = @router.track_backpressure_event(s, :filler)

      events = @router.get_backpressure_events(s)
      assert length(events) == events_limit
      assert Enum.all?(events, &(&1.event_type == :filler))

      assert :ets.select_count(:router_backpressure_events, [{{{s, :_}, :_, :_, :_}, [], [true]}]) ==
               events_limit

      # lifetime counts are not trimmed
      assert @router.get_backpressure_metrics(s).events_by_type == %{
               oldest: 1,
               filler: events_limit + 50
             }

      assert Enum.map(@router.get_backpressure_events(other), & &1.event_type) == [:kept]

      :ok = @router.track_backpressure_status_history(s, :backpressure_active)

      for _ <- 1..(history_limit + 50),
          do: :ok = @router.track_backpressure_status_history(s, :backpressure_warning)

      hist = history(s)
      assert length(hist) == history_limit
      assert Enum.all?(hist, &(&1.status == :backpressure_warning))

      assert :ets.select_count(:router_backpressure_status_history, [
               {{{s, :_}, :_, :_, :_, :_}, [], [true]}
             ]) == history_limit

      # the recovery table holds one record per subject
      :ok = @router.track_backpressure_recovery(s)
      :ok = @router.track_backpressure_recovery(s)
      assert [{^s, 2, _, _, _}] = :ets.lookup(:router_backpressure_recovery, s)
    end
  end

  describe "max_subjects" do
    # Filling the test node's 20 000 subjects would be slow; instead the registry's cap
    # is lowered to just above the subjects of either room (through the same native
    # init the application uses), the room of subjects created by traffic is filled,
    # and the cap restored afterwards.
    test "beyond the cap, writes on new subjects give {:error, {:too_many_subjects, max}}, reads create nothing, configuring still works" do
      config = :persistent_term.get({Breakwater, :config})

      native = fn max ->
        %{
          max_subjects: max,
          ring_pool: Map.new(config.ring_pool),
          default_policy: Breakwater.Policy.to_native(config.default_policy)
        }
      end

      existing = T.subject()

      try do
        info = Breakwater.Native.pool_info()
        max = max(info.dynamic_subjects, info.configured_subjects) + 2
        assert Breakwater.Native.init(native.(max)) == :ok
        err = {:error, {:too_many_subjects, max}}

        # Fill the dynamic room (removed subjects count until reclaimed, so fill by
        # trying until refused).
        Stream.repeatedly(fn -> Breakwater.admit(T.unique("cap")) end)
        |> Enum.find(&(&1 == err))

        new = T.unique("cap")
        parent = self()

        assert Breakwater.admit(new) == err
        assert Breakwater.admit(new, priority: 9) == err
        assert Breakwater.record(new, :failure) == err
        assert Breakwater.record(new, {:failure, :x}, latency_ms: 3) == err
        assert Breakwater.call(new, fn -> send(parent, :ran) end) == err
        refute_received :ran
        assert Breakwater.report_depth(new, 5) == err
        assert Breakwater.enqueue(new, "e") == err
        assert Breakwater.reset(new) == err
        assert Breakwater.force_open(new) == err
        assert Breakwater.disable(new) == err
        assert Breakwater.enable(new) == err
        assert @router.track_backpressure_event(new, :x) == err
        assert @router.track_backpressure_recovery(new) == err
        assert @router.track_backpressure_status_history(new, :backpressure_active) == err

        # Reads answer as for a subject at rest and create nothing.
        assert Breakwater.drain(new, 5) == :empty
        assert Breakwater.ack(new, 1) == {:error, :unknown_batch}
        assert Breakwater.nack(new, 1) == {:error, :unknown_batch}
        assert Breakwater.status(new) == {:error, :unknown_subject}
        assert @router.check_backpressure(new) == {:backpressure_inactive, 0}

        assert %{status: :backpressure_inactive, breaker: :closed, counters: %{}} =
                 @router.get_detailed_backpressure_status(new)

        assert @router.get_backpressure_events(new) == []
        refute Breakwater.Native.exists(new)

        # Configured subjects have a room of their own: the operator gets in.
        assert Breakwater.configure(new, warning_threshold: 5, critical_threshold: 9) == :ok
        assert Breakwater.admit(new) == :ok
        assert Breakwater.status(new).breaker == :closed

        # existing subjects still work
        assert Breakwater.admit(existing) == :ok
        assert @router.check_backpressure(existing) == {:backpressure_inactive, 0}
      after
        assert Breakwater.Native.init(native.(config.max_subjects)) == :ok
      end

      assert Breakwater.admit(T.unique("cap")) == :ok
    end
  end

  describe "the Erlang face" do
    @erlang_source ~S"""
    -module(breakwater_acceptance_erl).
    -export([run/1]).

    run(S) ->
        R = router_intake_backpressure,
        Policy = [{warning_threshold, 10}, {critical_threshold, 20},
                  {priorities, [{<<"critical-alarm">>, critical}]},
                  {backoff_strategy, linear}],
        ok = 'Elixir.Breakwater':configure(S, Policy),
        Inactive = R:check_backpressure(S),
        ok = 'Elixir.Breakwater':report_depth(S, 20),
        Active = R:check_backpressure(S),
        Rejected = 'Elixir.Breakwater':admit(S),
        Alarm = 'Elixir.Breakwater':admit(S, [{event_type, <<"critical-alarm">>}]),
        ok = 'Elixir.Breakwater':report_depth(S, 5),
        #{inactive => Inactive,
          active => Active,
          rejected => Rejected,
          alarm => Alarm,
          warning => R:check_backpressure(S),
          atom_subject => R:check_backpressure(breakwater_acceptance_erl_subject),
          detailed => R:get_detailed_backpressure_status(S),
          policy => R:get_backpressure_policy(S),
          default_policy => R:get_default_backpressure_policy(),
          valid => R:validate_backpressure_policy([{warning_threshold, 100}, {critical_threshold, 500}]),
          valid_map => R:validate_backpressure_policy(#{warning_threshold => 100}),
          invalid => R:validate_backpressure_policy([{warning_threshold, 0}, {colour, blue}]),
          apply_continue => R:apply_backpressure_policy(backpressure_warning, R:get_backpressure_policy(S)),
          apply_reject => R:apply_backpressure_policy(backpressure_active, [{retry_after_seconds, 10}]),
          apply_linear => R:apply_backpressure_policy(backpressure_active, R:get_backpressure_policy(S), 3),
          apply_exponential => R:apply_backpressure_policy(backpressure_active, #{retry_after_seconds => 10}, 3),
          apply_exceeded => R:apply_backpressure_policy(backpressure_active, [], 4),
          track_atom => R:track_backpressure_event(S, manual_event),
          track_binary => R:track_backpressure_event(S, <<"manual-event">>),
          events => R:get_backpressure_events(S),
          metrics => R:get_backpressure_metrics(S),
          recovery_status => R:get_backpressure_recovery_status(S),
          check_recovery => R:check_backpressure_recovery(S),
          previous => R:get_previous_backpressure_status(S),
          track_recovery => R:track_backpressure_recovery(S),
          track_history => R:track_backpressure_status_history(S, backpressure_warning),
          badarg => R:check_backpressure(42),
          bad_event => R:track_backpressure_event(S, 42)}.
    """

    test "every router function works from Erlang with Erlang-style arguments" do
      dir =
        Path.join(
          System.tmp_dir!(),
          "breakwater_acceptance_#{System.unique_integer([:positive])}"
        )

      File.mkdir_p!(dir)
      path = Path.join(dir, "breakwater_acceptance_erl.erl")
      File.write!(path, @erlang_source)

      {:ok, mod, bin} = :compile.file(String.to_charlist(path), [:binary, :return_errors])
      {:module, ^mod} = :code.load_binary(mod, String.to_charlist(path), bin)
      File.rm_rf!(dir)

      s = T.unique("erl")
      r = mod.run(s)

      assert r.inactive == {:backpressure_inactive, 0}
      assert {:backpressure_active, retry} = r.active
      assert retry > 0
      assert {:reject, :backpressure, _} = r.rejected
      assert r.alarm == :ok
      assert r.warning == {:backpressure_warning, 0}
      assert r.atom_subject == {:backpressure_inactive, 0}
      # check_backpressure/1 is a read: the atom subject was not created.
      refute Breakwater.Native.exists("breakwater_acceptance_erl_subject")

      d = r.detailed
      assert %{status: :backpressure_warning, breaker: :closed, backpressure: :recovery} = d
      assert d.queue_depth == 5
      assert d.thresholds.warning == 10 and d.thresholds.critical == 20
      assert d.thresholds.recovery == 5
      assert is_map(d.counters) and is_map(d.metrics) and is_map(d.recovery)
      assert d.policy == r.policy

      assert r.policy.warning_threshold == 10
      assert r.policy.priorities == %{"critical-alarm" => 9}
      assert r.policy.backoff_strategy == :linear

      assert %{
               retry_after_seconds: 30,
               max_retry_attempts: 3,
               backoff_strategy: :exponential,
               recovery_threshold: 0.5,
               alert_on_active: true,
               alert_on_warning: false,
               warning_threshold: 10_000,
               critical_threshold: 50_000,
               failure_threshold: 5,
               open_timeout_ms: 30_000,
               half_open_max_calls: 3,
               success_threshold: 3
             } = r.default_policy

      assert r.valid == :ok
      assert r.valid_map == :ok
      assert {:error, reasons} = r.invalid
      assert {:unknown_key, :colour} in reasons
      assert Enum.any?(reasons, &match?({:warning_threshold, 0, _}, &1))

      assert r.apply_continue == :continue
      assert r.apply_reject == {:reject, 10}
      assert r.apply_linear == {:reject, 90}
      assert r.apply_exponential == {:reject, 40}
      assert r.apply_exceeded == {:error, :max_retry_attempts_exceeded}

      assert r.track_atom == :ok and r.track_binary == :ok
      types = Enum.map(r.events, & &1.event_type)

      assert [
               :backpressure_active,
               :backpressure_warning,
               :recovery,
               :manual_event,
               "manual-event"
             ] = types

      assert Enum.all?(r.events, &is_integer(&1.timestamp))
      assert r.metrics.events_by_type[:manual_event] == 1
      assert r.metrics.events_by_type["manual-event"] == 1
      assert r.metrics.total_events == 5

      assert %{recovery_count: 1, status: :backpressure_warning, recovering: true} =
               r.recovery_status

      assert r.check_recovery == {:ok, true}

      assert r.previous == :backpressure_active
      assert r.track_recovery == :ok
      assert r.track_history == :ok
      # Erlang callers get error tuples, not exceptions.
      assert r.badarg == {:error, {:invalid_subject, :invalid_subject_type}}
      assert r.bad_event == {:error, {:invalid_event_type, 42}}

      assert @router.get_backpressure_recovery_status(s).recovery_count == 2
    end
  end
end
