defmodule Breakwater.Tables do
  @moduledoc """
  Keeps Breakwater's ETS tables alive whatever process dies.

  Two keeper processes, `Breakwater.Tables.A` and `Breakwater.Tables.B`, do nothing but
  hold the tables: one owns them and the other is their ETS heir. When the owner dies,
  the heir inherits every table (ETS hands them over atomically: no writer ever sees a
  table missing) and owns them from then on; the restarted keeper finds the tables
  alive and asks the owner to make it the new heir. So killing either keeper, or
  killing the owner over and over, loses no entry. Only both keepers dying at once (the
  application stopping) deletes the tables.

  | table | type | contents |
  |---|---|---|
  | `router_backpressure_events` | ordered_set | `{{subject, seq}, event_type, timestamp_ms, meta}` |
  | `router_backpressure_status_history` | ordered_set | `{{subject, seq}, status, previous, timestamp_ms, meta}` |
  | `router_backpressure_recovery` | set | `{subject, count, last_ms, from, to}` |
  | `breakwater_counters` | ordered_set | per-subject counts (`{subject, ...}` keys): events by type, minute buckets, entries held; node totals under `{:node, ...}` |
  | `breakwater_alert_pending` | set | `{subject}` while a re-evaluation of its alerts is queued |
  | `breakwater_alerts` | set | raised alerts and armed escalations of `Breakwater.Alerts` |
  | `breakwater_ledgers` | set | `{subject, module, opts}`: the ledgers attached, re-attached after any restart |
  | `breakwater_log` | set | the per-subject log limiter of `Breakwater.LogLimiter` |
  | `breakwater_metrics` | set | the last rendered `/metrics` body (`Breakwater.Metrics.Scrape`) |
  | `breakwater_cluster` | set | `{node, state, since_ms}`: the nodes seen running Breakwater (`Breakwater.Cluster`) |

  Every table is public (writers are the processes that observe transitions) with
  `read_concurrency`; the per-subject ones are trimmed per subject by
  `Breakwater.History`, and every entry of a subject is deleted when the subject is
  removed (`Breakwater.Lifecycle`). Policies are not here: the native layer keeps each
  subject's whole policy.
  """
  use GenServer

  @tables [
    router_backpressure_events: :ordered_set,
    router_backpressure_status_history: :ordered_set,
    router_backpressure_recovery: :set,
    breakwater_counters: :ordered_set,
    breakwater_alert_pending: :set,
    breakwater_alerts: :set,
    breakwater_ledgers: :set,
    breakwater_log: :set,
    breakwater_metrics: :set,
    breakwater_cluster: :set
  ]

  @names %{
    events: :router_backpressure_events,
    history: :router_backpressure_status_history,
    recovery: :router_backpressure_recovery,
    counters: :breakwater_counters,
    alert_pending: :breakwater_alert_pending,
    alerts: :breakwater_alerts,
    ledgers: :breakwater_ledgers,
    log: :breakwater_log,
    metrics: :breakwater_metrics,
    cluster: :breakwater_cluster
  }

  @keepers [Breakwater.Tables.A, Breakwater.Tables.B]

  @typedoc "A table's short name."
  @type table ::
          :events
          | :history
          | :recovery
          | :counters
          | :alert_pending
          | :alerts
          | :ledgers
          | :log
          | :metrics
          | :cluster

  @doc """
  A table's ETS name, by its short name: `:events`, `:history`, `:recovery`,
  `:counters`, `:alert_pending`, `:alerts`, `:ledgers`, `:log`, `:metrics`, `:cluster`.
  """
  @spec name(table) :: atom
  def name(table), do: Map.fetch!(@names, table)

  @doc "Every table's ETS name."
  @spec names() :: [atom]
  def names, do: Keyword.keys(@tables)

  @doc "The registered names of the two keepers."
  @spec keepers() :: [atom]
  def keepers, do: @keepers

  @doc "Child specs of the two keepers, to start in this order."
  @spec child_specs() :: [Supervisor.child_spec()]
  def child_specs do
    [a, b] = @keepers

    [
      Supervisor.child_spec({__MODULE__, name: a, peer: b}, id: a),
      Supervisor.child_spec({__MODULE__, name: b, peer: a}, id: b)
    ]
  end

  @doc false
  def start_link(opts) do
    name = Keyword.fetch!(opts, :name)
    GenServer.start_link(__MODULE__, Keyword.fetch!(opts, :peer), name: name)
  end

  @impl true
  def init(peer) do
    peer_pid = Process.whereis(peer)
    # The tables exist (a keeper restarted: the peer owns them) or not (first start).
    missing = for {t, type} <- @tables, not held_by?(t, peer_pid), do: {t, type}

    for {t, type} <- missing do
      opts = [type, :public, :named_table, read_concurrency: true, write_concurrency: true]
      :ets.new(t, [heir_opt(peer_pid) | opts])
    end

    # Ask the owner of the others to make this keeper their heir.
    if length(missing) < length(@tables) do
      try do
        GenServer.call(peer, {:heir, self()}, 5_000)
      catch
        :exit, _ -> :ok
      end
    end

    {:ok, %{peer: peer}}
  end

  # Whether `table` is held by the live peer. A table of a process that is exiting (the
  # tables of a stopped application go a moment after its processes) is waited out.
  defp held_by?(table, peer_pid, waited \\ 0) do
    case :ets.info(table, :owner) do
      :undefined ->
        false

      ^peer_pid when is_pid(peer_pid) ->
        true

      _stale when waited < 5_000 ->
        Process.sleep(5)
        held_by?(table, peer_pid, waited + 5)

      stale ->
        raise "ETS table #{inspect(table)} is held by #{inspect(stale)}, not a keeper"
    end
  end

  defp heir_opt(pid) when is_pid(pid), do: {:heir, pid, :breakwater_tables}
  defp heir_opt(nil), do: {:heir, :none}

  @impl true
  def handle_call({:heir, pid}, _from, state) do
    for {t, _} <- @tables, :ets.info(t, :owner) == self() do
      :ets.setopts(t, {:heir, pid, :breakwater_tables})
    end

    {:reply, :ok, state}
  end

  @impl true
  def handle_info({:"ETS-TRANSFER", _table, _from, :breakwater_tables}, state) do
    # The owner died: this keeper owns the table now, without an heir until the other
    # keeper is back (it asks for the role in its init).
    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}
end
