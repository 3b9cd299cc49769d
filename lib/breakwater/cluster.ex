defmodule Breakwater.Cluster do
  @moduledoc """
  Breakwater on a cluster of Erlang nodes: one node's ledger outage protects every
  node, and an operator sees every node's state from any of them
  (`Breakwater.cluster_status/0,1`).

  The only engine is the one the BEAM has: Erlang distribution, and OTP's `pg` for
  membership (no leader, eventually consistent). Breakwater starts a `pg` scope of its
  own, `Breakwater.Cluster.Scope`, with two processes beside it:

  - `Breakwater.Cluster`, the *receiver*: the member of the groups, which applies the
    breaker opens its peers send. It only handles messages and never calls anything;
  - `Breakwater.Cluster.Membership`, which joins the receiver to the group `:nodes`
    (every node running Breakwater) and to one group `{:breaker, subject}` per subject
    whose policy has `share: :breaker`, leaves them as policies change and subjects go,
    and remembers the nodes seen. Joining is a call to the scope, which a frozen peer
    can hold up; so it is not the receiver's job.

  ## A shared breaker

  When a subject's breaker opens on a node (a trip from closed: failures, a failure
  rate, slow calls, failed health checks), the process that made the transition sends
  `{:breakwater_remote_open, subject, node, opened_at_ms}` to the members of the
  subject's group on the other nodes, as Phoenix.PubSub's `pg` adapter broadcasts:
  straight from the caller, one `send` per peer, no call. Each send has `:noconnect` (a
  node not connected is not dialled) and `:nosuspend` (a busy distribution channel,
  e.g. to a frozen or partitioned peer, drops the message rather than suspend the
  sender), so the router's call never waits on a peer. A message that could not be
  sent is counted (`breakwater_cluster_opens_sent_total{result}`) and logged.

  On the receiving node the receiver moves the subject's breaker to open if it is
  closed: an ordinary compare-and-swap on the subject's state word (the check path
  still reads one word), with this node's own open time. It is counted in the
  subject's `remote_opens` (and `circuit_opens`), written to history and events with
  `cause: :remote_open`, `opened_by: node` and `peer_opened_at` (the peer's clock), logged,
  and shown by `Breakwater.status/1` as `opened_by` while the breaker stays open. From
  then on each node probes and closes on its own: a node that can reach the ledger
  closes after its own successful probes, while one that still cannot keeps probing.

  What propagates, and what does not:

  - only the *first* trip of an outage, from closed. A re-trip from half-open (a
    failed probe) stays local: a node that still cannot reach the ledger would
    otherwise yank its recovered peers open again on every probe. When the ledger
    fails again for a node that had closed, that trip is from closed and propagates.
  - not a remote open (a node never relays what it was told: no echo);
  - not `force_open/1`: a manual, local decision;
  - a peer whose breaker is not closed (open, half-open: already probing on its own,
    forced open, disabled) is left as it is.

  Each node decides by its own policy: a node sends only for subjects its policy
  shares, and applies a remote open only to a subject that exists on it and that its
  policy shares. A peer's open sent while the receiver was restarting is missed (the
  node then opens on its own failures, as without a cluster).

  ## Nodes

  The nodes seen in the `:nodes` group are remembered in the `breakwater_cluster`
  table (see `Breakwater.Tables`) as `:up`, `:down` (disconnected) or `:stopped`
  (connected, but Breakwater is not running there), so that `cluster_status/0` lists a
  node that went away as such rather than forgetting it. Nodes gone for an hour are
  forgotten, and at most 1 024 nodes are remembered.

  If any of the three processes dies, it and those started after it restart
  (`rest_for_one`) and the groups are joined again from the policies, which live in
  the native layer.

      iex> Breakwater.Cluster.shared?("never-shared")
      false
  """
  use GenServer
  require Breakwater.Log, as: Log

  alias Breakwater.{History, Native, PolicyStore}

  @scope Breakwater.Cluster.Scope
  @nodes_group :nodes
  @table :breakwater_cluster
  @counters :breakwater_counters

  @typedoc "A node's state as `cluster_status/0` reports it."
  @type node_state :: :up | :down | :stopped | :timeout | :error

  @doc "The `pg` scope Breakwater's groups live in."
  @spec scope() :: atom
  def scope, do: @scope

  @doc "The `pg` group of a shared subject."
  @spec group(binary) :: {:breaker, binary}
  def group(subject), do: {:breaker, subject}

  @doc false
  def start_link(opts) do
    Breakwater.Cluster.Supervisor.await_name(__MODULE__)
    GenServer.start_link(__MODULE__, opts, name: __MODULE__)
  end

  # ---- the sending side: called by whoever observed the transition ---------------------

  @doc false
  # `subject`'s breaker just opened on this node, by a trip from closed (not forced, not
  # a remote open): tells the peers sharing the subject. Never blocks, never raises.
  @spec breaker_opened(binary, integer) :: :ok
  def breaker_opened(subject, opened_at) do
    if shares?(subject) do
      message = {:breakwater_remote_open, subject, node(), opened_at}

      for pid <- members(subject), node(pid) != node() do
        # A send to a remote pid never waits: not on a connection (`noconnect`), not on
        # a busy distribution channel (`nosuspend`). A message not sent is counted.
        case :erlang.send(pid, message, [:noconnect, :nosuspend]) do
          :ok ->
            count(:sent)

          why ->
            count(why)

            Log.warning(
              "breakwater #{inspect(subject)}: could not tell #{node(pid)} that the breaker " <>
                "opened (#{why}: " <>
                if(why == :nosuspend,
                  do: "its distribution channel is busy)",
                  else: "not connected)"
                ),
              %{breakwater_subject: subject}
            )
        end
      end
    end

    :ok
  rescue
    # The scope or a table is not there (the application is starting or stopping).
    _ -> :ok
  end

  defp members(subject), do: :pg.get_members(@scope, group(subject))

  defp count(result) do
    key = {:node, :cluster_opens, result_name(result)}
    :ets.update_counter(@counters, key, {2, 1}, {key, 0})
  end

  defp result_name(:sent), do: :sent
  defp result_name(:nosuspend), do: :busy
  defp result_name(:noconnect), do: :not_connected

  @doc false
  # Remote opens sent and not sent, by result: `%{sent:, busy:, not_connected:}`.
  @spec sent_counts() :: %{atom => non_neg_integer}
  def sent_counts do
    for result <- [:sent, :busy, :not_connected], into: %{} do
      n =
        case :ets.lookup(@counters, {:node, :cluster_opens, result}) do
          [{_, n}] -> n
          [] -> 0
        end

      {result, n}
    end
  rescue
    ArgumentError -> %{sent: 0, busy: 0, not_connected: 0}
  end

  # ---- the receiving side ------------------------------------------------------------

  @doc false
  # Applies a remote open of `subject` from `origin` (whose breaker opened at
  # `opened_at`, its system time in ms): opens the breaker if it is closed and the
  # subject is shared here. Returns whether it opened it.
  @spec remote_open(binary, node, integer) :: boolean
  def remote_open(subject, origin, opened_at) do
    if shares?(subject) do
      case Native.remote_open(subject) do
        {:transitions, :ok, transitions} ->
          History.record(subject, transitions, %{opened_by: origin, peer_opened_at: opened_at})
          Enum.any?(transitions, &(&1.cause == :remote_open))

        _not_closed_or_unknown ->
          false
      end
    else
      false
    end
  end

  @doc """
  True when `subject` exists on this node and its policy has `share: :breaker`.
  """
  @spec shared?(Breakwater.subject()) :: boolean
  def shared?(subject), do: subject |> Breakwater.Subject.normalize!() |> shares?()

  defp shares?(subject) do
    Native.exists(subject) and PolicyStore.get(subject).share == :breaker
  rescue
    _ -> false
  end

  @doc false
  # Joins or leaves `subject`'s group to match its policy now (after a configure, a
  # removal), soon: the membership process does it (a membership process that is not
  # running catches up when it starts). Never waits.
  @spec refresh(binary) :: :ok
  def refresh(subject), do: GenServer.cast(Breakwater.Cluster.Membership, {:refresh, subject})

  @doc "The subjects this node shares (members of their groups), sorted."
  @spec joined() :: [binary]
  def joined do
    for {:breaker, subject} <- :pg.which_local_groups(@scope), do: subject
  rescue
    _ -> []
  catch
    :exit, _ -> []
  end

  @doc """
  The nodes known to run Breakwater, with their state (`:up`, `:down`: disconnected,
  `:stopped`: connected but not running Breakwater) and since when (system time, ms),
  sorted by node. This node is always listed, as `:up` while Breakwater runs.
  """
  @spec nodes() :: [%{node: node, state: :up | :down | :stopped, since: integer}]
  def nodes do
    known =
      try do
        :ets.tab2list(@table)
      rescue
        ArgumentError -> []
      end

    up =
      try do
        for pid <- :pg.get_members(@scope, @nodes_group), into: MapSet.new(), do: node(pid)
      rescue
        _ -> MapSet.new()
      end

    now = System.system_time(:millisecond)

    known
    |> Enum.reject(fn {n, _, _} -> n in [node(), :nonode@nohost] end)
    |> Map.new(fn {n, state, since} -> {n, %{node: n, state: state, since: since}} end)
    # pg knows best who is up now; the table may lag behind by a message.
    |> then(fn m ->
      Enum.reduce(MapSet.put(up, node()), m, fn n, m ->
        case m do
          %{^n => %{state: :up}} -> m
          _ -> Map.put(m, n, %{node: n, state: :up, since: now})
        end
      end)
    end)
    |> Map.values()
    |> Enum.sort_by(& &1.node)
  end

  # ---- the receiver -----------------------------------------------------------------------

  @impl true
  def init(_opts), do: {:ok, nil}

  @impl true
  def handle_info({:breakwater_remote_open, subject, origin, opened_at}, state)
      when is_binary(subject) and is_atom(origin) and is_integer(opened_at) do
    remote_open(subject, origin, opened_at)
    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}
end
