defmodule Breakwater.Policy do
  @moduledoc ~S"""
  Per-subject policies: defaults, validation, normalisation and the pure helpers
  derived from a policy (recovery and shed depths, retry hints).

  A policy is a map with the atom keys listed by `keys/0`. Callers pass
  *overrides* as a map or a keyword list (Erlang callers: a map or a proplist of
  `{Key, Value}` tuples); `validate/2` merges them over a base policy (by default
  `defaults/0`), validates the result and reports every invalid key at once.

  Everything here is pure: no processes, no ETS, no side effects, and no atom is
  ever created from input.

      iex> {:ok, policy} = Breakwater.Policy.validate(warning_threshold: 100, critical_threshold: 500)
      iex> {policy.warning_threshold, policy.critical_threshold, policy.recovery_threshold}
      {100, 500, 0.5}
      iex> Breakwater.Policy.recovery_depth(policy)
      50
      iex> {:error, reasons} = Breakwater.Policy.validate(%{warning_threshold: 0, colour: :blue})
      iex> reasons
      [{:warning_threshold, 0, "an integer from 1 to 281474976710655"}, {:unknown_key, :colour}]
      iex> Breakwater.Policy.retry_after(:backpressure_active, policy, 2)
      {:reject, 60}

  From Erlang (maps or proplists):

      1> 'Elixir.Breakwater.Policy':validate([{warning_threshold, 100}, {critical_threshold, 500}]).
      {ok,#{warning_threshold => 100,critical_threshold => 500, ...}}
      2> 'Elixir.Breakwater.Policy':validate(#{window_ms => 1}).
      {error,[{window_ms,1,<<"an integer from 10 to 281474976710655">>}]}

  ## Values

    * Priorities are integers `0..9` or the names `:critical` (9), `:high` (7),
      `:normal` (5) and `:low` (1); names are normalised to integers.
    * The optional keys (`failure_rate_threshold`, `slow_call_ms`,
      `max_open_timeout_ms`, `max_segments`, `latency_overload_ms`,
      `inflight_overload`) accept `nil`, `:none` and `:undefined` for "none" (for the
      two overload thresholds: the signal is off); all three are normalised to `nil`.
    * Ratios accept integers or floats and are normalised to floats.
    * Every integer has an upper bound of `2^48 - 1` so that nothing overflows in the
      native layer.
    * In a keyword list or proplist the first occurrence of a key wins (as with
      `Keyword.get/2` and `proplists:get_value/2`), so `[{Key, New} | Old]` overrides.
    * `priorities` given in the overrides replaces the base's map as a whole.

  ## Errors

  `validate/2` returns `{:error, reasons}` where each reason is
  `{key, value, expected}` (a bad value; `expected` is a human description) or
  `{:unknown_key, key}`. `format_errors/1` turns them into a readable message.
  """

  @max_int 281_474_976_710_655
  # retry_after_seconds * 1000 (retry_after_ms) must fit the integer bound too
  @max_retry_after_seconds div(@max_int, 1000)
  @max_event_types 1024
  @max_event_type_bytes 256

  @keys [
    :warning_threshold,
    :critical_threshold,
    :recovery_threshold,
    :stability_ms,
    :low_priority_shed_ratio,
    :bypass_priority,
    :low_priority_max,
    :priorities,
    :failure_threshold,
    :failure_rate_threshold,
    :window_ms,
    :minimum_calls,
    :slow_call_ms,
    :open_timeout_ms,
    :max_open_timeout_ms,
    :half_open_max_calls,
    :success_threshold,
    :call_timeout_ms,
    :health_check_ms,
    :drop_policy,
    :max_segments,
    :overflow,
    :critical,
    :share,
    :latency_overload_ms,
    :inflight_overload,
    :latency_window_ms,
    :retry_after_seconds,
    :max_retry_attempts,
    :backoff_strategy,
    :alert_on_active,
    :alert_on_warning,
    :alert_escalate_after_ms
  ]

  @defaults %{
    warning_threshold: 10_000,
    critical_threshold: 50_000,
    recovery_threshold: 0.5,
    stability_ms: 1_000,
    low_priority_shed_ratio: 0.8,
    bypass_priority: 8,
    low_priority_max: 2,
    priorities: %{},
    failure_threshold: 5,
    failure_rate_threshold: nil,
    window_ms: 10_000,
    minimum_calls: 20,
    slow_call_ms: nil,
    open_timeout_ms: 30_000,
    max_open_timeout_ms: nil,
    half_open_max_calls: 3,
    success_threshold: 3,
    call_timeout_ms: 5_000,
    health_check_ms: 1_000,
    drop_policy: :drop_newest,
    max_segments: nil,
    overflow: :drop,
    critical: false,
    share: :none,
    latency_overload_ms: 5_000,
    inflight_overload: 500,
    latency_window_ms: 60_000,
    retry_after_seconds: 30,
    max_retry_attempts: 3,
    backoff_strategy: :exponential,
    alert_on_active: true,
    alert_on_warning: false,
    alert_escalate_after_ms: 300_000
  }

  @priority_names %{critical: 9, high: 7, normal: 5, low: 1}
  @none_values [nil, :none, :undefined]
  @statuses [:backpressure_inactive, :backpressure_warning, :backpressure_active]

  @policy_expected "a map or keyword list of policy keys"
  @priority_names_text ":critical, :high, :normal, :low"

  @typedoc "A priority: an integer 0..9 (higher is more important)."
  @type priority :: 0..9

  @typedoc "A priority name: `:critical` = 9, `:high` = 7, `:normal` = 5, `:low` = 1."
  @type priority_name :: :critical | :high | :normal | :low

  @typedoc "A validated, normalised policy (every key of `keys/0`)."
  @type t :: %{
          warning_threshold: pos_integer,
          critical_threshold: pos_integer,
          recovery_threshold: float,
          stability_ms: non_neg_integer,
          low_priority_shed_ratio: float,
          bypass_priority: 1..9,
          low_priority_max: priority,
          priorities: %{optional(binary) => priority},
          failure_threshold: pos_integer,
          failure_rate_threshold: float | nil,
          window_ms: pos_integer,
          minimum_calls: pos_integer,
          slow_call_ms: pos_integer | nil,
          open_timeout_ms: pos_integer,
          max_open_timeout_ms: pos_integer | nil,
          half_open_max_calls: 1..255,
          success_threshold: 1..255,
          call_timeout_ms: pos_integer,
          health_check_ms: pos_integer,
          drop_policy: :drop_newest | :drop_oldest,
          max_segments: pos_integer | nil,
          overflow: :drop | :disk,
          critical: boolean,
          share: :none | :breaker,
          latency_overload_ms: pos_integer | nil,
          inflight_overload: pos_integer | nil,
          latency_window_ms: pos_integer,
          retry_after_seconds: non_neg_integer,
          max_retry_attempts: non_neg_integer,
          backoff_strategy: :exponential | :linear | :constant,
          alert_on_active: boolean,
          alert_on_warning: boolean,
          alert_escalate_after_ms: pos_integer
        }

  @typedoc "Policy overrides as given by callers: a map or a keyword list / proplist."
  @type overrides :: map | [{atom, term}]

  @typedoc """
  A validation problem: `{key, value_given, expected}` or `{:unknown_key, key}`.
  """
  @type reason :: {atom, term, String.t()} | {:unknown_key, term}

  @typedoc "The status returned by `router_intake_backpressure:check_backpressure/1`."
  @type status :: :backpressure_inactive | :backpressure_warning | :backpressure_active

  @doc """
  The default policy, with every key of `keys/0`.

      iex> Breakwater.Policy.defaults().warning_threshold
      10000
  """
  @spec defaults() :: t
  def defaults, do: @defaults

  @doc """
  The valid policy keys, in the order used to report errors.
  """
  @spec keys() :: [atom]
  def keys, do: @keys

  @doc """
  The largest integer accepted for any integer key (`2^48 - 1`).
  """
  @spec max_integer() :: pos_integer
  def max_integer, do: @max_int

  @doc """
  Merges `input` over `base` (default `defaults/0`) and validates the result.

  `input` (and `base`) is a map or a keyword list / proplist with atom keys. Returns
  `{:ok, policy}` with every key present and normalised (priority names → integers,
  ratios → floats, "none" values → `nil`, `priorities` → a map of binary → integer),
  or `{:error, reasons}` listing every invalid key, ordered as in `keys/0` with
  unknown keys last.

      iex> Breakwater.Policy.validate(%{bypass_priority: :high}) |> elem(1) |> Map.get(:bypass_priority)
      7
      iex> Breakwater.Policy.validate([{"warning_threshold", 1}])
      {:error, [{:invalid_policy, [{"warning_threshold", 1}], "a map or keyword list of policy keys"}]}
  """
  @spec validate(overrides | term, overrides | t) :: {:ok, t} | {:error, [reason, ...]}
  def validate(input, base \\ @defaults) do
    with {:ok, base_map} <- normalize_input(base),
         {:ok, input_map} <- normalize_input(input) do
      @defaults
      |> Map.merge(base_map)
      |> Map.merge(input_map)
      |> check_all()
    end
  end

  @doc """
  Formats validation reasons as a human message, one line per reason naming the key,
  the value given and what was expected.

      iex> Breakwater.Policy.format_errors([{:window_ms, 5, "an integer from 10 to 281474976710655"}])
      "window_ms: got 5, expected an integer from 10 to 281474976710655"
  """
  @spec format_errors([reason] | term) :: String.t()
  def format_errors(reasons) do
    case proper_list(reasons) do
      {:ok, list} -> Enum.map_join(list, "\n", &format_reason/1)
      :error -> format_reason(reasons)
    end
  end

  @doc """
  The map handed to the native layer for a validated policy.

  Keys: the thresholds and breaker keys, the overload signals' keys,
  `retry_after_ms` (= `retry_after_seconds * 1000`), `drop_policy`, `overflow` and
  `max_segments`; `priorities` becomes a sorted list of `{binary, integer}` tuples
  and ratios are floats.
  """
  @spec to_native(t) :: map
  def to_native(%{} = policy) do
    %{
      warning_threshold: policy.warning_threshold,
      critical_threshold: policy.critical_threshold,
      recovery_threshold: to_float(policy.recovery_threshold),
      stability_ms: policy.stability_ms,
      low_priority_shed_ratio: to_float(policy.low_priority_shed_ratio),
      bypass_priority: policy.bypass_priority,
      low_priority_max: policy.low_priority_max,
      priorities: policy.priorities |> Enum.to_list() |> Enum.sort(),
      failure_threshold: policy.failure_threshold,
      failure_rate_threshold: to_float_or_nil(policy.failure_rate_threshold),
      window_ms: policy.window_ms,
      minimum_calls: policy.minimum_calls,
      slow_call_ms: policy.slow_call_ms,
      open_timeout_ms: policy.open_timeout_ms,
      max_open_timeout_ms: policy.max_open_timeout_ms,
      half_open_max_calls: policy.half_open_max_calls,
      success_threshold: policy.success_threshold,
      call_timeout_ms: policy.call_timeout_ms,
      retry_after_ms: policy.retry_after_seconds * 1000,
      drop_policy: policy.drop_policy,
      overflow: policy.overflow,
      max_segments: policy.max_segments,
      latency_overload_ms: policy.latency_overload_ms,
      inflight_overload: policy.inflight_overload,
      latency_window_ms: policy.latency_window_ms
    }
  end

  @doc """
  Resolves a priority: an integer `0..9` or a name (`:critical` = 9, `:high` = 7,
  `:normal` = 5, `:low` = 1). The policy argument is reserved for future use.

      iex> Breakwater.Policy.priority(:high)
      {:ok, 7}
      iex> Breakwater.Policy.priority(10)
      :error
  """
  @spec priority(term, t | term) :: {:ok, priority} | :error
  def priority(term, policy \\ @defaults)
  def priority(p, _policy) when is_integer(p) and p >= 0 and p <= 9, do: {:ok, p}

  def priority(name, _policy) when is_atom(name) do
    case @priority_names do
      %{^name => p} -> {:ok, p}
      _ -> :error
    end
  end

  def priority(_term, _policy), do: :error

  @doc """
  The recovery depth of a validated policy: `floor(recovery_threshold ×
  warning_threshold)`. At or below it a subject counts as recovered.

      iex> Breakwater.Policy.recovery_depth(Breakwater.Policy.defaults())
      5000
  """
  @spec recovery_depth(t) :: non_neg_integer
  def recovery_depth(%{recovery_threshold: r, warning_threshold: w}), do: floor(r * w)

  @doc """
  The depth from which low priorities are shed: `ceil(low_priority_shed_ratio ×
  critical_threshold)`.

      iex> Breakwater.Policy.shed_depth(Breakwater.Policy.defaults())
      40000
  """
  @spec shed_depth(t) :: non_neg_integer
  def shed_depth(%{low_priority_shed_ratio: r, critical_threshold: c}), do: ceil(r * c)

  @doc """
  Applies a policy to a backpressure status (`apply_backpressure_policy` of
  `:router_intake_backpressure`),
  for retry `attempt` (an integer ≥ 1; the 2-arity form uses attempt 1).

    * `:backpressure_inactive` and `:backpressure_warning` → `:continue`;
    * `:backpressure_active` → `{:reject, seconds}` where `seconds` follows
      `backoff_strategy` from `retry_after_seconds` (`base`): `:exponential` =
      `base × 2^(attempt - 1)`, `:linear` = `base × attempt`, `:constant` = `base`
      (saturating at `#{@max_retry_after_seconds}` seconds); an attempt above
      `max_retry_attempts` gives `{:error, :max_retry_attempts_exceeded}`;
    * a bad status, attempt or policy value → `{:error, reasons}` (same reason shape
      as `validate/2`).

  `policy` is a policy map or keyword list; missing keys take their defaults. With
  `max_retry_attempts: 0` no attempt is allowed, so an active status gives
  `{:error, :max_retry_attempts_exceeded}` even for attempt 1.

      iex> policy = Breakwater.Policy.defaults()
      iex> Breakwater.Policy.retry_after(:backpressure_warning, policy)
      :continue
      iex> Breakwater.Policy.retry_after(:backpressure_active, policy, 3)
      {:reject, 120}
      iex> Breakwater.Policy.retry_after(:backpressure_active, policy, 4)
      {:error, :max_retry_attempts_exceeded}
  """
  @spec retry_after(status | term, t | overrides | term, pos_integer | term) ::
          :continue
          | {:reject, non_neg_integer}
          | {:error, :max_retry_attempts_exceeded}
          | {:error, [reason, ...]}
  def retry_after(status, policy, attempt \\ 1) do
    status_errors =
      if status in @statuses,
        do: [],
        else: [{:status, status, "one of " <> Enum.map_join(@statuses, ", ", &inspect/1)}]

    attempt_errors =
      if is_integer(attempt) and attempt >= 1,
        do: [],
        else: [{:attempt, attempt, "an integer greater than or equal to 1"}]

    case retry_settings(policy) do
      {:ok, settings} when status_errors == [] and attempt_errors == [] ->
        apply_retry(status, settings, attempt)

      {:ok, _settings} ->
        {:error, status_errors ++ attempt_errors}

      {:error, policy_errors} ->
        {:error, status_errors ++ attempt_errors ++ policy_errors}
    end
  end

  ## Retry helpers

  defp apply_retry(:backpressure_active, {base, max_attempts, strategy}, attempt) do
    if attempt > max_attempts do
      {:error, :max_retry_attempts_exceeded}
    else
      {:reject, backoff(strategy, base, attempt)}
    end
  end

  defp apply_retry(_status, _settings, _attempt), do: :continue

  defp backoff(:constant, base, _attempt), do: base
  defp backoff(:linear, base, attempt), do: saturate(base * min(attempt, @max_int))
  defp backoff(:exponential, 0, _attempt), do: 0

  defp backoff(:exponential, base, attempt) when attempt - 1 >= 48,
    do: saturate(base * @max_int)

  defp backoff(:exponential, base, attempt), do: saturate(base * Bitwise.bsl(1, attempt - 1))

  defp saturate(seconds), do: min(seconds, @max_retry_after_seconds)

  defp retry_settings(policy) do
    with {:ok, map} <- normalize_input(policy) do
      get = fn key -> Map.get(map, key, Map.fetch!(@defaults, key)) end

      results = [
        check_key(:retry_after_seconds, get.(:retry_after_seconds), %{}),
        check_key(:max_retry_attempts, get.(:max_retry_attempts), %{}),
        check_key(:backoff_strategy, get.(:backoff_strategy), %{})
      ]

      case results do
        [{:ok, base}, {:ok, max}, {:ok, strategy}] ->
          {:ok, {base, max, strategy}}

        _ ->
          {:error,
           Enum.flat_map(results, fn
             {:ok, _} -> []
             {:error, rs} -> rs
           end)}
      end
    end
  end

  ## Input normalisation

  # A map is taken as is (non-atom keys are reported as unknown keys later); a list
  # must be a proper list of {atom, value} tuples, first occurrence winning.
  defp normalize_input(map) when is_map(map), do: {:ok, map}

  defp normalize_input(list) when is_list(list) do
    case pairs_to_map(list, %{}) do
      {:ok, map} -> {:ok, map}
      :error -> {:error, [{:invalid_policy, list, @policy_expected}]}
    end
  end

  defp normalize_input(other), do: {:error, [{:invalid_policy, other, @policy_expected}]}

  defp pairs_to_map([], acc), do: {:ok, acc}

  defp pairs_to_map([{key, value} | rest], acc) when is_atom(key),
    do: pairs_to_map(rest, Map.put_new(acc, key, value))

  defp pairs_to_map(_other, _acc), do: :error

  @doc false
  # `{:ok, list}` for a proper list, `:error` for anything else (improper lists
  # included). Also used by `Breakwater.Config`.
  @spec proper_list(term) :: {:ok, list} | :error
  def proper_list(list), do: proper_list(list, [])
  defp proper_list([], acc), do: {:ok, Enum.reverse(acc)}
  defp proper_list([h | t], acc), do: proper_list(t, [h | acc])
  defp proper_list(_other, _acc), do: :error

  ## Validation

  defp check_all(merged) do
    {valid, errors} =
      Enum.reduce(@keys, {%{}, []}, fn key, {valid, errors} ->
        case check_key(key, Map.fetch!(merged, key), valid) do
          {:ok, value} -> {Map.put(valid, key, value), errors}
          {:error, reasons} -> {valid, [reasons | errors]}
        end
      end)

    unknown =
      merged
      |> Map.drop(@keys)
      |> Map.keys()
      |> Enum.sort()
      |> Enum.map(&{:unknown_key, &1})

    case Enum.concat(Enum.reverse(errors)) ++ unknown do
      [] -> {:ok, valid}
      reasons -> {:error, reasons}
    end
  end

  # `valid` holds the already validated (normalised) values of earlier keys, for the
  # rules that relate two keys.
  defp check_key(:warning_threshold = key, value, _valid), do: int(key, value, 1, @max_int)

  defp check_key(:critical_threshold = key, value, valid) do
    case valid do
      %{warning_threshold: w} ->
        int(
          key,
          value,
          w + 1,
          @max_int,
          "an integer greater than warning_threshold (#{w}) and at most #{@max_int}"
        )

      _ ->
        int(key, value, 2, @max_int)
    end
  end

  defp check_key(:recovery_threshold = key, value, valid) do
    base = "a number greater than 0 and less than 1"

    cond do
      not (is_number(value) and value > 0 and value < 1) ->
        error(key, value, base)

      match?(%{warning_threshold: _}, valid) and
          floor(value * valid.warning_threshold) >= valid.warning_threshold ->
        error(
          key,
          value,
          base <>
            " whose recovery depth floor(recovery_threshold * warning_threshold) is below " <>
            "warning_threshold (#{valid.warning_threshold})"
        )

      true ->
        {:ok, to_float(value)}
    end
  end

  defp check_key(:stability_ms = key, value, _valid), do: int(key, value, 0, @max_int)

  defp check_key(:low_priority_shed_ratio = key, value, _valid) do
    if is_number(value) and value > 0 and value <= 1,
      do: {:ok, to_float(value)},
      else: error(key, value, "a number greater than 0 and at most 1")
  end

  defp check_key(:bypass_priority = key, value, _valid) do
    case priority(value) do
      {:ok, p} when p >= 1 -> {:ok, p}
      _ -> error(key, value, "a priority from 1 to 9 or one of #{@priority_names_text}")
    end
  end

  defp check_key(:low_priority_max = key, value, valid) do
    case {priority(value), valid} do
      {{:ok, p}, %{bypass_priority: b}} when p < b ->
        {:ok, p}

      {_, %{bypass_priority: b}} ->
        error(
          key,
          value,
          "a priority from 0 to 9 or one of #{@priority_names_text}, " <>
            "less than bypass_priority (#{b})"
        )

      {{:ok, p}, _} ->
        {:ok, p}

      _ ->
        error(key, value, "a priority from 0 to 9 or one of #{@priority_names_text}")
    end
  end

  defp check_key(:priorities, value, _valid), do: check_priorities(value)

  defp check_key(:failure_threshold = key, value, _valid), do: int(key, value, 1, @max_int)

  defp check_key(:failure_rate_threshold = key, value, _valid) do
    cond do
      value in @none_values -> {:ok, nil}
      is_number(value) and value > 0 and value <= 1 -> {:ok, to_float(value)}
      true -> error(key, value, "nil (none) or a number greater than 0 and at most 1")
    end
  end

  defp check_key(:window_ms = key, value, _valid), do: int(key, value, 10, @max_int)
  defp check_key(:minimum_calls = key, value, _valid), do: int(key, value, 1, @max_int)
  defp check_key(:slow_call_ms = key, value, _valid), do: optional_int(key, value, 1)
  defp check_key(:open_timeout_ms = key, value, _valid), do: int(key, value, 1, @max_int)

  defp check_key(:max_open_timeout_ms = key, value, valid) do
    case valid do
      %{open_timeout_ms: open} ->
        if value in @none_values do
          {:ok, nil}
        else
          int(
            key,
            value,
            open,
            @max_int,
            "nil (none) or an integer from open_timeout_ms (#{open}) to #{@max_int}"
          )
        end

      _ ->
        optional_int(key, value, 1)
    end
  end

  defp check_key(:half_open_max_calls = key, value, _valid), do: int(key, value, 1, 255)
  defp check_key(:success_threshold = key, value, _valid), do: int(key, value, 1, 255)
  defp check_key(:call_timeout_ms = key, value, _valid), do: int(key, value, 1, @max_int)
  defp check_key(:health_check_ms = key, value, _valid), do: int(key, value, 1, @max_int)

  defp check_key(:drop_policy = key, value, _valid),
    do: one_of(key, value, [:drop_newest, :drop_oldest])

  defp check_key(:max_segments = key, value, _valid), do: optional_int(key, value, 1)
  defp check_key(:overflow = key, value, _valid), do: one_of(key, value, [:drop, :disk])
  defp check_key(:critical = key, value, _valid), do: boolean(key, value)
  defp check_key(:share = key, value, _valid), do: one_of(key, value, [:none, :breaker])
  defp check_key(:latency_overload_ms = key, value, _valid), do: optional_int(key, value, 1)
  defp check_key(:inflight_overload = key, value, _valid), do: optional_int(key, value, 1)
  defp check_key(:latency_window_ms = key, value, _valid), do: int(key, value, 100, @max_int)

  defp check_key(:retry_after_seconds = key, value, _valid),
    do:
      int(
        key,
        value,
        0,
        @max_retry_after_seconds,
        "an integer from 0 to #{@max_retry_after_seconds} " <>
          "(retry_after_seconds * 1000 must stay within #{@max_int})"
      )

  defp check_key(:max_retry_attempts = key, value, _valid), do: int(key, value, 0, @max_int)

  defp check_key(:backoff_strategy = key, value, _valid),
    do: one_of(key, value, [:exponential, :linear, :constant])

  defp check_key(:alert_on_active = key, value, _valid), do: boolean(key, value)
  defp check_key(:alert_on_warning = key, value, _valid), do: boolean(key, value)

  defp check_key(:alert_escalate_after_ms = key, value, _valid),
    do: int(key, value, 1, @max_int)

  defp int(key, value, min, max),
    do: int(key, value, min, max, "an integer from #{min} to #{max}")

  defp int(_key, value, min, max, _expected)
       when is_integer(value) and value >= min and value <= max,
       do: {:ok, value}

  defp int(key, value, _min, _max, expected), do: error(key, value, expected)

  defp optional_int(key, value, min) do
    if value in @none_values,
      do: {:ok, nil},
      else: int(key, value, min, @max_int, "nil (none) or an integer from #{min} to #{@max_int}")
  end

  defp one_of(key, value, allowed) do
    if value in allowed,
      do: {:ok, value},
      else: error(key, value, "one of " <> Enum.map_join(allowed, ", ", &inspect/1))
  end

  defp boolean(_key, value) when is_boolean(value), do: {:ok, value}
  defp boolean(key, value), do: error(key, value, "a boolean (true or false)")

  defp error(key, value, expected), do: {:error, [{key, value, expected}]}

  ## priorities

  @priorities_expected "a map or list of {event_type, priority} pairs " <>
                         "(at most #{@max_event_types} entries)"

  defp check_priorities(map) when is_map(map) do
    if map_size(map) > @max_event_types do
      error(:priorities, map, too_many_event_types(map_size(map)))
    else
      map |> Map.to_list() |> Enum.sort() |> check_event_types()
    end
  end

  defp check_priorities(list) when is_list(list) do
    case bounded_list(list, @max_event_types + 1, []) do
      {:ok, entries} when length(entries) > @max_event_types ->
        error(:priorities, list, too_many_event_types("more than #{@max_event_types}"))

      {:ok, entries} ->
        check_event_types(entries)

      :error ->
        error(:priorities, list, @priorities_expected)
    end
  end

  defp check_priorities(other), do: error(:priorities, other, @priorities_expected)

  defp too_many_event_types(count),
    do: "at most #{@max_event_types} event types (#{count} given)"

  # Takes at most `limit` elements of a proper list; :error if improper.
  defp bounded_list(_list, 0, acc), do: {:ok, Enum.reverse(acc)}
  defp bounded_list([], _limit, acc), do: {:ok, Enum.reverse(acc)}
  defp bounded_list([h | t], limit, acc), do: bounded_list(t, limit - 1, [h | acc])
  defp bounded_list(_improper, _limit, _acc), do: :error

  defp check_event_types(entries) do
    {map, errors} =
      Enum.reduce(entries, {%{}, []}, fn entry, {map, errors} ->
        case check_event_type(entry, map) do
          {:ok, event_type, p} -> {Map.put(map, event_type, p), errors}
          {:error, reason} -> {map, [reason | errors]}
        end
      end)

    case errors do
      [] -> {:ok, map}
      _ -> {:error, Enum.reverse(errors)}
    end
  end

  defp check_event_type({event_type, p} = entry, seen) do
    with {:ok, name} <- event_type_name(event_type),
         :ok <- unique_event_type(name, seen),
         {:ok, priority} <- event_priority(name, p) do
      {:ok, name, priority}
    else
      {:error, expected} -> {:error, {:priorities, entry, expected}}
    end
  end

  defp check_event_type(entry, _seen),
    do: {:error, {:priorities, entry, "an {event_type, priority} pair"}}

  defp event_type_name(name) when is_atom(name), do: event_type_name(Atom.to_string(name))

  defp event_type_name(name)
       when is_binary(name) and byte_size(name) >= 1 and
              byte_size(name) <= @max_event_type_bytes,
       do: {:ok, name}

  defp event_type_name(_name),
    do: {:error, "an event type: a binary of 1 to #{@max_event_type_bytes} bytes or an atom"}

  defp unique_event_type(name, seen) do
    if is_map_key(seen, name),
      do:
        {:error, "event type #{inspect(name)} given only once (atoms are converted to binaries)"},
      else: :ok
  end

  defp event_priority(name, p) do
    case priority(p) do
      {:ok, priority} ->
        {:ok, priority}

      :error ->
        {:error,
         "a priority from 0 to 9 or one of #{@priority_names_text} " <>
           "for event type #{inspect(name)}"}
    end
  end

  ## Formatting

  defp format_reason({:unknown_key, key}) do
    "#{format_key(key)}: unknown key#{atom_hint(key)}, expected one of " <>
      Enum.map_join(@keys, ", ", &Atom.to_string/1)
  end

  defp format_reason({:invalid_policy, value, expected}) when is_binary(expected),
    do: "policy: got #{inspect_value(value)}, expected #{expected}"

  defp format_reason({key, value, expected}) when is_binary(expected),
    do: "#{format_key(key)}: got #{inspect_value(value)}, expected #{expected}"

  defp format_reason(other), do: inspect_value(other)

  # A string spelling of a valid key: keys must be atoms (no atom is made from input).
  defp atom_hint(key) when is_binary(key) do
    if key in Enum.map(@keys, &Atom.to_string/1), do: " (keys must be atoms: :#{key})", else: ""
  end

  defp atom_hint(_key), do: ""

  defp format_key(key) when is_atom(key), do: Atom.to_string(key)
  defp format_key(key), do: inspect_value(key)

  @doc false
  # A value as error messages show it: bounded, whatever the caller passed. Also used by
  # `Breakwater.Config`.
  @spec inspect_value(term) :: String.t()
  def inspect_value(value), do: inspect(value, limit: 20, printable_limit: 256)

  defp to_float(value) when is_float(value), do: value
  defp to_float(value) when is_integer(value), do: value * 1.0

  defp to_float_or_nil(nil), do: nil
  defp to_float_or_nil(value), do: to_float(value)
end
