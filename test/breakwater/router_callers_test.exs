defmodule Breakwater.RouterCallersTest do
  # Plays the callers of an Erlang router's own `router_intake_backpressure` module (its
  # decide consumer, its gateway backpressure module, its operators' shell) against
  # Breakwater's module of that name: every shape they use, the three overload signals
  # fed as the router feeds them, and the module's telemetry through the test build's
  # `:telemetry` stand-in. async: false: it holds the timer and listens to telemetry,
  # which are node-wide.
  use ExUnit.Case, async: false

  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log

  @router :router_intake_backpressure

  # The thresholds that router shipped with: queue 1 000, p95 5 000 ms, 500 in flight.
  @router_defaults [warning_threshold: 1_000, critical_threshold: 50_000]

  setup do
    :ok = :telemetry.listen()
    Breakwater.Telemetry.refresh()
    on_exit(fn -> Breakwater.Telemetry.refresh() end)
    :ok
  end

  # Runs `fun` with the timer held, so that every emission comes from the calls made.
  defp timer_held(fun) do
    :ok = :sys.suspend(Breakwater.Ticker)

    try do
      fun.()
    after
      :sys.resume(Breakwater.Ticker)
    end
  end

  defp flush_telemetry do
    receive do
      {:telemetry, _, _, _} -> flush_telemetry()
    after
      0 -> :ok
    end
  end

  defp status_events(s) do
    receive do
      {:telemetry, [:router_intake_backpressure, :backpressure_status], m, %{subject: ^s}} ->
        [m | status_events(s)]
    after
      0 -> []
    end
  end

  describe "the decide consumer's flow: signals in, {Status, RetryAfterSeconds} out" do
    test "pending 1 500 → warning; with p95 6 000 → {backpressure_active, 30}; back → inactive, recovered" do
      s = T.subject(@router_defaults, "decide")

      timer_held(fn ->
        assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
        assert @router.get_backpressure_status(s) == :backpressure_inactive

        :ok = Breakwater.report_depth(s, 1_500)
        assert @router.check_backpressure(s) == {:backpressure_warning, 0}
        assert @router.get_backpressure_status(s) == :backpressure_warning

        assert_received {:telemetry, [:router_intake_backpressure, :backpressure_status],
                         %{
                           active: 0,
                           pending_messages: 1_500,
                           latency_p95_ms: 0,
                           inflight_messages: 0
                         }, %{subject: ^s}}

        refute_received {:telemetry, [:router_intake_backpressure, :backpressure_triggered], _, _}

        :ok = Breakwater.report_latency(s, 6_000)
        assert @router.check_backpressure(s) == {:backpressure_active, 30}
        assert @router.get_backpressure_status(s) == :backpressure_active
        assert Breakwater.status(s).overloaded == [:depth, :latency]

        assert_received {:telemetry, [:router_intake_backpressure, :backpressure_status],
                         %{
                           active: 1,
                           pending_messages: 1_500,
                           latency_p95_ms: 6_000,
                           inflight_messages: 0
                         }, %{subject: ^s}}

        assert_received {:telemetry, [:router_intake_backpressure, :backpressure_triggered],
                         %{count: 1}, %{subject: ^s, trigger: "latency"}}

        # What the consumer does with an active status.
        assert @router.apply_backpressure_policy(s, :backpressure_active) == %{
                 action: :reject,
                 retry_after_seconds: 30,
                 max_retry_attempts: 3,
                 backoff_strategy: :exponential,
                 alert: true
               }

        assert {:reject, :overloaded, 30_000} = Breakwater.admit(s)
        assert Breakwater.admit(s, priority: :critical) == :ok

        # No telemetry, history or event while the status does not change.
        flush_telemetry()
        events = length(@router.get_backpressure_events(s))

        for _ <- 1..1_000,
            do: assert(@router.check_backpressure(s) == {:backpressure_active, 30})

        refute_received {:telemetry, _, _, _}
        assert length(@router.get_backpressure_events(s)) == events

        # Back to 50 pending, p95 200: warning on the way (a recovery), then inactive.
        :ok = Breakwater.report_depth(s, 50)
        assert @router.check_backpressure(s) == {:backpressure_warning, 0}
        :ok = Breakwater.report_latency(s, 200)
        assert @router.check_backpressure(s) == {:backpressure_inactive, 0}

        assert @router.check_backpressure_recovery(s) == {:ok, true}
        r = @router.get_backpressure_recovery_status(s)
        assert %{recovered: true, recovery_time: at, recovery_count: 2} = r
        assert is_integer(at) and at <= System.system_time(:millisecond)
        assert @router.get_previous_backpressure_status(s) == :backpressure_warning

        # inactive -> warning, -> active, -> warning (a recovery), -> inactive (another).
        m = @router.get_backpressure_metrics(s)
        assert %{active_events: 1, warning_events: 2, recovery_events: 2} = m
        assert m.total_events == 5
        assert m.subject == s
        assert is_integer(m.last_event_time)
      end)
    end

    test "the breaker's open time left, in whole seconds rounded up, while it is open" do
      s = T.subject(@router_defaults ++ [failure_threshold: 1, open_timeout_ms: 2_500], "open")
      :ok = Breakwater.record(s, :failure)
      assert @router.check_backpressure(s) == {:backpressure_active, 3}
      T.advance(1_600)
      assert @router.check_backpressure(s) == {:backpressure_active, 1}
      T.advance(900)
      assert @router.check_backpressure(s) == {:backpressure_warning, 0}
    end

    test "a subject that is not a binary of 1..1023 bytes or an atom: an error tuple" do
      length_error = {:error, {:invalid_subject, :invalid_subject_length}}
      type_error = {:error, {:invalid_subject, :invalid_subject_type}}

      for {bad, error} <- [
            {"", length_error},
            {:binary.copy("x", 1_024), length_error},
            {:binary.copy("x", 100_000), length_error},
            {42, type_error},
            {'charlist', type_error},
            {{:tuple}, type_error},
            {:undefined, type_error},
            {nil, type_error}
          ] do
        assert @router.check_backpressure(bad) == error
        assert @router.get_backpressure_status(bad) == error
        assert @router.get_detailed_backpressure_status(bad) == error
        assert @router.apply_backpressure_policy(bad, :backpressure_active) == error
        assert @router.track_backpressure_event(bad, %{type: "backpressure_active"}) == error
        assert @router.get_backpressure_events(bad) == error
        assert @router.get_backpressure_metrics(bad) == error
        assert @router.get_backpressure_recovery_status(bad) == error
        assert @router.check_backpressure_recovery(bad) == error
      end

      assert @router.check_backpressure(:binary.copy("x", 1_023)) == {:backpressure_inactive, 0}

      assert @router.check_backpressure(:router_callers_atom_subject) ==
               {:backpressure_inactive, 0}
    end
  end

  describe "measured signals: latency from recorded calls, in-flight from admissions" do
    test "slow calls raise the p95 over the window; calls in flight count until recorded" do
      s =
        T.subject(
          @router_defaults ++ [latency_overload_ms: 100, inflight_overload: 20],
          "measured"
        )

      # 100 calls, 10 of them slow: the p95 is slow.
      for i <- 1..100,
          do: :ok = Breakwater.record(s, :success, latency_ms: if(i <= 10, do: 400, else: 8))

      # The timer recomputes the p95 at most every latency_window_ms / 16 (here 1 s).
      T.advance(1_000)
      assert @router.get_processing_latency_p95(s) in 394..406
      assert @router.check_backpressure(s) == {:backpressure_warning, 0}

      # 21 calls admitted, not yet recorded: a second signal.
      for _ <- 1..21, do: :ok = Breakwater.admit(s)
      assert @router.get_inflight_count(s) == 21
      :ok = Breakwater.Ticker.tick()
      assert @router.check_backpressure(s) == {:backpressure_active, 30}
      assert {:reject, :overloaded, _} = Breakwater.admit(s)

      d = @router.get_detailed_backpressure_status(s)
      assert d.metrics.inflight_messages == 21
      assert d.signals.measured_inflight == 21 and d.signals.reported_inflight == 0
      assert d.overloaded == [:latency, :inflight]

      # Recorded (fast): in-flight drops to its recovery value; latency stays.
      for _ <- 1..21, do: :ok = Breakwater.record(s, :success, latency_ms: 5)
      :ok = Breakwater.Ticker.tick()
      assert @router.get_inflight_count(s) == 0
      assert @router.check_backpressure(s) == {:backpressure_warning, 0}

      # A window later the slow calls have aged out.
      T.advance(60_000)
      T.advance(1_000)
      assert @router.get_processing_latency_p95(s) == 0
      assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
    end

    test "calls admitted and never recorded stop counting after call_timeout_ms" do
      s =
        T.subject(
          @router_defaults ++ [inflight_overload: 20, call_timeout_ms: 10_000],
          "abandoned"
        )

      # The timer held: only these visits take the marks the expiry is judged by. The
      # native clock also moves with real time, so each step keeps a margin of seconds
      # from the boundary it tests.
      visit_at = fn ms ->
        :ok = Breakwater.Native.advance_clock(ms)
        Breakwater.Ticker.visit()
      end

      timer_held(fn ->
        # 30 callers admitted and died before recording: an in-flight warning at first.
        for _ <- 1..30, do: :ok = Breakwater.admit(s)
        visit_at.(0)
        assert @router.get_inflight_count(s) == 30
        assert @router.check_backpressure(s) == {:backpressure_warning, 0}

        # 5 newer calls, 5 s later; 1 of the 35 answers.
        :ok = Breakwater.Native.advance_clock(5_000)
        for _ <- 1..5, do: :ok = Breakwater.admit(s)
        :ok = Breakwater.record(s, :success)
        visit_at.(0)
        assert @router.get_inflight_count(s) == 34

        # Once the 30 are call_timeout_ms old, at most the 5 newer ones still count.
        visit_at.(5_000)
        assert @router.get_inflight_count(s) in 4..5
        assert @router.check_backpressure(s) == {:backpressure_inactive, 0}

        # The newer ones a timeout after the visit that marked them; a forgotten call
        # recorded late changes nothing.
        visit_at.(3_000)
        assert @router.get_inflight_count(s) in 4..5
        visit_at.(2_000)
        assert @router.get_inflight_count(s) == 0
        :ok = Breakwater.record(s, :success)
        visit_at.(0)
        assert @router.get_inflight_count(s) == 0
        :ok = Breakwater.admit(s)
        visit_at.(0)
        assert @router.get_inflight_count(s) == 1
      end)
    end

    test "call/3 records its latency; a drain worker's writes are not in flight" do
      s = T.subject(@router_defaults ++ [latency_overload_ms: 30], "call")

      for _ <- 1..5 do
        assert {:ok, :done} = Breakwater.call(s, fn -> Process.sleep(45) && {:ok, :done} end)
      end

      T.advance(1_000)
      assert Breakwater.status(s).latency_samples == 5
      assert @router.get_processing_latency_p95(s) >= 45
      assert @router.get_backpressure_status(s) == :backpressure_warning
      assert @router.get_inflight_count(s) == 0

      # The worker's admissions and outcomes (writes, health checks) are not calls in
      # flight, whatever it does.
      case Breakwater.Ledger.Simulated.start_link([]) do
        {:ok, pid} -> Process.unlink(pid)
        {:error, {:already_started, _}} -> :ok
      end

      :ok = Breakwater.Ledger.Simulated.set_mode(s, :up)
      :ok = Breakwater.attach_ledger(s, Breakwater.Ledger.Simulated, poll_ms: 1)
      for i <- 1..50, do: :ok = Breakwater.enqueue(s, "e#{i}")
      T.wait_until(fn -> Breakwater.status(s).accounting.delivered == 50 end)
      :ok = Breakwater.detach_ledger(s)
      assert @router.get_inflight_count(s) == 0
    end
  end

  describe "the gateway module's reads" do
    test "detailed status: metrics and thresholds by the router's names, beside Breakwater's" do
      s = T.subject(@router_defaults ++ [inflight_overload: nil], "gateway")
      :ok = Breakwater.report_depth(s, 700)
      :ok = Breakwater.report_latency(s, 1_234)
      :ok = Breakwater.report_inflight(s, 42)

      d = @router.get_detailed_backpressure_status(s)
      assert d.subject == s
      assert d.status == :backpressure_inactive

      assert %{pending_messages: 700, latency_p95_ms: 1_234, inflight_messages: 42} = d.metrics

      assert %{queue_overload: 1_000, latency_overload_ms: 5_000, inflight_overload: :undefined} =
               d.thresholds

      assert %{warning: 1_000, critical: 50_000, recovery: 500} = d.thresholds
      assert %{retry_after_seconds: 30, max_retry_attempts: 3} = d.policy
      assert %{recovered: false, recovery_time: :undefined} = d.recovery
      assert is_integer(d.timestamp)
      assert d.retry_after_seconds == 0

      assert @router.get_jetstream_pending(s) == 700
      assert @router.get_processing_latency_p95(s) == 1_234
      assert @router.get_inflight_count(s) == 42
    end

    test "statuses of many subjects, as its health check counts them" do
      a = T.subject(@router_defaults, "health")
      b = T.subject(@router_defaults, "health")
      c = T.subject(@router_defaults, "health")
      :ok = Breakwater.report_depth(b, 1_001)
      :ok = Breakwater.report_depth(c, 1_001)
      :ok = Breakwater.report_inflight(c, 501)

      counts = Enum.frequencies_by([a, b, c], &@router.get_backpressure_status/1)

      assert counts == %{
               backpressure_inactive: 1,
               backpressure_warning: 1,
               backpressure_active: 1
             }
    end
  end

  describe "events and policy" do
    test "info maps are stored with subject and timestamp; known types count as such" do
      s = T.subject(@router_defaults, "events")
      before = System.system_time(:millisecond)

      assert @router.get_backpressure_metrics(s).last_event_time == :undefined

      :ok =
        @router.track_backpressure_event(s, %{
          type: "backpressure_active",
          pending_messages: 1_500,
          latency_p95_ms: 6_000,
          inflight_messages: 3,
          retry_after_seconds: 30
        })

      :ok = @router.track_backpressure_event(s, %{type: "recovery", recovery_time: before})
      :ok = @router.track_backpressure_event(s, %{type: "custom-kind", note: "x"})
      :ok = @router.track_backpressure_event(s, %{no_type: true})
      :ok = @router.track_backpressure_event(s, :backpressure_warning)

      [active, recovery, custom, untyped, warning] = @router.get_backpressure_events(s)
      assert %{event_type: :backpressure_active, type: "backpressure_active"} = active
      assert %{subject: ^s, pending_messages: 1_500, retry_after_seconds: 30} = active
      assert active.timestamp >= before
      assert %{event_type: :recovery, recovery_time: ^before} = recovery
      assert %{event_type: "custom-kind", type: "custom-kind", note: "x"} = custom
      assert %{event_type: "unknown", no_type: true} = untyped
      assert %{event_type: :backpressure_warning, type: "backpressure_warning"} = warning

      m = @router.get_backpressure_metrics(s)

      assert %{
               subject: ^s,
               total_events: 5,
               active_events: 1,
               warning_events: 1,
               recovery_events: 1
             } = m

      assert m.last_event_time >= before
      assert m.events_by_type["custom-kind"] == 1
      assert m.last_1m == 5 and m.last_15m == 5

      # Bounded: a large info map is refused and changes nothing.
      big = %{type: "backpressure_active", blob: :binary.copy("b", 5_000)}
      assert {:error, {:event_too_large, _, 4_096}} = @router.track_backpressure_event(s, big)
      assert {:error, {:invalid_event_type, 7}} = @router.track_backpressure_event(s, %{type: 7})
      assert length(@router.get_backpressure_events(s)) == 5
    end

    test "both forms of apply_backpressure_policy/2, and /3, told apart by the second argument" do
      s =
        T.subject(@router_defaults ++ [alert_on_warning: true, retry_after_seconds: 12], "apply")

      assert @router.apply_backpressure_policy(s, :backpressure_warning) == %{
               action: :continue,
               retry_after_seconds: 0,
               max_retry_attempts: 3,
               backoff_strategy: :exponential,
               alert: true
             }

      assert %{action: :continue, alert: false} =
               @router.apply_backpressure_policy(s, :backpressure_inactive)

      assert %{action: :reject, retry_after_seconds: 12} =
               @router.apply_backpressure_policy(s, :backpressure_active)

      policy = @router.get_backpressure_policy(s)
      assert @router.apply_backpressure_policy(:backpressure_active, policy) == {:reject, 12}
      assert @router.apply_backpressure_policy(:backpressure_warning, policy) == :continue
      assert @router.apply_backpressure_policy(:backpressure_active, policy, 2) == {:reject, 24}
      # An atom subject named like a status is still a subject when a status follows.
      assert %{action: :reject} =
               @router.apply_backpressure_policy(:backpressure_active, :backpressure_active)
    end
  end

  describe "telemetry from the timer" do
    test "at most one backpressure_status per visit for each refreshed subject, none for a quiet one" do
      busy = T.subject(@router_defaults, "tick-busy")
      quiet = T.subject(@router_defaults, "tick-quiet")
      :ok = Breakwater.report_depth(busy, 1_200)

      timer_held(fn ->
        flush_telemetry()

        for _ <- 1..3, do: Breakwater.Ticker.visit()

        events = status_events(busy)
        assert length(events) == 3

        assert Enum.all?(
                 events,
                 &(&1 == %{
                     active: 0,
                     pending_messages: 1_200,
                     latency_p95_ms: 0,
                     inflight_messages: 0
                   })
               )

        assert status_events(quiet) == []

        # A visit whose own transition changes the status (the measured p95 goes over
        # the threshold) emits that change, not a second report.
        for _ <- 1..20, do: :ok = Breakwater.record(busy, :success, latency_ms: 9_000)
        :ok = Breakwater.Native.advance_clock(1_000)
        flush_telemetry()
        Breakwater.Ticker.visit()
        assert [%{active: 1, latency_p95_ms: p95}] = status_events(busy)
        assert p95 in 8_900..9_100

        assert_received {:telemetry, [:router_intake_backpressure, :backpressure_triggered],
                         %{count: 1}, %{subject: ^busy, trigger: "latency"}}
      end)
    end
  end

  describe "an Erlang router's own code, unchanged" do
    # Written the way that router's consumer and gateway call their intake module.
    @erlang_source ~S"""
    -module(breakwater_router_caller).
    -export([handle/1, gateway/1, health/1]).

    handle(Subject) ->
        case router_intake_backpressure:check_backpressure(Subject) of
            {backpressure_active, RetryAfter} ->
                Action = router_intake_backpressure:apply_backpressure_policy(Subject, backpressure_active),
                {nak, RetryAfter, maps:get(action, Action)};
            {backpressure_warning, _} ->
                processed_with_warning;
            {backpressure_inactive, _} ->
                processed;
            {error, {invalid_subject, Why}} ->
                {rejected, Why}
        end.

    gateway(Subject) ->
        Detailed = router_intake_backpressure:get_detailed_backpressure_status(Subject),
        Metrics = maps:get(metrics, Detailed, #{}),
        Thresholds = maps:get(thresholds, Detailed, #{}),
        Policy = maps:get(policy, Detailed, #{}),
        #{status => maps:get(status, Detailed, backpressure_inactive),
          pending => maps:get(pending_messages, Metrics, 0),
          p95 => maps:get(latency_p95_ms, Metrics, 0),
          inflight => maps:get(inflight_messages, Metrics, 0),
          queue_overload => maps:get(queue_overload, Thresholds, 1000),
          latency_overload => maps:get(latency_overload_ms, Thresholds, 5000),
          inflight_overload => maps:get(inflight_overload, Thresholds, 500),
          retry => maps:get(retry_after_seconds, Policy, 30),
          attempts => maps:get(max_retry_attempts, Policy, 3)}.

    health(Subjects) ->
        lists:foldl(fun(S, Acc) ->
            case router_intake_backpressure:get_backpressure_status(S) of
                backpressure_active -> maps:update_with(active, fun(C) -> C + 1 end, 1, Acc);
                backpressure_warning -> maps:update_with(warning, fun(C) -> C + 1 end, 1, Acc);
                backpressure_inactive -> maps:update_with(inactive, fun(C) -> C + 1 end, 1, Acc);
                _ -> Acc
            end
        end, #{active => 0, warning => 0, inactive => 0}, Subjects).
    """

    test "its consumer, gateway and health check work against this module" do
      dir = Path.join(System.tmp_dir!(), "breakwater_router_caller_#{System.os_time()}")
      File.mkdir_p!(dir)
      path = Path.join(dir, "breakwater_router_caller.erl")
      File.write!(path, @erlang_source)
      {:ok, mod, bin} = :compile.file(String.to_charlist(path), [:binary, :return_errors])
      {:module, ^mod} = :code.load_binary(mod, String.to_charlist(path), bin)
      File.rm_rf!(dir)

      s = T.subject(@router_defaults, "erl")
      assert mod.handle(s) == :processed
      :ok = Breakwater.report_depth(s, 1_500)
      assert mod.handle(s) == :processed_with_warning
      :ok = Breakwater.report_latency(s, 6_000)
      assert mod.handle(s) == {:nak, 30, :reject}
      assert mod.handle(<<>>) == {:rejected, :invalid_subject_length}
      assert mod.handle(42) == {:rejected, :invalid_subject_type}

      assert %{
               status: :backpressure_active,
               pending: 1_500,
               p95: 6_000,
               inflight: 0,
               queue_overload: 1_000,
               latency_overload: 5_000,
               inflight_overload: 500,
               retry: 30,
               attempts: 3
             } = mod.gateway(s)

      quiet = T.subject(@router_defaults, "erl")

      assert mod.health([s, quiet, "not a subject" <> :binary.copy("!", 1_100)]) ==
               %{active: 1, warning: 0, inactive: 1}
    end
  end

  test "the iex status table shows the signals" do
    s = T.subject(@router_defaults, "table")
    :ok = Breakwater.report_depth(s, 1_100)
    :ok = Breakwater.report_latency(s, 5_500)
    row = Enum.find(Breakwater.status().rows, &(&1.subject == s))
    [header | lines] = Breakwater.StatusTable.lines(%Breakwater.StatusTable{rows: [row]})
    assert header =~ ~r/depth\s+p95 ms\s+inflight\s+overloaded/
    assert [line] = lines
    assert line =~ ~r/active\s+closed\s+pressure\s+1100\s+5500\s+0\s+depth,latency/
  end
end
