defmodule Breakwater.Bench.Main do
  @moduledoc false
  # Runs every BEAM measurement, the memory figures, reads criterion's results, prints
  # everything and writes docs/benchmarks.md (through Breakwater.Bench.Report).

  alias Breakwater.Bench.{Harness, Peer, Report, Specs}
  alias Breakwater.Native

  @runs 7
  @target_ms 300

  def run(opts \\ []) do
    runs = Keyword.get(opts, :runs, @runs)
    target_ms = Keyword.get(opts, :target_ms, @target_ms)
    doc = Keyword.get(opts, :doc, "docs/benchmarks.md")
    only = Keyword.get(opts, :only)
    terms = Keyword.get(opts, :terms)

    schedulers = :erlang.system_info(:schedulers_online)
    procs = Enum.uniq(Enum.filter([1, 2, schedulers], &(&1 <= schedulers)))
    machine = Report.machine()

    IO.puts(Report.machine_line(machine))

    IO.puts(
      "BEAM bench: #{runs} interleaved passes (fastest run reported), ~#{target_ms} ms per run, " <>
        "processes: #{Enum.join(procs, ", ")}\n"
    )

    IO.puts(Report.row_header(procs))

    specs =
      schedulers
      |> Specs.all()
      |> Enum.filter(&(only == nil or &1.id in only))

    calibrated =
      for spec <- specs do
        min_n = max(div(10_000, spec.unit), 10)
        max_n = div(100_000_000, spec.unit)
        {spec, Harness.calibrate(spec, target_ms, min_n, max_n)}
      end

    # enqueue with durability :memory, in a second VM (the durability is chosen when a
    # VM opens its spool), as many iterations as this VM's :crash enqueue.
    {peer, remote} = memory_peer(calibrated)

    # Interleaved: each pass runs every measurement once, so that a burst of load from
    # elsewhere on a shared machine falls on all of them alike instead of on one.
    passes =
      for pass <- 1..runs do
        IO.write(:stderr, "\rpass #{pass}/#{runs}")

        local =
          for {spec, n} <- calibrated, p <- procs, into: %{} do
            [ns] = Harness.measure(spec, p, n, 1)
            {{spec.id, p}, ns}
          end

        for {spec, n, id} <- remote, p <- procs, into: local do
          {{spec.id, p}, Peer.measure(peer, id, p, n)}
        end
      end

    if peer, do: Peer.stop(peer)
    IO.write(:stderr, "\r\e[K")
    # The :memory row right after the :crash one.
    calibrated =
      Enum.flat_map(calibrated, fn {spec, _} = entry ->
        if spec.id == :enqueue,
          do: [entry | Enum.map(remote, fn {s, n, _} -> {s, n} end)],
          else: [entry]
      end)

    results =
      for {spec, n} <- calibrated do
        by_procs =
          for p <- procs, into: %{} do
            runs_ns = Enum.map(passes, & &1[{spec.id, p}])
            {p, stats(runs_ns, p, n * spec.unit)}
          end

        result = %{spec: spec, n: n, by_procs: by_procs}
        IO.puts(Report.row(result, procs))
        result
      end

    if terms do
      File.write!(terms, :erlang.term_to_binary(Enum.map(results, &term/1)))
    end

    transitions = Process.get(:mix_transitions_total, 0)
    memory = if only, do: %{skipped: "a run of some measurements (--only)"}, else: memory()
    IO.puts("")
    IO.puts(Report.memory_text(memory))

    criterion = Report.criterion()
    data = %{machine: machine, procs: procs, runs: runs, results: results, memory: memory}
    data = Map.merge(data, %{criterion: criterion, mix_transitions: transitions})

    IO.puts("")
    IO.puts(Report.ratios_text(data))
    IO.puts("")
    IO.puts(Report.targets_text(data))
    IO.puts("")
    IO.puts(Report.criterion_text(criterion))

    if doc do
      File.write!(doc, Report.markdown(data))
      IO.puts("\nwrote #{doc}")
    end

    data
  end

  defp memory_peer(calibrated) do
    case Enum.find(calibrated, fn {spec, _} -> spec.id == :enqueue end) do
      nil ->
        {nil, []}

      {spec, n} ->
        dir = Application.get_env(:breakwater, :spool_dir) <> "-memory"
        peer = Peer.start(durability: :memory, spool_dir: dir)

        remote = %{
          spec
          | id: :enqueue_memory,
            name: "  same, durability :memory (a second VM)"
        }

        {peer, [{remote, n, :enqueue}]}
    end
  end

  # A result as plain data for benches/compare.exs: {id, name, %{procs => best ns/op}}.
  defp term(%{spec: spec, by_procs: by_procs}),
    do: {spec.id, spec.name, Map.new(by_procs, fn {p, s} -> {p, s.ns} end)}

  defp stats(runs_ns, procs, ops_per_proc) do
    sorted = Enum.sort(runs_ns)
    median = Enum.at(sorted, div(length(sorted), 2))
    best = hd(sorted)

    %{
      procs: procs,
      ops_per_proc: ops_per_proc,
      runs_ns: runs_ns,
      # The fastest run is reported (as in benches/core.rs's scaling table): on a shared
      # machine, interference only ever slows a run down. The median is kept beside it.
      # per process (per scheduler): the time one call takes as that process sees it
      ns: best / ops_per_proc,
      median_ns: median / ops_per_proc,
      # aggregate: every process's calls over the wall time
      mops: procs * ops_per_proc / best * 1_000,
      median_mops: procs * ops_per_proc / median * 1_000
    }
  end

  # ---- memory -------------------------------------------------------------------------

  @mem_subjects 10_000

  defp memory do
    info0 = Native.pool_info()
    room = info0.max_subjects - info0.subjects

    if room < @mem_subjects do
      %{skipped: "only #{room} subjects left under max_subjects (need #{@mem_subjects})"}
    else
      measure_subjects(info0)
    end
  end

  defp measure_subjects(info0) do
    tag = System.unique_integer([:positive])
    names = for i <- 1..@mem_subjects, do: "bench.mem.#{tag}.#{i}"

    snap0 = snapshot()

    # Created on first use by a write (a native subject, nothing written on the BEAM
    # side; a read would create nothing).
    for s <- names, do: :ok = Breakwater.report_depth(s, 0)

    snap1 = snapshot()
    info1 = Native.pool_info()

    if info1.subjects - info0.subjects != @mem_subjects do
      raise "memory: #{info1.subjects - info0.subjects} subjects created, expected #{@mem_subjects}"
    end

    # Then configured (the policy is kept on the BEAM side too, in ETS).
    for s <- names, do: :ok = Breakwater.configure(s, warning_threshold: 20_000)
    snap2 = snapshot()

    # Then a first latency each: the histogram is allocated on a subject's first latency.
    for s <- names, do: :ok = Breakwater.record(s, :success, latency_ms: 5)
    snap3 = snapshot()
    histogram = Native.status(hd(names)).latency_histogram_bytes

    %{
      subjects: @mem_subjects,
      first_use: diff(snap0, snap1),
      configure: diff(snap1, snap2),
      latency: diff(snap2, snap3),
      histogram_bytes: histogram,
      pool: info1
    }
  end

  defp snapshot do
    :erlang.garbage_collect()
    %{rss: rss_bytes(), beam: :erlang.memory(:total), ets: :erlang.memory(:ets)}
  end

  defp diff(a, b), do: Map.new(a, fn {k, v} -> {k, Map.fetch!(b, k) - v} end)

  defp rss_bytes do
    case File.read("/proc/self/status") do
      {:ok, text} ->
        case Regex.run(~r/^VmRSS:\s+(\d+) kB/m, text) do
          [_, kb] -> String.to_integer(kb) * 1024
          nil -> 0
        end

      _ ->
        0
    end
  end
end
