defmodule Breakwater.Bench.Report do
  @moduledoc false
  # Formatting: the console lines and docs/benchmarks.md.

  alias Breakwater.Bench.JSON

  defp criterion_dir, do: System.get_env("BENCH_CRITERION_DIR", "target/criterion")
  defp core_log, do: System.get_env("BENCH_CORE_LOG", "target/bench-core.log")

  # ---- machine --------------------------------------------------------------------------

  def machine do
    cpu =
      case File.read("/proc/cpuinfo") do
        {:ok, text} ->
          case Regex.run(~r/^model name\s*:\s*(.+)$/m, text) do
            [_, model] -> String.trim(model)
            nil -> "unknown"
          end

        _ ->
          "unknown"
      end

    %{
      cpu: cpu,
      logical_processors: :erlang.system_info(:logical_processors_available),
      schedulers: :erlang.system_info(:schedulers_online),
      otp: List.to_string(:erlang.system_info(:otp_release)),
      erts: List.to_string(:erlang.system_info(:version)),
      elixir: System.version(),
      rustc: command("rustc", ["--version"]),
      kernel: command("uname", ["-sr"]),
      date: DateTime.utc_now() |> DateTime.truncate(:second) |> DateTime.to_string()
    }
  end

  defp command(cmd, args) do
    case System.find_executable(cmd) do
      nil ->
        "not found"

      path ->
        case System.cmd(path, args, stderr_to_stdout: true) do
          {out, 0} -> String.trim(out)
          {out, _} -> "failed: " <> String.trim(out)
        end
    end
  end

  def machine_line(m) do
    "#{m.cpu}, #{m.logical_processors} logical CPUs, #{m.schedulers} schedulers online; " <>
      "OTP #{m.otp} (ERTS #{m.erts}), Elixir #{m.elixir}, #{m.rustc}; #{m.date}"
  end

  # ---- console rows ---------------------------------------------------------------------

  def row_header(procs) do
    cols =
      Enum.map(procs, fn p ->
        pad("#{p}p ns/op", 11) <> pad("#{p}p Mops/s", 11)
      end)

    scal = Enum.map(tl(procs), &pad("x#{&1}/x1", 8))
    String.pad_trailing("operation", 62) <> Enum.join(cols) <> Enum.join(scal)
  end

  def row(result, procs) do
    cols =
      Enum.map(procs, fn p ->
        s = result.by_procs[p]
        pad(fmt(s.ns), 11) <> pad(fmt(s.mops), 11)
      end)

    scal = Enum.map(tl(procs), &pad(fmt(scaling(result, &1)), 8))
    String.pad_trailing(result.spec.name, 62) <> Enum.join(cols) <> Enum.join(scal)
  end

  defp pad(s, n), do: String.pad_leading(s, n)

  defp scaling(result, p), do: result.by_procs[p].mops / result.by_procs[1].mops

  defp fmt(x) when is_float(x) and x >= 100, do: :erlang.float_to_binary(x, decimals: 0)
  defp fmt(x) when is_float(x) and x >= 10, do: :erlang.float_to_binary(x, decimals: 1)
  defp fmt(x) when is_float(x), do: :erlang.float_to_binary(x, decimals: 2)
  defp fmt(x), do: to_string(x)

  # ---- derived figures ------------------------------------------------------------------

  defp result(data, id), do: Enum.find(data.results, &(&1.spec.id == id))

  defp top(data), do: List.last(data.procs)

  @doc false
  def ratios(data) do
    check = result(data, :check)

    for {id, label} <- [ets_a: "baseline (a) ETS", pt_b: "baseline (b) persistent_term+atomics"],
        base = result(data, id),
        check != nil do
      %{
        label: label,
        by_procs:
          Map.new(data.procs, fn p ->
            {p, base.by_procs[p].ns / check.by_procs[p].ns}
          end)
      }
    end
  end

  def ratios_text(data) do
    lines =
      for r <- ratios(data) do
        per =
          Enum.map_join(data.procs, ", ", fn p ->
            "#{fmt(r.by_procs[p])}x at #{p}p"
          end)

        "check_backpressure/1 vs #{r.label}: #{per} (baseline ns / check ns; > 1 = check faster)"
      end

    Enum.join(lines, "\n")
  end

  @doc false
  def targets(data) do
    top = top(data)
    ns = fn id, p -> result(data, id) && result(data, id).by_procs[p].ns end
    worse = fn id -> result(data, id) && max(ns.(id, 1), ns.(id, top)) end

    per_sched = fn id, limit, label ->
      case worse.(id) do
        nil ->
          nil

        v ->
          %{
            target: "#{label} ≤ #{limit} ns per call per scheduler",
            measured: "#{fmt(ns.(id, 1))} ns at 1p, #{fmt(ns.(id, top))} ns at #{top}p",
            pass: v <= limit
          }
      end
    end

    ratio_b =
      case Enum.find(ratios(data), &String.starts_with?(&1.label, "baseline (b)")) do
        nil ->
          nil

        r ->
          %{
            target: "check_backpressure/1 ≥ 1.5x faster than baseline (b)",
            measured: "#{fmt(r.by_procs[1])}x at 1p, #{fmt(r.by_procs[top])}x at #{top}p",
            pass: r.by_procs[1] >= 1.5 and r.by_procs[top] >= 1.5
          }
      end

    scaling =
      case {result(data, :check), 2 in data.procs} do
        {nil, _} ->
          nil

        {_, false} ->
          %{
            target: "check_backpressure/1 scaling 1 → 2 schedulers ≥ 1.9x",
            measured: "n/a (1 scheduler)",
            pass: nil
          }

        {r, true} ->
          x = scaling(r, 2)

          %{
            target: "check_backpressure/1 scaling 1 → 2 schedulers ≥ 1.9x",
            measured: "#{fmt(x)}x",
            pass: x >= 1.9
          }
      end

    enqueue =
      case ns.(:enqueue, 1) do
        nil ->
          nil

        v ->
          %{
            target: "enqueue/2 of 256 B, durability :crash, ≤ 150 ns (1 scheduler)",
            measured:
              "#{fmt(v)} ns at 1p (#{fmt(ns.(:enqueue, top))} ns at #{top}p, one shared subject)",
            pass: v <= 150
          }
      end

    crash_vs_memory =
      case {ns.(:enqueue, 1), ns.(:enqueue_memory, 1)} do
        {c, m} when is_number(c) and is_number(m) ->
          %{
            target: "enqueue/2, durability :crash ≤ 1.3x :memory (1 scheduler)",
            measured: "#{fmt(c / m)}x (#{fmt(c)} ns against #{fmt(m)} ns)",
            pass: c / m <= 1.3
          }

        _ ->
          nil
      end

    enqueue_scaling =
      case {result(data, :enqueue), 2 in data.procs} do
        {nil, _} ->
          nil

        {_, false} ->
          %{
            target: "enqueue/2 into one subject, 1 → 2 schedulers ≥ 1.8x",
            measured: "n/a (1 scheduler)",
            pass: nil
          }

        {r, true} ->
          x = scaling(r, 2)

          %{
            target: "enqueue/2 into one subject, 1 → 2 schedulers ≥ 1.8x",
            measured: "#{fmt(x)}x (#{fmt(r.by_procs[1].mops)} → #{fmt(r.by_procs[2].mops)} M/s)",
            pass: x >= 1.8
          }
      end

    recovery =
      case Enum.find(data.criterion.benches, &(&1[:id] == "recovery/open_1M_events_256B")) do
        %{melem_s: m, median_ns: t} ->
          %{
            target: "recovery of a 1 M-event spool ≥ 1 M events/s (criterion)",
            measured: "#{fmt(m)} M events/s (#{fmt(t / 1.0e6)} ms for 1 M events of 256 B)",
            pass: m >= 1
          }

        _ ->
          nil
      end

    drain =
      case result(data, :drain_ack) do
        nil ->
          nil

        r ->
          v = r.by_procs[1].mops

          %{
            target: "drain + ack ≥ 10 M events/s (1 scheduler, batches of 1000)",
            measured: "#{fmt(v)} M events/s at 1p (#{fmt(r.by_procs[top].mops)} at #{top}p)",
            pass: v >= 10
          }
      end

    # The latency histogram's cost on the record path: the same NIF call with and
    # without a latency, in this run.
    histogram =
      case {ns.(:nif_record, 1), ns.(:nif_record_latency, 1)} do
        {a, b} when is_number(a) and is_number(b) ->
          d = max(b - a, ns.(:nif_record_latency, top) - ns.(:nif_record, top))

          %{
            target: "a latency adds ≤ 10 ns to record (NIF, with vs without)",
            measured:
              "+#{fmt(d)} ns (#{fmt(a)} → #{fmt(b)} ns at 1p, " <>
                "#{fmt(ns.(:nif_record, top))} → #{fmt(ns.(:nif_record_latency, top))} at #{top}p)",
            pass: d <= 10
          }

        _ ->
          nil
      end

    Enum.reject(
      [
        per_sched.(:check, 60, "check_backpressure/1"),
        ratio_b,
        scaling,
        per_sched.(:admit, 80, "admit/2"),
        per_sched.(:record, 100, "record/2"),
        per_sched.(:record_latency, 100, "record/3 with latency_ms"),
        histogram,
        enqueue,
        crash_vs_memory,
        enqueue_scaling,
        drain,
        recovery
      ],
      &is_nil/1
    )
  end

  defp verdict(true), do: "PASS"
  defp verdict(false), do: "MISS"
  defp verdict(nil), do: "n/a"

  def targets_text(data) do
    lines =
      for t <- targets(data) do
        "#{String.pad_trailing(verdict(t.pass), 5)} #{String.pad_trailing(t.target, 62)} #{t.measured}"
      end

    Enum.join(["targets (reported, never asserted):" | lines], "\n")
  end

  # ---- memory ---------------------------------------------------------------------------

  def memory_text(%{skipped: why}), do: "memory: skipped (#{why})"

  def memory_text(m) do
    per = fn d, k -> d[k] / m.subjects end
    p = m.pool
    budget = p.segments * p.segment_bytes

    """
    memory, #{m.subjects} subjects:
      created on first use: #{fmt(per.(m.first_use, :rss))} B/subject process RSS (native), #{fmt(per.(m.first_use, :beam))} B/subject BEAM (erlang:memory total)
      then configure/2:     #{fmt(per.(m.configure, :rss))} B/subject process RSS, #{fmt(per.(m.configure, :beam))} B/subject BEAM, of which ETS #{fmt(per.(m.configure, :ets))} B
      then a first latency: #{fmt(per.(m.latency, :rss))} B/subject process RSS (the histogram: #{m.histogram_bytes} B of counts)
      ring pool: #{p.segments} segments x #{p.segment_bytes} B = #{mib(budget)} budget; footprint #{mib(p.footprint_bytes)} (#{fmt((p.footprint_bytes - budget) / budget * 100)} % over: each segment's 4 KiB header page)
      subject table: #{p.subjects} subjects, capacity #{p.subject_capacity}, max_subjects #{p.max_subjects}; #{p.counter_stripes} counter stripes
    """
    |> String.trim_trailing()
  end

  defp mib(bytes), do: "#{fmt(bytes / 1_048_576)} MiB"

  # ---- criterion ------------------------------------------------------------------------

  # Targets of the Rust core (benches/core.rs), per iteration.
  @core_targets %{
    "normal/check" => 5,
    "drop/enqueue_refused_drop_newest" => 25,
    "drop/admit_rejected_backpressure" => 25,
    "recovery/report_depth_dropping_recovery_transition" => 50,
    "recovery/check_recovery_to_normal_after_stability" => 50
  }

  def criterion do
    files = Path.wildcard(Path.join(criterion_dir(), "**/new/estimates.json"))

    benches =
      files
      |> Enum.map(&read_criterion/1)
      |> Enum.reject(&is_nil/1)
      |> Enum.sort_by(& &1.id)

    %{benches: benches, scaling: scaling_block()}
  end

  defp read_criterion(estimates_path) do
    dir = Path.dirname(estimates_path)
    estimates = estimates_path |> File.read!() |> JSON.decode!()

    meta =
      case File.read(Path.join(dir, "benchmark.json")) do
        {:ok, text} -> JSON.decode!(text)
        _ -> %{}
      end

    id =
      meta["full_id"] ||
        dir |> Path.dirname() |> Path.relative_to(criterion_dir())

    elements =
      case meta["throughput"] do
        %{"Elements" => n} when is_integer(n) and n > 0 -> n
        _ -> 1
      end

    median = estimates["median"]["point_estimate"] * 1.0
    {:ok, %{mtime: mtime}} = File.stat(estimates_path, time: :posix)

    %{
      id: id,
      median_ns: median,
      mean_ns: estimates["mean"]["point_estimate"] * 1.0,
      elements: elements,
      ns_per_element: median / elements,
      melem_s: elements / median * 1_000,
      target: @core_targets[id],
      mtime: mtime
    }
  rescue
    e -> %{id: estimates_path, error: Exception.message(e)}
  end

  defp scaling_block do
    case File.read(core_log()) do
      {:ok, text} ->
        lines = String.split(text, "\n")

        blocks =
          for head <- ["scaling: one shared subject", "enqueue 256 B into one subject"],
              block = Enum.drop_while(lines, &(not String.starts_with?(&1, head))),
              block != [],
              do: block |> Enum.take_while(&(String.trim(&1) != "")) |> Enum.join("\n")

        if blocks == [], do: nil, else: Enum.join(blocks, "\n\n")

      _ ->
        nil
    end
  end

  def criterion_text(%{benches: []}),
    do: "criterion: no results in #{criterion_dir()} (run `make bench-core` first)"

  def criterion_text(%{benches: benches, scaling: scaling}) do
    lines =
      for b <- benches do
        case b do
          %{error: e} ->
            "  #{b.id}: unreadable (#{e})"

          _ ->
            t =
              if b.target,
                do: "  target ≤ #{b.target} ns: #{verdict(b.median_ns <= b.target)}",
                else: ""

            "  #{String.pad_trailing(b.id, 58)} #{pad(fmt(b.median_ns), 10)} ns/iter" <>
              "#{if b.elements > 1, do: "  #{fmt(b.ns_per_element)} ns/element", else: ""}#{t}"
        end
      end

    Enum.join(["criterion (median of #{criterion_dir()}/*/new/estimates.json):" | lines], "\n") <>
      if(scaling, do: "\n" <> scaling, else: "")
  end

  # ---- docs/benchmarks.md ---------------------------------------------------------------

  def markdown(data) do
    m = data.machine
    top = top(data)

    """
    # Benchmarks

    <!-- Generated by benches/beam_bench.exs (`make bench`); edits are overwritten. -->

    Breakwater's hot paths are one NIF call each: a router checks backpressure, admits
    and records calls, and spools events, from any number of processes on every
    scheduler. These figures measure those paths as a router calls them, through the
    public Elixir and Erlang API, next to two pure-BEAM designs a breaker could use
    instead, and the Rust core beneath them with criterion. Every loop checks every
    result and the counters are read back after each round, so a benchmark that stopped
    doing its work fails instead of looking fast. Targets are reported, never asserted.

    Measured #{m.date}.

    ## Machine

    | | |
    |---|---|
    | CPU | #{m.cpu} |
    | logical CPUs / schedulers online | #{m.logical_processors} / #{m.schedulers} |
    | OS | #{m.kernel} |
    | Erlang/OTP | #{m.otp} (ERTS #{m.erts}) |
    | Elixir | #{m.elixir} |
    | Rust | #{m.rustc} |

    ## BEAM: the NIF paths

    `benches/beam_bench.exs` compiles `benches/support/*.ex`; each operation runs in a
    compiled tail-recursive loop that matches every result. A run is `n` iterations in
    each of *p* processes started together (1, and one per online scheduler); its time
    runs from the common start to the last process's end. There are #{data.runs} passes,
    each running every measurement once after its own warm-up (interleaved, so that
    load from elsewhere on a shared machine falls on all measurements alike); the
    fastest run of each is reported, as interference only ever slows a run down
    (*1p median* shows the spread).
    *ns/op* is the time one call takes as one process sees it (per scheduler);
    *Mops/s* is the aggregate throughput of all *p* processes. The loop overhead is in
    every figure (first row).

    - check, admit and record use one subject shared by every process (the worst case
      for sharing; a subject at rest in the normal state);
    - enqueue puts 256-byte events into one shared subject, which is drained (untimed)
      after every round of at most #{Enum.find(data.results, %{spec: %{max_per_round: "?"}}, &(&1.spec.id == :enqueue)).spec.max_per_round} events per process,
      every event accounted for; with the default `durability: :crash` (the spool's
      pool files are mapped: an event is in the page cache when `enqueue` returns), and
      the same in a second VM with `durability: :memory` (the pool in anonymous memory,
      no checksums), in the same passes; several processes enqueue into the one subject
      through stripes of their own (one per scheduler thread);
    - drain + ack takes batches of 1000 events of 256 B from a subject per process
      (one ledger worker per subject), filled untimed before each round; *ns/op* and
      *Mops/s* are per event (durability `:crash`: the cursors are written into the
      subject's meta file at each take and ack);
    - the transition mix is `report_depth(warning)`, `check_backpressure`,
      `report_depth(recovery depth)`, `check_backpressure` on a subject per process:
      every other call is a transition (normal ⇄ pressure, so inactive ⇄ warning, with
      its history, events, recovery record and alert-manager cast); the time includes
      waiting for the alert manager to have handled every transition.
      #{data.mix_transitions} transitions were made and counted.

    #{results_table(data)}

    ### Against the pure-BEAM baselines

    Baseline (a) is the shape of ETS-based Erlang breakers such as `fuse`: the state
    looked up in a `read_concurrency` table and a shared counter bumped with
    `:ets.update_counter/3`. Baseline (b) reaches an `:atomics` state word and a
    `write_concurrency` `:counters` through `:persistent_term.get/1`. A ratio above 1
    means `check_backpressure/1` is faster.

    #{ratios_table(data)}

    ### Targets

    Per call per scheduler: the worse of the figure at 1 process and at #{top} processes.

    #{targets_table(data)}

    ### Before and after the overload signals

    #{compare_md()}

    ## Memory

    #{memory_md(data.memory)}

    ## Rust core (criterion)

    #{criterion_md(data.criterion)}

    ## Reproduce

    ```sh
    make bench          # all: make bench-core, make bench-compare, then make bench-beam
    make bench-core     # cargo bench -p breakwater_core --bench core (criterion, about 2 min)
    make bench-compare  # benches/compare.sh: before/after on a scratch clone (BEFORE=<rev>)
    make bench-beam     # MIX_ENV=bench mix run benches/beam_bench.exs; writes this file
    ```

    The BEAM part runs under `config/bench.exs` (a pool of 512 segments, logger at
    `:warning`). It reads criterion's results from `target/criterion` and the scaling
    table from `target/bench-core.log`, so run `make bench-core` first (or `make bench`)
    for the Rust section. Run on an otherwise idle machine: the figures are per call and
    a busy core shows directly.
    """
  end

  defp results_table(data) do
    head =
      "| operation | " <>
        Enum.map_join(data.procs, " | ", &"#{&1}p ns/op | #{&1}p Mops/s") <>
        Enum.map_join(tl(data.procs), "", &" | scaling x#{&1}/x1") <> " | 1p median ns/op |"

    sep =
      "|---|" <>
        String.duplicate("--:|--:|", length(data.procs)) <>
        String.duplicate("--:|", length(data.procs))

    rows =
      for r <- data.results do
        cells =
          Enum.map_join(data.procs, " | ", fn p ->
            s = r.by_procs[p]
            "#{fmt(s.ns)} | #{fmt(s.mops)}"
          end)

        scal = Enum.map_join(tl(data.procs), "", &" | #{fmt(scaling(r, &1))}")
        "| #{r.spec.name} | #{cells}#{scal} | #{fmt(r.by_procs[1].median_ns)} |"
      end

    Enum.join([head, sep | rows], "\n")
  end

  defp ratios_table(data) do
    head =
      "| check_backpressure/1 against | " <>
        Enum.map_join(data.procs, " | ", &"at #{&1}p") <> " |"

    sep = "|---|" <> String.duplicate("--:|", length(data.procs))

    rows =
      for r <- ratios(data) do
        "| #{r.label} | " <> Enum.map_join(data.procs, " | ", &"#{fmt(r.by_procs[&1])}x") <> " |"
      end

    Enum.join([head, sep | rows], "\n")
  end

  defp targets_table(data) do
    rows =
      for t <- targets(data) do
        "| #{t.target} | #{t.measured} | **#{verdict(t.pass)}** |"
      end

    Enum.join(["| target | measured | |", "|---|---|---|" | rows], "\n")
  end

  # target/bench-compare/compare.md, written by `make bench-compare` (benches/compare.sh).
  defp compare_md do
    path = "target/bench-compare/compare.md"

    intro =
      "The overload signals added a latency histogram to `record` and an in-flight count " <>
        "(read from counters the paths already write, plus a flag the timer swaps) to " <>
        "`admit` and `record`. `make bench-compare` runs the hot paths on a scratch clone " <>
        "of the revision before them and on this tree, alternately, in the same time " <>
        "window:"

    case File.read(path) do
      {:ok, text} ->
        intro <> "\n\n" <> String.trim(text)

      _ ->
        intro <> " not run for this file (`make bench` runs it; `make bench-compare` alone)."
    end
  end

  defp memory_md(%{skipped: why}), do: "Skipped: #{why}."

  defp memory_md(m) do
    per = fn d, k -> fmt(d[k] / m.subjects) end
    p = m.pool
    budget = p.segments * p.segment_bytes

    """
    #{m.subjects} subjects created, then configured; bytes per subject (differences of the
    process RSS, which holds the native registry, and of `:erlang.memory/1`, taken after
    a garbage collection):

    | | process RSS | BEAM total | BEAM ETS |
    |---|--:|--:|--:|
    | subject created on first use (`check_backpressure/1`) | #{per.(m.first_use, :rss)} | #{per.(m.first_use, :beam)} | #{per.(m.first_use, :ets)} |
    | then `Breakwater.configure/2` | #{per.(m.configure, :rss)} | #{per.(m.configure, :beam)} | #{per.(m.configure, :ets)} |
    | then a first latency (`record/3` with `latency_ms:`) | #{per.(m.latency, :rss)} | #{per.(m.latency, :beam)} | #{per.(m.latency, :ets)} |

    A subject's latency histogram is allocated on its first latency: #{m.histogram_bytes} bytes of
    counts here (`latency_histogram_bytes` in `Breakwater.status/1`: 4 quarter-window
    slices × #{div(m.histogram_bytes, 4 * 2304)} stripes × 576 buckets × 4 bytes), plus its header.

    Ring pool (`Breakwater.Native.pool_info/0`): #{p.segments} segments of #{p.segment_bytes} B and
    #{p.segment_capacity} events: a configured budget of #{mib(budget)}, an allocated footprint of
    #{mib(p.footprint_bytes)} (#{fmt((p.footprint_bytes - budget) / budget * 100)} % more: each segment's 4 KiB header page), in
    pool files mapped into memory (`durability: :crash`), fixed at first start. Subject table: capacity #{p.subject_capacity} for `max_subjects`
    #{p.max_subjects}, #{p.counter_stripes} counter stripes per subject.
    """
    |> String.trim_trailing()
  end

  defp criterion_md(%{benches: []}) do
    """
    No criterion results were found in `target/criterion` when this file was written.
    Run `make bench-core` (or `make bench`, which runs it before the BEAM part) and then
    `make bench-beam` to include them.
    """
    |> String.trim_trailing()
  end

  defp criterion_md(%{benches: benches, scaling: scaling}) do
    {oldest, newest} = benches |> Enum.map(&Map.get(&1, :mtime, 0)) |> Enum.min_max()

    rows =
      for b <- benches do
        case b do
          %{error: e} ->
            "| `#{b.id}` | unreadable: #{e} | | | |"

          _ ->
            per =
              if b.elements > 1,
                do: "#{fmt(b.ns_per_element)} (÷#{b.elements})",
                else: fmt(b.ns_per_element)

            t =
              if b.target,
                do: "≤ #{b.target} ns: **#{verdict(b.median_ns <= b.target)}**",
                else: ""

            "| `#{b.id}` | #{fmt(b.median_ns)} | #{per} | #{fmt(b.melem_s)} | #{t} |"
        end
      end

    table =
      Enum.join(
        [
          "| benchmark | median ns/iter | ns/element | M elements/s | target |",
          "|---|--:|--:|--:|---|" | rows
        ],
        "\n"
      )

    scaling_md =
      if scaling,
        do:
          "\n\nThreads on one shared subject, and enqueue into one subject: the spool's " <>
            "per-thread stripes against an Aeron-style shared claim (one atomic add on a " <>
            "shared tail per event), both writing checksummed 256-byte records into " <>
            "file mappings (from `target/bench-core.log`):\n\n```text\n#{scaling}\n```",
        else:
          "\n\n(No scaling table: `target/bench-core.log` is missing; `make bench-core` writes it.)"

    """
    `cargo bench -p breakwater_core --bench core` (`benches/core.rs`): the median point
    estimate of every `target/criterion/<group>/<bench>/new/estimates.json` found
    (written #{date(oldest)} to #{date(newest)}). Scaling rows count one call on every thread
    as one iteration.

    #{table}#{scaling_md}#{spool_note(benches)}
    """
    |> String.trim_trailing()
  end

  defp spool_note(benches) do
    if Enum.any?(benches, &String.starts_with?(&1.id, "spool/")),
      do: "",
      else:
        "\n\nThe `spool` group (enqueue, drain + ack) is missing from this run " <>
          "(a `BENCH_CORE_FILTER` left it out); `make bench-core` runs it."
  end

  defp date(posix), do: posix |> DateTime.from_unix!() |> DateTime.to_string()
end
