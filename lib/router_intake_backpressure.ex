defmodule :router_intake_backpressure do
  @moduledoc ~S"""
  The router's intake module, callable from Erlang as `router_intake_backpressure`.
  Its names and shapes are a public contract.

  ```erlang
  1> router_intake_backpressure:check_backpressure(<<"ledger">>).
  {backpressure_inactive,0}
  2> router_intake_backpressure:get_default_backpressure_policy().
  #{retry_after_seconds => 30, max_retry_attempts => 3, backoff_strategy => exponential, ...}
  3> router_intake_backpressure:apply_backpressure_policy(backpressure_active,
  ..     router_intake_backpressure:get_backpressure_policy(<<"ledger">>), 2).
  {reject,60}
  ```

  `check_backpressure/1` is the hot path: one native call that reads the subject's
  state word; history, events and recovery are written only when the call itself made
  a transition (e.g. the open time of a breaker ran out), exactly once. It is a read:
  an unknown subject answers `{backpressure_inactive, 0}` and is not created (nor by
  the other reads here; `get_detailed_backpressure_status/1` of an unknown subject is
  `{error, unknown_subject}`). The `track_*` functions write history, and create the
  subject like any write.

  Statuses: `backpressure_active` when the subject is dropping or its breaker is open;
  `backpressure_warning` when under pressure, recovering or half-open;
  `backpressure_inactive` otherwise. `RetryAfterMs` is 0 unless active.

  Bad arguments raise `ArgumentError` naming the argument (`validate_*` and
  `apply_*` return `{error, Reasons}` instead).

  "None" and "never" are `undefined` in every map this module returns (policy keys such
  as `slow_call_ms`, `last_recovery_at` before a first recovery...), as Erlang code
  expects; the Elixir API (`Breakwater`) says `nil` for the same values. Policies
  passed in may use either.
  """

  alias Breakwater.{History, Native, Policy, PolicyStore, Subject}

  @type subject :: binary | atom
  @type status :: :backpressure_inactive | :backpressure_warning | :backpressure_active

  @statuses [:backpressure_inactive, :backpressure_warning, :backpressure_active]

  @doc "`{Status, RetryAfterMs}` of `subject`: the hot path."
  @spec check_backpressure(subject) :: {status, non_neg_integer} | {:error, term}
  def check_backpressure(subject) when is_binary(subject) do
    case Native.check(subject) do
      {:transitions, result, transitions} ->
        History.record(subject, transitions)
        result

      result ->
        result
    end
  end

  def check_backpressure(subject), do: subject |> Subject.normalize!() |> check_backpressure()

  @doc """
  Everything about `subject` in one map: `status` (router status), `retry_after_ms`,
  `breaker`, `backpressure`, `forced_open`, `queue_depth`, `thresholds`, `policy`,
  `recovery`, `counters`, `metrics`, `alerts`. `{error, unknown_subject}` for a subject
  that does not exist (nothing is created). While the breaker is forced open,
  `open_remaining_ms` is `undefined` (no timer ends it) and `retry_after_ms` is the
  policy's `retry_after_seconds`.
  """
  @spec get_detailed_backpressure_status(subject) :: map | {:error, :unknown_subject}
  def get_detailed_backpressure_status(subject) do
    subject = Subject.normalize!(subject)
    {status, retry} = check_backpressure(subject)

    case Native.status(subject) do
      %{} = native -> detailed(subject, status, retry, native)
      error -> error
    end
  end

  defp detailed(subject, status, retry, native) do
    policy = PolicyStore.get(subject)

    erlang(%{
      subject: subject,
      status: status,
      retry_after_ms: retry,
      breaker: native.breaker,
      backpressure: native.backpressure,
      disabled: native.disabled,
      forced_open: native.forced_open,
      queue_depth: native.queue_depth,
      reported_depth: native.reported_depth,
      high_watermark: native.high_watermark,
      open_remaining_ms: native.open_remaining_ms,
      opened_by: if(native.breaker == :open, do: History.opened_by(subject)),
      thresholds: %{
        warning: policy.warning_threshold,
        critical: policy.critical_threshold,
        recovery: Policy.recovery_depth(policy),
        shed_low_priority: Policy.shed_depth(policy)
      },
      policy: policy,
      recovery: get_backpressure_recovery_status(subject),
      counters: native.counters,
      metrics: History.metrics(subject),
      alerts: for(a <- Breakwater.alerts(), a.subject == subject, do: a.alert)
    })
  end

  @doc ~S"""
  Every node's state in this cluster, as `Breakwater.cluster_status/0` gathers it (one
  call per node running Breakwater, under a timeout of 1 s; a node that does not answer
  is listed, never waited on): `#{nodes => [#{node, state, since, reason,
  subject_count}], rows => [#{node, subject, status, breaker, backpressure,
  queue_depth, opened_by, remote_opens, circuit_opens, shared, ...}]}`, with `state` one
  of `up | down | stopped | timeout | error`. Each node shows its 100 worst subjects;
  `'Elixir.Breakwater':cluster_status([{timeout, Ms}, {max_subjects, N}])` takes
  options (and returns the same data as an Elixir struct, with `nil` for none).
  """
  @spec get_cluster_backpressure_status() :: map
  def get_cluster_backpressure_status, do: cluster(Breakwater.cluster_status())

  @doc "As `get_cluster_backpressure_status/0`, for `subject` only, on every node."
  @spec get_cluster_backpressure_status(subject) :: map
  def get_cluster_backpressure_status(subject),
    do: cluster(Breakwater.cluster_status(Subject.normalize!(subject)))

  defp cluster(%Breakwater.ClusterTable{nodes: nodes, rows: rows}),
    do: erlang(%{nodes: nodes, rows: rows})

  @doc "The policy `subject` runs under."
  @spec get_backpressure_policy(subject) :: map
  def get_backpressure_policy(subject),
    do: subject |> Subject.normalize!() |> PolicyStore.get() |> erlang()

  @doc "The node's default policy."
  @spec get_default_backpressure_policy() :: map
  def get_default_backpressure_policy, do: erlang(PolicyStore.default())

  @doc "`ok`, or `{error, Reasons}` naming every invalid key."
  @spec validate_backpressure_policy(term) :: :ok | {:error, [term]}
  def validate_backpressure_policy(policy) do
    case Policy.validate(policy, PolicyStore.default()) do
      {:ok, _} -> :ok
      {:error, reasons} -> {:error, reasons}
    end
  end

  @doc """
  What a router should do with `status` under `policy` on a first attempt:
  `continue`, or `{reject, RetryAfterSeconds}` while active.
  """
  @spec apply_backpressure_policy(term, term) ::
          :continue | {:reject, non_neg_integer} | {:error, term}
  def apply_backpressure_policy(status, policy), do: apply_backpressure_policy(status, policy, 1)

  @doc """
  As `apply_backpressure_policy/2` for retry `attempt` (1-based): the retry delay
  follows the policy's `backoff_strategy` (`exponential`: base × 2^(attempt-1);
  `linear`: base × attempt; `constant`: base), and attempts beyond
  `max_retry_attempts` give `{error, max_retry_attempts_exceeded}`.
  """
  @spec apply_backpressure_policy(term, term, term) ::
          :continue | {:reject, non_neg_integer} | {:error, term}
  def apply_backpressure_policy(status, policy, attempt) do
    case Policy.validate(policy, PolicyStore.default()) do
      {:ok, full} -> Policy.retry_after(status, full, attempt)
      {:error, reasons} -> {:error, reasons}
    end
  end

  @doc "Records an event of `event_type` (an atom or a binary of 1..256 bytes)."
  @spec track_backpressure_event(subject, atom | binary) :: :ok | {:error, term}
  def track_backpressure_event(subject, event_type)
      when (is_atom(event_type) and event_type not in [nil, true, false]) or
             (is_binary(event_type) and byte_size(event_type) in 1..256) do
    subject = Subject.normalize!(subject)

    with :ok <- ensure(subject) do
      History.event(subject, event_type)
    end
  end

  def track_backpressure_event(_subject, event_type) do
    raise ArgumentError,
          "event_type must be an atom or a binary of 1..256 bytes, got: #{inspect(event_type, limit: 5)}"
  end

  @doc "`subject`'s events, oldest first; each a map with `event_type` and `timestamp` (ms)."
  @spec get_backpressure_events(subject) :: [map]
  def get_backpressure_events(subject),
    do: subject |> Subject.normalize!() |> History.events() |> erlang()

  @doc "Event counts by type, total, last event time, and counts over 1, 5 and 15 minutes."
  @spec get_backpressure_metrics(subject) :: map
  def get_backpressure_metrics(subject),
    do: subject |> Subject.normalize!() |> History.metrics() |> erlang()

  @doc """
  Recovery record: `recovery_count`, `last_recovery_at`, `last_recovery_from`,
  `last_recovery_to`, `status` (now), `previous_status`, and `recovering` (true while
  the backpressure state is `recovery` or the breaker is half-open).
  """
  @spec get_backpressure_recovery_status(subject) :: map
  def get_backpressure_recovery_status(subject) do
    subject = Subject.normalize!(subject)
    {status, _} = check_backpressure(subject)

    recovering =
      case Native.status(subject) do
        %{backpressure: bp, breaker: breaker} -> bp == :recovery or breaker == :half_open
        # Unknown (nothing is created): at rest.
        _ -> false
      end

    History.recovery_record(subject)
    |> Map.merge(%{
      status: status,
      previous_status: History.previous_status(subject),
      recovering: recovering
    })
    |> erlang()
  end

  @doc ~S"""
  Checks `subject` (recording any transition the check makes) and tells whether its
  latest status change was a recovery: `{recovered, #{from, to, at}}` when it was and
  the subject is still in the status it recovered to, else `{not_recovered, Status}`.
  """
  @spec check_backpressure_recovery(subject) :: {:recovered, map} | {:not_recovered, status}
  def check_backpressure_recovery(subject) do
    subject = Subject.normalize!(subject)
    {status, _} = check_backpressure(subject)

    latest =
      subject
      |> History.history()
      |> Enum.reverse()
      |> Enum.find(fn %{status: s, previous_status: p} -> s != p end)

    case latest do
      %{status: ^status, previous_status: from, timestamp: at} ->
        if History.recovery?(from, status),
          do: {:recovered, %{from: from, to: status, at: at}},
          else: {:not_recovered, status}

      _ ->
        {:not_recovered, status}
    end
  end

  @doc "The status before the current one (`backpressure_inactive` if none)."
  @spec get_previous_backpressure_status(subject) :: status
  def get_previous_backpressure_status(subject),
    do: subject |> Subject.normalize!() |> History.previous_status()

  @doc """
  Records a recovery of `subject` by hand, from its previous status to its current
  one (recoveries observed by Breakwater are recorded automatically).
  """
  @spec track_backpressure_recovery(subject) :: :ok | {:error, term}
  def track_backpressure_recovery(subject) do
    subject = Subject.normalize!(subject)

    with :ok <- ensure(subject) do
      {status, _} = check_backpressure(subject)
      History.recovery(subject, History.previous_status(subject), status)
    end
  end

  @doc "Appends `status` to `subject`'s history by hand."
  @spec track_backpressure_status_history(subject, status) :: :ok | {:error, term}
  def track_backpressure_status_history(subject, status) when status in @statuses do
    subject = Subject.normalize!(subject)

    with :ok <- ensure(subject) do
      previous =
        case History.history(subject) do
          [] -> :backpressure_inactive
          entries -> List.last(entries).status
        end

      History.status(subject, status, previous)
    end
  end

  def track_backpressure_status_history(_subject, status) do
    raise ArgumentError,
          "status must be one of #{inspect(@statuses)}, got: #{inspect(status, limit: 5)}"
  end

  # Erlang's spelling of "none": `undefined` for `nil`, in maps and lists at any depth.
  defp erlang(nil), do: :undefined
  defp erlang(map) when is_map(map), do: Map.new(map, fn {k, v} -> {k, erlang(v)} end)
  defp erlang(list) when is_list(list), do: Enum.map(list, &erlang/1)
  defp erlang(other), do: other

  # Tracking writes history: the subject is created like on any write (within
  # max_subjects), so that its history goes when the subject does.
  defp ensure(subject), do: Native.touch(subject)
end
