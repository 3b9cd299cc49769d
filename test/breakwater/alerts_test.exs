defmodule Breakwater.AlertsTest do
  # Alerts raised and cleared through OTP's alarm_handler, queryable with
  # Breakwater.alerts/0, escalated by timers; one log line per transition (rate-limited
  # per subject). Moves the native clock: async: false.
  use ExUnit.Case, async: false
  import ExUnit.CaptureLog

  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log

  # The test configuration logs errors only; the alert manager's lines are wanted here.
  setup do
    Logger.put_module_level([Breakwater.Alerts, Breakwater.History, Breakwater.LogLimiter], :info)

    on_exit(fn ->
      Logger.delete_module_level([Breakwater.Alerts, Breakwater.History, Breakwater.LogLimiter])
    end)
  end

  @thresholds [warning_threshold: 10, critical_threshold: 20, stability_ms: 1_000]

  defp alarm_ids, do: for({id, _} <- :alarm_handler.get_alarms(), do: id)

  defp alerts_of(s), do: for(%{subject: ^s, alert: a} <- Breakwater.alerts(), do: a)

  test "backpressure active: alarm set with the subject in its id, its transition logged once, then cleared" do
    s = T.subject(@thresholds)

    log =
      capture_log([level: :info], fn ->
        :ok = Breakwater.report_depth(s, 25)
        assert alerts_of(s) == [:backpressure_active]
      end)

    assert {:breakwater, :backpressure_active, s} in alarm_ids()
    # One line: the transition's. Neither Breakwater nor OTP's alarm handler logs the
    # alarm again.
    assert log =~ "breakwater #{inspect(s)}: backpressure normal -> dropping"
    assert length(Regex.scan(~r/breakwater/, log)) == 1, log
    refute log =~ "alarm_handler"

    [alert] = Enum.filter(Breakwater.alerts(), &(&1.subject == s))
    assert %{severity: :warning, id: {:breakwater, :backpressure_active, ^s}} = alert
    assert is_integer(alert.since)

    {_, %{subject: ^s, severity: :warning, description: d}} =
      List.keyfind(:alarm_handler.get_alarms(), {:breakwater, :backpressure_active, s}, 0)

    assert d =~ s

    # Down to zero, then the stability period: status goes back to inactive.
    :ok = Breakwater.report_depth(s, 0)
    T.advance(1_100)
    :router_intake_backpressure.check_backpressure(s)
    T.wait_until(fn -> alerts_of(s) == [] end, 5_000)
    refute {:breakwater, :backpressure_active, s} in alarm_ids()
  end

  test "alert_on_active: false raises nothing; alert_on_warning: true raises the warning" do
    quiet = T.subject(@thresholds ++ [alert_on_active: false])
    :ok = Breakwater.report_depth(quiet, 25)
    assert alerts_of(quiet) == []

    loud = T.subject(@thresholds ++ [alert_on_warning: true])
    :ok = Breakwater.report_depth(loud, 12)
    assert alerts_of(loud) == [:backpressure_warning]
    assert {:breakwater, :backpressure_warning, loud} in alarm_ids()
    :ok = Breakwater.report_depth(loud, 25)
    assert alerts_of(loud) == [:backpressure_active]
    refute {:breakwater, :backpressure_warning, loud} in alarm_ids()
  end

  test "transitions are logged with their cause, warnings for an open breaker and for dropping" do
    # A fresh subject per transition: each is its subject's first line of the interval
    # (the limiter forgets the lines of the set-up).
    [a, b, c, d] = for _ <- 1..4, do: T.subject(@thresholds ++ [open_timeout_ms: 60_000])
    :ok = Breakwater.report_depth(b, 12)
    :ok = Breakwater.force_open(d)
    Enum.each([b, d], &Breakwater.LogLimiter.forget/1)

    log =
      capture_log([level: :info], fn ->
        :ok = Breakwater.report_depth(a, 12)
        :ok = Breakwater.report_depth(b, 25)
        :ok = Breakwater.force_open(c)
        :ok = Breakwater.reset(d)
      end)

    line = fn level, s, what ->
      ~r/\[#{level}\].*breakwater #{Regex.escape(inspect(s))}: #{Regex.escape(what)}/
    end

    # each with its cause; a close by hand says so
    assert log =~ line.(:info, a, "backpressure normal -> pressure (depth)")
    assert log =~ line.(:warning, b, "backpressure pressure -> dropping (depth)")
    assert log =~ line.(:warning, c, "breaker closed -> open (force_open)")
    assert log =~ line.(:info, d, "breaker open -> closed (reset)")
  end

  test "one breaker opening writes one log line and raises one alarm" do
    s = T.subject(failure_threshold: 3, open_timeout_ms: 60_000)

    log =
      capture_log([level: :debug], fn ->
        for _ <- 1..3, do: :ok = Breakwater.record(s, :failure)
        assert alerts_of(s) == [:circuit_open]
      end)

    assert [{:breakwater, :circuit_open, ^s}] =
             for({{:breakwater, _, ^s} = id, _} <- :alarm_handler.get_alarms(), do: id)

    lines = log |> String.split("\n") |> Enum.filter(&(&1 =~ ~r/^\d\d:\d\d:\d\d/))
    assert [line] = lines, log
    assert line =~ "breakwater #{inspect(s)}: breaker closed -> open (failures)"
    :ok = Breakwater.reset(s)
  end

  test "a transition storm logs one line per subject per interval, then a summary" do
    s = T.subject(warning_threshold: 10, critical_threshold: 20, stability_ms: 0)
    Breakwater.LogLimiter.flush()

    {elapsed, log} =
      with_log([level: :info], fn ->
        t0 = System.monotonic_time(:millisecond)

        for _ <- 1..500 do
          :ok = Breakwater.report_depth(s, 25)
          :ok = Breakwater.report_depth(s, 0)
        end

        elapsed = System.monotonic_time(:millisecond) - t0
        Breakwater.LogLimiter.flush()
        elapsed
      end)

    transitions = Breakwater.status(s).counters.backpressure_transitions
    assert transitions >= 1_000
    lines = length(Regex.scan(~r/breakwater #{Regex.escape(inspect(s))}: /, log))
    # One line per interval the loop spanned (the timer's flush may fall inside it).
    assert lines in 1..(2 + div(elapsed, Breakwater.LogLimiter.interval_ms())), log

    suppressed =
      ~r/breakwater: (\d+) transition log lines suppressed/
      |> Regex.scan(log)
      |> Enum.map(fn [_, n] -> String.to_integer(n) end)
      |> Enum.sum()

    # Every transition is either on its line or counted in a summary.
    assert suppressed >= transitions - lines
    assert log =~ "most: #{inspect(s)}"
  end

  test "circuit open: set on force_open and cleared on reset" do
    s = T.subject(open_timeout_ms: 60_000)
    :ok = Breakwater.force_open(s)
    assert :circuit_open in alerts_of(s)
    assert {:breakwater, :circuit_open, s} in alarm_ids()
    :ok = Breakwater.reset(s)
    assert alerts_of(s) == []
    refute {:breakwater, :circuit_open, s} in alarm_ids()
  end

  test "an open breaker escalates after alert_escalate_after_ms, as a critical alarm" do
    s = T.subject(open_timeout_ms: 60_000, alert_escalate_after_ms: 50)

    log =
      capture_log(fn ->
        :ok = Breakwater.force_open(s)
        T.wait_until(fn -> :circuit_open_escalated in alerts_of(s) end, 5_000)
      end)

    assert log =~ "circuit breaker open too long on #{inspect(s)}"
    assert {:breakwater, :circuit_open_escalated, s} in alarm_ids()

    assert %{severity: :critical} =
             Enum.find(Breakwater.alerts(), &(&1.alert == :circuit_open_escalated))

    :ok = Breakwater.reset(s)
    assert alerts_of(s) == []
    refute {:breakwater, :circuit_open_escalated, s} in alarm_ids()
  end

  test "a breaker closed before its escalation time never escalates" do
    s = T.subject(open_timeout_ms: 60_000, alert_escalate_after_ms: 100)
    :ok = Breakwater.force_open(s)
    :ok = Breakwater.reset(s)
    Process.sleep(200)
    assert alerts_of(s) == []
    refute {:breakwater, :circuit_open_escalated, s} in alarm_ids()
  end

  test "an escalation time beyond one Erlang timer is accepted and does not escalate" do
    alerts = Process.whereis(Breakwater.Alerts)
    s = T.subject(open_timeout_ms: 60_000, alert_escalate_after_ms: 281_474_976_710_655)
    :ok = Breakwater.force_open(s)
    assert :circuit_open in alerts_of(s)
    refute :circuit_open_escalated in alerts_of(s)
    assert Process.whereis(Breakwater.Alerts) == alerts
    :ok = Breakwater.reset(s)
    assert alerts_of(s) == []
  end

  test "a storm of transitions queues at most one re-evaluation per subject" do
    s = T.subject(warning_threshold: 10, critical_threshold: 20, stability_ms: 0)
    alerts = Process.whereis(Breakwater.Alerts)
    :erlang.suspend_process(alerts)

    try do
      for _ <- 1..2_000 do
        Breakwater.report_depth(s, 25)
        Breakwater.report_depth(s, 0)
        :router_intake_backpressure.check_backpressure(s)
      end

      # (The timer may queue casts for other subjects meanwhile: count this one's.)
      {:messages, queued} = Process.info(alerts, :messages)
      assert Enum.count(queued, &match?({:"$gen_cast", {:evaluate, ^s, _}}, &1)) <= 1
    after
      :erlang.resume_process(alerts)
    end

    assert Breakwater.status(s).counters.backpressure_transitions >= 2_000
    # The one re-evaluation saw the final state.
    assert alerts_of(s) == []
  end
end
