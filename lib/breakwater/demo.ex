defmodule Breakwater.Demo do
  @moduledoc """
  The scripted scenario behind `make demo`.

  Router processes with mixed priorities (normal, low-priority batch, and control
  traffic at a priority that bypasses the breaker) produce events for one subject. A
  `Breakwater.Ledger.Simulated` ledger, attached with `Breakwater.attach_ledger/3`,
  drains the spool. The script moves the ledger through five phases:

      healthy -> ledger lags ({:slow, 50}) -> ledger slow ({:slow, 100})
              -> ledger down -> ledger up (recovery)

  While the ledger lags, it keeps up with the traffic: the depth stays low, and it is
  the latency of its writes (their p95 over `latency_window_ms`, measured from the
  outcomes Breakwater records) that turns the status to warning. When it is slow, the
  depth grows past the warning threshold too: two overload signals make the status
  active before the spool's memory quota runs out.

  then stops the routers, lets the ledger drain everything that is left (memory and
  disk spool) and checks the accounting:

      lost = produced - delivered - spooled (memory + disk) - dropped   (must be 0)

  `produced` and the intake refusals are the routers' own counts; `delivered` is the
  number of distinct events the simulated ledger holds (cross-checked against
  Breakwater's own `delivered` count); spooled and dropped come from
  `Breakwater.status/1`. Every event carries a unique id (`r<router>-<seq>`), so
  duplicates (at-least-once delivery) are counted too; they are reported, not lost.

  While it runs, a progress line (at most 79 columns, narrower on a narrower terminal)
  is redrawn in place on a terminal; when the output is not a terminal (`:io.columns/0`
  fails, e.g. piped to a file or CI log, or `TERM=dumb`) it prints one line per phase
  change and one per transition instead, with no carriage returns. Afterwards it prints
  the timeline of the breaker and backpressure transitions (from
  `Breakwater.History`), the accounting table (`Breakwater.Demo.Accounting`) and the
  path of an SVG chart (`Breakwater.Demo.Chart`) of depth and thresholds, breaker and
  backpressure states with every half-open probe (from the history, exact to the
  millisecond), and refusals by reason, sampled every 100 ms.

  The routers follow the router pattern of the README: a router that spools asks
  `:router_intake_backpressure.check_backpressure/1` first and refuses (tells its
  caller to retry later) while the status is active; a low-priority router also
  refuses while it is warning. They do not ask the breaker: it guards the ledger's
  writes, which are the drain worker's, and the worker's writes are the half-open
  probes. Control traffic (priority >= `bypass_priority`) does not wait behind the
  spool: it writes to the ledger itself through `Breakwater.call/3`, which admits it in
  every state (counted as bypassed), records the write's outcome and latency, and
  ends the call; a write that fails is spooled instead, so nothing is lost.
  """

  alias Breakwater.Demo.{Accounting, Chart}
  alias Breakwater.Ledger.Simulated

  @sample_ms 100

  # {name, ledger mode, duration at scale 1 (ms), minimum duration (ms)}
  @phases [
    {"healthy", :up, 6_000, 300},
    {"ledger lags", {:slow, 50}, 6_000, 900},
    {"ledger slow", {:slow, 100}, 8_000, 600},
    {"ledger down", :down, 8_000, 1_200},
    {"ledger up", :up, 9_000, 1_500}
  ]

  # {kind, priority, events per second}
  @routers [
    {:normal, 5, 500},
    {:normal, 5, 500},
    {:normal, 5, 500},
    {:normal, 5, 500},
    {:normal, 5, 500},
    {:batch, 1, 300},
    {:control, 9, 50},
    {:control, 9, 50}
  ]

  @reasons [
    :router_status_active,
    :circuit_open,
    :half_open_limit,
    :backpressure,
    :shed_low_priority,
    :other
  ]
  # :counters slots: produced, bypassed, enqueue rejected (dropped), enqueue errors,
  # written directly (control traffic), then one per refusal reason.
  @produced 1
  @bypassed 2
  @enqueue_rejected 3
  @enqueue_errors 4
  @direct 5
  @reason_base 6

  @typedoc "What `run/1` returns."
  @type report :: %{
          ok?: boolean,
          problems: [String.t()],
          subject: binary,
          accounting: Accounting.t(),
          breaker_opened?: boolean,
          breaker_closed_again?: boolean,
          drained?: boolean,
          svg_path: String.t(),
          samples: [Chart.sample()],
          timeline: [String.t()],
          duration_ms: non_neg_integer
        }

  @doc false
  # What both demos' `main/0` share: errors only in the log, the scale from
  # BREAKWATER_DEMO_SCALE (a number, default 1.0), and a run whose crash halts the VM
  # with status 1.
  @spec run_from_env((keyword -> report)) :: report when report: term
  def run_from_env(run) do
    :logger.set_primary_config(:level, :error)

    scale =
      case Float.parse(System.get_env("BREAKWATER_DEMO_SCALE", "1.0")) do
        {s, ""} when s > 0 -> s
        _ -> 1.0
      end

    try do
      run.(scale: scale)
    rescue
      e ->
        IO.puts(:stderr, "\ndemo failed: " <> Exception.format(:error, e, __STACKTRACE__))
        System.halt(1)
    end
  end

  @doc """
  Runs the full demo (about 37 s of scenario), printing as it goes. Returns normally
  when the run succeeded and nothing was lost; otherwise halts the VM with exit status 1.

  The environment variable `BREAKWATER_DEMO_SCALE` (a number, default 1.0) scales the
  phase durations, e.g. `0.2` for a quick run.
  """
  @spec main() :: :ok
  def main do
    report = run_from_env(&run/1)

    if report.ok? do
      IO.puts("\nRESULT: ok (lost = #{report.accounting.lost})")
      :ok
    else
      IO.puts("\nRESULT: FAILED")
      Enum.each(report.problems, &IO.puts("  - " <> &1))
      System.halt(1)
    end
  end

  @doc """
  Runs the scenario and returns a report; never halts.

  Options:

  - `scale:` (default 1.0) multiplies every phase duration and the breaker timings
    (each phase keeps a minimum length, so `0.1` runs in about five seconds);
  - `quiet:` (default false) prints nothing when true;
  - `svg_path:` where to write the chart (default `_build/demo/breakwater-demo.svg`);
  - `subject:` the subject to use (default a fresh, unique name);
  - `drain_timeout_ms:` how long to wait for the spool to drain at the end (30_000).
  """
  @spec run(keyword) :: report
  def run(opts \\ []) do
    opts =
      Keyword.validate!(opts,
        scale: 1.0,
        quiet: false,
        svg_path: Path.expand(Path.join(["_build", "demo", "breakwater-demo.svg"])),
        subject: nil,
        drain_timeout_ms: 30_000
      )

    scale = opts[:scale]

    unless is_number(scale) and scale > 0 do
      raise ArgumentError, "scale must be a positive number, got: #{inspect(scale)}"
    end

    {:ok, _} = Application.ensure_all_started(:breakwater)
    ensure_simulated()

    subject =
      opts[:subject] ||
        "demo-ledger-#{System.os_time(:millisecond)}-#{System.unique_integer([:positive])}"

    policy = policy(scale)
    :ok = Breakwater.configure(subject, policy)
    :ok = Simulated.set_mode(subject, :up)
    :ok = Breakwater.attach_ledger(subject, Simulated, batch_size: 200, poll_ms: 5)

    ctx = %{
      subject: subject,
      quiet: opts[:quiet],
      progress: progress_mode(opts[:quiet]),
      counters: :counters.new(@reason_base + length(@reasons) - 1, [:write_concurrency]),
      bypass: Breakwater.policy(subject).bypass_priority,
      low_max: Breakwater.policy(subject).low_priority_max,
      t0: System.monotonic_time(:millisecond),
      t0_sys: System.system_time(:millisecond)
    }

    say(ctx, header(ctx, policy, scale))

    routers =
      @routers
      |> Enum.with_index(1)
      |> Enum.map(fn {{kind, priority, rate}, id} ->
        r = %{id: id, kind: kind, priority: priority, rate: rate}
        {id, spawn_link(fn -> router(ctx, r) end)}
      end)

    state = %{
      samples: [],
      last_refused: %{},
      phase: nil,
      phase_log: [],
      transitions_seen: 0
    }

    {state, seqs, drained?} =
      try do
        state =
          Enum.reduce(@phases, state, fn {name, mode, ms, min}, state ->
            :ok = Simulated.set_mode(subject, mode)
            state = enter_phase(ctx, state, "#{name}", mode)
            run_for(ctx, state, max(round(ms * scale), min))
          end)

        seqs = stop_routers(routers)
        state = enter_phase(ctx, state, "drain", :up)
        {state, drained?} = drain(ctx, state, opts[:drain_timeout_ms])
        {state, seqs, drained?}
      after
        for {_, pid} <- routers, do: Process.unlink(pid) && Process.exit(pid, :kill)
        Breakwater.detach_ledger(subject)
      end

    if match?({:live, _}, ctx.progress), do: IO.write("\n")
    finish(ctx, state, seqs, drained?, opts[:svg_path])
  end

  # ---- setup ------------------------------------------------------------------------

  defp ensure_simulated do
    case Process.whereis(Simulated) do
      nil ->
        case Simulated.start_link([]) do
          {:ok, pid} -> Process.unlink(pid)
          {:error, {:already_started, _}} -> true
        end

      _pid ->
        true
    end
  end

  # Thresholds sized to the node's ring pool: the subject may hold 2 segments in memory
  # and overflows to the disk spool beyond that. The critical depth lies past the
  # memory quota, so it is the quota running out that turns backpressure to `dropping`
  # (and sends what is still admitted, e.g. control traffic, to disk).
  defp policy(scale) do
    config = :persistent_term.get({Breakwater, :config})
    capacity = config.ring_pool[:segment_capacity]
    quota = 2

    [
      warning_threshold: capacity,
      critical_threshold: capacity * 3,
      recovery_threshold: 0.5,
      stability_ms: max(round(1_000 * scale), 100),
      failure_threshold: 5,
      open_timeout_ms: max(round(2_000 * scale), 200),
      half_open_max_calls: 3,
      success_threshold: 3,
      call_timeout_ms: 2_000,
      health_check_ms: max(round(500 * scale), 50),
      max_segments: quota,
      overflow: :disk,
      drop_policy: :drop_newest,
      retry_after_seconds: 1,
      alert_on_active: true,
      # A write slower than this at the p95 is overloaded: the lagging ledger's 50 ms
      # are, its healthy few ms are not (calm again at 15).
      latency_overload_ms: 30,
      latency_window_ms: max(round(2_000 * scale), 200)
    ]
  end

  # At most 79 columns a line.
  defp header(ctx, policy, scale) do
    rate = @routers |> Enum.map(&elem(&1, 2)) |> Enum.sum()

    kinds =
      @routers
      |> Enum.frequencies_by(fn {kind, p, _} -> "#{kind} p#{p}" end)
      |> Enum.map_join(", ", fn {k, n} -> "#{n} #{k}" end)

    phases =
      Enum.map(@phases, fn {name, _mode, ms, min} ->
        "#{name} #{Float.round(max(round(ms * scale), min) / 1000, 1)}s"
      end)

    policy_text =
      "warning #{policy[:warning_threshold]}, critical #{policy[:critical_threshold]}, " <>
        "latency p95 #{policy[:latency_overload_ms]} ms over " <>
        "#{policy[:latency_window_ms]} ms, " <>
        "#{policy[:max_segments]} segments in memory then disk, " <>
        "failure_threshold #{policy[:failure_threshold]}, " <>
        "open_timeout_ms #{policy[:open_timeout_ms]}"

    live =
      case ctx.progress do
        {:live, _} ->
          wrap(
            "live:",
            String.split(
              "phase, time, events in (produced) and out (delivered), depth, " <>
                "p95 latency (ms), breaker state, backpressure state"
            )
          )

        :lines ->
          wrap(
            "below:",
            String.split(
              "a line per phase change (events in = produced, out = delivered, depth) " <>
                "and per transition ([router status before -> after])"
            )
          )

        :quiet ->
          ""
      end

    """
    Breakwater demo: a ledger slows, fails and recovers
      subject: #{ctx.subject}
      routers: #{length(@routers)} (#{kinds}), #{rate} events/s
      ledger:  Breakwater.Ledger.Simulated, batches of 200
    #{wrap("policy:", String.split(policy_text))}\
    #{wrap("phases:", Enum.intersperse(phases ++ ["drain"], "->"))}\
    #{live}\
    """
  end

  # "  label    words..." wrapped at 79 columns, continuation lines indented; ends
  # with a newline.
  defp wrap(label, words) do
    indent = String.duplicate(" ", 11)

    words
    |> Enum.reduce([String.pad_trailing("  " <> label, 10)], fn word, [current | done] ->
      if String.length(current) + 1 + String.length(word) > 79,
        do: [indent <> word, current | done],
        else: [current <> " " <> word | done]
    end)
    |> Enum.reverse()
    |> Enum.map_join(&(&1 <> "\n"))
  end

  # ---- routers ----------------------------------------------------------------------

  defp router(ctx, r) do
    r = Map.merge(r, %{seq: 0, started: now(), attempted: 0})
    router_loop(ctx, r)
  end

  defp router_loop(ctx, r) do
    receive do
      {:stop, from} -> send(from, {:router_done, r.id, r.seq})
    after
      10 ->
        due = div((now() - r.started) * r.rate, 1000) - r.attempted
        n = min(max(due, 0), 100)
        r = Enum.reduce(1..n//1, r, fn _, r -> attempt(ctx, r) end)
        router_loop(ctx, %{r | attempted: r.attempted + n})
    end
  end

  # Control traffic writes to the ledger itself (see the moduledoc), and spools what the
  # ledger refuses.
  defp attempt(ctx, r) when r.priority >= ctx.bypass do
    seq = r.seq + 1
    event = "r#{r.id}-#{seq} #{r.kind} p#{r.priority}"
    write = fn -> Simulated.write_batch(ctx.subject, [event]) end
    :counters.add(ctx.counters, @bypassed, 1)

    case Breakwater.call(ctx.subject, write, priority: r.priority) do
      {:ok, :ok} ->
        :counters.add(ctx.counters, @produced, 1)
        :counters.add(ctx.counters, @direct, 1)

      {:error, _reason} ->
        spool(ctx, event)
    end

    %{r | seq: seq}
  end

  defp attempt(ctx, r) do
    case gate(ctx, r.priority) do
      :ok ->
        seq = r.seq + 1
        spool(ctx, "r#{r.id}-#{seq} #{r.kind} p#{r.priority}")
        %{r | seq: seq}

      {:refused, reason} ->
        reason = if reason in @reasons, do: reason, else: :other
        :counters.add(ctx.counters, @reason_base + index(reason), 1)
        r
    end
  end

  defp spool(ctx, event) do
    case Breakwater.enqueue(ctx.subject, event) do
      :ok ->
        :counters.add(ctx.counters, @produced, 1)

      {:reject, :pool_exhausted, _} ->
        :counters.add(ctx.counters, @produced, 1)
        :counters.add(ctx.counters, @enqueue_rejected, 1)

      _error ->
        :counters.add(ctx.counters, @enqueue_errors, 1)
    end
  end

  for {reason, i} <- Enum.with_index(@reasons), do: defp(index(unquote(reason)), do: unquote(i))

  # A router that spools only asks intake's question: the breaker guards the ledger's
  # writes, which are the drain worker's (its writes are the half-open probes).
  defp gate(ctx, priority) do
    case :router_intake_backpressure.check_backpressure(ctx.subject) do
      {:backpressure_active, _retry} -> {:refused, :router_status_active}
      {:backpressure_warning, _} when priority <= ctx.low_max -> {:refused, :shed_low_priority}
      _ -> :ok
    end
  end

  defp stop_routers(routers) do
    for {_, pid} <- routers, do: send(pid, {:stop, self()})

    Map.new(routers, fn {id, _pid} ->
      receive do
        {:router_done, ^id, seq} -> {id, seq}
      after
        10_000 -> raise "router #{id} did not stop"
      end
    end)
  end

  # ---- phases and sampling -------------------------------------------------------------

  defp enter_phase(ctx, state, name, mode) do
    at = System.system_time(:millisecond) - ctx.t0_sys

    if match?(:lines, ctx.progress) do
      counts =
        case state.samples do
          [s | _] -> "  in #{int(s.produced)}  out #{int(s.delivered)}  depth #{int(s.depth)}"
          [] -> ""
        end

      IO.puts(line(at, "phase    -> #{name}" <> counts))
    end

    %{state | phase: name, phase_log: [{at, name, mode} | state.phase_log]}
  end

  defp run_for(ctx, state, ms) do
    until = now() + ms
    loop_until(ctx, state, fn _st -> now() >= until end)
  end

  defp drain(ctx, state, timeout) do
    deadline = now() + timeout

    state = loop_until(ctx, state, fn st -> drained?(st) or now() >= deadline end)

    {state, drained?(Breakwater.status(ctx.subject))}
  end

  defp drained?(st) do
    st.accounting.spooled_memory == 0 and st.accounting.spooled_disk == 0 and
      st.queue_depth == 0 and not st.disk_pending
  end

  # Samples every @sample_ms until `done?` holds for the latest status.
  defp loop_until(ctx, state, done?) do
    k = div(now() - ctx.t0, @sample_ms) + 1
    Process.sleep(max(ctx.t0 + k * @sample_ms - now(), 0))
    st = Breakwater.status(ctx.subject)
    {state, sample} = sample(ctx, state, st)
    state = progress(ctx, state, sample)
    if done?.(st), do: state, else: loop_until(ctx, state, done?)
  end

  defp sample(ctx, state, st) do
    refused = refused_by_reason(ctx)

    sample = %{
      t_ms: now() - ctx.t0,
      phase: state.phase,
      depth: st.queue_depth,
      disk: st.accounting.spooled_disk,
      latency_p95: st.latency_p95_ms,
      overloaded: st.overloaded,
      breaker: st.breaker,
      backpressure: st.backpressure,
      status: st.status,
      rejected_by_reason:
        Map.new(refused, fn {reason, n} ->
          {reason, n - Map.get(state.last_refused, reason, 0)}
        end),
      produced: :counters.get(ctx.counters, @produced),
      delivered: st.accounting.delivered
    }

    sample = Map.put(sample, :rejected, sample.rejected_by_reason |> Map.values() |> Enum.sum())
    {%{state | samples: [sample | state.samples], last_refused: refused}, sample}
  end

  defp refused_by_reason(ctx) do
    @reasons
    |> Enum.with_index()
    |> Map.new(fn {reason, i} -> {reason, :counters.get(ctx.counters, @reason_base + i)} end)
  end

  @doc false
  # How progress is shown (both demos): a line redrawn in place on a terminal (at most
  # `width` columns), one line per phase change and per transition otherwise.
  @spec progress_mode(boolean) :: :quiet | :lines | {:live, pos_integer}
  def progress_mode(true), do: :quiet

  def progress_mode(false) do
    with false <- System.get_env("TERM") == "dumb",
         {:ok, columns} <- :io.columns() do
      {:live, min(columns, 80) - 1}
    else
      _ -> :lines
    end
  end

  defp progress(%{progress: :quiet}, state, _sample), do: state

  defp progress(%{progress: :lines} = ctx, state, _sample) do
    new = ctx.subject |> Breakwater.History.history() |> Enum.drop(state.transitions_seen)

    for entry <- new do
      IO.puts(line(entry.timestamp - ctx.t0_sys, describe(entry)))
    end

    %{state | transitions_seen: state.transitions_seen + length(new)}
  end

  defp progress(%{progress: {:live, width}}, state, s) do
    IO.write(["\r", progress_line(s, width)])
    state
  end

  @doc false
  # The live progress line of `sample`: exactly `width` columns.
  @spec progress_line(map, pos_integer) :: String.t()
  def progress_line(s, width) do
    seconds = s.t_ms / 1000

    time =
      if seconds < 100,
        do: :erlang.float_to_binary(seconds, decimals: 1),
        else: Integer.to_string(trunc(seconds))

    # p95 in ms, at most 4 digits (9999: ten seconds or more).
    p95 = s |> Map.get(:latency_p95, 0) |> min(9_999) |> Integer.to_string()

    :io_lib.format("~-11ts ~4ss in ~6s out ~6s depth ~6s p95 ~4s ~-9s ~-8s", [
      to_string(s.phase),
      time,
      int(s.produced),
      int(s.delivered),
      int(s.depth),
      p95,
      Atom.to_string(s.breaker),
      Atom.to_string(s.backpressure)
    ])
    |> IO.chardata_to_string()
    |> String.slice(0, width)
    |> String.pad_trailing(width)
  end

  defp int(n), do: Accounting.format_int(n)

  defp line(at_ms, text),
    do: :erlang.iolist_to_binary(:io_lib.format("  +~7.3fs  ~ts", [at_ms / 1000, text]))

  # ---- results ------------------------------------------------------------------------

  defp finish(ctx, state, seqs, drained?, svg_path) do
    subject = ctx.subject
    samples = Enum.reverse(state.samples)
    st = Breakwater.status(subject)
    received = Simulated.received(subject)

    unexpected =
      Enum.count(received, fn event ->
        case Regex.run(~r/^r(\d+)-(\d+) /, event) do
          [_, id, seq] -> String.to_integer(seq) > Map.get(seqs, String.to_integer(id), 0)
          nil -> true
        end
      end)

    refused_by_reason =
      @reasons
      |> Enum.with_index()
      |> Map.new(fn {reason, i} -> {reason, :counters.get(ctx.counters, @reason_base + i)} end)

    acc =
      Accounting.new(
        produced: :counters.get(ctx.counters, @produced),
        refused: Enum.sum(Map.values(refused_by_reason)),
        refused_by_reason: refused_by_reason,
        bypassed: :counters.get(ctx.counters, @bypassed),
        direct: :counters.get(ctx.counters, @direct),
        delivered: length(received),
        delivered_breakwater: st.accounting.delivered,
        enqueued_breakwater: st.accounting.enqueued,
        spooled_memory: st.accounting.spooled_memory,
        spooled_disk: st.accounting.spooled_disk,
        dropped: st.accounting.dropped,
        duplicates: Simulated.duplicates(subject),
        redelivered: st.accounting.redelivered,
        unexpected: unexpected
      )

    history = Breakwater.History.history(subject)
    {opened?, closed_again?} = breaker_cycle(history)
    timeline = timeline(ctx, history, Enum.reverse(state.phase_log))

    File.mkdir_p!(Path.dirname(svg_path))
    policy = Breakwater.policy(subject)

    File.write!(
      svg_path,
      Chart.svg(samples,
        title: "Breakwater demo: a ledger slows, fails and recovers (lost = #{acc.lost})",
        thresholds: %{warning: policy.warning_threshold, critical: policy.critical_threshold},
        latency_threshold: policy.latency_overload_ms,
        interval_ms: @sample_ms,
        phases: for({at, name, _mode} <- state.phase_log, do: %{t_ms: at, name: name}),
        breaker_transitions: transitions(ctx, history, :breaker),
        backpressure_transitions: transitions(ctx, history, :backpressure)
      )
    )

    enqueue_errors = :counters.get(ctx.counters, @enqueue_errors)

    problems =
      Accounting.problems(acc) ++
        Enum.filter(
          [
            not drained? && "the spool did not drain before the deadline",
            not opened? && "the breaker never opened",
            opened? and not closed_again? && "the breaker did not close again",
            enqueue_errors > 0 && "#{enqueue_errors} enqueue calls returned an error"
          ],
          &is_binary/1
        )

    events =
      Breakwater.History.metrics(subject).events_by_type
      |> Enum.sort()
      |> Enum.map_join(", ", fn {type, n} -> "#{type} x#{n}" end)

    say(ctx, """

    Timeline (seconds since start; [router status before -> after]):
    #{Enum.join(timeline, "\n")}

    Events recorded (by type):
    #{wrap("", String.split(if events == "", do: "none", else: events))}

    Accounting:
    #{Accounting.table(acc)}
    Chart: #{Path.expand(svg_path)}
    """)

    %{
      ok?: problems == [],
      problems: problems,
      subject: subject,
      accounting: acc,
      breaker_opened?: opened?,
      breaker_closed_again?: closed_again?,
      drained?: drained?,
      svg_path: Path.expand(svg_path),
      samples: samples,
      timeline: timeline,
      duration_ms: now() - ctx.t0
    }
  end

  # The state changes of one machine, in ms since the start.
  defp transitions(ctx, history, machine) do
    for %{timestamp: at} = entry <- history,
        {from, to} = Map.fetch!(entry, machine),
        from != to,
        do: %{t_ms: at - ctx.t0_sys, from: from, to: to}
  end

  # Did the breaker open, and close again after that by its probes' successes?
  defp breaker_cycle(history) do
    case Enum.drop_while(history, &(not match?(%{breaker: {_, :open}}, &1))) do
      [] ->
        {false, false}

      [_open | later] ->
        {true, Enum.any?(later, &match?(%{breaker: {_, :closed}, cause: :probe_successes}, &1))}
    end
  end

  @max_timeline 80

  defp timeline(ctx, history, phase_log) do
    phases =
      Enum.map(phase_log, fn {at, name, mode} ->
        {at, "phase    -> #{name} (ledger #{inspect(mode)})"}
      end)

    transitions =
      Enum.map(history, fn entry ->
        {entry.timestamp - ctx.t0_sys, describe(entry)}
      end)

    lines =
      (phases ++ transitions)
      |> Enum.sort_by(&elem(&1, 0))
      |> Enum.map(fn {at, text} -> line(at, text) end)

    if length(lines) > @max_timeline do
      {head, rest} = Enum.split(lines, @max_timeline)
      head ++ ["  ... #{length(rest)} more transitions"]
    else
      lines
    end
  end

  defp describe(%{breaker: {b0, b1}, backpressure: {p0, p1}} = e) do
    {o0, o1} = Map.get(e, :overloaded, {[], []})
    # Signals that became overloaded (+) or calm (-), e.g. "+latency".
    flags = Enum.map(o1 -- o0, &"+#{&1}") ++ Enum.map(o0 -- o1, &"-#{&1}")

    parts =
      [
        b0 != b1 && "breaker #{b0} -> #{b1}",
        p0 != p1 && "backpressure #{p0} -> #{p1}",
        # The depth flag moving with a backpressure transition goes without saying.
        p0 == p1 and b0 == b1 && flags != [] && "overloaded " <> Enum.join(flags, " ")
      ]
      |> Enum.filter(&is_binary/1)

    # Within 79 columns with the time in front: the cause after a colon, one space
    # before the router status.
    cause = if Map.has_key?(e, :cause), do: ": #{e.cause}", else: ""

    status =
      if e.status != e.previous_status,
        do: " [#{short(e.previous_status)} -> #{short(e.status)}]",
        else: ""

    text = Enum.join(parts, " ") <> cause <> status
    reason = if Map.has_key?(e, :reason), do: "  (#{e.reason})", else: ""

    # The failure reason only when it fits (13 columns go to the time in front).
    if String.length(text <> reason) <= 79 - 13, do: text <> reason, else: text
  end

  defp describe(e), do: inspect(e)

  defp short(status), do: status |> Atom.to_string() |> String.replace_prefix("backpressure_", "")

  defp say(%{quiet: true}, _text), do: :ok
  defp say(_ctx, text), do: IO.write(text)

  defp now, do: System.monotonic_time(:millisecond)
end
