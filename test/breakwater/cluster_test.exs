defmodule Breakwater.ClusterTest do
  # Breakwater on three nodes of this host: this test node and two peers started with
  # OTP's `peer` module (Breakwater.Demo.Nodes: names with this OS process's id, this
  # node's configuration, a spool directory each). Makes this node distributed for the
  # module's duration and stops it again: async: false.
  use ExUnit.Case, async: false

  require Logger
  alias Breakwater.Demo.Nodes
  alias Breakwater.TestCheckSampler, as: Sampler
  alias Breakwater.TestSubjects, as: T
  import Breakwater.TestSubjects, only: [wait_until: 1, wait_until: 2]

  @moduletag :capture_log
  @moduletag timeout: 180_000

  doctest Breakwater.Cluster

  # What the propagation of an open must stay within.
  @propagation_ms 100

  setup_all do
    started = Nodes.ensure_distributed("bwtest")
    a = Nodes.start_peer("bwtest_a")
    b = Nodes.start_peer("bwtest_b")

    on_exit(fn ->
      for p <- [a, b], do: Nodes.stop(p)
      if match?({:ok, _, :started}, started), do: :net_kernel.stop()
      # Peers remembered as down would be listed by later tests' cluster_status/0.
      :ets.delete_all_objects(:breakwater_cluster)
    end)

    %{a: a, b: b}
  end

  # ---- helpers ------------------------------------------------------------------------------

  defp on(n, m, f, a), do: :erpc.call(n, m, f, a, 30_000)

  # As on/4 inside a wait: a connection that global is re-establishing answers nil.
  defp try_on(n, m, f, a) do
    on(n, m, f, a)
  catch
    :error, {:erpc, _} -> nil
  end

  defp configure_all(nodes, s, policy),
    do: for(n <- nodes, do: :ok = on(n, Breakwater, :configure, [s, policy]))

  # Every node sees every node's receiver in the subject's group (pg is eventually
  # consistent: a broadcast goes to the members the sender sees).
  defp wait_joined(nodes, s, exactly? \\ true) do
    wait_until(
      fn ->
        Enum.all?(nodes, fn n ->
          members = try_on(n, :pg, :get_members, [Breakwater.Cluster.scope(), {:breaker, s}])
          seen = if is_list(members), do: Enum.map(members, &node/1), else: []

          if exactly?,
            do: Enum.sort(seen) == Enum.sort(nodes),
            else: Enum.all?(nodes, &(&1 in seen))
        end)
      end,
      10_000
    )
  end

  defp breaker(n, s), do: on(n, Breakwater, :status, [s]).breaker
  defp counters(n, s), do: on(n, Breakwater, :status, [s]).counters
  defp history(n, s), do: on(n, Breakwater.History, :history, [s])

  # The latest closed -> open entry of a node's history.
  defp last_open(n, s) do
    n |> history(s) |> Enum.filter(&(&1.breaker == {:closed, :open})) |> List.last()
  end

  defp reset_all(nodes, s) do
    for n <- nodes, do: :ok = on(n, Breakwater, :reset, [s])
    for n <- nodes, do: assert(breaker(n, s) == :closed)
  end

  # Trips `s` on `origin`, waits for every other node to open, and returns the
  # propagation delays (ms, from the history timestamps on this host's one clock).
  defp trip_and_measure(nodes, s, origin) do
    :ok = on(origin, Breakwater, :record, [s, :failure])
    others = nodes -- [origin]
    wait_until(fn -> Enum.all?(others, &(breaker(&1, s) == :open)) end, 5_000)
    opened = last_open(origin, s)
    assert opened.cause == :failures, "the origin's open is its own"

    for n <- others do
      entry = last_open(n, s)
      assert %{cause: :remote_open, opened_by: ^origin} = entry
      assert entry.peer_opened_at == opened.timestamp
      assert on(n, Breakwater, :status, [s]).opened_by == origin
      entry.timestamp - opened.timestamp
    end
  end

  defp wait_breaker(n, s, state), do: wait_until(fn -> breaker(n, s) == state end, 5_000)

  defp median(list), do: list |> Enum.sort() |> Enum.at(div(length(list), 2))

  defp sent(result), do: Breakwater.Cluster.sent_counts() |> Map.fetch!(result)

  # ---- three nodes ------------------------------------------------------------------------

  test "an open on one node opens the others within 100 ms; each closes on its own", %{a: a, b: b} do
    nodes = [node(), a.node, b.node]
    s = T.unique("shared")

    configure_all(nodes, s,
      share: :breaker,
      failure_threshold: 1,
      open_timeout_ms: 300,
      half_open_max_calls: 1,
      success_threshold: 1
    )

    wait_joined(nodes, s)

    # The first open of an outage: from a, to this node and b.
    first = trip_and_measure(nodes, s, a.node)

    # Each probes on its own. This node and b reach the ledger and close; a does not, and
    # its re-trip from half-open stays its own.
    for n <- nodes, do: wait_breaker(n, s, :half_open)

    for n <- [node(), b.node] do
      assert :ok = on(n, Breakwater, :admit, [s])
      :ok = on(n, Breakwater, :record, [s, :success])
      assert breaker(n, s) == :closed
    end

    assert :ok = on(a.node, Breakwater, :admit, [s])
    :ok = on(a.node, Breakwater, :record, [s, :failure])
    assert breaker(a.node, s) == :open

    # The re-trip is not propagated: the recovered nodes stay closed.
    Process.sleep(250)

    for n <- [node(), b.node] do
      assert breaker(n, s) == :closed
      assert counters(n, s).remote_opens == 1
      assert counters(n, s).successful_recoveries == 1
    end

    # a recovers on its own once the ledger answers it.
    wait_breaker(a.node, s, :half_open)
    assert :ok = on(a.node, Breakwater, :admit, [s])
    :ok = on(a.node, Breakwater, :record, [s, :success])
    assert breaker(a.node, s) == :closed
    assert counters(a.node, s).remote_opens == 0
    assert counters(a.node, s).circuit_opens == 2

    # More first trips, from every node in turn.
    later =
      for round <- 1..6 do
        reset_all(nodes, s)
        trip_and_measure(nodes, s, Enum.at(nodes, rem(round, 3)))
      end

    delays = first ++ List.flatten(later)

    IO.puts(
      "\n[cluster] propagation of a breaker open to a peer (ms, history timestamps): " <>
        "median #{median(delays)}, max #{Enum.max(delays)} over #{length(delays)} opens"
    )

    for d <- delays, do: assert(d <= @propagation_ms, "an open took #{d} ms to propagate")

    # cluster_status/0, from this node and from a peer: all three nodes, each with the
    # subject (held open meanwhile: the open time, re-read from the policy, is long now).
    configure_all(nodes, s,
      share: :breaker,
      failure_threshold: 1,
      open_timeout_ms: 60_000,
      half_open_max_calls: 1,
      success_threshold: 1
    )

    # (cluster_status/0 shows each node's worst subjects: this node may hold thousands of
    # other tests' subjects, so the subject's rows are asked for by name.)
    for from <- [node(), b.node] do
      table = on(from, Breakwater, :cluster_status, [[timeout: 5_000]])
      assert Enum.sort(for %{node: n, state: :up} <- table.nodes, do: n) == Enum.sort(nodes)
      for n <- nodes, do: assert(Enum.any?(table.rows, &(&1.node == n)))
      rows = on(from, Breakwater, :cluster_status, [s, [timeout: 5_000]]).rows
      assert Enum.sort(Enum.map(rows, & &1.node)) == Enum.sort(nodes)
      assert Enum.all?(rows, &(&1.breaker == :open and &1.shared))
      assert Enum.count(rows, &(&1.opened_by != nil)) == 2
    end

    table = Breakwater.cluster_status(s)
    assert length(table.rows) == 3
    text = inspect(table)
    for n <- nodes, do: assert(text =~ Atom.to_string(n))

    # From Erlang: plain maps, undefined for none (the origin of the last open).
    erl = :router_intake_backpressure.get_cluster_backpressure_status(s)
    assert length(erl.rows) == 3
    assert [%{node: last_origin}] = Enum.filter(erl.rows, &(&1.opened_by == :undefined))
    assert last_origin == node()
  end

  test "share: :none subjects never propagate; membership follows policies and removals", %{
    a: a,
    b: b
  } do
    nodes = [node(), a.node, b.node]
    policy = [failure_threshold: 1, open_timeout_ms: 60_000]
    private = T.unique("private")
    configure_all(nodes, private, policy)
    mixed = T.unique("mixed")

    for n <- [node(), a.node],
        do: :ok = on(n, Breakwater, :configure, [mixed, [share: :breaker] ++ policy])

    :ok = on(b.node, Breakwater, :configure, [mixed, [share: :none] ++ policy])
    wait_joined([node(), a.node], mixed)
    sent_before = sent(:sent)

    :ok = on(a.node, Breakwater, :record, [private, :failure])
    :ok = on(a.node, Breakwater, :record, [mixed, :failure])
    wait_breaker(node(), mixed, :open)

    # Longer than any propagation measured: nothing else arrives.
    Process.sleep(300)
    assert breaker(a.node, private) == :open

    for n <- [node(), b.node], do: assert(breaker(n, private) == :closed)
    assert breaker(b.node, mixed) == :closed
    for n <- nodes, do: assert(counters(n, private).remote_opens == 0)
    assert counters(b.node, mixed).remote_opens == 0

    for n <- nodes do
      assert on(n, :pg, :get_members, [Breakwater.Cluster.scope(), {:breaker, private}]) == []
    end

    # A message for a subject a node does not share (a peer with an older policy, say)
    # is ignored by its receiver.
    send({Breakwater.Cluster, b.node}, {:breakwater_remote_open, private, a.node, 0})
    send({Breakwater.Cluster, b.node}, {:breakwater_remote_open, mixed, a.node, 0})
    send({Breakwater.Cluster, b.node}, {:breakwater_remote_open, T.unique("unknown"), a.node, 0})
    # A call to the receiver returns after it handled the messages sent before.
    _ = :sys.get_state({Breakwater.Cluster, b.node})
    assert breaker(b.node, private) == :closed
    assert breaker(b.node, mixed) == :closed
    assert sent(:sent) == sent_before

    # Policies change: sharing starts, and stops; a removed subject leaves its group.
    configure_all(nodes, private, [share: :breaker] ++ policy)
    wait_joined(nodes, private)
    assert Breakwater.Cluster.shared?(private)
    assert private in Breakwater.Cluster.joined()
    :ok = Breakwater.configure(private, [share: :none] ++ policy)
    wait_until(fn -> private not in Breakwater.Cluster.joined() end)
    :ok = on(a.node, Breakwater, :reset, [mixed])
    :ok = on(a.node, Breakwater, :remove, [mixed])

    wait_until(fn ->
      on(node(), :pg, :get_members, [Breakwater.Cluster.scope(), {:breaker, mixed}])
      |> Enum.map(&node/1) == [node()]
    end)
  end

  test "a remote open is logged with its cause and the peer it came from", %{a: a} do
    s = T.unique("logged")
    nodes = [node(), a.node]
    configure_all(nodes, s, share: :breaker, failure_threshold: 1, open_timeout_ms: 60_000)
    wait_joined(nodes, s, false)

    # The test configuration logs errors only; this module's lines are wanted here.
    Logger.put_module_level(Breakwater.History, :warning)
    on_exit(fn -> Logger.delete_module_level(Breakwater.History) end)

    log =
      ExUnit.CaptureLog.capture_log([level: :warning], fn ->
        :ok = on(a.node, Breakwater, :record, [s, :failure])
        wait_breaker(node(), s, :open)
        # The line is written by the receiver, after the transition: give it the time.
        wait_until(fn -> Breakwater.History.events(s) != [] end)
        Logger.flush()
      end)

    assert log =~
             "breakwater #{inspect(s)}: breaker closed -> open " <>
               "(remote_open: opened on peer #{a.node})"

    assert [%{cause: :remote_open, opened_by: origin}] =
             for(%{breaker: {:closed, :open}} = e <- Breakwater.History.history(s), do: e)

    assert origin == a.node
  end

  test "make demo-cluster's scenario passes its own checks (at a small scale)" do
    report = Breakwater.Demo.Cluster.run(scale: 0.3, quiet: true)
    assert report.problems == []
    assert length(report.delays_ms) == 2
  end

  # ---- a peer frozen, killed, disconnected ----------------------------------------------------

  test "a peer frozen, killed or cut off mid-propagation: no call waits, it is marked down, it rejoins",
       %{a: a} do
    # The victim is a peer of this test's own (the others' peers stay as they are).
    c = start_victim()
    nodes = [node(), a.node, c.node]
    s = T.unique("partition")
    policy = [share: :breaker, failure_threshold: 1, open_timeout_ms: 60_000]
    configure_all(nodes, s, policy)
    wait_joined(nodes, s)

    # -- the same steps with every node healthy: the survivors' checks for comparison ---
    here = Sampler.start(s)
    there = on(a.node, Sampler, :start, [s])
    {trip_us, :ok} = trip_without_waiting(s)
    for n <- [a.node, c.node], do: wait_breaker(n, s, :open)
    {status_us, _table} = :timer.tc(fn -> Breakwater.cluster_status(s, timeout: 300) end)
    Process.sleep(500)

    report(
      "no partition (baseline)",
      Sampler.stop(here),
      on(a.node, Sampler, :stop, [there]),
      trip_us,
      status_us
    )

    reset_all(nodes, s)

    # -- c frozen (SIGSTOP), this node's channel to it full, then c killed ---------------
    here = Sampler.start(s)
    there = on(a.node, Sampler, :start, [s])
    busy_before = sent(:busy)

    {_, 0} = System.cmd("kill", ["-STOP", c.os_pid])
    flooder = flood(c.node)

    # This node trips: it tells a at once, and c's message is dropped, not waited on.
    {trip_us, :ok} = trip_without_waiting(s)
    tripped_at = now_ns()
    wait_breaker(a.node, s, :open)
    assert sent(:busy) == busy_before + 1

    # cluster_status/1 answers within its timeout, with c as not answering.
    {status_us, table} = :timer.tc(fn -> Breakwater.cluster_status(s, timeout: 300) end)
    assert %{state: :timeout} = Enum.find(table.nodes, &(&1.node == c.node))
    up = for %{state: :up, node: n} <- table.nodes, do: n
    assert node() in up and a.node in up

    Process.sleep(500)
    Process.exit(flooder, :kill)
    # A call that waited on c would have lasted at least until now.
    frozen_ns = now_ns() - tripped_at
    {_, 0} = System.cmd("kill", ["-KILL", c.os_pid])
    wait_until(fn -> node_state(c.node) == :down end, 10_000)
    assert %{state: :down} = Enum.find(Breakwater.cluster_status(s).nodes, &(&1.node == c.node))

    here_stats = Sampler.stop(here)
    there_stats = on(a.node, Sampler, :stop, [there])
    report("peer frozen then killed", here_stats, there_stats, trip_us, status_us)
    assert_no_wait(here_stats, there_stats, trip_us, frozen_ns)
    assert status_us < 300_000 + frozen_ns / 1_000, "cluster_status/2 waited on the frozen peer"

    # -- c rejoins: a new node of the same name --------------------------------------------
    c = start_victim()
    :ok = on(c.node, Breakwater, :configure, [s, policy])
    wait_joined(nodes, s)
    wait_until(fn -> node_state(c.node) == :up end)
    reset_all(nodes, s)
    delays = trip_and_measure(nodes, s, c.node)
    assert Enum.all?(delays, &(&1 <= @propagation_ms))

    # -- c cut off: disconnected from both others at once and frozen, so that nothing can
    # reach it (a connection attempt would hang); then it comes back ------------------------
    reset_all(nodes, s)
    here = Sampler.start(s)
    there = on(a.node, Sampler, :start, [s])
    # From c's side, through its control connection (standard I/O, not distribution), in
    # one step: no moment where only one of the others lost it (global would then drop
    # the other connections too, to keep partitions from overlapping), and no moment
    # between the disconnect and the freeze for anyone to connect again.
    :ok = :peer.cast(c.pid, Breakwater.TestCheckSampler, :isolate, [[node(), a.node]])
    wait_until(fn -> node_state(c.node) == :down end, 10_000)
    wait_until(fn -> frozen?(c.os_pid) end, 10_000)
    refute c.node in Node.list()
    # global may have dropped the connection between this node and a as well, while a
    # still saw c (it keeps partitions from overlapping): the two connect again.
    wait_until(fn ->
      seen = if Node.connect(a.node), do: try_on(a.node, :erlang, :nodes, [])
      is_list(seen) and node() in seen and c.node not in seen
    end)

    wait_joined([node(), a.node], s, false)
    {trip_us, :ok} = trip_without_waiting(s)
    tripped_at = now_ns()
    wait_breaker(a.node, s, :open)
    {status_us, table} = :timer.tc(fn -> Breakwater.cluster_status(s, timeout: 300) end)
    assert %{state: :down} = Enum.find(table.nodes, &(&1.node == c.node))
    Process.sleep(500)
    cut_off_ns = now_ns() - tripped_at
    here_stats = Sampler.stop(here)
    there_stats = on(a.node, Sampler, :stop, [there])
    report("peer cut off (disconnected and frozen)", here_stats, there_stats, trip_us, status_us)
    assert_no_wait(here_stats, there_stats, trip_us, cut_off_ns)

    # c comes back, connects again and joins cleanly.
    {_, 0} = System.cmd("kill", ["-CONT", c.os_pid])
    wait_until(fn -> Node.connect(c.node) end, 10_000)
    wait_joined(nodes, s)
    wait_until(fn -> node_state(c.node) == :up end)
    reset_all(nodes, s)
    delays = trip_and_measure(nodes, s, c.node)
    assert Enum.all?(delays, &(&1 <= @propagation_ms))
    reset_all(nodes, s)
    assert Enum.all?(trip_and_measure(nodes, s, node()), &(&1 <= @propagation_ms))
    Nodes.stop(c)
  end

  defp now_ns, do: System.monotonic_time(:nanosecond)

  # The OS process is stopped (state T in /proc).
  defp frozen?(os_pid) do
    case File.read("/proc/#{os_pid}/stat") do
      {:ok, stat} -> stat |> String.split(") ") |> List.last() |> String.starts_with?("T")
      _ -> false
    end
  end

  # A peer this test freezes and kills. Whatever happens, it does not outlive the test
  # (a frozen peer would hold up the end of the run: its controller waits for it).
  defp start_victim do
    c = Nodes.start_peer("bwtest_c")
    name = Atom.to_string(c.node) |> String.split("@") |> hd()

    on_exit(fn ->
      # Only that process: its command line still names the node.
      case File.read("/proc/#{c.os_pid}/cmdline") do
        {:ok, cmdline} -> if cmdline =~ name, do: System.cmd("kill", ["-KILL", c.os_pid])
        _ -> :ok
      end
    end)

    c
  end

  # Trips `s` here from a process of its own, timed; flunks at once if the call is still
  # running after a few seconds (it waits on a peer) instead of hanging the test.
  defp trip_without_waiting(s) do
    task = Task.async(fn -> :timer.tc(fn -> Breakwater.record(s, :failure) end) end)

    case Task.yield(task, 5_000) || Task.shutdown(task, :brutal_kill) do
      {:ok, timed} -> timed
      nil -> flunk("record/2 that trips the breaker waited on a peer for more than 5 s")
    end
  end

  defp node_state(n) do
    case Enum.find(Breakwater.Cluster.nodes(), &(&1.node == n)) do
      %{state: state} -> state
      nil -> nil
    end
  end

  # Sends 1 MiB messages to a name on `peer` until the distribution channel to it is
  # busy (the sender suspended): the state a frozen peer leaves its channels in.
  defp flood(peer) do
    chunk = :binary.copy(<<1>>, 1_048_576)

    flooder =
      spawn(fn -> Stream.repeatedly(fn -> send({:nobody, peer}, chunk) end) |> Stream.run() end)

    wait_until(fn -> Process.info(flooder, :status) == {:status, :suspended} end, 20_000)
    flooder
  end

  defp report(what, here, there, trip_us, status_us) do
    us = fn ns -> if is_integer(ns), do: Float.round(ns / 1_000, 1), else: ns end

    IO.puts(
      "\n[cluster] #{what}: check_backpressure/1 on this node: #{here.calls} calls, " <>
        "p50 <= #{us.(here.p50_ns)} us, p99 <= #{us.(here.p99_ns)} us, max #{us.(here.max_ns)} us; " <>
        "on peer a: #{there.calls} calls, p99 <= #{us.(there.p99_ns)} us, max #{us.(there.max_ns)} us; " <>
        "the tripping record/2: #{Float.round(trip_us / 1_000, 2)} ms; " <>
        "cluster_status/2 (timeout 300 ms): #{div(status_us, 1_000)} ms"
    )
  end

  # `bound_ns`: how long a call that waited on the lost peer would have lasted at least
  # (from the trip until the peer was killed or came back). Every call here returned
  # well inside it; how fast they were is what report/5 prints.
  defp assert_no_wait(here, there, trip_us, bound_ns) do
    assert here.calls > 0 and there.calls > 0
    assert here.max_ns < bound_ns, "a check on this node took #{here.max_ns} ns"
    assert there.max_ns < bound_ns, "a check on peer a took #{there.max_ns} ns"
    assert trip_us * 1_000 < bound_ns, "the tripping record/2 took #{trip_us} us"
  end
end
