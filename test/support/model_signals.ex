defmodule Breakwater.ModelSignals do
  @moduledoc false
  # A pure model of one subject's overload signals and the router status they lead to
  # (the rules are the module docs of native/breakwater_core/src/signals.rs,
  # state.rs, inflight.rs, latency.rs and subject.rs), for the property test in
  # test/breakwater/signals_model_test.exs.
  #
  # The breaker stays closed (every recorded outcome is a success) and the stability
  # period is zero, so the backpressure state follows the depth alone:
  #
  #   normal   -> pressure at depth >= warning, -> dropping at depth >= critical
  #   pressure -> normal at depth <= recovery,  -> dropping at depth >= critical
  #   dropping -> normal at depth <= recovery (through recovery, at once)
  #
  # Signals (each overloaded above its threshold, calm again at or below
  # floor(recovery_threshold x threshold), unchanged between):
  #
  #   depth    - the reported depth against warning_threshold, with the state;
  #   latency  - the larger of the reported p95 and the measured one: the nearest-rank
  #              p95 of every latency recorded (the test's window is longer than the
  #              test and its latencies are below 64 ms, where the histogram is
  #              exact), recomputed by a timer visit only;
  #   inflight - the larger of the reported count and the measured one: admissions
  #              answered :ok minus records, less a base that a timer visit lowers to
  #              that difference when it is negative (records nobody admitted).
  #
  # Latency and in-flight flags move on a report, a configure and a timer visit (which
  # counts in-flight afresh and recomputes the p95 first); the depth flag on a depth
  # report and a configure.
  #
  # Commands:
  #
  #   {:report_depth, n} | {:report_latency, ms} | {:report_inflight, n}
  #   | {:admit, priority} | {:record, latency_ms | nil} | :tick | :check
  #   | {:configure, overrides}

  @retry_after_ms 30_000

  @doc false
  def new(overrides) do
    %{
      policy: policy(overrides),
      backpressure: :normal,
      depth: 0,
      flags: MapSet.new(),
      reported_latency: 0,
      measured_latency: 0,
      latencies: [],
      reported_inflight: 0,
      admitted: 0,
      recorded: 0,
      base: 0,
      rejected_overloaded: 0
    }
  end

  @doc false
  def policy(overrides) do
    p = Map.new(overrides)
    ratio = Map.get(p, :recovery_threshold, 0.5)
    warning = Map.get(p, :warning_threshold, 10_000)
    critical = Map.get(p, :critical_threshold, 50_000)

    %{
      ratio: ratio,
      warning: warning,
      critical: critical,
      recovery: floor(ratio * warning),
      shed: ceil(Map.get(p, :low_priority_shed_ratio, 0.8) * critical),
      bypass: Map.get(p, :bypass_priority, 8),
      low_max: Map.get(p, :low_priority_max, 2),
      latency: Map.get(p, :latency_overload_ms, 5_000),
      inflight: Map.get(p, :inflight_overload, 500)
    }
  end

  # ---- derived values ------------------------------------------------------------

  defp measured_inflight(m), do: max(m.admitted - m.recorded - m.base, 0)
  defp inflight(m), do: max(m.reported_inflight, measured_inflight(m))
  defp latency(m), do: max(m.reported_latency, m.measured_latency)

  @doc false
  def status(m) do
    n = MapSet.size(m.flags)

    cond do
      m.backpressure == :dropping or n >= 2 -> :active
      m.backpressure in [:pressure, :recovery] or n == 1 -> :warning
      true -> :inactive
    end
  end

  defp next_flag(_on, _value, nil, _ratio), do: false

  defp next_flag(on, value, threshold, ratio) do
    cond do
      value > threshold -> true
      value <= floor(ratio * threshold) -> false
      true -> on
    end
  end

  defp put_flag(m, signal, true), do: %{m | flags: MapSet.put(m.flags, signal)}
  defp put_flag(m, signal, false), do: %{m | flags: MapSet.delete(m.flags, signal)}

  # ---- rules ---------------------------------------------------------------------

  defp evaluate_depth(m) do
    p = m.policy
    d = m.depth

    bp =
      case m.backpressure do
        _ when d >= p.critical -> :dropping
        :normal when d >= p.warning -> :pressure
        :pressure when d <= p.recovery -> :normal
        :dropping when d <= p.recovery -> :normal
        s -> s
      end

    on = MapSet.member?(m.flags, :depth)
    %{m | backpressure: bp} |> put_flag(:depth, next_flag(on, d, p.warning, p.ratio))
  end

  defp evaluate_signals(m) do
    p = m.policy

    m
    |> put_flag(
      :latency,
      next_flag(MapSet.member?(m.flags, :latency), latency(m), p.latency, p.ratio)
    )
    |> put_flag(
      :inflight,
      next_flag(MapSet.member?(m.flags, :inflight), inflight(m), p.inflight, p.ratio)
    )
  end

  # Nearest rank: the value at rank ceil(0.95 n) of the n latencies in order.
  defp p95([]), do: 0

  defp p95(latencies) do
    sorted = Enum.sort(latencies)
    n = length(sorted)
    Enum.at(sorted, max(ceil(0.95 * n), 1) - 1)
  end

  # ---- commands ------------------------------------------------------------------

  @doc false
  # `{expected answer, model}`.
  def step(m, {:report_depth, n}), do: {:ok, evaluate_depth(%{m | depth: n})}
  def step(m, {:report_latency, ms}), do: {:ok, evaluate_signals(%{m | reported_latency: ms})}
  def step(m, {:report_inflight, n}), do: {:ok, evaluate_signals(%{m | reported_inflight: n})}

  def step(m, {:record, ms}) do
    m = %{m | recorded: m.recorded + 1}
    {:ok, if(ms, do: %{m | latencies: [ms | m.latencies]}, else: m)}
  end

  def step(m, {:admit, priority}) do
    p = m.policy

    cond do
      priority >= p.bypass ->
        {:ok, %{m | admitted: m.admitted + 1}}

      m.backpressure == :dropping ->
        {{:reject, :backpressure, @retry_after_ms}, m}

      MapSet.size(m.flags) >= 2 ->
        {{:reject, :overloaded, @retry_after_ms},
         %{m | rejected_overloaded: m.rejected_overloaded + 1}}

      priority <= p.low_max and m.depth >= p.shed ->
        {{:reject, :shed_low_priority, @retry_after_ms}, m}

      true ->
        {:ok, %{m | admitted: m.admitted + 1}}
    end
  end

  def step(m, :tick) do
    raw = m.admitted - m.recorded
    base = if raw - m.base < 0, do: raw, else: m.base
    m = %{m | base: base}
    m = if m.latencies == [], do: m, else: %{m | measured_latency: p95(m.latencies)}
    {:ok, evaluate_signals(m)}
  end

  def step(m, :check) do
    answer =
      case status(m) do
        :active -> {:backpressure_active, div(@retry_after_ms, 1000)}
        :warning -> {:backpressure_warning, 0}
        :inactive -> {:backpressure_inactive, 0}
      end

    {answer, m}
  end

  def step(m, {:configure, overrides}) do
    {:ok, %{m | policy: policy(overrides)} |> evaluate_depth() |> evaluate_signals()}
  end

  # ---- comparing with the real subject ---------------------------------------------

  @doc false
  # The fields of `Breakwater.status/1` the model predicts.
  def expected(m) do
    %{
      status: status(m),
      backpressure: m.backpressure,
      queue_depth: m.depth,
      overloaded: Enum.filter([:depth, :latency, :inflight], &MapSet.member?(m.flags, &1)),
      latency_p95_ms: latency(m),
      measured_latency_p95_ms: m.measured_latency,
      inflight: inflight(m),
      measured_inflight: measured_inflight(m),
      rejected_overloaded: m.rejected_overloaded
    }
  end

  @doc false
  def observed(real) do
    real
    |> Map.take([
      :status,
      :backpressure,
      :queue_depth,
      :overloaded,
      :latency_p95_ms,
      :measured_latency_p95_ms,
      :inflight,
      :measured_inflight
    ])
    |> Map.put(:rejected_overloaded, real.counters.rejected_overloaded)
  end
end
