defmodule Breakwater.Cluster.Status do
  @moduledoc """
  Gathers every node's state for `Breakwater.cluster_status/0,1`: one `:erpc.call/5`
  per node running Breakwater, all at once, each under the same timeout, and none
  waited on past it. A node that does not answer in time is listed as `:timeout`, one
  that is disconnected as `:down`, one that is connected but does not run Breakwater as
  `:stopped`, one whose answer is an error as `:error` (with the reason).

  Each call runs in a process of its own, and the caller stops waiting at the
  deadline, killing the calls still running: a call to a node whose distribution
  channel is busy (a frozen peer, a partition not yet detected) suspends the process
  that makes it until the channel drains, and `:erpc.multicall/5` then suspends as a
  whole, past its own timeout, with the answers of the healthy nodes. (Measured: with
  a peer stopped by SIGSTOP and its channel full, `:erpc.multicall/5` with a 500 ms
  timeout had not returned after 5 s.)

  Each node answers with `local/2`, run there: per subject the router status,
  breaker, backpressure, depth, the overload signals its `status/1` has, `opened_by`,
  `remote_opens` and `circuit_opens`, and whether its policy shares the breaker.
  """

  alias Breakwater.{ClusterTable, History, Native, PolicyStore}

  @default_timeout_ms 1_000
  @default_max_subjects 100
  # Overload signals beside depth, taken from `status/1` when the node has them.
  # (The names `Breakwater.status/1` gives them: p95 latency, calls in flight, and the
  # list of the signals overloaded.)
  @signal_keys [:latency_p95_ms, :inflight, :overloaded]

  @doc false
  @spec gather(:all | binary, keyword) :: ClusterTable.t()
  def gather(what, opts) do
    timeout = Keyword.get(opts, :timeout, @default_timeout_ms)
    max = Keyword.get(opts, :max_subjects, @default_max_subjects)
    known = Breakwater.Cluster.nodes()
    up = for %{state: :up, node: n} <- known, do: n

    answers = call_all(up, [what, max], timeout)
    answered = Map.new(answers)

    nodes =
      for %{node: n} = entry <- known do
        case Map.fetch(answered, n) do
          {:ok, {:ok, %{} = answer}} ->
            %{
              node: n,
              state: :up,
              since: entry.since,
              reason: nil,
              subject_count: answer.subject_count
            }

          {:ok, {:error, {:erpc, :timeout}}} ->
            %{node: n, state: :timeout, since: entry.since, reason: :timeout, subject_count: nil}

          {:ok, {:error, {:erpc, :noconnection}}} ->
            %{
              node: n,
              state: :down,
              since: entry.since,
              reason: :noconnection,
              subject_count: nil
            }

          {:ok, other} ->
            %{
              node: n,
              state: :error,
              since: entry.since,
              reason: brief(other),
              subject_count: nil
            }

          :error ->
            %{node: n, state: entry.state, since: entry.since, reason: nil, subject_count: nil}
        end
      end

    rows =
      for {_n, {:ok, %{rows: rows}}} <- answers, row <- rows do
        row
      end

    %ClusterTable{
      nodes: nodes,
      rows: Enum.sort_by(rows, &{&1.subject, &1.node}),
      subject: if(what == :all, do: nil, else: what)
    }
  end

  # How long past the timeout the caller waits for the calls' own timeout replies.
  @margin_ms 100

  # [{node, result}] in the shape of :erpc.multicall/5's results, each node called from
  # a process of its own; calls still running at the deadline are killed and answer
  # {:error, {:erpc, :timeout}}.
  defp call_all([], _args, _timeout), do: []

  defp call_all(nodes, args, timeout) do
    parent = self()
    tag = make_ref()
    deadline = System.monotonic_time(:millisecond) + timeout + @margin_ms

    calls =
      Map.new(nodes, fn n ->
        {pid, mref} = spawn_monitor(fn -> send(parent, {tag, n, call(n, args, timeout)}) end)
        {n, {pid, mref}}
      end)

    results = collect(tag, calls, %{}, deadline)

    answers =
      for n <- nodes do
        {pid, mref} = Map.fetch!(calls, n)
        if not Map.has_key?(results, n), do: Process.exit(pid, :kill)
        Process.demonitor(mref, [:flush])
        {n, Map.get(results, n, {:error, {:erpc, :timeout}})}
      end

    flush(tag)
    answers
  end

  # An answer sent between the deadline and the kill: no stray message is left behind.
  defp flush(tag) do
    receive do
      {^tag, _, _} -> flush(tag)
    after
      0 -> :ok
    end
  end

  defp call(n, args, timeout) do
    {:ok, :erpc.call(n, __MODULE__, :local, args, timeout)}
  catch
    :error, {:erpc, _} = reason -> {:error, reason}
    :error, {:exception, _, _} = reason -> {:error, reason}
    kind, reason -> {kind, reason}
  end

  defp collect(tag, calls, results, deadline) do
    if map_size(results) == map_size(calls) do
      results
    else
      wait = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {^tag, n, result} -> collect(tag, calls, Map.put(results, n, result), deadline)
      after
        wait -> results
      end
    end
  end

  defp brief({kind, reason}), do: {kind, inspect(reason, limit: 10, printable_limit: 200)}
  defp brief({kind, reason, _stack}), do: {kind, inspect(reason, limit: 10, printable_limit: 200)}
  defp brief(other), do: inspect(other, limit: 10, printable_limit: 200)

  @doc """
  This node's part of `cluster_status/0,1`, run on every node: `%{node:,
  subject_count:, rows:}`, with rows for `subject` (none when it does not exist here)
  or, for `:all`, for the `max` worst subjects (active before warning before inactive,
  then by depth).
  """
  @spec local(:all | binary, non_neg_integer) :: %{
          node: node,
          subject_count: non_neg_integer,
          rows: [map]
        }
  def local(what, max) do
    names =
      case what do
        :all -> for {s, _, _, _, _} <- Native.overview(max, :all), do: s
        subject when is_binary(subject) -> [subject]
      end

    rows = for s <- names, %{} = status <- [Native.status(s)], do: row(s, status)
    %{node: node(), subject_count: length(Native.subjects()), rows: rows}
  end

  defp row(subject, status) do
    policy = PolicyStore.get(subject)

    %{
      node: node(),
      subject: subject,
      status: status.status,
      breaker: status.breaker,
      backpressure: status.backpressure,
      queue_depth: status.queue_depth,
      opened_by: if(status.breaker == :open, do: History.opened_by(subject)),
      remote_opens: Map.get(status.counters, :remote_opens, 0),
      circuit_opens: Map.get(status.counters, :circuit_opens, 0),
      shared: policy.share == :breaker
    }
    |> Map.merge(Map.take(status, @signal_keys))
  end
end
