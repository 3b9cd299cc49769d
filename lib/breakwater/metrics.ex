defmodule Breakwater.Metrics do
  @moduledoc """
  Metrics in the Prometheus text exposition format 0.0.4, the health summary
  and the readiness rule of the HTTP endpoint (`Breakwater.HTTP`).

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
  before escaping), so equal states give equal text. Per-subject metrics carry a
  `subject` label; `breakwater_circuit_state` is 0 closed, 1 half_open, 2 open;
  `breakwater_backpressure_state` is 0 normal, 1 pressure, 2 dropping, 3 recovery;
  `breakwater_backpressure_status` is the router status, 0 inactive, 1 warning,
  2 active. `metric_names/0` lists every family with its type and help text.

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
    {"pool_exhausted", :rejected_pool_exhausted},
    {"shed_low_priority", :rejected_shed_low_priority}
  ]

  @breaker_values %{closed: 0, half_open: 1, open: 2}
  @backpressure_values %{normal: 0, pressure: 1, dropping: 2, recovery: 3}
  @status_values %{inactive: 0, warning: 1, active: 2}

  # Per-subject families: {name, type, help, how to read the value from a status map}.
  # {:counter, key} reads status.counters[key]; {:field, key} reads status[key].
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
     "Queue depth: the larger of the reported depth and the events spooled in memory.",
     {:field, :queue_depth}},
    {"breakwater_reported_depth", :gauge, "Queue depth last reported by the router.",
     {:field, :reported_depth}},
    {"breakwater_high_watermark", :gauge, "Highest queue depth seen.", {:field, :high_watermark}},
    {"breakwater_spooled_events", :gauge, "Events waiting in the memory spool.",
     {:counter, :spooled_events}},
    {"breakwater_spooled_bytes", :gauge, "Bytes waiting in the memory spool.",
     {:counter, :spooled_bytes}},
    {"breakwater_in_flight_events", :gauge, "Events taken by a drain and not yet acked.",
     {:counter, :in_flight_events}},
    {"breakwater_segments", :gauge, "Ring pool segments held by the subject.",
     {:field, :segments}},
    {"breakwater_disk_pending", :gauge, "1 while events of the subject wait in the disk spool.",
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
    {"breakwater_circuit_opens_total", :counter, "Times the breaker opened.",
     {:counter, :circuit_opens}},
    {"breakwater_recovery_attempts_total", :counter, "Times the breaker entered half_open.",
     {:counter, :recovery_attempts}},
    {"breakwater_successful_recoveries_total", :counter,
     "Times the breaker closed again from half_open.", {:counter, :successful_recoveries}},
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
     "Events returned to the spool by a nack or a dead taker.", {:counter, :redelivered_events}},
    {"breakwater_overflow_events_total", :counter,
     "Events sent to the disk spool because the ring pool was full.",
     {:counter, :overflow_events}},
    {"breakwater_overflow_bytes_total", :counter,
     "Bytes sent to the disk spool because the ring pool was full.", {:counter, :overflow_bytes}},
    {"breakwater_dropped_events_total", :counter,
     "Events dropped by the drop policy (drop_newest and drop_oldest).",
     {:counter, :dropped_events}},
    {"breakwater_dropped_bytes_total", :counter,
     "Bytes dropped by the drop policy (drop_newest and drop_oldest).",
     {:counter, :dropped_bytes}}
  ]

  @rejected_help "Calls and events refused, by reason: circuit_open, half_open_limit, " <>
                   "backpressure, shed_low_priority (admission) and pool_exhausted (enqueue)."

  @global_families [
    {"breakwater_ring_pool_free_segments", :gauge, "Free segments in the ring pool.",
     :free_segments},
    {"breakwater_ring_pool_segments", :gauge, "Segments in the ring pool.", :segments},
    {"breakwater_ring_pool_footprint_bytes", :gauge, "Memory allocated for the ring pool.",
     :footprint_bytes},
    {"breakwater_subjects", :gauge, "Subjects known to the registry.", :subjects},
    {"breakwater_max_subjects", :gauge, "Most subjects the registry accepts.", :max_subjects}
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

    others = [
      {"router_backpressure_events_total", :counter,
       "Backpressure and breaker events recorded, by subject and event type."},
      {"router_backpressure_recovery_total", :counter,
       "Recoveries (active to inactive, active to warning, warning to inactive), by subject."},
      {"breakwater_rejected_total", :counter, @rejected_help},
      {"breakwater_alerts", :gauge, "Active alerts (Breakwater.alerts/0)."}
    ]

    Enum.sort(subject ++ global ++ others)
  end

  @doc """
  The Prometheus text exposition (format 0.0.4) of every subject and of the ring pool.
  Serve it with content type `text/plain; version=0.0.4; charset=utf-8`.
  """
  @spec prometheus() :: String.t()
  def prometheus do
    subjects = subject_statuses()
    pool = pool_info()
    help = Map.new(metric_names(), fn {name, type, help} -> {name, {type, help}} end)

    per_subject =
      for {name, _type, _help, source} <- @subject_families do
        {name, for({label, status} <- subjects, do: {[subject: label], read(status, source)})}
      end

    rejected =
      for {label, status} <- subjects, {reason, key} <- @rejected_reasons do
        {[subject: label, reason: reason], counter(status, key)}
      end

    global =
      for {name, _type, _help, key} <- @global_families do
        {name, if(is_map_key(pool, key), do: [{[], Map.fetch!(pool, key)}], else: [])}
      end

    families =
      [
        {"router_backpressure_events_total", event_samples()},
        {"router_backpressure_recovery_total", recovery_samples()},
        {"breakwater_rejected_total", rejected},
        {"breakwater_alerts", [{[], length(Breakwater.alerts())}]}
      ] ++ per_subject ++ global

    families
    |> Enum.sort_by(&elem(&1, 0))
    |> Enum.map(fn {name, samples} ->
      {type, text} = Map.fetch!(help, name)
      family(name, type, text, samples)
    end)
    |> IO.iodata_to_binary()
  end

  defp family(name, type, help, samples) do
    [
      ["# HELP ", name, ?\s, help, ?\n],
      ["# TYPE ", name, ?\s, Atom.to_string(type), ?\n],
      samples
      |> Enum.sort_by(fn {labels, _} -> Keyword.values(labels) end)
      |> Enum.map(fn {labels, value} -> [name, labels(labels), ?\s, number(value), ?\n] end)
    ]
  end

  defp labels([]), do: []

  defp labels(labels) do
    inner =
      labels
      |> Enum.map(fn {k, v} -> [Atom.to_string(k), "=\"", escape_label(v), ?"] end)
      |> Enum.intersperse(?,)

    [?{, inner, ?}]
  end

  defp number(n) when is_integer(n), do: Integer.to_string(n)
  defp number(true), do: "1"
  defp number(false), do: "0"

  defp read(status, {:field, key}), do: non_neg(Map.get(status, key))
  defp read(status, {:counter, key}), do: counter(status, key)
  defp read(status, {:bool, key}), do: if(Map.get(status, key) == true, do: 1, else: 0)
  defp read(status, {:enum, key, values}), do: Map.get(values, Map.get(status, key), 0)
  defp read(status, :critical), do: if(critical?(status.subject), do: 1, else: 0)

  defp counter(status, key), do: non_neg(Map.get(Map.get(status, :counters, %{}), key))

  defp non_neg(n) when is_integer(n), do: n
  defp non_neg(_), do: 0

  defp event_samples do
    for {subject, type, n} <- safe(&History.event_totals/0, []) do
      {[subject: safe_text(subject), event_type: safe_text(type)], n}
    end
  end

  defp recovery_samples do
    for {subject, n} <- safe(&History.recovery_totals/0, []),
        do: {[subject: safe_text(subject)], n}
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

    * `status` - `"ok"`, or `"degraded"` while any subject's status is not inactive
      (breaker open or half-open, backpressure other than normal) or any alert is
      active;
    * `ready` - false while a subject whose policy has `critical: true` has its
      breaker open (see `critical_open/0`);
    * `subjects` - one map per subject (sorted): `subject` (as text, see
      `safe_text/1`), `status`, `breaker`, `backpressure`, `queue_depth`, `critical`;
    * `pool` - `free_segments`, `segments`;
    * `alerts` - the number of active alerts (`Breakwater.alerts/0`).
  """
  @spec health() :: %{
          status: String.t(),
          ready: boolean,
          subjects: [map],
          pool: %{free_segments: non_neg_integer, segments: non_neg_integer},
          alerts: non_neg_integer
        }
  def health do
    statuses = subject_statuses()
    pool = pool_info()
    alerts = length(Breakwater.alerts())

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

    degraded = alerts > 0 or Enum.any?(statuses, fn {_, s} -> s.status != :inactive end)

    ready = not Enum.any?(subjects, fn s -> s.critical and s.breaker == "open" end)

    %{
      status: if(degraded, do: "degraded", else: "ok"),
      ready: ready,
      subjects: subjects,
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
    for subject <- subjects(),
        critical?(subject),
        %{breaker: :open} <- [Native.status(subject)],
        do: subject
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

  defp subjects, do: safe(&Native.subjects/0, []) |> Enum.sort()

  # [{subject as text, status}] sorted by subject, for the subjects that still exist.
  defp subject_statuses do
    for subject <- subjects(),
        %{} = status <- [safe(fn -> Native.status(subject) end, nil)],
        do: {safe_text(subject), status}
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
