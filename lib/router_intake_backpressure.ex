defmodule :router_intake_backpressure do
  @moduledoc ~S"""
  The router's intake module, callable from Erlang as `router_intake_backpressure`: a
  drop-in for an Erlang router's own module of that name, whose callers work against
  it unchanged. Its names and shapes are a public contract.

  ```erlang
  1> router_intake_backpressure:check_backpressure(<<"ledger">>).
  {backpressure_inactive,0}
  2> router_intake_backpressure:get_default_backpressure_policy().
  #{retry_after_seconds => 30, max_retry_attempts => 3, backoff_strategy => exponential, ...}
  3> router_intake_backpressure:apply_backpressure_policy(<<"ledger">>, backpressure_active).
  #{action => reject, retry_after_seconds => 30, max_retry_attempts => 3, ...}
  4> router_intake_backpressure:check_backpressure(42).
  {error,{invalid_subject,invalid_subject_type}}
  ```

  ## Status

  `backpressure_active` when the subject is dropping, its breaker is open, or two or
  more of its overload signals are overloaded; `backpressure_warning` when one signal
  is, or the subject is under pressure or recovering, or its breaker is half-open;
  `backpressure_inactive` otherwise. The signals are the queue depth (against
  `warning_threshold`), the p95 latency of recorded calls (`latency_overload_ms`) and
  the calls in flight (`inflight_overload`); see `Breakwater`.

  `check_backpressure/1` is the hot path: one native call that reads the subject's
  state word (the overload flags are in it) and returns `{Status, RetryAfterSeconds}`:
  0 unless active; while active, the breaker's open time left or the policy's
  `retry_after_seconds`, in whole seconds rounded up. History, events and recovery are
  written only when the call itself made a transition (e.g. the open time of a breaker
  ran out), exactly once; telemetry likewise, never on an unchanged status.
  It is a read: an unknown subject answers `{backpressure_inactive, 0}` and is not
  created (nor by the other reads here: `get_detailed_backpressure_status/1` of an
  unknown subject describes one at rest under the default policy, with zero metrics
  and empty `counters`). The `track_*` functions write history, and create the
  subject like any write.

  ## Errors

  Erlang callers get `{error, Reason}`, never an exception: a subject that is not a
  binary of 1..1023 bytes or an atom gives `{error, {invalid_subject,
  invalid_subject_type | invalid_subject_length}}` from every function that takes one;
  other bad arguments `{error, Reasons}` naming them. (The Elixir API, `Breakwater`,
  raises `ArgumentError` instead.)

  "None" and "never" are `undefined` in every term this module returns (policy keys
  such as `slow_call_ms`, `recovery_time` before a first recovery...), as Erlang code
  expects; the Elixir API says `nil` for the same values. Policies passed in may use
  either.
  """

  alias Breakwater.{History, Native, Policy, PolicyStore, Subject}

  @type subject :: binary | atom
  @type status :: :backpressure_inactive | :backpressure_warning | :backpressure_active
  @type subject_error :: {:error, {:invalid_subject, atom} | term}

  @statuses [:backpressure_inactive, :backpressure_warning, :backpressure_active]

  # Largest info map track_backpressure_event/2 stores (external term format bytes).
  @max_event_bytes 4_096

  # ---- status ------------------------------------------------------------------------

  @doc "`{Status, RetryAfterSeconds}` of `subject`: the hot path."
  @spec check_backpressure(term) :: {status, non_neg_integer} | subject_error
  def check_backpressure(subject) when is_binary(subject) do
    case Native.check(subject) do
      {:transitions, result, transitions} ->
        History.record(subject, transitions)
        result

      result ->
        result
    end
  end

  def check_backpressure(subject) do
    with {:ok, subject} <- Subject.router(subject), do: check_backpressure(subject)
  end

  @doc "The status of `subject`: the bare atom of `check_backpressure/1`."
  @spec get_backpressure_status(term) :: status | subject_error
  def get_backpressure_status(subject) do
    case check_backpressure(subject) do
      {status, _retry} when is_atom(status) and status != :error -> status
      error -> error
    end
  end

  @doc """
  Everything about `subject` in one map: `subject`, `status`, `metrics`
  (`pending_messages`, `latency_p95_ms`, `inflight_messages`, and the event metrics of
  `get_backpressure_metrics/1`), `thresholds` (`queue_overload`, `latency_overload_ms`,
  `inflight_overload`, and `warning`, `critical`, `recovery`, `shed_low_priority`),
  `policy`, `recovery`, `timestamp` (ms), and Breakwater's own: `retry_after_seconds`,
  `retry_after_ms`, `overloaded` (the overloaded signals), `breaker`, `backpressure`,
  `disabled`, `forced_open`, `queue_depth`, `reported_depth`, `high_watermark`,
  `open_remaining_ms`, `opened_by` (the peer whose open opened this breaker, while
  open), `signals` (measured and reported parts), `counters`, `alerts`.
  """
  @spec get_detailed_backpressure_status(term) :: map | subject_error
  def get_detailed_backpressure_status(subject) do
    with {:ok, subject} <- Subject.router(subject),
         {status, retry_ms} when status in @statuses <- check_ms(subject),
         %{} = native <- native_status(subject) do
      policy = PolicyStore.get(subject)

      erlang(%{
        subject: subject,
        status: status,
        retry_after_seconds: div(retry_ms + 999, 1000),
        retry_after_ms: retry_ms,
        overloaded: native.overloaded,
        breaker: native.breaker,
        backpressure: native.backpressure,
        disabled: native.disabled,
        forced_open: native.forced_open,
        queue_depth: native.queue_depth,
        reported_depth: native.reported_depth,
        high_watermark: native.high_watermark,
        open_remaining_ms: native.open_remaining_ms,
        opened_by: if(native.breaker == :open, do: History.opened_by(subject)),
        metrics:
          subject
          |> History.metrics()
          |> Map.merge(%{
            pending_messages: native.queue_depth,
            latency_p95_ms: native.latency_p95_ms,
            inflight_messages: native.inflight
          }),
        signals: %{
          latency_p95_ms: native.latency_p95_ms,
          measured_latency_p95_ms: native.measured_latency_p95_ms,
          reported_latency_p95_ms: native.reported_latency_p95_ms,
          latency_samples: native.latency_samples,
          inflight: native.inflight,
          measured_inflight: native.measured_inflight,
          reported_inflight: native.reported_inflight
        },
        thresholds: %{
          queue_overload: policy.warning_threshold,
          latency_overload_ms: policy.latency_overload_ms,
          inflight_overload: policy.inflight_overload,
          warning: policy.warning_threshold,
          critical: policy.critical_threshold,
          recovery: Policy.recovery_depth(policy),
          shed_low_priority: Policy.shed_depth(policy)
        },
        policy: policy,
        recovery: recovery_status(subject, status, native),
        counters: native.counters,
        alerts: for(a <- Breakwater.alerts(), a.subject == subject, do: a.alert),
        timestamp: System.system_time(:millisecond)
      })
    else
      {:error, _} = error -> error
    end
  end

  # A subject nothing has created yet answers as one at rest under the default policy
  # (the router's callers ask before the first traffic); the read creates nothing.
  defp native_status(subject) do
    case Native.status(subject) do
      {:error, :unknown_subject} -> at_rest()
      other -> other
    end
  end

  defp at_rest do
    %{
      overloaded: [],
      breaker: :closed,
      backpressure: :normal,
      disabled: false,
      forced_open: false,
      queue_depth: 0,
      reported_depth: 0,
      high_watermark: 0,
      open_remaining_ms: 0,
      latency_p95_ms: 0,
      measured_latency_p95_ms: 0,
      reported_latency_p95_ms: 0,
      latency_samples: 0,
      inflight: 0,
      measured_inflight: 0,
      reported_inflight: 0,
      counters: %{}
    }
  end

  defp check_ms(subject) do
    case Native.check_ms(subject) do
      {:transitions, result, transitions} ->
        History.record(subject, transitions)
        result

      result ->
        result
    end
  end

  @doc "`subject`'s queue depth (pending messages): the larger of reported and spooled."
  @spec get_jetstream_pending(term) :: non_neg_integer | subject_error
  def get_jetstream_pending(subject), do: signal(subject, 0)

  @doc "The p95 latency (ms) `subject`'s latency signal is judged by."
  @spec get_processing_latency_p95(term) :: non_neg_integer | subject_error
  def get_processing_latency_p95(subject), do: signal(subject, 1)

  @doc "The calls in flight `subject`'s in-flight signal is judged by."
  @spec get_inflight_count(term) :: non_neg_integer | subject_error
  def get_inflight_count(subject), do: signal(subject, 2)

  defp signal(subject, i) do
    with {:ok, subject} <- Subject.router(subject) do
      case Native.signals(subject) do
        {_, _, _} = values -> elem(values, i)
        # An unknown subject has no depth, latency or calls yet.
        nil -> 0
      end
    end
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
  @spec get_cluster_backpressure_status(term) :: map | subject_error
  def get_cluster_backpressure_status(subject) do
    with {:ok, subject} <- Subject.router(subject),
         do: cluster(Breakwater.cluster_status(subject))
  end

  defp cluster(%Breakwater.ClusterTable{nodes: nodes, rows: rows}),
    do: erlang(%{nodes: nodes, rows: rows})

  # ---- policy --------------------------------------------------------------------------

  @doc "The policy `subject` runs under."
  @spec get_backpressure_policy(term) :: map | subject_error
  def get_backpressure_policy(subject) do
    with {:ok, subject} <- Subject.router(subject),
         do: subject |> PolicyStore.get() |> erlang()
  end

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

  @doc ~S"""
  Two forms, told apart by the second argument:

    * `apply_backpressure_policy(Subject, Status)` (`Status` one of the three
      statuses): what a router should do under `Subject`'s policy, as a map
      `#{action => continue | reject, retry_after_seconds, max_retry_attempts,
      backoff_strategy, alert}` (`reject` and the policy's `retry_after_seconds` while
      active, with `alert` from `alert_on_active`; `continue` and 0 otherwise, with
      `alert` from `alert_on_warning` for a warning and `false` when inactive);
    * `apply_backpressure_policy(Status, Policy)`: `continue`, or `{reject,
      RetryAfterSeconds}` while active, as `apply_backpressure_policy/3` for a first
      attempt.
  """
  @spec apply_backpressure_policy(term, term) ::
          map | :continue | {:reject, non_neg_integer} | {:error, term}
  def apply_backpressure_policy(subject, status) when status in @statuses do
    with {:ok, subject} <- Subject.router(subject) do
      policy = PolicyStore.get(subject)

      {action, retry, alert} =
        case status do
          :backpressure_active -> {:reject, policy.retry_after_seconds, policy.alert_on_active}
          :backpressure_warning -> {:continue, 0, policy.alert_on_warning}
          :backpressure_inactive -> {:continue, 0, false}
        end

      %{
        action: action,
        retry_after_seconds: retry,
        max_retry_attempts: policy.max_retry_attempts,
        backoff_strategy: policy.backoff_strategy,
        alert: alert
      }
    end
  end

  def apply_backpressure_policy(status, policy), do: apply_backpressure_policy(status, policy, 1)

  @doc """
  As `apply_backpressure_policy(Status, Policy)` for retry `attempt` (1-based): the
  retry delay follows the policy's `backoff_strategy` (`exponential`: base ×
  2^(attempt-1); `linear`: base × attempt; `constant`: base), and attempts beyond
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

  # ---- events ----------------------------------------------------------------------------

  @doc """
  Records an event for `subject`: an event type (an atom, or a binary of 1..256 bytes),
  or an info map (at most #{@max_event_bytes} bytes in the external term format),
  which is stored with the event. An info map's `type` key, when it names one of
  Breakwater's event types (`<<"backpressure_active">>`, `backpressure_warning`,
  `recovery`, ...), counts as that type; another binary or atom counts as itself; no
  `type` counts as `<<"unknown">>`.
  """
  @spec track_backpressure_event(term, term) :: :ok | {:error, term}
  def track_backpressure_event(subject, event) do
    with {:ok, subject} <- Subject.router(subject),
         {:ok, type, meta} <- event(event),
         :ok <- ensure(subject) do
      History.event(subject, type, System.system_time(:millisecond), meta)
    end
  end

  defp event(info) when is_map(info) do
    size = :erlang.external_size(info)

    cond do
      size > @max_event_bytes ->
        {:error, {:event_too_large, size, @max_event_bytes}}

      not is_map_key(info, :type) ->
        {:ok, "unknown", info}

      true ->
        case event_type(info.type) do
          {:ok, type} -> {:ok, type, info}
          :error -> {:error, {:invalid_event_type, info.type}}
        end
    end
  end

  defp event(type) do
    case event_type(type) do
      {:ok, type} -> {:ok, type, %{}}
      :error -> {:error, {:invalid_event_type, type}}
    end
  end

  defp event_type(type)
       when (is_atom(type) and type not in [nil, true, false, :undefined]) or
              (is_binary(type) and byte_size(type) in 1..256),
       do: {:ok, History.known_event_type(type) || type}

  defp event_type(_type), do: :error

  @doc """
  `subject`'s events, oldest first; each a map with `event_type`, `type` (its name as a
  binary, unless an info map gave one), `subject` and `timestamp` (ms), plus the keys of
  the info map it was recorded with (as given).
  """
  @spec get_backpressure_events(term) :: [map] | subject_error
  def get_backpressure_events(subject) do
    with {:ok, subject} <- Subject.router(subject) do
      for e <- History.events(subject) do
        e
        |> Map.put(:subject, subject)
        |> Map.put_new(:type, type_name(e.event_type))
      end
    end
  end

  defp type_name(type) when is_atom(type), do: Atom.to_string(type)
  defp type_name(type), do: type

  @doc """
  Event metrics of `subject`: `subject`, `total_events`, `active_events`,
  `warning_events`, `recovery_events`, `last_event_time` (`undefined` when none), counts
  by event type (`events_by_type`) and over the last 1, 5 and 15 minutes (`last_1m`,
  `last_5m`, `last_15m`).
  """
  @spec get_backpressure_metrics(term) :: map | subject_error
  def get_backpressure_metrics(subject) do
    with {:ok, subject} <- Subject.router(subject),
         do: subject |> History.metrics() |> erlang()
  end

  # ---- recovery ------------------------------------------------------------------------

  @doc """
  Recovery record of `subject`: `recovered` (true when its latest status change was a
  recovery, i.e. active to warning or inactive, or warning to inactive, and it is still
  in the status it recovered to), `recovery_time` (ms of the latest recovery, or
  `undefined`), `recovery_count`, `last_recovery_at`, `last_recovery_from`,
  `last_recovery_to`, `status` (now), `previous_status`, and `recovering` (true while
  the backpressure state is `recovery` or the breaker is half-open).
  """
  @spec get_backpressure_recovery_status(term) :: map | subject_error
  def get_backpressure_recovery_status(subject) do
    with {:ok, subject} <- Subject.router(subject),
         {status, _} when status in @statuses <- check_backpressure(subject) do
      subject |> recovery_status(status, Native.status(subject)) |> erlang()
    end
  end

  defp recovery_status(subject, status, native) do
    record = History.recovery_record(subject)

    recovering =
      case native do
        %{backpressure: bp, breaker: breaker} -> bp == :recovery or breaker == :half_open
        # Unknown (nothing is created): at rest.
        _ -> false
      end

    Map.merge(record, %{
      recovered: recovered?(subject, status),
      recovery_time: record.last_recovery_at,
      status: status,
      previous_status: History.previous_status(subject),
      recovering: recovering
    })
  end

  @doc """
  Checks `subject` (recording any transition the check makes) and tells whether it has
  recovered: `{ok, true}` when its latest status change was a recovery and it is still
  in the status it recovered to, else `{ok, false}`. (Recoveries are recorded when they
  happen, once; this call records nothing more.)
  """
  @spec check_backpressure_recovery(term) :: {:ok, boolean} | subject_error
  def check_backpressure_recovery(subject) do
    with {:ok, subject} <- Subject.router(subject),
         {status, _} when status in @statuses <- check_backpressure(subject) do
      {:ok, recovered?(subject, status)}
    end
  end

  defp recovered?(subject, status) do
    latest =
      subject
      |> History.history()
      |> Enum.reverse()
      |> Enum.find(fn %{status: s, previous_status: p} -> s != p end)

    case latest do
      %{status: ^status, previous_status: from} -> History.recovery?(from, status)
      _ -> false
    end
  end

  @doc "The status before the current one (`backpressure_inactive` if none)."
  @spec get_previous_backpressure_status(term) :: status | subject_error
  def get_previous_backpressure_status(subject) do
    with {:ok, subject} <- Subject.router(subject), do: History.previous_status(subject)
  end

  @doc """
  Records a recovery of `subject` by hand, from its previous status to its current
  one (recoveries observed by Breakwater are recorded automatically).
  """
  @spec track_backpressure_recovery(term) :: :ok | {:error, term}
  def track_backpressure_recovery(subject) do
    with {:ok, subject} <- Subject.router(subject),
         :ok <- ensure(subject),
         {status, _} when status in @statuses <- check_backpressure(subject) do
      History.recovery(subject, History.previous_status(subject), status)
    end
  end

  @doc """
  Appends `status` (one of the three statuses, or `{Status, RetryAfterSeconds}` as
  `check_backpressure/1` returns it) to `subject`'s history by hand.
  """
  @spec track_backpressure_status_history(term, term) :: :ok | {:error, term}
  def track_backpressure_status_history(subject, {status, retry})
      when status in @statuses and is_integer(retry),
      do: track_backpressure_status_history(subject, status)

  def track_backpressure_status_history(subject, status) when status in @statuses do
    with {:ok, subject} <- Subject.router(subject),
         :ok <- ensure(subject) do
      previous =
        case History.history(subject) do
          [] -> :backpressure_inactive
          entries -> List.last(entries).status
        end

      History.status(subject, status, previous)
    end
  end

  def track_backpressure_status_history(subject, status) do
    with {:ok, _} <- Subject.router(subject), do: {:error, {:invalid_status, status}}
  end

  # ---- helpers ---------------------------------------------------------------------------

  # Erlang's spelling of "none": `undefined` for `nil`, in maps and lists at any depth
  # (improper lists included).
  defp erlang(nil), do: :undefined
  defp erlang(map) when is_map(map), do: Map.new(map, fn {k, v} -> {k, erlang(v)} end)
  defp erlang([h | t]), do: [erlang(h) | erlang(t)]
  defp erlang(other), do: other

  # Tracking writes history: the subject is created like on any write (within
  # max_subjects), so that its history goes when the subject does.
  defp ensure(subject), do: Native.touch(subject)
end
