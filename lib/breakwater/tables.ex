defmodule Breakwater.Tables do
  @moduledoc """
  Owns Breakwater's ETS tables and does nothing else, so that no failure elsewhere
  (a router, a drain worker, the timer) can take history with it.

  | table | type | contents |
  |---|---|---|
  | `router_backpressure_events` | ordered_set | `{{subject, seq}, event_type, timestamp_ms, meta}` |
  | `router_backpressure_status_history` | ordered_set | `{{subject, seq}, status, previous, timestamp_ms, meta}` |
  | `router_backpressure_recovery` | set | `{subject, count, last_ms, from, to}` |
  | `breakwater_policies` | set | `{subject, policy}` and `{:default, policy}` |
  | `breakwater_counters` | set | per-subject counts: events by type, minute buckets, entries held |
  | `breakwater_alert_pending` | set | `{subject}` while a re-evaluation of its alerts is queued |

  Every table is public (writers are the processes that observe transitions) with
  `read_concurrency`, and the per-subject ones are trimmed to `events_limit` /
  `history_limit` entries per subject (oldest first) by `Breakwater.History`.
  """
  use GenServer

  @events :router_backpressure_events
  @history :router_backpressure_status_history
  @recovery :router_backpressure_recovery
  @policies :breakwater_policies
  @counters :breakwater_counters
  @alert_pending :breakwater_alert_pending

  @doc """
  Table names: `:events`, `:history`, `:recovery`, `:policies`, `:counters`,
  `:alert_pending`.
  """
  @spec name(:events | :history | :recovery | :policies | :counters | :alert_pending) :: atom
  def name(:events), do: @events
  def name(:history), do: @history
  def name(:recovery), do: @recovery
  def name(:policies), do: @policies
  def name(:counters), do: @counters
  def name(:alert_pending), do: @alert_pending

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    common = [:public, :named_table, read_concurrency: true, write_concurrency: true]
    :ets.new(@events, [:ordered_set | common])
    :ets.new(@history, [:ordered_set | common])
    :ets.new(@recovery, [:set | common])
    :ets.new(@policies, [:set | common])
    :ets.new(@counters, [:set | common])
    :ets.new(@alert_pending, [:set | common])
    {:ok, nil}
  end
end
