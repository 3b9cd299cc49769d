defmodule Breakwater.AlertsTest do
  # Alerts raised and cleared through OTP's alarm_handler and Logger, queryable
  # with Breakwater.alerts/0, escalated by timers. Moves the native clock: async: false.
  use ExUnit.Case, async: false
  import ExUnit.CaptureLog

  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log

  # The test configuration logs errors only; the alert manager's lines are wanted here.
  setup do
    Logger.put_module_level([Breakwater.Alerts, Breakwater.History], :info)
    on_exit(fn -> Logger.delete_module_level([Breakwater.Alerts, Breakwater.History]) end)
  end

  @thresholds [warning_threshold: 10, critical_threshold: 20, stability_ms: 1_000]

  defp alarm_ids, do: for({id, _} <- :alarm_handler.get_alarms(), do: id)

  defp alerts_of(s), do: for(%{subject: ^s, alert: a} <- Breakwater.alerts(), do: a)

  test "backpressure active: alarm set with the subject in its id, logged, then cleared" do
    s = T.subject(@thresholds)

    log =
      capture_log([level: :warning], fn ->
        :ok = Breakwater.report_depth(s, 25)
        assert alerts_of(s) == [:backpressure_active]
      end)

    assert {:breakwater, :backpressure_active, s} in alarm_ids()
    assert log =~ "breakwater alarm set: backpressure active on #{inspect(s)}"

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

  test "every transition is logged, warnings for an open breaker and for dropping" do
    s = T.subject(@thresholds ++ [open_timeout_ms: 60_000])

    log =
      capture_log([level: :info], fn ->
        :ok = Breakwater.report_depth(s, 12)
        :ok = Breakwater.report_depth(s, 25)
        :ok = Breakwater.force_open(s)
        :ok = Breakwater.reset(s)
      end)

    name = inspect(s)
    assert log =~ ~r/\[info\].*breakwater #{Regex.escape(name)}: backpressure normal -> pressure/

    assert log =~
             ~r/\[warning\].*breakwater #{Regex.escape(name)}: backpressure pressure -> dropping/

    assert log =~ ~r/\[warning\].*breakwater #{Regex.escape(name)}: breaker closed -> open/
    assert log =~ ~r/\[info\].*breakwater #{Regex.escape(name)}: breaker open -> closed/
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
      assert Enum.count(queued, &match?({:"$gen_cast", {:transition, ^s, _, _}}, &1)) <= 1
    after
      :erlang.resume_process(alerts)
    end

    assert Breakwater.status(s).counters.backpressure_transitions >= 2_000
    # The one re-evaluation saw the final state.
    assert alerts_of(s) == []
  end
end
