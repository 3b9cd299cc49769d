defmodule Breakwater.Cluster.Membership do
  @moduledoc false
  # Keeps the receiver (`Breakwater.Cluster`) in the right `pg` groups: `:nodes`
  # always, and `{:breaker, subject}` for every subject this node shares. It also
  # watches the `:nodes` group and keeps the `breakwater_cluster` table of the nodes
  # seen (up, down, stopped) for `Breakwater.Cluster.nodes/0`.
  #
  # Joining is a call to the `pg` scope, which tells the scopes of the other nodes; a
  # frozen peer whose distribution channel is busy can hold the scope up, and this
  # process with it. That is why it is a process of its own: the receiver, which
  # applies the peers' breaker opens, never calls anything.
  #
  # It learns of changes in three ways: `Breakwater.Cluster.refresh/1` (a cast, after a
  # configure or a removal), a look every second for subjects that appeared (created by
  # traffic under the default policy, which may share) or went away, and, at start, a
  # look at every subject.
  use GenServer
  require Breakwater.Log, as: Log

  alias Breakwater.Native

  @nodes_group :nodes
  @table :breakwater_cluster
  @max_nodes 1_024
  @forget_after_ms 3_600_000
  @prune_every_ms 60_000
  @reconcile_every_ms 1_000

  @doc false
  def start_link(opts) do
    Breakwater.Cluster.Supervisor.await_name(__MODULE__)
    GenServer.start_link(__MODULE__, opts, name: __MODULE__)
  end

  @doc false
  # The most nodes remembered, and how long a node gone is remembered (ms).
  def limits, do: %{max_nodes: @max_nodes, forget_after_ms: @forget_after_ms}

  @impl true
  def init(_opts) do
    scope = Breakwater.Cluster.scope()
    receiver = Process.whereis(Breakwater.Cluster) || exit(:no_receiver)
    {ref, members} = :pg.monitor(scope, @nodes_group)
    :ok = :pg.join(scope, @nodes_group, receiver)
    now = System.system_time(:millisecond)
    up = members |> MapSet.new(&node/1) |> MapSet.put(node())

    # Nodes the table says are up but are not members now went away while nobody was
    # watching.
    for {n, :up, _} <- :ets.tab2list(@table), not MapSet.member?(up, n) do
      mark(n, gone_state(n), now)
    end

    for n <- up, do: mark(n, :up, now)

    state =
      reconcile(%{
        scope: scope,
        receiver: receiver,
        ref: ref,
        joined: MapSet.new(),
        seen: MapSet.new()
      })

    Process.send_after(self(), :prune, @prune_every_ms)
    {:ok, schedule_reconcile(state)}
  end

  @impl true
  def handle_cast({:refresh, subject}, state), do: {:noreply, refresh_one(state, subject)}

  @impl true
  def handle_info({ref, :join, @nodes_group, pids}, %{ref: ref} = state) do
    now = System.system_time(:millisecond)

    for n <- Enum.uniq(Enum.map(pids, &node/1)), n != node() do
      if was(n) != :up, do: Log.info("breakwater: node #{n} joined the cluster")
      mark(n, :up, now)
    end

    {:noreply, state}
  end

  def handle_info({ref, :leave, @nodes_group, pids}, %{ref: ref} = state) do
    now = System.system_time(:millisecond)
    members = MapSet.new(:pg.get_members(state.scope, @nodes_group), &node/1)

    for n <- Enum.uniq(Enum.map(pids, &node/1)), n != node(), not MapSet.member?(members, n) do
      gone = gone_state(n)
      Log.info("breakwater: node #{n} left the cluster (#{gone})")
      mark(n, gone, now)
    end

    {:noreply, state}
  end

  def handle_info(:reconcile, state), do: {:noreply, state |> reconcile() |> schedule_reconcile()}

  def handle_info(:prune, state) do
    prune(System.system_time(:millisecond))
    Process.send_after(self(), :prune, @prune_every_ms)
    {:noreply, state}
  end

  def handle_info(_other, state), do: {:noreply, state}

  # ---- nodes ----------------------------------------------------------------------------

  defp gone_state(n), do: if(n in Node.list(), do: :stopped, else: :down)

  defp was(n) do
    case :ets.lookup(@table, n) do
      [{_, state, _}] -> state
      [] -> nil
    end
  end

  # This node is not kept in the table (`Breakwater.Cluster.nodes/0` always lists it as
  # it is now), nor is the name of a node that is not distributed.
  defp mark(n, _state, _now) when n == node() or n == :nonode@nohost, do: :ok

  defp mark(n, state, now) do
    if was(n) != state, do: :ets.insert(@table, {n, state, now})
    if :ets.info(@table, :size) > @max_nodes, do: prune_oldest()
  end

  # Forgets nodes gone for longer than an hour.
  defp prune(now) do
    :ets.select_delete(@table, [
      {{:_, :"$1", :"$2"}, [{:"/=", :"$1", :up}, {:<, :"$2", now - @forget_after_ms}], [true]}
    ])
  end

  defp prune_oldest do
    gone = for {n, s, since} <- :ets.tab2list(@table), s != :up, do: {since, n}

    case Enum.min(gone, fn -> nil end) do
      {_, n} -> :ets.delete(@table, n)
      nil -> :ok
    end
  end

  # ---- the subjects' groups -------------------------------------------------------------

  # Subjects that appeared since the last look get their membership checked, and those
  # that went away (removed, expired) leave their group. A look costs one list of the
  # subjects' names and a set difference; only new subjects' policies are read.
  defp reconcile(state) do
    current = MapSet.new(Native.subjects())
    state = Enum.reduce(MapSet.difference(current, state.seen), state, &refresh_one(&2, &1))
    state = Enum.reduce(MapSet.difference(state.seen, current), state, &refresh_one(&2, &1))
    %{state | seen: current}
  end

  defp schedule_reconcile(state) do
    Process.send_after(self(), :reconcile, @reconcile_every_ms)
    state
  end

  defp refresh_one(state, subject) do
    wanted = Breakwater.Cluster.shared?(subject)
    joined = MapSet.member?(state.joined, subject)
    group = Breakwater.Cluster.group(subject)

    cond do
      wanted and not joined ->
        :pg.join(state.scope, group, state.receiver)
        %{state | joined: MapSet.put(state.joined, subject)}

      joined and not wanted ->
        :pg.leave(state.scope, group, state.receiver)
        %{state | joined: MapSet.delete(state.joined, subject)}

      true ->
        state
    end
  end
end
