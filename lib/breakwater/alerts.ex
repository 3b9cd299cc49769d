defmodule Breakwater.Alerts do
  @moduledoc """
  Alert state: conditions evaluated on every transition, raised and cleared through
  OTP's `alarm_handler`, and queryable with `Breakwater.alerts/0`.

  | alert | raised when | cleared when | severity |
  |---|---|---|---|
  | `:circuit_open` | the breaker opens | the breaker leaves open | warning |
  | `:backpressure_active` | status becomes active for a reason other than an open breaker (backpressure dropping, or two overload signals at once), and the policy has `alert_on_active` | status leaves active, or only the open breaker keeps it there | warning |
  | `:backpressure_warning` | status becomes warning and the policy has `alert_on_warning` | status leaves warning | warning |
  | `:circuit_open_escalated` | the breaker has been open `alert_escalate_after_ms` | the breaker leaves open | critical |
  | `:depth_critical_escalated` | backpressure has been dropping for `depth_escalate_after_ms` (application key, default 120 000) and the depth is still at or above critical | backpressure leaves dropping | critical |

  So a breaker opening raises one alarm (`circuit_open`), not two: the active status it
  causes is the same incident.

  Each transition makes the manager re-read the subject's current state, so alerts
  follow the state even when transitions observed by different processes reach it out
  of order. Alarm ids are `{:breakwater, alert, subject}` with a description map, so that
  `:alarm_handler.get_alarms()` names the subject. Transitions arrive as casts, so the
  processes that observe them never wait on this one.

  ## Logging

  The transition that raises or clears an alarm is logged once, by
  `Breakwater.History` (rate-limited by `Breakwater.LogLimiter`); setting and clearing
  the alarm add no line of their own. The report OTP's default alarm handler prints for
  every set and clear is filtered out for Breakwater's alarms (`log_filter/2`, a
  primary `:logger` filter installed while the application runs): it says again what
  the transition line said. Escalations, which no transition announces, are logged at
  error.

  ## State that survives a restart

  Raised alerts and armed escalations are kept in the `breakwater_alerts` table (see
  `Breakwater.Tables`), not in this process: when it restarts, it re-arms the
  escalation timers for the time they had left, re-evaluates every subject that has an
  alert or is not at rest (transitions sent while it was down were lost), and keeps the
  alarms that still hold, with their original `since`.

      iex> Breakwater.alerts()
      []
  """
  use GenServer
  require Breakwater.Log, as: Log

  @pending :breakwater_alert_pending
  @table :breakwater_alerts

  @typedoc "An active alert."
  @type alert :: %{
          id: {:breakwater, atom, binary},
          alert: atom,
          subject: binary,
          severity: :warning | :critical,
          since: integer,
          description: String.t()
        }

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc "Tells the alert manager of a transition of `subject` observed at `now` (ms)."
  @spec transition(binary, map, integer) :: :ok
  def transition(subject, _t, now) do
    # At most one queued re-evaluation per subject: a storm of transitions (a depth
    # oscillating around a threshold) cannot grow this process's mailbox.
    if :ets.insert_new(@pending, {subject}),
      do: GenServer.cast(__MODULE__, {:evaluate, subject, now})

    :ok
  rescue
    ArgumentError -> :ok
  end

  @doc "Clears every alert of `subject` (it was removed)."
  @spec forget(binary) :: :ok
  def forget(subject), do: GenServer.cast(__MODULE__, {:forget, subject})

  @doc """
  Active alerts, oldest first. Waits for the manager to take in the transitions sent
  to it before the call (so an alert is listed as soon as its transition returned);
  reads the table alone if the manager is not running.
  """
  @spec list() :: [alert]
  def list do
    try do
      GenServer.call(__MODULE__, :sync, 5_000)
    catch
      :exit, _ -> :ok
    end

    @table
    |> :ets.select([{{:_, :raised, :"$1"}, [], [:"$1"]}])
    |> Enum.sort_by(& &1.since)
  rescue
    ArgumentError -> []
  end

  @doc """
  The primary `:logger` filter Breakwater installs while it runs: stops the reports of
  OTP's default alarm handler about Breakwater's own alarms (`{:breakwater, _, _}`),
  whose transition is logged already; every other event passes unchanged.
  """
  @spec log_filter(:logger.log_event(), term) :: :logger.filter_return()
  def log_filter(%{msg: {:report, %{report: [alarm_handler: {op, alarm}]}}} = event, _arg)
      when op in [:set, :clear] do
    if breakwater_alarm?(alarm), do: :stop, else: event
  end

  def log_filter(%{msg: {:report, [alarm_handler: {op, alarm}]}} = event, _arg)
      when op in [:set, :clear] do
    if breakwater_alarm?(alarm), do: :stop, else: event
  end

  def log_filter(event, _arg), do: event

  defp breakwater_alarm?({{:breakwater, _, _}, _description}), do: true
  defp breakwater_alarm?({:breakwater, _, _}), do: true
  defp breakwater_alarm?(_), do: false

  # ---- server ------------------------------------------------------------------------

  @impl true
  def init(_opts) do
    # Alarms the table does not know of (left by an earlier run of the application)
    # describe nothing that holds now.
    for {{:breakwater, alert, subject} = id, _} <- safe_get_alarms(),
        not raised?(subject, alert),
        do: :alarm_handler.clear_alarm(id)

    # Casts queued for a previous incarnation are gone: let new transitions through.
    :ets.delete_all_objects(@pending)
    timers = rearm_escalations()
    # Transitions sent while no manager ran were lost: look at every subject that has
    # an alert or is not at rest.
    send(self(), :reconcile)
    {:ok, %{timers: timers}}
  end

  defp rearm_escalations do
    now = now()

    for {{subject, alert} = key, :armed, started} <- :ets.tab2list(@table), into: %{} do
      left = max(started + escalate_after(subject, alert) - now, 0)
      ref = make_ref()
      {key, {ref, arm(subject, alert, ref, left)}}
    end
  end

  @impl true
  def handle_call(:sync, _from, state), do: {:reply, :ok, state}

  @impl true
  def handle_cast({:evaluate, subject, now}, state) do
    # The pending mark goes first: a transition after this point queues a new cast.
    :ets.delete(@pending, subject)
    {:noreply, evaluate(state, subject, now)}
  end

  def handle_cast({:forget, subject}, state) do
    state =
      Enum.reduce(alerts_of(subject), state, fn alert, state ->
        state |> cancel_timer(subject, alert) |> clear_alert(subject, alert)
      end)

    {:noreply, state}
  end

  @impl true
  def handle_info(:reconcile, state) do
    with_alerts = :ets.select(@table, [{{{:"$1", :_}, :_, :_}, [], [:"$1"]}])

    restless =
      for {subject, _rank, _breaker, _backpressure, _depth} <- safe_overview(), do: subject

    now = now()

    state =
      (with_alerts ++ restless)
      |> Enum.uniq()
      |> Enum.reduce(state, &evaluate(&2, &1, now))

    {:noreply, state}
  end

  def handle_info({:escalate, subject, alert, ref, left_ms}, state) when left_ms > 0 do
    # A wait longer than one Erlang timer can hold: arm the next leg.
    case Map.get(state.timers, {subject, alert}) do
      {^ref, _} ->
        timer = arm(subject, alert, ref, left_ms)
        {:noreply, %{state | timers: Map.put(state.timers, {subject, alert}, {ref, timer})}}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:escalate, subject, alert, ref, 0}, state) do
    case Map.get(state.timers, {subject, alert}) do
      {^ref, _} ->
        state = %{state | timers: Map.delete(state.timers, {subject, alert})}
        :ets.delete(@table, {subject, alert})

        if still_holds?(subject, alert) do
          raise_alert(subject, alert, now())
        end

        {:noreply, state}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  # Casts from different observers may arrive out of order: evaluate the subject's
  # state now, not the transition's target, so the last cast leaves the right alerts.
  defp evaluate(state, subject, now) do
    case Breakwater.Native.status(subject) do
      %{} = current ->
        policy = Breakwater.PolicyStore.get(subject)
        # Active because of backpressure (dropping, or two overload signals), not only
        # because the breaker is open: an open breaker is the circuit_open alarm's
        # incident.
        bp_active =
          current.status == :active and
            (current.backpressure == :dropping or length(current.overloaded) >= 2 or
               current.breaker != :open)

        state
        |> toggle(subject, :backpressure_active, bp_active and policy.alert_on_active, now)
        |> toggle(
          subject,
          :backpressure_warning,
          current.status == :warning and policy.alert_on_warning,
          now
        )
        |> toggle(subject, :circuit_open, current.breaker == :open, now)
        |> escalation(subject, :circuit_open_escalated, current.breaker == :open, now)
        |> escalation(
          subject,
          :depth_critical_escalated,
          current.backpressure == :dropping,
          now
        )

      _unknown ->
        # Removed: nothing can hold any more.
        Enum.reduce(alerts_of(subject), state, fn alert, state ->
          state |> cancel_timer(subject, alert) |> clear_alert(subject, alert)
        end)
    end
  end

  defp still_holds?(subject, :circuit_open_escalated) do
    match?(%{breaker: :open}, Breakwater.Native.status(subject))
  end

  defp still_holds?(subject, :depth_critical_escalated) do
    case Breakwater.Native.status(subject) do
      %{backpressure: :dropping, queue_depth: depth} ->
        depth >= Breakwater.PolicyStore.get(subject).critical_threshold

      _ ->
        false
    end
  end

  defp toggle(state, subject, alert, true, now) do
    unless raised?(subject, alert), do: raise_alert(subject, alert, now)
    state
  end

  defp toggle(state, subject, alert, false, _now), do: clear_alert(state, subject, alert)

  # Escalations are raised by a timer and cleared with their condition.
  defp escalation(state, subject, alert, true, now) do
    if Map.has_key?(state.timers, {subject, alert}) or raised?(subject, alert) do
      state
    else
      ref = make_ref()
      timer = arm(subject, alert, ref, escalate_after(subject, alert))
      :ets.insert(@table, {{subject, alert}, :armed, now})
      %{state | timers: Map.put(state.timers, {subject, alert}, {ref, timer})}
    end
  end

  defp escalation(state, subject, alert, false, _now) do
    state |> cancel_timer(subject, alert) |> clear_alert(subject, alert)
  end

  defp cancel_timer(state, subject, alert) do
    case Map.pop(state.timers, {subject, alert}) do
      {{_ref, timer}, timers} ->
        Process.cancel_timer(timer)
        :ets.delete(@table, {subject, alert})
        %{state | timers: timers}

      {nil, _} ->
        state
    end
  end

  defp escalate_after(subject, :circuit_open_escalated),
    do: Breakwater.PolicyStore.get(subject).alert_escalate_after_ms

  defp escalate_after(_subject, :depth_critical_escalated),
    do: Application.get_env(:breakwater, :depth_escalate_after_ms, 120_000)

  # The longest time an Erlang timer accepts (about 49.7 days); policies allow longer
  # escalation times, which are waited for in legs of at most this.
  @max_timer_ms 4_294_967_295

  defp arm(subject, alert, ref, ms) do
    leg = min(ms, @max_timer_ms)
    Process.send_after(self(), {:escalate, subject, alert, ref, ms - leg}, leg)
  end

  defp raised?(subject, alert),
    do: match?([{_, :raised, _}], :ets.lookup(@table, {subject, alert}))

  defp alerts_of(subject) do
    :ets.select(@table, [{{{subject, :"$1"}, :_, :_}, [], [:"$1"]}])
  end

  defp raise_alert(subject, alert, now) do
    id = {:breakwater, alert, subject}

    severity =
      if alert in [:circuit_open_escalated, :depth_critical_escalated],
        do: :critical,
        else: :warning

    description = describe(alert, subject)

    :alarm_handler.set_alarm(
      {id, %{subject: subject, alert: alert, severity: severity, description: description}}
    )

    # The transitions behind the warning alarms are logged already; escalations are
    # announced by nothing else.
    if severity == :critical, do: Log.error("breakwater alarm set: #{description}")

    record = %{
      id: id,
      alert: alert,
      subject: subject,
      severity: severity,
      since: now,
      description: description
    }

    :ets.insert(@table, {{subject, alert}, :raised, record})
  end

  defp clear_alert(state, subject, alert) do
    case :ets.lookup(@table, {subject, alert}) do
      [{_, :raised, record}] ->
        :ets.delete(@table, {subject, alert})
        :alarm_handler.clear_alarm(record.id)

      _ ->
        :ok
    end

    state
  end

  defp describe(:backpressure_active, s), do: "backpressure active on #{inspect(s)}"
  defp describe(:backpressure_warning, s), do: "backpressure warning on #{inspect(s)}"
  defp describe(:circuit_open, s), do: "circuit breaker open on #{inspect(s)}"
  defp describe(:circuit_open_escalated, s), do: "circuit breaker open too long on #{inspect(s)}"

  defp describe(:depth_critical_escalated, s),
    do: "queue depth above critical too long on #{inspect(s)}"

  defp now, do: System.system_time(:millisecond)

  defp safe_get_alarms do
    :alarm_handler.get_alarms()
  catch
    _, _ -> []
  end

  defp safe_overview do
    Breakwater.Native.overview(16_777_216, :restless)
  rescue
    _ -> []
  end
end
