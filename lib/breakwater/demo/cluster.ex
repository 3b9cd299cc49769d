defmodule Breakwater.Demo.Cluster do
  @moduledoc """
  The scripted scenario behind `make demo-cluster`: one node's ledger outage protects
  every node of a cluster, and each node recovers on its own.

  Three nodes on this host (this one and two peers started with OTP's `peer` module,
  see `Breakwater.Demo.Nodes`), called n1, n2 and n3, each run Breakwater with the
  same subject under `share: :breaker`, a router process that spools events, and a
  `Breakwater.Ledger.Simulated` ledger of its own. The script:

      healthy -> ledger cut off from n1 -> ledger back for n1 -> drain

  When n1 can no longer reach its ledger, its breaker opens after a few failed writes;
  n2 and n3 open at once (a remote open, counted and shown as `opened_by: n1`), so
  their routers push back without paying for failed writes of their own. Each node
  then probes on its own: n2 and n3 reach the ledger and close after their open time;
  n1's probes fail, and its re-trips stay its own. When n1's ledger comes back, n1
  closes too, and every spool drains.

  It prints a line per phase change and per breaker transition (the node, the change,
  and for a remote open the node that caused it and how long after it), at most 79
  columns; on a terminal it also redraws a line with each node's breaker. Afterwards
  it prints `Breakwater.cluster_status/1`, the propagation delays, when each node
  closed, and per node the accounting (produced = delivered + spooled + dropped +
  lost, lost = 0), and checks all of it.

  `BREAKWATER_DEMO_SCALE` (default 1.0) scales the phase durations and open time.
  """

  alias Breakwater.Demo.{Accounting, Nodes}
  alias Breakwater.Ledger.Simulated

  @sample_ms 100
  @rate 300
  @labels ["n1", "n2", "n3"]

  # {name, ledger mode of n1, duration at scale 1 (ms), minimum (ms)}
  @phases [
    {"healthy", :up, 2_000, 600},
    {"ledger cut off from n1", :down, 6_000, 2_500},
    {"ledger back for n1", :up, 4_000, 2_500}
  ]

  @doc """
  Runs the demo, printing as it goes; halts the VM with status 1 if a check fails.
  """
  @spec main() :: :ok
  def main do
    report = Breakwater.Demo.run_from_env(&run/1)

    if report.problems == [] do
      IO.puts("\nRESULT: ok (lost = 0 on every node)")
      :ok
    else
      IO.puts("\nRESULT: FAILED")
      Enum.each(report.problems, &IO.puts("  - " <> &1))
      System.halt(1)
    end
  end

  @doc """
  Runs the scenario and returns `%{problems: [String.t()], delays_ms: [integer],
  closed_at_ms: map}`. Options: `scale:` (default 1.0), `quiet:` (default false).
  """
  @spec run(keyword) :: map
  def run(opts \\ []) do
    opts = Keyword.validate!(opts, scale: 1.0, quiet: false)
    scale = opts[:scale]
    {:ok, _} = Application.ensure_all_started(:breakwater)
    _ = Nodes.ensure_distributed("bwdemo")
    subject = "demo-cluster-#{System.os_time(:millisecond)}"
    peers = for l <- ["n2", "n3"], do: Nodes.start_peer("bwdemo_#{l}")

    try do
      nodes = [node() | Enum.map(peers, & &1.node)]
      ctx = context(subject, nodes, scale, opts[:quiet])
      scenario(ctx)
    after
      Enum.each(peers, &Nodes.stop/1)
      Enum.each(peers, &File.rm_rf(&1.spool_dir))
    end
  end

  defp context(subject, nodes, scale, quiet) do
    %{
      subject: subject,
      nodes: nodes,
      label: Map.new(Enum.zip(nodes, @labels)),
      policy: policy(scale),
      scale: scale,
      quiet: quiet,
      progress: Breakwater.Demo.progress_mode(quiet),
      t0: System.system_time(:millisecond)
    }
  end

  defp policy(scale) do
    [
      share: :breaker,
      failure_threshold: 3,
      open_timeout_ms: max(round(1_500 * scale), 500),
      half_open_max_calls: 1,
      success_threshold: 2,
      call_timeout_ms: 1_000,
      health_check_ms: 250,
      warning_threshold: 100_000,
      critical_threshold: 200_000,
      overflow: :disk
    ]
  end

  # ---- on every node ---------------------------------------------------------------------

  @doc false
  # Run on each node: its simulated ledger, the subject, the ledger worker.
  def setup_node(subject, policy) do
    case Simulated.start_link([]) do
      {:ok, pid} -> Process.unlink(pid)
      {:error, {:already_started, _}} -> true
    end

    :ok = Simulated.set_mode(subject, :up)
    :ok = Breakwater.configure(subject, policy)
    :ok = Breakwater.attach_ledger(subject, Simulated, batch_size: 100, poll_ms: 5)
  end

  @doc false
  # Run on each node: a router spooling `rate` events a second until told to stop;
  # counts in a :counters of this node (1: produced, 2: refused while active).
  def start_router(subject, rate) do
    counts = :counters.new(2, [])
    pid = spawn(fn -> router(subject, rate, counts, now(), 0) end)
    {pid, counts}
  end

  defp router(subject, rate, counts, started, attempted) do
    receive do
      {:stop, from} -> send(from, {:router_stopped, self()})
    after
      10 ->
        due = min(max(div((now() - started) * rate, 1000) - attempted, 0), 100)

        for _ <- 1..due//1 do
          case :router_intake_backpressure.check_backpressure(subject) do
            {:backpressure_active, _} ->
              :counters.add(counts, 2, 1)

            _ ->
              seq = :counters.get(counts, 1) + 1
              :ok = Breakwater.enqueue(subject, "#{node()}-#{seq}")
              :counters.add(counts, 1, 1)
          end
        end

        router(subject, rate, counts, started, attempted + due)
    end
  end

  @doc false
  # Run on each node: stops its router and returns {produced, refused}.
  def stop_router({pid, counts}) do
    ref = Process.monitor(pid)
    send(pid, {:stop, self()})

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    after
      5_000 -> Process.exit(pid, :kill)
    end

    {:counters.get(counts, 1), :counters.get(counts, 2)}
  end

  @doc false
  # Run on each node: the events its ledger holds (distinct), and its accounting.
  def tally(subject) do
    st = Breakwater.status(subject)
    {length(Simulated.received(subject)), st.accounting, Simulated.duplicates(subject)}
  end

  # ---- the scenario -------------------------------------------------------------------------

  defp scenario(ctx) do
    [n1 | _] = ctx.nodes
    for n <- ctx.nodes, do: :ok = on(n, __MODULE__, :setup_node, [ctx.subject, ctx.policy])
    wait_joined(ctx)
    say(ctx, header(ctx))
    routers = Map.new(ctx.nodes, &{&1, on(&1, __MODULE__, :start_router, [ctx.subject, @rate])})
    state = %{seen: Map.new(ctx.nodes, &{&1, 0}), log: [], outage: nil}

    state =
      Enum.reduce(@phases, state, fn {name, mode, ms, min}, state ->
        :ok = on(n1, Simulated, :set_mode, [ctx.subject, mode])
        state = phase(ctx, state, name)
        run_for(ctx, state, max(round(ms * ctx.scale), min))
      end)

    counts = Map.new(routers, fn {n, r} -> {n, on(n, __MODULE__, :stop_router, [r])} end)
    state = phase(ctx, state, "drain")
    state = drain(ctx, state, 30_000)
    if match?({:live, _}, ctx.progress), do: IO.write("\n")
    finish(ctx, state, counts)
  end

  defp wait_joined(ctx, waited \\ 0) do
    joined =
      Enum.all?(ctx.nodes, fn n ->
        members = on(n, :pg, :get_members, [Breakwater.Cluster.scope(), {:breaker, ctx.subject}])
        length(members) == length(ctx.nodes)
      end)

    cond do
      joined -> :ok
      waited > 10_000 -> raise "the nodes did not all join the subject's group"
      true -> Process.sleep(10) && wait_joined(ctx, waited + 10)
    end
  end

  defp phase(ctx, state, name) do
    at = System.system_time(:millisecond) - ctx.t0
    if ctx.progress == :lines, do: IO.puts(line(at, "phase -> #{name}"))
    %{state | log: [{at, "phase -> #{name}"} | state.log]}
  end

  defp run_for(ctx, state, ms) do
    until = now() + ms
    loop(ctx, state, fn _ -> now() >= until end)
  end

  defp drain(ctx, state, timeout) do
    deadline = now() + timeout

    loop(ctx, state, fn _ ->
      now() >= deadline or
        Enum.all?(ctx.nodes, fn n ->
          st = on(n, Breakwater, :status, [ctx.subject])
          st.accounting.spooled_memory == 0 and st.accounting.spooled_disk == 0
        end)
    end)
  end

  defp loop(ctx, state, done?) do
    Process.sleep(@sample_ms)
    state = observe(ctx, state)
    if done?.(state), do: state, else: loop(ctx, state, done?)
  end

  # New breaker transitions of every node, from their histories.
  defp observe(ctx, state) do
    {new_lines, breakers, seen} =
      Enum.reduce(ctx.nodes, {[], [], state.seen}, fn n, {acc, breakers, seen} ->
        history = on(n, Breakwater.History, :history, [ctx.subject])

        lines =
          for %{breaker: {from, to}} = e <- Enum.drop(history, seen[n]), from != to do
            {e.timestamp - ctx.t0, "#{ctx.label[n]}  breaker #{from} -> #{to}" <> cause(ctx, e)}
          end

        breaker = on(n, Breakwater, :status, [ctx.subject]).breaker
        {lines ++ acc, [{ctx.label[n], breaker} | breakers], Map.put(seen, n, length(history))}
      end)

    # In time order; within a millisecond, a node's own open before the opens it caused.
    new_lines = Enum.sort_by(new_lines, fn {at, text} -> {at, text =~ "remote_open"} end)
    if ctx.progress == :lines, do: Enum.each(new_lines, fn {at, t} -> IO.puts(line(at, t)) end)
    breakers = Enum.reverse(breakers)

    with {:live, width} <- ctx.progress do
      t = (System.system_time(:millisecond) - ctx.t0) / 1000
      text = Enum.map_join(breakers, "  ", fn {l, b} -> String.pad_trailing("#{l} #{b}", 12) end)
      prefix = IO.chardata_to_string(:io_lib.format("~5.1fs  ", [t]))
      IO.write(["\r", (prefix <> text) |> String.slice(0, width) |> String.pad_trailing(width)])
    end

    # The cluster's view the first time every node is open: the moment the demo is about.
    outage =
      if state.outage == nil and Enum.all?(breakers, &(elem(&1, 1) == :open)),
        do: {System.system_time(:millisecond) - ctx.t0, Breakwater.cluster_status(ctx.subject)},
        else: state.outage

    %{state | seen: seen, log: Enum.reverse(new_lines) ++ state.log, outage: outage}
  end

  defp cause(ctx, %{cause: :remote_open, opened_by: origin, peer_opened_at: at, timestamp: ts}),
    do: ": remote_open (opened on #{ctx.label[origin] || origin}, +#{ts - at} ms)"

  defp cause(_ctx, %{cause: cause}), do: ": #{cause}"
  defp cause(_ctx, _entry), do: ""

  # ---- results ------------------------------------------------------------------------------

  defp finish(ctx, state, counts) do
    [n1, n2, n3] = ctx.nodes
    histories = Map.new(ctx.nodes, &{&1, on(&1, Breakwater.History, :history, [ctx.subject])})
    first_open = Enum.find(histories[n1], &match?(%{breaker: {:closed, :open}}, &1))

    remote =
      for n <- [n2, n3] do
        {n,
         Enum.find(histories[n], &match?(%{breaker: {:closed, :open}, cause: :remote_open}, &1))}
      end

    delays = for {_, %{timestamp: ts, peer_opened_at: at}} <- remote, do: ts - at
    closed_at = Map.new(ctx.nodes, &{&1, first_close(histories[&1], first_open)})
    statuses = Map.new(ctx.nodes, &{&1, on(&1, Breakwater, :status, [ctx.subject])})

    accounts =
      for n <- ctx.nodes do
        {produced, refused} = counts[n]
        {delivered, acc, duplicates} = on(n, __MODULE__, :tally, [ctx.subject])

        {n, refused,
         Accounting.new(
           produced: produced,
           delivered: delivered,
           spooled_memory: acc.spooled_memory,
           spooled_disk: acc.spooled_disk,
           dropped: acc.dropped,
           duplicates: duplicates
         )}
      end

    problems =
      Enum.filter(
        [
          first_open == nil && "n1's breaker never opened",
          Enum.any?(remote, &(elem(&1, 1) == nil)) && "a peer did not open with n1",
          Enum.any?(remote, fn {_, e} -> e != nil and e.opened_by != n1 end) &&
            "a peer was opened by another node than n1",
          Enum.any?(delays, &(&1 > 100)) && "an open took more than 100 ms to propagate",
          Enum.any?([n2, n3], &(statuses[&1].counters.remote_opens != 1)) &&
            "n1's re-trips from half-open reached a peer",
          Enum.any?(ctx.nodes, &(closed_at[&1] == nil)) && "a node did not close again",
          Enum.any?(ctx.nodes, &(statuses[&1].breaker != :closed)) &&
            "a node is not closed at the end",
          recovered_first?(closed_at, n1, [n2, n3]) == false &&
            "n1 (cut off from its ledger) closed before a node that reaches the ledger",
          Enum.any?(accounts, fn {_, _, a} -> a.lost != 0 end) && "events were lost",
          Enum.any?(accounts, fn {_, _, a} -> a.spooled_memory + a.spooled_disk > 0 end) &&
            "the spools did not drain"
        ],
        &is_binary/1
      )

    table = Breakwater.cluster_status(ctx.subject)

    say(ctx, """

    Timeline (seconds since start):
    #{state.log |> Enum.reverse() |> Enum.sort_by(fn {at, t} -> {at, t =~ "remote"} end) |> Enum.map_join("\n", fn {at, t} -> line(at, t) end)}

    #{outage_text(ctx, state.outage)}
    Breakwater.cluster_status/1 at the end:
    #{cluster_table(ctx, table)}

    Propagation of n1's open: #{Enum.map_join(Enum.zip(["n2", "n3"], delays), ", ", fn {l, d} -> "#{l} +#{d} ms" end)} (history timestamps)
    Closed again (s): #{Enum.map_join(ctx.nodes, ", ", fn n -> "#{ctx.label[n]} #{seconds(ctx, closed_at[n])}" end)}
    Remote opens: #{Enum.map_join(ctx.nodes, ", ", fn n -> "#{ctx.label[n]} #{statuses[n].counters.remote_opens}" end)}; circuit opens: #{Enum.map_join(ctx.nodes, ", ", fn n -> "#{ctx.label[n]} #{statuses[n].counters.circuit_opens}" end)}

    Accounting per node:
    #{accounting_table(ctx, accounts)}
    """)

    %{problems: problems, delays_ms: delays, closed_at_ms: closed_at}
  end

  defp outage_text(_ctx, nil), do: "(every node open at once: never seen)\n"

  defp outage_text(ctx, {at, table}) do
    "Breakwater.cluster_status/1 at +#{seconds_ms(at)}s, every node open (node names as above):\n" <>
      cluster_table(ctx, table) <> "\n"
  end

  defp seconds_ms(ms), do: :erlang.float_to_binary(ms / 1000, decimals: 1)

  # The rows of cluster_status/1 with the nodes' short labels, to fit 79 columns.
  defp cluster_table(ctx, table) do
    header = ["node", "state", "breaker", "backpressure", "depth", "remote_opens", "opened_by"]
    rows_by_node = Map.new(table.rows, &{&1.node, &1})

    rows =
      for %{node: n, state: state} <- table.nodes, Map.has_key?(ctx.label, n) do
        r = Map.get(rows_by_node, n, %{})

        [
          ctx.label[n],
          Atom.to_string(state),
          to_text(r[:breaker]),
          to_text(r[:backpressure]),
          to_text(r[:queue_depth]),
          to_text(r[:remote_opens]),
          to_text(ctx.label[r[:opened_by]])
        ]
      end

    columns(header, rows)
  end

  defp to_text(nil), do: ""
  defp to_text(v) when is_integer(v), do: Integer.to_string(v)
  defp to_text(v) when is_atom(v), do: Atom.to_string(v)
  defp to_text(v) when is_binary(v), do: v

  defp first_close(_history, nil), do: nil

  defp first_close(history, first_open) do
    history
    |> Enum.filter(&(&1.timestamp >= first_open.timestamp))
    |> Enum.find(&match?(%{breaker: {:half_open, :closed}}, &1))
    |> case do
      %{timestamp: ts} -> ts
      nil -> nil
    end
  end

  defp recovered_first?(closed_at, n1, others) do
    Enum.all?([n1 | others], &is_integer(closed_at[&1])) and
      Enum.all?(others, &(closed_at[&1] < closed_at[n1]))
  end

  defp seconds(_ctx, nil), do: "never"
  defp seconds(ctx, ts), do: :erlang.float_to_binary((ts - ctx.t0) / 1000, decimals: 1)

  defp accounting_table(ctx, accounts) do
    header = ["node", "produced", "refused", "delivered", "spooled", "dropped", "lost"]

    rows =
      for {n, refused, a} <- accounts do
        [ctx.label[n]] ++
          Enum.map(
            [
              a.produced,
              refused,
              a.delivered,
              a.spooled_memory + a.spooled_disk,
              a.dropped,
              a.lost
            ],
            &Integer.to_string/1
          )
      end

    columns(header, rows)
  end

  # Aligned columns, indented: numbers to the right, text to the left.
  defp columns(header, rows) do
    n = length(header)

    widths =
      for i <- 0..(n - 1),
          do: [header | rows] |> Enum.map(&String.length(Enum.at(&1, i))) |> Enum.max()

    Enum.map_join([header | rows], "\n", fn row ->
      ("  " <>
         (row
          |> Enum.zip(widths)
          |> Enum.with_index()
          |> Enum.map_join("  ", fn
            {{c, w}, i} when i > 0 and c != "" ->
              if c =~ ~r/^\d+$/, do: String.pad_leading(c, w), else: String.pad_trailing(c, w)

            {{c, w}, _} ->
              String.pad_trailing(c, w)
          end)))
      |> String.trim_trailing()
    end)
  end

  # ---- output -------------------------------------------------------------------------------

  defp header(ctx) do
    legend = Enum.map_join(ctx.nodes, "\n", fn n -> "    #{ctx.label[n]}  #{n}" end)
    p = ctx.policy

    """
    Breakwater cluster demo: one node's ledger outage protects every node
      subject: #{ctx.subject} (share: :breaker on every node)
      nodes:
    #{legend}
      routers: one per node, #{@rate} events/s; a simulated ledger per node
      policy:  failure_threshold #{p[:failure_threshold]}, open_timeout_ms #{p[:open_timeout_ms]},
               success_threshold #{p[:success_threshold]}
    """
  end

  defp line(at_ms, text),
    do: :erlang.iolist_to_binary(:io_lib.format("  +~7.3fs  ~ts", [at_ms / 1000, text]))

  defp say(%{quiet: true}, _text), do: :ok
  defp say(_ctx, text), do: IO.write(text)

  defp on(n, m, f, a), do: :erpc.call(n, m, f, a, 30_000)

  defp now, do: System.monotonic_time(:millisecond)
end
