defmodule Breakwater.Metrics do
  @moduledoc """
  Metrics in the Prometheus text exposition format 0.0.4, the health summary and the
  readiness rule of the HTTP endpoint (`Breakwater.HTTP`).

      iex> text = Breakwater.Metrics.prometheus()
      iex> text =~ "# TYPE breakwater_circuit_state gauge"
      true
      iex> Breakwater.Metrics.health().status in ["ok", "degraded"]
      true
      iex> Breakwater.Metrics.label_value(<<"a\\"b", 0xFF>>)
      "a\\\\\\"b\\\\\\\\xFF"

  ## Output

  Every metric family has `# HELP` and `# TYPE` lines (also when it has no sample
  yet); families are sorted by name and samples by their label values (as text,
  before escaping), so equal states give equal text. Every series carries a `node`
  label (this node's name, e.g. `node="router1@host"`; `nonode@nohost` on a node that
  is not distributed), so that a cluster's series can be aggregated across nodes (see
  "Cluster" in docs/operations.md). Per-subject metrics carry a `subject` label; `breakwater_circuit_state` is 0 closed, 1 half_open, 2 open;
  `breakwater_backpressure_state` is 0 normal, 1 pressure, 2 dropping, 3 recovery;
  `breakwater_backpressure_status` is the router status, 0 inactive, 1 warning,
  2 active; `breakwater_overloaded{subject,signal}` is 1 while that overload signal
  (`depth`, `latency`, `inflight`) is overloaded, beside the values the signals are
  judged by (`breakwater_queue_depth`, `breakwater_latency_p95_ms`,
  `breakwater_inflight`). The latency series (`breakwater_latency_p95_ms`,
  `breakwater_latency_samples`, `breakwater_overloaded{signal="latency"}`) appear once
  the subject has a latency (recorded or reported), the in-flight ones
  (`breakwater_inflight`, `breakwater_overloaded{signal="inflight"}`) once it has
  admitted a call or had calls in flight reported: a subject fed only depth reports has
  no series of signals it never measured. `metric_names/0` lists every family with its
  type and help text.

  ## Bounded

  Per-subject series are written for at most `metrics_max_subjects` subjects
  (application key, default 1 000): the worst ones, active before warning before
  inactive, then by depth. Totals over *every* subject come as families of their own,
  without a `subject` label: `breakwater_subjects_<name>` for each per-subject counter
  and depth (e.g. `breakwater_subjects_dropped_events_total`,
  `breakwater_subjects_rejected_total{reason}`, `breakwater_subjects_queue_depth`),
  `breakwater_subjects_events_total{event_type}`, `breakwater_subjects_recovery_total`,
  and subject counts by state (`breakwater_subjects_by_status{status}`,
  `..._by_breaker{breaker}`, `..._by_backpressure{backpressure}`).
  `breakwater_subjects_detailed` says how many subjects have series of their own. So a
  scrape's size and its memory are bounded by `metrics_max_subjects`, whatever the
  number of subjects. The HTTP endpoint serves a body rendered at most once a second
  and shared by every scraper (`Breakwater.Metrics.Scrape`).

  ## Label values

  Label values are escaped as the format requires: backslash as `\\\\`, double quote as
  `\\"`, line feed as `\\n`. Subjects are binaries and need not be UTF-8; every byte
  that is not part of a valid UTF-8 sequence is written as the four characters
  `\\xNN` (NN its value in upper-case hex), whose backslash is then escaped like any
  other, so the exposition is always valid UTF-8: the subject `<<"a", 0xFF>>` appears
  as `subject="a\\\\xFF"`, and a scraper reads the label value `a\\xFF`. The mapping is
  not one-to-one: a valid UTF-8 subject that literally contains such text (e.g.
  `"a\\\\xFF"`) gets the same label, and two such subjects would give two samples with
  the same labels. Event types (atoms or binaries) get the same treatment, and
  `health/0` shows subjects the same way.
  """

  alias Breakwater.{History, Native, PolicyStore}

  @typedoc "A metric type of the exposition format."
  @type metric_type :: :counter | :gauge

  @rejected_reasons [
    {"backpressure", :rejected_backpressure},
    {"circuit_open", :rejected_circuit_open},
    {"half_open_limit", :rejected_half_open_limit},
    {"overloaded", :rejected_overloaded},
    {"pool_exhausted", :rejected_pool_exhausted},
    {"shed_low_priority", :rejected_shed_low_priority},
    {"spool_unavailable", :rejected_spool_unavailable}
  ]

  @breaker_values %{closed: 0, half_open: 1, open: 2}
  @backpressure_values %{normal: 0, pressure: 1, dropping: 2, recovery: 3}
  @status_values %{inactive: 0, warning: 1, active: 2}

  # Per-subject families: {name, type, help, how to read the value from a status map}.
  # {:counter, key} reads status.counters[key]; {:field, key} reads status[key];
  # {:signal, signal, source} reads source, for subjects that use the signal only.
  @subject_families [
    {"breakwater_circuit_state", :gauge, "Circuit breaker state: 0 closed, 1 half_open, 2 open.",
     {:enum, :breaker, @breaker_values}},
    {"breakwater_backpressure_state", :gauge,
     "Backpressure state: 0 normal, 1 pressure, 2 dropping, 3 recovery.",
     {:enum, :backpressure, @backpressure_values}},
    {"breakwater_backpressure_status", :gauge,
     "Router backpressure status: 0 inactive, 1 warning, 2 active.",
     {:enum, :status, @status_values}},
    {"breakwater_queue_depth", :gauge,
     "Queue depth: the larger of the reported depth and the events spooled.",
     {:field, :queue_depth}},
    {"breakwater_reported_depth", :gauge, "Queue depth last reported by the router.",
     {:field, :reported_depth}},
    {"breakwater_latency_p95_ms", :gauge,
     "p95 call latency (ms) the latency signal is judged by: the larger of the router's " <>
       "report and the p95 measured over latency_window_ms (subjects with a latency).",
     {:signal, :latency, {:field, :latency_p95_ms}}},
    {"breakwater_latency_samples", :gauge,
     "Call latencies recorded in the latency window (at the timer's last refresh; " <>
       "subjects with a latency).", {:signal, :latency, {:field, :latency_samples}}},
    {"breakwater_inflight", :gauge,
     "Calls in flight the in-flight signal is judged by: the larger of the router's " <>
       "report and the calls admitted and not yet recorded (subjects with admissions).",
     {:signal, :inflight, {:field, :inflight}}},
    {"breakwater_high_watermark", :gauge, "Highest queue depth seen.", {:field, :high_watermark}},
    {"breakwater_spooled_events", :gauge,
     "Events waiting in the spool (pool segments and overflow files).",
     {:counter, :spooled_events}},
    {"breakwater_spooled_bytes", :gauge, "Bytes waiting in the spool.",
     {:counter, :spooled_bytes}},
    {"breakwater_spooled_disk_events", :gauge, "Events waiting in overflow files.",
     {:counter, :spooled_disk_events}},
    {"breakwater_in_flight_events", :gauge, "Events taken by a drain and not yet acked.",
     {:counter, :in_flight_events}},
    {"breakwater_segments", :gauge, "Ring pool segments held by the subject.",
     {:field, :segments}},
    {"breakwater_disk_pending", :gauge, "1 while events of the subject wait in overflow files.",
     {:bool, :disk_pending}},
    {"breakwater_disabled", :gauge, "1 while the breaker is disabled (admits everything).",
     {:bool, :disabled}},
    {"breakwater_forced_open", :gauge, "1 while the breaker is forced open.",
     {:bool, :forced_open}},
    {"breakwater_subject_critical", :gauge,
     "1 when the subject's policy has critical: true (readiness fails while its breaker is open).",
     :critical},
    {"breakwater_accepted_total", :counter, "Calls admitted.", {:counter, :accepted}},
    {"breakwater_bypassed_total", :counter,
     "Calls admitted at bypass priority (control path), past breaker and backpressure.",
     {:counter, :bypassed}},
    {"breakwater_successes_total", :counter, "Calls recorded as successes.",
     {:counter, :successes}},
    {"breakwater_failures_total", :counter, "Calls recorded as failures (slow calls included).",
     {:counter, :failures}},
    {"breakwater_slow_calls_total", :counter, "Calls slower than slow_call_ms.",
     {:counter, :slow_calls}},
    {"breakwater_circuit_opens_total", :counter,
     "Times the breaker opened (remote opens included).", {:counter, :circuit_opens}},
    {"breakwater_remote_opens_total", :counter,
     "Times the breaker opened because the subject's breaker opened on a peer node (share: :breaker).",
     {:counter, :remote_opens}},
    {"breakwater_recovery_attempts_total", :counter, "Times the breaker entered half_open.",
     {:counter, :recovery_attempts}},
    {"breakwater_successful_recoveries_total", :counter,
     "Times the breaker closed again from half_open.", {:counter, :successful_recoveries}},
    {"breakwater_probe_successes_total", :counter,
     "Half-open probes that succeeded, counted by their own half-open episode.",
     {:counter, :probe_successes}},
    {"breakwater_probe_failures_total", :counter,
     "Half-open probes that failed, counted by their own half-open episode.",
     {:counter, :probe_failures}},
    {"breakwater_stale_probes_total", :counter,
     "Times the breaker re-opened because its oldest half-open probe went unanswered for call_timeout_ms.",
     {:counter, :stale_probes}},
    {"breakwater_late_outcomes_total", :counter,
     "Recorded outcomes the breaker set aside: they answered no admission it was waiting for (recorded while open, of an earlier breaker state, or in half-open for no probe in flight).",
     {:counter, :late_outcomes}},
    {"breakwater_breaker_transitions_total", :counter, "Breaker state changes.",
     {:counter, :breaker_transitions}},
    {"breakwater_backpressure_transitions_total", :counter, "Backpressure state changes.",
     {:counter, :backpressure_transitions}},
    {"breakwater_enqueued_events_total", :counter, "Events put in the spool.",
     {:counter, :enqueued_events}},
    {"breakwater_enqueued_bytes_total", :counter, "Bytes put in the spool.",
     {:counter, :enqueued_bytes}},
    {"breakwater_delivered_events_total", :counter, "Spooled events delivered (acked).",
     {:counter, :delivered_events}},
    {"breakwater_delivered_bytes_total", :counter, "Spooled bytes delivered (acked).",
     {:counter, :delivered_bytes}},
    {"breakwater_redelivered_events_total", :counter,
     "Events handed out again: after a nack, a dead taker, or a crash of the VM.",
     {:counter, :redelivered_events}},
    {"breakwater_dropped_events_total", :counter,
     "Events dropped: drop_newest and drop_oldest, disk_max_bytes, spool_unavailable.",
     {:counter, :dropped_events}},
    {"breakwater_dropped_bytes_total", :counter,
     "Bytes dropped: drop_newest and drop_oldest, disk_max_bytes, spool_unavailable.",
     {:counter, :dropped_bytes}},
    {"breakwater_lost_events_total", :counter,
     "Accepted events the spool could not keep (corrupt, truncated or missing files, " <>
       "memory durability at a crash); by reason in status/1.", {:counter, :lost_events}}
  ]

  @rejected_help "Calls and events refused, by reason: circuit_open, half_open_limit, " <>
                   "backpressure, overloaded, shed_low_priority (admission), pool_exhausted " <>
                   "and spool_unavailable (enqueue)."

  @global_families [
    {"breakwater_ring_pool_free_segments", :gauge, "Free segments in the ring pool.",
     :free_segments},
    {"breakwater_ring_pool_segments", :gauge, "Segments in the ring pool.", :segments},
    {"breakwater_ring_pool_footprint_bytes", :gauge, "Memory allocated for the ring pool.",
     :footprint_bytes},
    {"breakwater_subjects", :gauge, "Subjects known to the registry.", :subjects},
    {"breakwater_max_subjects", :gauge,
     "Most subjects created by traffic the registry accepts (configured subjects have a room of the same size).",
     :max_subjects},
    {"breakwater_configured_subjects", :gauge, "Configured subjects (their own room).",
     :configured_subjects},
    {"breakwater_removed_subjects_total", :counter,
     "Subjects removed (by remove/1 or idle expiry).", :removed_subjects}
  ]

  # Totals over every subject: the per-subject counters and depths, summed.
  @total_families for {"breakwater_" <> rest, type, help, source} <- @subject_families,
                      match?({:counter, _}, source) or
                        source in [
                          {:field, :queue_depth},
                          {:field, :reported_depth},
                          {:field, :segments}
                        ],
                      do:
                        {"breakwater_subjects_" <> rest, type, "Every subject: " <> help, source}

  @state_families [
    {"breakwater_subjects_by_status", "Subjects by router status.", :by_status, "status"},
    {"breakwater_subjects_by_breaker", "Subjects by breaker state.", :by_breaker, "breaker"},
    {"breakwater_subjects_by_backpressure", "Subjects by backpressure state.", :by_backpressure,
     "backpressure"}
  ]

  @doc """
  Every metric family: `{name, type, help}`, sorted by name.

      iex> {"breakwater_queue_depth", :gauge, _help} =
      ...>   List.keyfind(Breakwater.Metrics.metric_names(), "breakwater_queue_depth", 0)
  """
  @spec metric_names() :: [{String.t(), metric_type, String.t()}]
  def metric_names do
    subject = for {name, type, help, _} <- @subject_families, do: {name, type, help}
    global = for {name, type, help, _} <- @global_families, do: {name, type, help}
    totals = for {name, type, help, _} <- @total_families, do: {name, type, help}
    states = for {name, help, _, _} <- @state_families, do: {name, :gauge, help}

    others = [
      {"router_backpressure_events_total", :counter,
       "Backpressure and breaker events recorded, by subject and event type."},
      {"router_backpressure_recovery_total", :counter,
       "Recoveries (active to inactive, active to warning, warning to inactive), by subject."},
      {"breakwater_rejected_total", :counter, @rejected_help},
      {"breakwater_overloaded", :gauge,
       "1 while the signal (depth, latency, inflight) is overloaded: above its threshold, " <>
         "until at or below recovery_threshold x threshold."},
      {"breakwater_alerts", :gauge, "Active alerts (Breakwater.alerts/0)."},
      {"breakwater_subjects_events_total", :counter,
       "Every subject: events recorded in history, by event type."},
      {"breakwater_subjects_recovery_total", :counter, "Every subject: recoveries."},
      {"breakwater_subjects_rejected_total", :counter, "Every subject: " <> @rejected_help},
      {"breakwater_subjects_detailed", :gauge,
       "Subjects with series of their own in this exposition (at most metrics_max_subjects, the worst first)."},
      {"breakwater_cluster_nodes", :gauge,
       "Nodes running Breakwater as this node sees them, by state: up, down (disconnected), stopped (connected, Breakwater not running); this node included."},
      {"breakwater_cluster_opens_sent_total", :counter,
       "Breaker opens told to peer nodes, by result: sent, busy (distribution channel busy: not sent), not_connected."}
    ]

    Enum.sort(subject ++ global ++ totals ++ states ++ others)
  end

  @doc """
  The Prometheus text exposition (format 0.0.4): the worst subjects in detail, totals
  over every subject, and the ring pool. Rendered now; the HTTP endpoint serves a
  shared copy at most a second old instead (`Breakwater.Metrics.Scrape`). Serve it
  with content type `text/plain; version=0.0.4; charset=utf-8`.

  Options: `max_subjects:` how many subjects to detail, the worst first (default: the
  `metrics_max_subjects` of the configuration); `subjects:` a list of subjects to
  detail instead (those that exist).
  """
  @spec prometheus(keyword) :: String.t()
  def prometheus(opts \\ []) do
    subjects = detailed(opts, "prometheus/1")
    pool = pool_info()
    totals = totals()
    help = Map.new(metric_names(), fn {name, type, help} -> {name, {type, help}} end)

    per_subject =
      for {name, _type, _help, source} <- @subject_families do
        {name,
         for(
           {label, status} <- subjects,
           shown?(status, source),
           do: {[subject: label], read(status, source)}
         )}
      end

    rejected =
      for {label, status} <- subjects, {reason, key} <- @rejected_reasons do
        {[subject: label, reason: reason], counter(status, key)}
      end

    overloaded =
      for {label, status} <- subjects,
          signal <- [:depth, :inflight, :latency],
          signal == :depth or in_use?(status, signal) do
        {[subject: label, signal: Atom.to_string(signal)],
         if(signal in Map.get(status, :overloaded, []), do: 1, else: 0)}
      end

    global =
      for {name, _type, _help, key} <- @global_families do
        {name, if(is_map_key(pool, key), do: [{[], Map.fetch!(pool, key)}], else: [])}
      end

    total_samples =
      for {name, _type, _help, source} <- @total_families do
        {name, [{[], read_total(totals, source)}]}
      end

    state_samples =
      for {name, _help, key, label} <- @state_families do
        {name,
         for({state, n} <- Map.get(totals, key, %{}), do: {[{label, Atom.to_string(state)}], n})}
      end

    families =
      [
        {"router_backpressure_events_total", event_samples(subjects)},
        {"router_backpressure_recovery_total", recovery_samples(subjects)},
        {"breakwater_rejected_total", rejected},
        {"breakwater_overloaded", overloaded},
        {"breakwater_alerts", [{[], length(Breakwater.alerts())}]},
        {"breakwater_subjects_events_total", node_event_samples()},
        {"breakwater_subjects_recovery_total", [{[], safe(&History.node_recovery_count/0, 0)}]},
        {"breakwater_subjects_rejected_total",
         for({reason, key} <- @rejected_reasons, do: {[reason: reason], total(totals, key)})},
        {"breakwater_subjects_detailed", [{[], length(subjects)}]},
        {"breakwater_cluster_nodes", cluster_node_samples()},
        {"breakwater_cluster_opens_sent_total",
         for(
           {result, n} <- Breakwater.Cluster.sent_counts(),
           do: {[result: Atom.to_string(result)], n}
         )}
      ] ++ per_subject ++ global ++ total_samples ++ state_samples

    # Every series carries this node's name, so that series of every node of a cluster
    # can be told apart and aggregated (e.g. breakers open on more than half the nodes).
    node_label = [node: Atom.to_string(node())]

    families
    |> Enum.sort_by(&elem(&1, 0))
    |> Enum.map(fn {name, samples} ->
      {type, text} = Map.fetch!(help, name)
      # A binary per family: the iodata of one family (a few list cells per byte) is
      # garbage as soon as it is written, so the renderer's heap holds the body's bytes
      # and one family's iodata at a time, not the whole body's.
      IO.iodata_to_binary(family(name, type, text, samples, node_label))
    end)
    |> IO.iodata_to_binary()
  end

  defp family(name, type, help, samples, node_label) do
    [
      ["# HELP ", name, ?\s, help, ?\n],
      ["# TYPE ", name, ?\s, Atom.to_string(type), ?\n],
      samples
      |> Enum.sort_by(fn {labels, _} -> Keyword.values(labels) end)
      |> Enum.map(fn {labels, value} ->
        [name, labels(node_label ++ labels), ?\s, number(value), ?\n]
      end)
    ]
  end

  defp labels(labels) do
    inner =
      labels
      |> Enum.map(fn {k, v} -> [label_name(k), "=\"", escape_label(v), ?"] end)
      |> Enum.intersperse(?,)

    [?{, inner, ?}]
  end

  defp label_name(k) when is_atom(k), do: Atom.to_string(k)
  defp label_name(k) when is_binary(k), do: k

  defp number(n) when is_integer(n), do: Integer.to_string(n)
  defp number(true), do: "1"
  defp number(false), do: "0"

  defp read(status, {:signal, _signal, source}), do: read(status, source)
  defp read(status, {:field, key}), do: non_neg(Map.get(status, key))
  defp read(status, {:counter, key}), do: counter(status, key)
  defp read(status, {:bool, key}), do: if(Map.get(status, key) == true, do: 1, else: 0)
  defp read(status, {:enum, key, values}), do: Map.get(values, Map.get(status, key), 0)
  defp read(status, :critical), do: if(critical?(status.subject), do: 1, else: 0)

  defp shown?(status, {:signal, signal, _source}), do: in_use?(status, signal)
  defp shown?(_status, _source), do: true

  # Whether a subject has series for the latency or in-flight signal: once it has a
  # value for it (a latency recorded or reported; a call admitted or calls in flight
  # reported), or while the signal is overloaded. A subject that never had one would
  # only repeat zeros (most subjects of a router that reports depth only), at five
  # series each.
  defp in_use?(status, :latency) do
    non_neg(Map.get(status, :latency_histogram_bytes)) > 0 or
      non_neg(Map.get(status, :latency_p95_ms)) > 0 or
      :latency in Map.get(status, :overloaded, [])
  end

  defp in_use?(status, :inflight) do
    counter(status, :accepted) + counter(status, :bypassed) > 0 or
      non_neg(Map.get(status, :inflight)) > 0 or
      :inflight in Map.get(status, :overloaded, [])
  end

  defp counter(status, key), do: non_neg(Map.get(Map.get(status, :counters, %{}), key))

  defp non_neg(n) when is_integer(n), do: n
  defp non_neg(_), do: 0

  defp total(totals, key), do: non_neg(Map.get(Map.get(totals, :counters, %{}), key))

  defp read_total(totals, {:counter, key}), do: total(totals, key)
  defp read_total(totals, {:field, key}), do: non_neg(Map.get(totals, key))

  defp event_samples(subjects) do
    for {label, status} <- subjects,
        {type, n} <- safe(fn -> History.event_counts(status.subject) end, []) do
      {[subject: label, event_type: safe_text(type)], n}
    end
  end

  defp recovery_samples(subjects) do
    for {label, status} <- subjects,
        n = safe(fn -> History.recovery_count(status.subject) end, 0),
        n > 0,
        do: {[subject: label], n}
  end

  defp cluster_node_samples do
    counts =
      safe(&Breakwater.Cluster.nodes/0, [%{state: :up}])
      |> Enum.frequencies_by(& &1.state)

    for state <- [:up, :down, :stopped],
        do: {[state: Atom.to_string(state)], Map.get(counts, state, 0)}
  end

  defp node_event_samples do
    for {type, n} <- safe(&History.node_event_counts/0, []),
        do: {[event_type: safe_text(type)], n}
  end

  @doc """
  A label value as it appears between the double quotes of the exposition: invalid
  UTF-8 bytes written as `\\xNN`, then backslash, double quote and line feed escaped.
  Atoms and other terms are converted to text first.

      iex> Breakwater.Metrics.label_value("multi\\nline")
      "multi\\\\nline"
      iex> Breakwater.Metrics.label_value(:circuit_open)
      "circuit_open"
  """
  @spec label_value(term) :: String.t()
  def label_value(value), do: value |> safe_text() |> escape_label()

  @doc """
  `value` as valid UTF-8 text: binaries with each byte that is not part of a valid
  UTF-8 sequence replaced by the text `\\xNN`; atoms by their name; other terms
  inspected.

      iex> Breakwater.Metrics.safe_text(<<"ok", 0xC3>>)
      "ok\\\\xC3"
  """
  @spec safe_text(term) :: String.t()
  def safe_text(value) when is_binary(value) do
    if String.valid?(value),
      do: value,
      else: value |> replace_invalid([]) |> IO.iodata_to_binary()
  end

  def safe_text(value) when is_atom(value), do: value |> Atom.to_string() |> safe_text()
  def safe_text(value), do: value |> inspect(limit: 10, printable_limit: 256) |> safe_text()

  defp replace_invalid(bin, acc) do
    case :unicode.characters_to_binary(bin) do
      good when is_binary(good) ->
        Enum.reverse([good | acc])

      {_error, good, <<byte, rest::binary>>} ->
        hex = byte |> Integer.to_string(16) |> String.pad_leading(2, "0")
        replace_invalid(rest, ["\\x" <> hex, good | acc])
    end
  end

  defp escape_label(text) do
    case :binary.match(text, ["\\", "\"", "\n"]) do
      :nomatch ->
        text

      _ ->
        String.replace(text, ["\\", "\"", "\n"], fn
          "\\" -> "\\\\"
          "\"" -> "\\\""
          "\n" -> "\\n"
        end)
    end
  end

  # ---- health ---------------------------------------------------------------------

  @doc """
  The health summary served as JSON at `/health`:

    * `node` - this node's name;
    * `status` - `"ok"`, or `"degraded"` while any subject's status is not inactive
      (breaker open or half-open, backpressure other than normal) or any alert is
      active;
    * `ready` - false while a subject whose policy has `critical: true` has its
      breaker open (see `critical_open/0`);
    * `subjects` - one map per subject (sorted), for the worst `metrics_max_subjects`
      subjects (`opts` as in `prometheus/1`): `subject` (as text, see `safe_text/1`), `status`,
      `breaker`, `backpressure`, `queue_depth`, `critical`;
    * `subject_count` - every subject, and `subjects_by_status` - how many are
      inactive, warning, active;
    * `pool` - `free_segments`, `segments`;
    * `alerts` - the number of active alerts (`Breakwater.alerts/0`).
  """
  @spec health(keyword) :: %{
          node: String.t(),
          status: String.t(),
          ready: boolean,
          subjects: [map],
          subject_count: non_neg_integer,
          subjects_by_status: map,
          pool: %{free_segments: non_neg_integer, segments: non_neg_integer},
          alerts: non_neg_integer
        }
  def health(opts \\ []) do
    statuses = detailed(opts, "health/1")
    pool = pool_info()
    alerts = length(Breakwater.alerts())
    totals = totals()

    subjects =
      for {_label, s} <- statuses do
        critical = critical?(s.subject)

        %{
          subject: safe_text(s.subject),
          status: Atom.to_string(s.status),
          breaker: Atom.to_string(s.breaker),
          backpressure: Atom.to_string(s.backpressure),
          queue_depth: non_neg(s.queue_depth),
          critical: critical
        }
      end

    by_status = Map.get(totals, :by_status, %{})
    restless = Map.get(by_status, :warning, 0) + Map.get(by_status, :active, 0)
    degraded = alerts > 0 or restless > 0

    ready = critical_open() == []

    %{
      node: Atom.to_string(node()),
      status: if(degraded, do: "degraded", else: "ok"),
      ready: ready,
      subjects: Enum.sort_by(subjects, & &1.subject),
      subject_count: Map.get(totals, :subjects, 0),
      subjects_by_status: by_status,
      pool: %{
        free_segments: Map.get(pool, :free_segments, 0),
        segments: Map.get(pool, :segments, 0)
      },
      alerts: alerts
    }
  end

  @doc """
  Subjects whose policy has `critical: true` and whose breaker is open, sorted:
  readiness fails (HTTP 503) while this is not empty.

      iex> Breakwater.Metrics.critical_open()
      []
  """
  @spec critical_open() :: [binary]
  def critical_open do
    open = safe(fn -> Native.overview(16_777_216, :open) end, [])
    Enum.sort(for {subject, _, :open, _, _} <- open, critical?(subject), do: subject)
  end

  @doc "True while the Breakwater application's supervision tree runs (liveness)."
  @spec alive?() :: boolean
  def alive? do
    case Process.whereis(Breakwater.Supervisor) do
      pid when is_pid(pid) -> Process.alive?(pid)
      nil -> false
    end
  end

  # ---- reading state -----------------------------------------------------------------

  # [{subject as text, status}] of the subjects to detail: the `max_subjects` worst,
  # or the `subjects` listed, that exist.
  defp detailed(opts, fun) do
    unless is_list(opts) and Keyword.keyword?(opts) do
      raise ArgumentError, "options of #{fun} must be a keyword list, got: #{inspect(opts)}"
    end

    names =
      case Keyword.fetch(opts, :subjects) do
        {:ok, list} when is_list(list) ->
          Enum.map(list, &Breakwater.Subject.normalize!/1)

        {:ok, other} ->
          raise ArgumentError, "subjects must be a list of subjects, got: #{inspect(other)}"

        :error ->
          max = Keyword.get(opts, :max_subjects, max_detailed())

          unless is_integer(max) and max >= 0 do
            raise ArgumentError,
                  "max_subjects must be a non-negative integer, got: #{inspect(max)}"
          end

          for {s, _, _, _, _} <- safe(fn -> Native.overview(max, :all) end, []), do: s
      end

    for subject <- names,
        %{} = status <- [safe(fn -> Native.status(subject) end, nil)],
        do: {safe_text(subject), status}
  end

  defp totals do
    case safe(&Native.totals/0, %{}) do
      %{} = totals -> totals
      _ -> %{}
    end
  end

  defp max_detailed do
    case :persistent_term.get({Breakwater, :config}, nil) do
      %{metrics_max_subjects: n} -> n
      _ -> 1_000
    end
  end

  defp pool_info do
    case safe(&Native.pool_info/0, %{}) do
      %{} = info -> info
      _ -> %{}
    end
  end

  defp critical?(subject) do
    match?(%{critical: true}, safe(fn -> PolicyStore.get(subject) end, %{}))
  end

  # Reads that fail (the application is not started, a table is gone) give `default`.
  defp safe(fun, default) do
    fun.()
  rescue
    _ -> default
  catch
    _, _ -> default
  end
end
