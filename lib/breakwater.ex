defmodule Breakwater do
  @moduledoc """
  Backpressure and circuit breaking for message routers that write to a downstream
  (the *ledger*): intake pushes back when the ledger slows, writes fail fast while it
  is down, control traffic passes untouched, events wait in a spool, and recovery is
  automatic.

  Every function takes a *subject*: a binary naming an intake stream or downstream
  (atoms are accepted and converted; no atom is ever made from input).

  ## Subject lifecycle

  A subject is created by `configure/2`, by the configuration (`subjects`, `ledgers`),
  by `attach_ledger/3`, or by the first call that writes (`admit/2`, `record/3`,
  `report_depth/2`, `enqueue/3`, the manual controls). Reads create nothing:
  `status/1` of an unknown subject gives `{:error, :unknown_subject}`, and
  `:router_intake_backpressure.check_backpressure/1` answers `{backpressure_inactive, 0}`.

  Subjects created by traffic are capped at `max_subjects` (a write that would create
  one more gets `{:error, {:too_many_subjects, max}}`); configured subjects have a room
  of the same size of their own, so no flood of names can keep an operator from
  configuring one. `remove/1` removes a subject that has nothing spooled, and with
  `subject_idle_ms` set, subjects created by traffic that nobody used for that long
  expire (see `Breakwater.Lifecycle`).

  ```elixir
  iex> Breakwater.configure("ledger", failure_threshold: 3, open_timeout_ms: 5_000)
  :ok
  iex> Breakwater.admit("ledger")
  :ok
  iex> for _ <- 1..3, do: Breakwater.record("ledger", :failure)
  [:ok, :ok, :ok]
  iex> {:reject, :circuit_open, _retry_after_ms} = Breakwater.admit("ledger")
  iex> Breakwater.admit("ledger", priority: :critical)
  :ok
  iex> Breakwater.status("ledger").breaker
  :open
  ```

  ## Admission

  `admit/2` answers in this order: priority at or above `bypass_priority`
  → `:ok` (the control path); breaker open → `{:reject, :circuit_open, ms_until_half_open}`
  (forced open with `force_open/1`: no timer ends it, and the retry hint is the
  policy's `retry_after_seconds`);
  half-open with every probe slot taken → `:half_open_limit`; backpressure `dropping`
  → `:backpressure` (retry after `retry_after_seconds`); two or more overload signals
  → `:overloaded` (likewise); priority at or below `low_priority_max` at a depth of
  `low_priority_shed_ratio × critical_threshold` or more → `:shed_low_priority`;
  otherwise `:ok`. A call admitted is *in flight* until `record/3` records its outcome
  (every `:ok` should be followed by a `record/3`; `call/3` does both).

  ## Overload signals

  Three signals per subject: queue depth (against `warning_threshold`), the p95 of the
  latencies recorded over `latency_window_ms` (against `latency_overload_ms`) and the
  calls in flight (against `inflight_overload`). Each is overloaded above its threshold
  and calm again at or below `recovery_threshold` × threshold. One overloaded signal
  makes the router status a warning; two make it active. Breakwater measures latency
  and in-flight itself from `admit/2`, `record/3` and `call/3`; a router that measures
  them itself reports them with `report_latency/2` and `report_inflight/2` (the larger
  of reported and measured counts, as for `report_depth/2`).

  Priorities are integers 0..9 (higher is more important) or the names `:critical`
  (9), `:high` (7), `:normal` (5, the default) and `:low` (1); `event_type:` looks the
  priority up in the policy's `priorities` map.

  ## Outcomes belong to their admission

  Each visit of the breaker to half-open is an *episode*, and an episode counts only
  the outcomes of its own probes. An outcome that answers no admission the breaker is
  waiting for is *late*: it is counted (`successes`/`failures`, and `late_outcomes`)
  but frees no probe slot and moves nothing. To say which admission an outcome
  answers, keep the admission's token:

  ```elixir
  iex> {:ok, token} = Breakwater.admit("ledger-token", token: true)
  iex> Breakwater.record("ledger-token", :success, token: token)
  :ok
  ```

  With a token, an outcome counts only in the breaker state (the episode) that
  admitted the call: a call admitted while closed that answers after the breaker
  opened is late, in half-open it answers exactly the probe it was admitted as (once),
  and a bypass call never decides half-open. So at most `half_open_max_calls` probes
  are ever in flight, whatever the order in which late outcomes arrive. `call/3` and
  the ledger workers always use tokens.

  A bare `record/3` (no token) is attributed as well as can be: while closed it
  counts; while open it is late; in half-open it answers the *oldest* probe in flight,
  and is late when no probe is in flight. A late success of a call admitted before the
  breaker half-opened can therefore stand in for a probe that is still out; use tokens
  where that matters. `status/1` counts what happened: `probe_successes`,
  `probe_failures`, `stale_probes` (half-open episodes ended by a probe unanswered for
  `call_timeout_ms` while every probe slot was taken) and `late_outcomes`.

  ## Spool

  `enqueue/3` puts an event (a binary) in the subject's spool: segment files in
  `spool_dir`, mapped into memory from a pool shared by every subject, so that what
  `enqueue/3` accepted survives a crash of the VM (`durability`, see
  `docs/configuration.md`); `drain/2` takes the oldest events as a batch that is
  `ack/2`ed when delivered or `nack/2`ed to be delivered again (a batch whose taker
  dies, or that was in flight when the VM died, is delivered again too).

  The Erlang router module `:router_intake_backpressure` offers the same state through
  the router's vocabulary. Maps returned here say `nil` for "none" (e.g. a policy's
  `slow_call_ms`); the Erlang module says `undefined`.
  """

  alias Breakwater.{History, Ledgers, Lifecycle, Native, Policy, PolicyStore, Subject}

  @typedoc "A subject: a binary, or an atom (converted to a binary)."
  @type subject :: binary | atom
  @typedoc "A priority: 0..9 or a name."
  @type priority :: 0..9 | :critical | :high | :normal | :low
  @typedoc "Why an admission was refused."
  @type reason ::
          :circuit_open | :half_open_limit | :backpressure | :overloaded | :shed_low_priority
  @typedoc """
  An admission's token (`admit/2` with `token: true`), for `record/3`: an opaque
  integer naming the breaker episode that admitted the call and, for a half-open
  probe, the probe.
  """
  @type token :: non_neg_integer
  @typedoc "The answer to `admit/2` (`{:ok, token}` with `token: true`)."
  @type admission ::
          :ok | {:ok, token} | {:reject, reason, retry_after_ms :: non_neg_integer}
  @typedoc "Returned instead of a result when the subject's room (`max_subjects`) is full."
  @type too_many :: {:error, {:too_many_subjects, pos_integer}}

  @normal 5
  # The largest token value (31 bits; see native/breakwater_core/src/probes.rs).
  @max_token 2_147_483_647

  # ---- configuration --------------------------------------------------------------

  @doc """
  Sets `subject`'s policy: `policy` (a map or keyword list) merged over the node's
  default policy, validated (every invalid key is reported). Takes effect at once:
  the subject's state is re-evaluated against the new thresholds.

      iex> Breakwater.configure("orders", warning_threshold: 100, critical_threshold: 500)
      :ok
      iex> {:error, [{:critical_threshold, 50, _expected}]} =
      ...>   Breakwater.configure("orders", warning_threshold: 100, critical_threshold: 50)
  """
  @spec configure(subject, map | keyword) :: :ok | {:error, [term]}
  def configure(subject, policy) do
    subject = Subject.normalize!(subject)

    case Policy.validate(policy, PolicyStore.default()) do
      {:ok, full} -> put_policy(subject, full)
      {:error, reasons} -> {:error, reasons}
    end
  end

  @doc false
  # Installs an already validated, complete policy: the native layer keeps the native
  # form it enforces and this one together, in one step.
  @spec put_policy(binary, map) :: :ok | {:error, [term]}
  def put_policy(subject, policy) do
    case Native.configure(subject, Policy.to_native(policy), PolicyStore.encode(policy)) do
      {:error, {:too_many_subjects, _} = reason} ->
        {:error, [reason]}

      {:error, reasons} ->
        {:error, reasons}

      result ->
        # Joins or leaves the subject's cluster group (`share`), soon.
        Breakwater.Cluster.refresh(subject)
        History.observe(subject, result)
    end
  end

  @doc """
  The policy `subject` runs under: its own when configured, else the default policy
  (also for a subject that does not exist; nothing is created).
  """
  @spec policy(subject) :: map
  def policy(subject), do: subject |> Subject.normalize!() |> PolicyStore.get()

  # ---- the router's paths ---------------------------------------------------------

  @doc """
  Asks whether a call on `subject` may proceed. Options: `priority:` (0..9 or a
  name; default `:normal`), `event_type:` (a binary looked up in the policy's
  `priorities`; `priority:` wins when both are given), `token:` (boolean, default
  false: answer `{:ok, token}` instead of `:ok`, and hand the token to `record/3`; see
  "Outcomes belong to their admission" above).

      iex> Breakwater.admit("payments", priority: :high)
      :ok
      iex> {:ok, _token} = Breakwater.admit("payments", priority: :high, token: true)
  """
  @spec admit(subject, keyword) :: admission | too_many
  def admit(subject, opts \\ [])

  def admit(subject, []) when is_binary(subject),
    do: admitted(subject, Native.admit(subject, @normal))

  def admit(subject, priority: p) when is_binary(subject) and is_integer(p) and p in 0..9,
    do: admitted(subject, Native.admit(subject, p))

  def admit(subject, token: true) when is_binary(subject),
    do: admitted(subject, Native.admit_token(subject, @normal))

  def admit(subject, priority: p, token: true)
      when is_binary(subject) and is_integer(p) and p in 0..9,
      do: admitted(subject, Native.admit_token(subject, p))

  def admit(subject, opts) do
    subject = Subject.normalize!(subject)

    case admission_opts(opts) do
      {{:priority, p}, false} -> admitted(subject, Native.admit(subject, p))
      {{:event_type, t}, false} -> admitted(subject, Native.admit_event(subject, t))
      {{:priority, p}, true} -> admitted(subject, Native.admit_token(subject, p))
      {{:event_type, t}, true} -> admitted(subject, Native.admit_event_token(subject, t))
    end
  end

  @compile {:inline, admitted: 2}
  defp admitted(_subject, :ok), do: :ok
  defp admitted(_subject, {:ok, _token} = ok), do: ok

  defp admitted(subject, result) do
    case observe(subject, result) do
      {:reject, reason, _} = reject ->
        Breakwater.Telemetry.rejected(subject, reason)
        reject

      other ->
        other
    end
  end

  defp admission_opts(opts) do
    opts = keyword!(opts, [:priority, :event_type, :token], "admit/2")

    token? =
      case Map.get(opts, :token, false) do
        b when is_boolean(b) -> b
        other -> raise ArgumentError, "token must be true or false, got: #{inspect(other)}"
      end

    priority =
      case opts do
        %{priority: p} ->
          {:priority, priority!(p)}

        %{event_type: t} when is_binary(t) ->
          {:event_type, t}

        %{event_type: t} when is_atom(t) and t not in [nil, true, false] ->
          {:event_type, Atom.to_string(t)}

        %{event_type: t} ->
          raise ArgumentError, "event_type must be a binary or an atom, got: #{inspect(t)}"

        %{} ->
          {:priority, @normal}
      end

    {priority, token?}
  end

  defp priority!(p) do
    case Policy.priority(p) do
      {:ok, n} ->
        n

      :error ->
        raise ArgumentError,
              "priority must be an integer in 0..9 or one of :critical, :high, :normal, :low, got: #{inspect(p)}"
    end
  end

  defp keyword!(opts, allowed, fun) do
    unless keyword_list?(opts) do
      raise ArgumentError,
            "options of #{fun} must be a keyword list, got: #{inspect(opts, limit: 10)}"
    end

    case Enum.reject(Keyword.keys(opts), &(&1 in allowed)) do
      [] ->
        Map.new(opts)

      unknown ->
        raise ArgumentError,
              "unknown options #{inspect(unknown)} for #{fun}; expected #{inspect(allowed)}"
    end
  end

  # A proper list of {atom, value} pairs (an improper list is not one).
  defp keyword_list?([]), do: true
  defp keyword_list?([{k, _} | rest]) when is_atom(k), do: keyword_list?(rest)
  defp keyword_list?(_), do: false

  @doc """
  Records the outcome of a call on `subject` (the call is no longer in flight).
  Options: `latency_ms:`, which goes into the subject's latency histogram (the latency
  signal's p95); a call slower than the policy's `slow_call_ms` counts as a failure.
  `token:`, the token of the call's admission (`admit/2` with `token: true`): the
  outcome then counts for that admission only (see "Outcomes belong to their
  admission" above). `{:failure, reason}` keeps the reason with the transition it
  causes (e.g. in the history entry of the opening).
  """
  @spec record(subject, :success | :failure | {:failure, term}, keyword) :: :ok | too_many
  def record(subject, outcome, opts \\ [])

  def record(subject, outcome, []) when is_binary(subject) and outcome in [:success, :failure],
    do: observe(subject, Native.record(subject, outcome, nil))

  def record(subject, outcome, token: t)
      when is_binary(subject) and outcome in [:success, :failure] and is_integer(t) and t >= 0 and
             t <= @max_token,
      do: observe(subject, Native.record_token(subject, outcome, nil, t))

  def record(subject, outcome, latency_ms: ms)
      when is_binary(subject) and outcome in [:success, :failure] and is_integer(ms) and ms >= 0,
      do: observe(subject, Native.record(subject, outcome, ms))

  def record(subject, outcome, opts) do
    subject = Subject.normalize!(subject)
    {native, meta} = outcome!(outcome)

    opts = keyword!(opts, [:latency_ms, :token], "record/3")

    latency =
      case opts do
        %{latency_ms: ms} when is_integer(ms) and ms >= 0 ->
          ms

        %{latency_ms: ms} ->
          raise ArgumentError, "latency_ms must be a non-negative integer, got: #{inspect(ms)}"

        %{} ->
          nil
      end

    result =
      case opts do
        %{token: t} when is_integer(t) and t >= 0 and t <= @max_token ->
          Native.record_token(subject, native, latency, t)

        %{token: t} ->
          raise ArgumentError,
                "token must be a token from admit/2 with token: true " <>
                  "(an integer in 0..#{@max_token}), got: #{inspect(t)}"

        %{} ->
          Native.record(subject, native, latency)
      end

    History.observe(subject, result, meta)
  end

  @doc false
  # `record/3` of a call no router admitted (a drain worker's ledger write or health
  # check, admitted by `admit_write`, whose token it takes back): the same outcome and
  # latency, not the end of a call in flight.
  @spec record_unadmitted(
          binary,
          :success | :failure | {:failure, term},
          non_neg_integer | nil,
          token
        ) :: :ok | too_many
  def record_unadmitted(subject, outcome, latency_ms, token) when is_binary(subject) do
    {native, meta} = outcome!(outcome)
    History.observe(subject, Native.record_write(subject, native, latency_ms, token), meta)
  end

  defp outcome!(outcome) do
    case outcome do
      :success ->
        {:success, %{}}

      :failure ->
        {:failure, %{}}

      {:failure, reason} ->
        {:failure, %{reason: inspect(reason, limit: 20, printable_limit: 256)}}

      other ->
        raise ArgumentError,
              "outcome must be :success, :failure or {:failure, reason}, got: #{inspect(other)}"
    end
  end

  @doc """
  Runs `fun` through the breaker: admits (options `priority:`, `event_type:`), runs
  `fun` in a supervised task under `timeout:` (default: the policy's
  `call_timeout_ms`), records the outcome with its latency and the admission's token
  (so it counts for this call's admission only), and returns
  `{:ok, result}`, or `{:error, reason}` with a rejection reason, `:timeout`, the
  reason of an `{:error, reason}` result, or `{:exception | :exit | :throw, term}`.
  `timeout:` is a positive integer (ms) or `:infinity`.

  `fun` returning `{:ok, value}` gives `{:ok, value}`; `{:error, reason}` counts as a
  failure; any other value `v` is a success, `{:ok, v}`.

      iex> Breakwater.call("ledger-read", fn -> {:ok, 42} end)
      {:ok, 42}
  """
  @spec call(subject, (() -> term), keyword) :: {:ok, term} | {:error, term}
  def call(subject, fun, opts \\ []) do
    subject = Subject.normalize!(subject)

    unless is_function(fun, 0) do
      raise ArgumentError,
            "fun must be a function of arity 0, got: #{inspect(fun, limit: 5, printable_limit: 64)}"
    end

    opts = keyword!(opts, [:priority, :event_type, :timeout], "call/3")

    timeout =
      case opts do
        %{timeout: t} when (is_integer(t) and t > 0) or t == :infinity ->
          t

        %{timeout: t} ->
          raise ArgumentError,
                "timeout must be a positive integer or :infinity, got: #{inspect(t, limit: 5)}"

        %{} ->
          PolicyStore.get(subject).call_timeout_ms
      end

    case admit(subject, opts |> Map.drop([:timeout]) |> Map.put(:token, true) |> Map.to_list()) do
      {:ok, token} -> run(subject, fun, timeout, token)
      {:reject, reason, _retry} -> {:error, reason}
      {:error, _} = error -> error
    end
  end

  defp run(subject, fun, timeout, token) do
    started = System.monotonic_time(:millisecond)

    task =
      Task.Supervisor.async_nolink(Breakwater.TaskSupervisor, fn ->
        try do
          {:returned, fun.()}
        catch
          :error, e -> {:caught, {:exception, Exception.normalize(:error, e, __STACKTRACE__)}}
          :exit, r -> {:caught, {:exit, r}}
          :throw, v -> {:caught, {:throw, v}}
        end
      end)

    reply = Task.yield(task, wait_ms(timeout)) || Task.shutdown(task, :brutal_kill)
    latency_ms = System.monotonic_time(:millisecond) - started

    {outcome, result} =
      case reply do
        {:ok, {:returned, {:ok, _} = ok}} -> {:success, ok}
        {:ok, {:returned, {:error, reason} = error}} -> {{:failure, reason}, error}
        {:ok, {:returned, value}} -> {:success, {:ok, value}}
        {:ok, {:caught, caught}} -> {{:failure, caught}, {:error, caught}}
        {:exit, reason} -> {{:failure, {:exit, reason}}, {:error, {:exit, reason}}}
        nil -> {{:failure, :timeout}, {:error, :timeout}}
      end

    record(subject, outcome, latency_ms: latency_ms, token: token)
    result
  end

  # Longer than an Erlang timer can wait (about 49.7 days): wait for good.
  defp wait_ms(ms) when is_integer(ms) and ms > 0xFFFFFFFF, do: :infinity
  defp wait_ms(ms), do: ms

  @doc """
  Reports `subject`'s queue depth (e.g. the router's pending-queue length). Depth is the
  larger of this and the events spooled.
  """
  @spec report_depth(subject, non_neg_integer) :: :ok | too_many
  def report_depth(subject, depth) when is_binary(subject) and is_integer(depth) and depth >= 0,
    do: observe(subject, Native.report_depth(subject, depth))

  def report_depth(subject, depth) do
    subject = Subject.normalize!(subject)

    unless is_integer(depth) and depth >= 0 do
      raise ArgumentError, "depth must be a non-negative integer, got: #{inspect(depth)}"
    end

    observe(subject, Native.report_depth(subject, depth))
  end

  @doc """
  Reports the p95 latency (ms) of `subject`'s calls as the router measures it. The
  latency signal is judged by the larger of this and the p95 Breakwater measures from
  `record/3`'s `latency_ms:`; a report stays until the next one (report 0 to withdraw
  it).

      iex> Breakwater.report_latency("payments", 120)
      :ok
  """
  @spec report_latency(subject, non_neg_integer) :: :ok | too_many
  def report_latency(subject, p95_ms) do
    subject = Subject.normalize!(subject)

    unless is_integer(p95_ms) and p95_ms >= 0 do
      raise ArgumentError, "p95_ms must be a non-negative integer, got: #{inspect(p95_ms)}"
    end

    observe(subject, Native.report_latency(subject, p95_ms))
  end

  @doc """
  Reports the number of `subject`'s calls in flight as the router counts them. The
  in-flight signal is judged by the larger of this and Breakwater's own count (calls
  admitted and not yet recorded); a report stays until the next one.
  """
  @spec report_inflight(subject, non_neg_integer) :: :ok | too_many
  def report_inflight(subject, n) do
    subject = Subject.normalize!(subject)

    unless is_integer(n) and n >= 0 do
      raise ArgumentError, "inflight must be a non-negative integer, got: #{inspect(n)}"
    end

    observe(subject, Native.report_inflight(subject, n))
  end

  # ---- the spool --------------------------------------------------------------------

  @doc """
  Puts `event` (a binary of at most the pool's `max_event_bytes`) in `subject`'s spool.

  Returns `:ok` once the event is in the spool's files (in the kernel's page cache,
  with the default `durability: :crash`); `{:reject, :pool_exhausted, retry_after_ms}`
  when the pool has no room and the policy is `drop_newest`, or the subject's overflow
  files reached `disk_max_bytes` (the event is counted as dropped);
  `{:reject, :spool_unavailable, retry_after_ms}` when the spool cannot store it (a full
  disk, an unwritable `spool_dir`, a failing write: counted, and logged once per
  incident); `drop_oldest` makes room by discarding the oldest pending events and
  returns `:ok`. An event over `max_event_bytes` gives
  `{:error, {:event_too_large, bytes, max}}`.
  """
  @spec enqueue(subject, binary, keyword) ::
          :ok
          | {:reject, :pool_exhausted | :spool_unavailable, non_neg_integer}
          | {:error, term}
  def enqueue(subject, event, opts \\ [])

  def enqueue(subject, event, []) when is_binary(subject) and is_binary(event),
    do: spooled(subject, event, observe(subject, Native.enqueue(subject, event)))

  def enqueue(subject, event, opts) do
    subject = Subject.normalize!(subject)
    _ = keyword!(opts, [], "enqueue/3")

    unless is_binary(event) do
      raise ArgumentError, "event must be a binary, got: #{inspect(event, limit: 5)}"
    end

    spooled(subject, event, observe(subject, Native.enqueue(subject, event)))
  end

  defp spooled(_subject, _event, :ok), do: :ok

  defp spooled(subject, _event, {:dropped_oldest, n}) do
    History.dropped(subject, n)
    :ok
  end

  defp spooled(subject, _event, {:reject, :pool_exhausted, _} = reject) do
    History.dropped(subject, 1)
    Breakwater.Telemetry.rejected(subject, :pool_exhausted)
    reject
  end

  defp spooled(subject, _event, {:reject, :spool_unavailable, _} = reject) do
    History.dropped(subject, 1)
    Breakwater.Telemetry.rejected(subject, :spool_unavailable)
    reject
  end

  defp spooled(_subject, _event, other), do: other

  @doc """
  Takes at most `max` (1..10_000) of `subject`'s oldest pending events as a batch:
  `{:ok, batch_id, events}`, or `:empty`. The batch is delivered again unless acked;
  if the caller dies first, or the VM dies, it is returned to the spool. Events in
  overflow files are read back first when needed (on a dirty I/O scheduler), so
  batches come in order.
  """
  @spec drain(subject, pos_integer) :: {:ok, non_neg_integer, [binary]} | :empty | too_many
  def drain(subject, max) do
    subject = Subject.normalize!(subject)

    unless is_integer(max) and max in 1..10_000 do
      raise ArgumentError, "max must be an integer in 1..10000, got: #{inspect(max)}"
    end

    drain_loaded(subject, max, 3)
  end

  # `:load`: the next events are in overflow files not read back yet.
  defp drain_loaded(subject, max, tries) do
    case observe(subject, Native.drain(subject, max)) do
      :load when tries > 0 ->
        _ = Native.load(subject)
        drain_loaded(subject, max, tries - 1)

      :load ->
        :empty

      other ->
        other
    end
  end

  @doc "Acknowledges a batch: its events are delivered and their memory returns to the pool."
  @spec ack(subject, non_neg_integer) :: :ok | {:error, :unknown_batch} | too_many
  def ack(subject, batch_id) do
    subject = Subject.normalize!(subject)
    observe(subject, Native.ack(subject, batch_id!(batch_id)))
  end

  @doc "Returns a batch to the spool; its events are delivered again before newer ones."
  @spec nack(subject, non_neg_integer) :: :ok | {:error, :unknown_batch} | too_many
  def nack(subject, batch_id) do
    subject = Subject.normalize!(subject)
    Native.nack(subject, batch_id!(batch_id))
  end

  defp batch_id!(id) when is_integer(id) and id >= 0, do: id

  defp batch_id!(id),
    do: raise(ArgumentError, "batch_id must be a non-negative integer, got: #{inspect(id)}")

  # ---- inspection and manual control ---------------------------------------------------

  @doc """
  `subject`'s state: `:status` (`:inactive | :warning | :active`), `:breaker`,
  `:backpressure`, `:queue_depth`, the overload signals (`:overloaded`, a list of
  `:depth | :latency | :inflight`; `:latency_p95_ms`, `:inflight` and their measured
  and reported parts), `:counters`, `:accounting`, `:forced_open`,
  `:retry_after_ms` (the hint a check would give now: 0 unless active; while forced
  open, the policy's `retry_after_seconds`, since no timer ends it), `:opened_by` (the
  peer node whose breaker opening opened this one, while it stays open from that; else
  `nil`, see `Breakwater.Cluster`) and more (see `docs/operations.md`). `{:error, :unknown_subject}` for a subject that does not
  exist (nothing is created).

  `:accounting` sums up where every event offered to `enqueue/3` is, and holds at
  every moment and across restarts and crashes of the VM:
  `enqueued = delivered + spooled_memory + spooled_disk + dropped + lost`.
  `spooled_memory` counts events in pool segments, `spooled_disk` in overflow files;
  `dropped` counts refusals and discards (by reason in `:counters`); `lost` counts
  accepted events the spool could not keep, with `lost_by_reason`
  (`corrupt`, `truncated`, `missing`, `memory`, `unreadable`). `redelivered` counts
  events handed out again after a failed or unacknowledged attempt, or after a crash:
  the most that at-least-once delivery can have duplicated.
  """
  @spec status(subject) :: map | {:error, :unknown_subject}
  def status(subject) do
    subject = Subject.normalize!(subject)

    case Native.status(subject) do
      %{counters: c} = status ->
        accounting = %{
          enqueued: c.offered_events,
          delivered: c.delivered_events,
          spooled_memory: c.spooled_events - c.spooled_disk_events,
          spooled_disk: c.spooled_disk_events,
          dropped: c.dropped_events,
          lost: c.lost_events,
          lost_by_reason: %{
            corrupt: c.lost_corrupt,
            truncated: c.lost_truncated,
            missing: c.lost_missing,
            memory: c.lost_memory,
            unreadable: c.lost_unreadable
          },
          redelivered: c.redelivered_events
        }

        status
        |> Map.put(:accounting, accounting)
        |> Map.put(:ledger, Breakwater.Ledger.Worker.info(subject))
        |> Map.put(:opened_by, opened_by(subject, status))

      error ->
        error
    end
  end

  defp opened_by(subject, %{breaker: :open}), do: History.opened_by(subject)
  defp opened_by(_subject, _status), do: nil

  @doc """
  Every subject's state, as a `Breakwater.StatusTable` that `iex` prints as an aligned
  table (its `:rows` hold the maps of `status/1`).
  """
  @spec status() :: Breakwater.StatusTable.t()
  def status do
    rows =
      for subject <- Enum.sort(Native.subjects()),
          # Removed meanwhile: not listed.
          %{} = row <- [Native.status(subject)],
          do: row

    %Breakwater.StatusTable{rows: rows}
  end

  @doc """
  Every node's state, gathered from the nodes running Breakwater in this cluster (see
  `Breakwater.Cluster`) with one `:erpc.call/5` per node, all at once, under one
  timeout (see `Breakwater.Cluster.Status` for why not `:erpc.multicall/5`), as a
  `Breakwater.ClusterTable` that `iex` prints as an aligned table: per node and
  subject the router status, breaker, backpressure, depth, the overload signals,
  `remote_opens` and `opened_by`. Nodes that do not answer in time are listed as
  `:timeout`, disconnected ones as `:down`, ones connected but not running Breakwater
  as `:stopped`; none is waited on past the timeout. On a node that is not
  distributed it shows this node alone.

  With a subject: that subject on every node. Otherwise each node's worst subjects.
  Options: `timeout:` (ms, default 1_000), `max_subjects:` (per node, default 100).

      iex> %Breakwater.ClusterTable{nodes: [%{node: node, state: :up}]} = Breakwater.cluster_status()
      iex> node == node()
      true
  """
  @spec cluster_status(subject | keyword) :: Breakwater.ClusterTable.t()
  def cluster_status(subject_or_opts \\ [])

  def cluster_status(opts) when is_list(opts),
    do: Breakwater.Cluster.Status.gather(:all, cluster_opts!(opts))

  def cluster_status(subject), do: cluster_status(subject, [])

  @doc "`cluster_status/1` of `subject`, with the options of `cluster_status/1`."
  @spec cluster_status(subject, keyword) :: Breakwater.ClusterTable.t()
  def cluster_status(subject, opts) do
    subject = Subject.normalize!(subject)
    opts = cluster_opts!(opts)
    Breakwater.Cluster.Status.gather(subject, opts)
  end

  @cluster_opts [timeout: 1..0xFFFFFFFF, max_subjects: 0..16_777_216]

  defp cluster_opts!(opts) do
    opts = keyword!(opts, [:timeout, :max_subjects], "cluster_status/1,2")

    for {key, value} <- opts do
      first..last = Keyword.fetch!(@cluster_opts, key)

      unless is_integer(value) and value in first..last do
        raise ArgumentError,
              "#{key} must be an integer from #{first} to #{last}, got: #{inspect(value, limit: 5)}"
      end
    end

    Map.to_list(opts)
  end

  @doc """
  Removes `subject`: `:ok`; `{:error, :spooled}` while events wait in its spool (memory
  or disk) or a batch of it is in flight; `{:error, :unknown_subject}`.

  Its history, events and counts go with it, and its alarms are cleared. A ledger
  attached to it is detached (its worker stopped, and a log line names the module);
  when the removal is refused, the ledger stays attached. A router still using the
  name afterwards simply creates a fresh subject with the default policy.

      iex> Breakwater.configure("temporary", warning_threshold: 10, critical_threshold: 20)
      :ok
      iex> Breakwater.remove("temporary")
      :ok
      iex> Breakwater.status("temporary")
      {:error, :unknown_subject}
  """
  @spec remove(subject) :: :ok | {:error, :spooled | :unknown_subject}
  def remove(subject), do: subject |> Subject.normalize!() |> Lifecycle.remove()

  @doc "Closes `subject`'s breaker (also clearing a forced open)."
  @spec reset(subject) :: :ok | too_many
  def reset(subject), do: control(subject, &Native.reset/1)

  @doc "Opens `subject`'s breaker until `reset/1`."
  @spec force_open(subject) :: :ok | too_many
  def force_open(subject), do: control(subject, &Native.force_open/1)

  @doc "Disables `subject`: admit everything, never trip, keep counting."
  @spec disable(subject) :: :ok | too_many
  def disable(subject), do: control(subject, &Native.disable/1)

  @doc "Undoes `disable/1`."
  @spec enable(subject) :: :ok | too_many
  def enable(subject), do: control(subject, &Native.enable/1)

  defp control(subject, fun) do
    subject = Subject.normalize!(subject)
    observe(subject, fun.(subject))
  end

  # ---- ledgers ------------------------------------------------------------------------

  @doc """
  Starts a supervised worker that delivers `subject`'s spool to `module` (a
  `Breakwater.Ledger`) through the subject's breaker. Options: `batch_size:` (1..10_000,
  default 500), `poll_ms:` (1..60_000, default 5: how often an idle worker looks for
  events). The attachment is remembered apart from the worker: whatever process dies,
  the worker is started again (see `Breakwater.Ledgers`). The subject becomes a
  configured one (created if needed), so it never expires while attached.

  Returns `{:error, :already_attached}` when the subject has a worker,
  `{:error, {:invalid_ledger, module}}` when `module` does not implement the behaviour,
  and `{:error, {:invalid_option, key, value}}` / `{:error, {:unknown_option, key}}` for
  bad options.
  """
  @spec attach_ledger(subject, module, keyword) :: :ok | {:error, term}
  def attach_ledger(subject, module, opts \\ []) do
    subject = Subject.normalize!(subject)

    with {:ok, opts} <- ledger_opts(opts),
         true <- Breakwater.Ledger.valid?(module) || {:error, {:invalid_ledger, module}},
         # A subject with a ledger is a configured one (its room is reserved).
         :ok <- Native.declare(subject) do
      Ledgers.attach(subject, module, Enum.reverse(opts))
    end
  end

  @ledger_opts [batch_size: 1..10_000, poll_ms: 1..60_000]

  @doc false
  # The options of attach_ledger/3 and their ranges (for configuration error messages).
  @spec ledger_options() :: keyword(Range.t())
  def ledger_options, do: @ledger_opts

  defp ledger_opts(opts) do
    if keyword_list?(opts), do: check_ledger_opts(opts), else: {:error, {:invalid_options, opts}}
  end

  defp check_ledger_opts(opts) do
    Enum.reduce_while(opts, {:ok, []}, fn
      {key, value}, {:ok, acc} when is_atom(key) ->
        case Keyword.fetch(@ledger_opts, key) do
          {:ok, range} when is_integer(value) ->
            if value in range,
              do: {:cont, {:ok, [{key, value} | acc]}},
              else: {:halt, {:error, {:invalid_option, key, value}}}

          {:ok, _range} ->
            {:halt, {:error, {:invalid_option, key, value}}}

          :error ->
            {:halt, {:error, {:unknown_option, key}}}
        end

      other, _ ->
        {:halt, {:error, {:invalid_options, other}}}
    end)
  end

  @doc """
  Stops `subject`'s ledger worker. A batch it had in flight goes back to the spool;
  nothing spooled is lost (`{:error, :not_attached}` when there is no worker).
  """
  @spec detach_ledger(subject) :: :ok | {:error, :not_attached}
  def detach_ledger(subject), do: subject |> Subject.normalize!() |> Ledgers.detach()

  @doc "Subjects with a ledger attached, and their ledger modules, sorted by subject."
  @spec ledgers() :: [{binary, module}]
  def ledgers, do: Ledgers.list()

  @doc "Active alerts (see `Breakwater.Alerts`)."
  @spec alerts() :: [Breakwater.Alerts.alert()]
  def alerts, do: Breakwater.Alerts.list()

  @compile {:inline, observe: 2}
  defp observe(subject, {:transitions, _, _} = result), do: History.observe(subject, result)
  defp observe(_subject, result), do: result
end
