defmodule Breakwater.Alerts do
  @moduledoc """
  Alert state: conditions evaluated on every transition, raised and cleared
  through OTP's `alarm_handler` and `:logger`, and queryable with `Breakwater.alerts/0`.

  | alert | raised when | cleared when | severity |
  |---|---|---|---|
  | `:backpressure_active` | status becomes active and the policy has `alert_on_active` | status leaves active | warning |
  | `:backpressure_warning` | status becomes warning and the policy has `alert_on_warning` | status leaves warning | warning |
  | `:circuit_open` | the breaker opens | the breaker leaves open | warning |
  | `:circuit_open_escalated` | the breaker has been open `alert_escalate_after_ms` | the breaker leaves open | critical |
  | `:depth_critical_escalated` | backpressure has been dropping for `depth_escalate_after_ms` (application key, default 120 000) and the depth is still at or above critical | backpressure leaves dropping | critical |

  Each transition makes the manager re-read the subject's current state, so alerts
  follow the state even when transitions observed by different processes reach it out
  of order. Alarm ids are `{:breakwater, alert, subject}` with a description map, so that
  `:alarm_handler.get_alarms()` names the subject. Transitions arrive as casts, so the
  processes that observe them never wait on this one.

      iex> Breakwater.alerts()
      []
  """
  use GenServer
  require Breakwater.Log, as: Log

  @pending :breakwater_alert_pending

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
  def transition(subject, t, now) do
    # At most one queued re-evaluation per subject: a storm of transitions (a depth
    # oscillating around a threshold) cannot grow this process's mailbox.
    if :ets.insert_new(@pending, {subject}),
      do: GenServer.cast(__MODULE__, {:transition, subject, t, now})

    :ok
  end

  @doc "Active alerts, oldest first."
  @spec list() :: [alert]
  def list do
    GenServer.call(__MODULE__, :list)
  catch
    :exit, _ -> []
  end

  @impl true
  def init(_opts) do
    # Clear alarms a previous incarnation of this process may have left set.
    for {{:breakwater, _, _} = id, _} <- safe_get_alarms(), do: :alarm_handler.clear_alarm(id)
    # Casts queued for the previous incarnation are gone: let new transitions through.
    :ets.delete_all_objects(@pending)
    {:ok, %{alerts: %{}, timers: %{}}}
  end

  @impl true
  def handle_call(:list, _from, state) do
    {:reply, state.alerts |> Map.values() |> Enum.sort_by(& &1.since), state}
  end

  @impl true
  def handle_cast({:transition, subject, _t, now}, state) do
    # Casts from different observers may arrive out of order: evaluate the subject's
    # state now, not the transition's target, so the last cast leaves the right alerts.
    # The pending mark goes first: a transition after this point queues a new cast.
    :ets.delete(@pending, subject)
    policy = Breakwater.PolicyStore.get(subject)
    current = Breakwater.Native.status(subject)

    state =
      state
      |> toggle(
        subject,
        :backpressure_active,
        current.status == :active and policy.alert_on_active,
        now
      )
      |> toggle(
        subject,
        :backpressure_warning,
        current.status == :warning and policy.alert_on_warning,
        now
      )
      |> toggle(subject, :circuit_open, current.breaker == :open, now)
      |> escalation(
        subject,
        :circuit_open_escalated,
        current.breaker == :open,
        policy.alert_escalate_after_ms
      )
      |> escalation(
        subject,
        :depth_critical_escalated,
        current.backpressure == :dropping,
        depth_escalate_after_ms()
      )

    {:noreply, state}
  end

  @impl true
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

        {:noreply,
         if(still_holds?(subject, alert),
           do: raise_alert(state, subject, alert, now()),
           else: state
         )}

      _ ->
        {:noreply, state}
    end
  end

  defp still_holds?(subject, :circuit_open_escalated) do
    match?(%{breaker: :open}, Breakwater.Native.status(subject))
  end

  defp still_holds?(subject, :depth_critical_escalated) do
    status = Breakwater.Native.status(subject)
    policy = Breakwater.PolicyStore.get(subject)
    status.backpressure == :dropping and status.queue_depth >= policy.critical_threshold
  end

  defp toggle(state, subject, alert, true, now) do
    if Map.has_key?(state.alerts, {subject, alert}),
      do: state,
      else: raise_alert(state, subject, alert, now)
  end

  defp toggle(state, subject, alert, false, _now), do: clear_alert(state, subject, alert)

  # Escalations are raised by a timer and cleared with their condition.
  defp escalation(state, subject, alert, true, after_ms) do
    if Map.has_key?(state.timers, {subject, alert}) or
         Map.has_key?(state.alerts, {subject, alert}) do
      state
    else
      ref = make_ref()
      timer = arm(subject, alert, ref, after_ms)
      %{state | timers: Map.put(state.timers, {subject, alert}, {ref, timer})}
    end
  end

  defp escalation(state, subject, alert, false, _after_ms) do
    state =
      case Map.pop(state.timers, {subject, alert}) do
        {{_ref, timer}, timers} ->
          Process.cancel_timer(timer)
          %{state | timers: timers}

        {nil, _} ->
          state
      end

    clear_alert(state, subject, alert)
  end

  # The longest time an Erlang timer accepts (about 49.7 days); policies allow longer
  # escalation times, which are waited for in legs of at most this.
  @max_timer_ms 4_294_967_295

  defp arm(subject, alert, ref, ms) do
    leg = min(ms, @max_timer_ms)
    Process.send_after(self(), {:escalate, subject, alert, ref, ms - leg}, leg)
  end

  defp raise_alert(state, subject, alert, now) do
    id = {:breakwater, alert, subject}

    severity =
      if alert in [:circuit_open_escalated, :depth_critical_escalated],
        do: :critical,
        else: :warning

    description = describe(alert, subject)

    :alarm_handler.set_alarm(
      {id, %{subject: subject, alert: alert, severity: severity, description: description}}
    )

    log(severity, "breakwater alarm set: #{description}")

    record = %{
      id: id,
      alert: alert,
      subject: subject,
      severity: severity,
      since: now,
      description: description
    }

    %{state | alerts: Map.put(state.alerts, {subject, alert}, record)}
  end

  defp clear_alert(state, subject, alert) do
    case Map.pop(state.alerts, {subject, alert}) do
      {nil, _} ->
        state

      {record, alerts} ->
        :alarm_handler.clear_alarm(record.id)
        Log.info("breakwater alarm cleared: #{record.description}")
        %{state | alerts: alerts}
    end
  end

  defp describe(:backpressure_active, s), do: "backpressure active on #{inspect(s)}"
  defp describe(:backpressure_warning, s), do: "backpressure warning on #{inspect(s)}"
  defp describe(:circuit_open, s), do: "circuit breaker open on #{inspect(s)}"
  defp describe(:circuit_open_escalated, s), do: "circuit breaker open too long on #{inspect(s)}"

  defp describe(:depth_critical_escalated, s),
    do: "queue depth above critical too long on #{inspect(s)}"

  defp log(:critical, msg), do: Log.error(msg)
  defp log(:warning, msg), do: Log.warning(msg)

  defp depth_escalate_after_ms,
    do: Application.get_env(:breakwater, :depth_escalate_after_ms, 120_000)

  defp now, do: System.system_time(:millisecond)

  defp safe_get_alarms do
    :alarm_handler.get_alarms()
  catch
    _, _ -> []
  end
end
