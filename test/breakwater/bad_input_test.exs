defmodule Breakwater.BadInputTest do
  # Random terms (PropEr generators) thrown at every public function of `Breakwater`
  # and `:router_intake_backpressure`: each returns its documented shape or raises
  # ArgumentError, changes nothing when it refuses, creates no atom. async: false: the
  # test counts atoms and subjects of the whole node.
  use ExUnit.Case, async: false

  import Bitwise

  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log
  @moduletag timeout: 300_000

  @router :router_intake_backpressure

  @numtests String.to_integer(System.get_env("BREAKWATER_BAD_INPUT_NUMTESTS", "4000"))

  # Nothing is left out: funs of any arity (and non-funs) for `call/2,3`, improper
  # lists as options, `timeout:` and `call_timeout_ms` beyond an Erlang timer.

  @atoms [
    :ok,
    :error,
    :undefined,
    nil,
    true,
    false,
    :foo,
    :success,
    :failure,
    :critical,
    :high,
    :normal,
    :low,
    :priority,
    :event_type,
    :latency_ms,
    :timeout,
    :token,
    :warning_threshold,
    :backpressure_active,
    :backpressure_warning,
    :backpressure_inactive,
    :exponential,
    :drop_oldest,
    :"",
    :"with space",
    Breakwater
  ]

  # Every policy key, and one no policy has.
  @policy_keys Breakwater.Policy.keys() ++ [:colour]

  @option_keys [:priority, :event_type, :timeout, :latency_ms, :token, :foo]
  @statuses [:backpressure_inactive, :backpressure_warning, :backpressure_active]

  # ---- generators ---------------------------------------------------------------------

  # Pids (alive and dead), a reference, a port and funs, made once per test.
  defp others do
    dead = spawn(fn -> :ok end)
    ref = Process.monitor(dead)
    receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
    port = Port.open({:spawn, "true"}, [])

    [self(), dead, make_ref(), port, fn -> :ok end, fn x -> x end, fn _, _ -> :ok end] ++
      funs0()
  end

  defp funs0, do: [fn -> :ok end, fn -> {:error, :boom} end, fn -> {:ok, 1} end, &:erlang.node/0]

  defp integer do
    :proper_types.oneof([
      :proper_types.integer(),
      :proper_types.elements([
        0,
        1,
        -1,
        9,
        10,
        -10,
        1024,
        10_000,
        10_001,
        (1 <<< 40) + 1,
        (1 <<< 48) - 1,
        1 <<< 48,
        (1 <<< 63) - 1,
        1 <<< 63,
        (1 <<< 64) - 1,
        1 <<< 64,
        1 <<< 100,
        -(1 <<< 63),
        -(1 <<< 100)
      ])
    ])
  end

  defp float do
    :proper_types.oneof([
      :proper_types.float(),
      :proper_types.elements([0.0, -0.0, 0.5, 1.0, 5.0, -1.5, 1.0e300, -1.0e300, 1.0e-300])
    ])
  end

  defp binary do
    :proper_types.oneof([
      :proper_types.binary(),
      :proper_types.elements(["", "x", "fuzz-a", <<255, 0, 128>>, <<1::3>>, <<"é"::utf8>>]),
      :proper_types.bind(
        :proper_types.elements([256, 257, 1024, 1025, 4096, 4097, 70_000]),
        &:binary.copy("a", &1),
        false
      )
    ])
  end

  defp leaf(others) do
    :proper_types.frequency([
      {4, integer()},
      {2, float()},
      {4, :proper_types.elements(@atoms)},
      {4, binary()},
      {2, :proper_types.elements(others)}
    ])
  end

  # Any term: leaves, proper and improper lists, tuples, maps, keyword-ish lists and
  # policy-ish maps, nested.
  defp term(others), do: :proper_types.sized(&term(others, &1))

  defp term(others, size) when size <= 1, do: leaf(others)

  defp term(others, size) do
    inner = :proper_types.lazy(fn -> term(others, div(size, 3)) end)

    :proper_types.frequency([
      {6, leaf(others)},
      {2, :proper_types.list(inner)},
      {2, improper(inner, leaf(others))},
      {1, :proper_types.bind(:proper_types.list(inner), &List.to_tuple/1, false)},
      {1, :proper_types.bind(:proper_types.list({inner, inner}), &Map.new/1, false)},
      {2, keywords(@option_keys, inner)},
      {1,
       improper(:proper_types.tuple([:proper_types.elements(@option_keys), inner]), leaf(others))},
      {2, keywords(@policy_keys, inner)},
      {1,
       improper(:proper_types.tuple([:proper_types.elements(@policy_keys), inner]), leaf(others))},
      {1, :proper_types.bind(keywords(@policy_keys, inner), &Map.new/1, false)}
    ])
  end

  defp improper(inner, tail) do
    :proper_types.bind(
      {:proper_types.non_empty(:proper_types.list(inner)), tail},
      fn {l, t} -> if is_list(t), do: l ++ [t | :tail], else: l ++ t end,
      false
    )
  end

  defp keywords(keys, value), do: :proper_types.list({:proper_types.elements(keys), value})

  # Not a subject: neither a binary of 1..1024 bytes nor an atom other than nil,
  # true and false.
  defp invalid_subject(others) do
    :proper_types.frequency([
      {2, integer()},
      {1, float()},
      {2, :proper_types.elements([nil, true, false, "", <<1::3>>, :binary.copy("s", 1025)])},
      {1, :proper_types.elements(others)},
      {1, :proper_types.list(leaf(others))},
      {1, :proper_types.bind(:proper_types.list(leaf(others)), &List.to_tuple/1, false)},
      {1, :proper_types.bind(keywords(@policy_keys, leaf(others)), &Map.new/1, false)}
    ])
  end

  defp subject(ctx) do
    :proper_types.frequency([
      {1, ctx.any},
      {4, :proper_types.elements(["fuzz-a", "fuzz-b", :foo, :critical, ctx.stable])},
      {1, ctx.invalid}
    ])
  end

  # options: anything, keyword lists, and improper ones
  defp opts(ctx) do
    :proper_types.oneof([
      ctx.any,
      keywords(@option_keys, ctx.any),
      keywords([:priority], :proper_types.oneof([:proper_types.integer(-2, 11), ctx.any])),
      keywords([:event_type], :proper_types.oneof([binary(), ctx.any])),
      keywords([:timeout], :proper_types.oneof([integer(), :proper_types.elements([:infinity])])),
      improper(
        :proper_types.tuple([:proper_types.elements(@option_keys), ctx.any]),
        leaf(ctx.others)
      ),
      keywords(
        [:token, :priority],
        :proper_types.oneof([
          :proper_types.boolean(),
          :proper_types.integer(-2, 11),
          :proper_types.elements([2_147_483_647, 2_147_483_648, 1 <<< 64]),
          ctx.any
        ])
      )
    ])
  end

  defp policy(ctx) do
    :proper_types.oneof([
      ctx.any,
      keywords(@policy_keys, ctx.any),
      :proper_types.bind(keywords(@policy_keys, integer()), &Map.new/1, false)
    ])
  end

  defp int_or_any(ctx), do: :proper_types.oneof([integer(), ctx.any])

  # {module, function, [argument type]} for every public function
  defp table(ctx) do
    subj = subject(ctx)
    # `call` and the spool functions use subjects of their own (see above)
    call_subj = :proper_types.frequency([{2, ctx.invalid}, {1, "fuzz-call"}])
    spool_subj = :proper_types.frequency([{2, ctx.invalid}, {1, "fuzz-spool"}])
    fun0 = :proper_types.oneof([:proper_types.elements(funs0()), ctx.any])

    outcome =
      :proper_types.oneof([:proper_types.elements([:success, :failure, {:failure, :x}]), ctx.any])

    status = :proper_types.oneof([:proper_types.elements(@statuses), ctx.any])

    info_map =
      :proper_types.bind(keywords([:type, :pending_messages, :foo], ctx.any), &Map.new/1, false)

    info_type =
      :proper_types.elements([
        "backpressure_active",
        :recovery,
        "custom",
        :undefined,
        nil,
        "",
        :binary.copy("t", 300)
      ])

    event =
      :proper_types.oneof([
        binary(),
        ctx.any,
        info_map,
        :proper_types.bind(info_type, &%{type: &1, pending_messages: 1_500}, false)
      ])

    module = :proper_types.oneof([:proper_types.elements(@atoms), ctx.any])

    ledger_opts =
      :proper_types.oneof([
        ctx.any,
        keywords([:batch_size, :poll_ms, :foo], int_or_any(ctx)),
        improper(
          :proper_types.tuple([:proper_types.elements([:batch_size, :poll_ms]), integer()]),
          leaf(ctx.others)
        )
      ])

    [
      {Breakwater, :configure, [subj, policy(ctx)]},
      {Breakwater, :policy, [subj]},
      {Breakwater, :admit, [subj]},
      {Breakwater, :admit, [subj, opts(ctx)]},
      {Breakwater, :record, [subj, outcome]},
      {Breakwater, :record, [subj, outcome, opts(ctx)]},
      {Breakwater, :call, [call_subj, fun0]},
      {Breakwater, :call, [call_subj, fun0, opts(ctx)]},
      {Breakwater, :report_depth, [subj, int_or_any(ctx)]},
      {Breakwater, :report_latency, [subj, int_or_any(ctx)]},
      {Breakwater, :report_inflight, [subj, int_or_any(ctx)]},
      {Breakwater, :enqueue, [spool_subj, event]},
      {Breakwater, :enqueue, [spool_subj, event, opts(ctx)]},
      {Breakwater, :drain, [spool_subj, int_or_any(ctx)]},
      {Breakwater, :ack, [spool_subj, int_or_any(ctx)]},
      {Breakwater, :nack, [spool_subj, int_or_any(ctx)]},
      {Breakwater, :status, []},
      {Breakwater, :status, [subj]},
      {Breakwater, :reset, [subj]},
      {Breakwater, :force_open, [subj]},
      {Breakwater, :disable, [subj]},
      {Breakwater, :enable, [subj]},
      {Breakwater, :alerts, []},
      {Breakwater, :attach_ledger, [subj, module]},
      {Breakwater, :attach_ledger, [subj, module, ledger_opts]},
      {Breakwater, :detach_ledger, [subj]},
      {Breakwater, :ledgers, []},
      {Breakwater, :remove, [subj]},
      {Breakwater, :cluster_status, []},
      {Breakwater, :cluster_status, [:proper_types.oneof([subj, opts(ctx)])]},
      {Breakwater, :cluster_status, [subj, opts(ctx)]},
      {@router, :check_backpressure, [subj]},
      {@router, :get_backpressure_status, [subj]},
      {@router, :get_detailed_backpressure_status, [subj]},
      {@router, :get_jetstream_pending, [subj]},
      {@router, :get_processing_latency_p95, [subj]},
      {@router, :get_inflight_count, [subj]},
      {@router, :get_backpressure_policy, [subj]},
      {@router, :get_default_backpressure_policy, []},
      {@router, :validate_backpressure_policy, [policy(ctx)]},
      {@router, :apply_backpressure_policy, [status, policy(ctx)]},
      {@router, :apply_backpressure_policy, [subj, status]},
      {@router, :apply_backpressure_policy, [status, policy(ctx), int_or_any(ctx)]},
      {@router, :track_backpressure_event, [subj, event]},
      {@router, :get_backpressure_events, [subj]},
      {@router, :get_backpressure_metrics, [subj]},
      {@router, :get_backpressure_recovery_status, [subj]},
      {@router, :check_backpressure_recovery, [subj]},
      {@router, :get_previous_backpressure_status, [subj]},
      {@router, :track_backpressure_recovery, [subj]},
      {@router, :track_backpressure_status_history, [subj, status]},
      {@router, :get_cluster_backpressure_status, []},
      {@router, :get_cluster_backpressure_status, [subj]}
    ]
  end

  defp call_type(table) do
    table
    |> Enum.map(fn {m, f, types} ->
      :proper_types.bind(types, fn args -> {m, f, args} end, false)
    end)
    |> :proper_types.oneof()
  end

  defp context do
    others = others()

    ctx = %{
      others: others,
      any: term(others),
      invalid: invalid_subject(others),
      stable: T.subject([], "fuzz-stable")
    }

    Map.put(ctx, :table, table(ctx))
  end

  # Documented public functions (not @doc false) of a module.
  defp documented(module) do
    {:docs_v1, _, _, _, _, _, docs} = Code.fetch_docs(module)

    for {{:function, name, arity}, _, _, doc, _} <- docs, doc != :hidden, into: MapSet.new() do
      {module, name, arity}
    end
  end

  # A fixed sample of `type` (the same for the same seed).
  defp pick(type, size, seed) do
    # (pick/3 warns on stdout about the state it leaves; it is erased at once)
    {result, _warning} = ExUnit.CaptureIO.with_io(fn -> :proper_gen.pick(type, size, seed) end)
    :proper.global_state_erase()
    result
  end

  # Table entries whose first argument is a subject.
  defp with_subject(table) do
    for {m, f, [_ | rest]} <- table,
        f not in [:validate_backpressure_policy, :apply_backpressure_policy],
        do: {m, f, rest}
  end

  # ---- the contract -----------------------------------------------------------------------

  defp run(m, f, args) do
    {:returned, apply(m, f, args)}
  rescue
    # Erlang callers of the router module get error tuples, never an exception.
    e in ArgumentError ->
      if m == @router,
        do: {:other_exception, e, __STACKTRACE__},
        else: {:argument_error, e}

    e ->
      {:other_exception, e, __STACKTRACE__}
  catch
    kind, reason -> {:other_exception, {kind, reason}, __STACKTRACE__}
  end

  @reasons [:circuit_open, :half_open_limit, :backpressure, :overloaded, :shed_low_priority]

  defp non_neg?(n), do: is_integer(n) and n >= 0

  # Does `result` have the documented shape of `f`'s answer?
  defp shape?(_m, _f, {:error, _}), do: true
  defp shape?(Breakwater, :configure, r), do: r == :ok
  defp shape?(Breakwater, :policy, r), do: is_map(r) and is_map_key(r, :warning_threshold)
  defp shape?(Breakwater, :admit, :ok), do: true
  defp shape?(Breakwater, :admit, {:ok, t}), do: non_neg?(t) and t <= 2_147_483_647

  defp shape?(Breakwater, :admit, {:reject, reason, ms}),
    do: reason in @reasons and non_neg?(ms)

  defp shape?(Breakwater, :record, r), do: r == :ok
  defp shape?(Breakwater, :call, {:ok, _}), do: true

  defp shape?(Breakwater, f, r) when f in [:report_depth, :report_latency, :report_inflight],
    do: r == :ok

  defp shape?(Breakwater, :enqueue, :ok), do: true
  defp shape?(Breakwater, :enqueue, {:reject, :pool_exhausted, ms}), do: non_neg?(ms)
  defp shape?(Breakwater, :drain, :empty), do: true

  defp shape?(Breakwater, :drain, {:ok, id, events}),
    do: non_neg?(id) and is_list(events) and Enum.all?(events, &is_binary/1)

  defp shape?(Breakwater, f, r) when f in [:ack, :nack, :reset, :force_open, :disable, :enable],
    do: r == :ok

  defp shape?(Breakwater, :status, %Breakwater.StatusTable{}), do: true

  defp shape?(Breakwater, :status, %{breaker: b, backpressure: bp, queue_depth: d, counters: c}),
    do:
      b in [:closed, :open, :half_open] and bp in [:normal, :pressure, :dropping, :recovery] and
        non_neg?(d) and is_map(c)

  defp shape?(Breakwater, :alerts, r), do: is_list(r)
  defp shape?(Breakwater, :attach_ledger, r), do: r == :ok
  defp shape?(Breakwater, :detach_ledger, r), do: r == :ok
  defp shape?(Breakwater, :ledgers, r), do: is_list(r)
  defp shape?(Breakwater, :remove, r), do: r == :ok

  defp shape?(@router, :check_backpressure, {status, seconds}),
    do:
      status in @statuses and non_neg?(seconds) and
        (status == :backpressure_active or seconds == 0)

  defp shape?(@router, :get_backpressure_status, status), do: status in @statuses

  defp shape?(@router, :get_detailed_backpressure_status, r),
    do:
      is_map(r) and r.status in @statuses and
        Enum.all?(
          [:pending_messages, :latency_p95_ms, :inflight_messages],
          &non_neg?(r.metrics[&1])
        ) and
        is_map_key(r.thresholds, :queue_overload) and is_integer(r.timestamp)

  defp shape?(@router, f, n)
       when f in [:get_jetstream_pending, :get_processing_latency_p95, :get_inflight_count],
       do: non_neg?(n)

  defp shape?(@router, f, r)
       when f in [:get_backpressure_policy, :get_default_backpressure_policy],
       do: is_map(r) and is_map_key(r, :retry_after_seconds)

  defp shape?(@router, :validate_backpressure_policy, r), do: r == :ok
  defp shape?(@router, :apply_backpressure_policy, :continue), do: true
  defp shape?(@router, :apply_backpressure_policy, {:reject, s}), do: non_neg?(s)

  defp shape?(@router, :apply_backpressure_policy, %{action: a, retry_after_seconds: s} = r),
    do:
      a in [:continue, :reject] and non_neg?(s) and is_boolean(r.alert) and
        non_neg?(r.max_retry_attempts) and
        r.backoff_strategy in [:exponential, :linear, :constant]

  defp shape?(@router, f, r)
       when f in [
              :track_backpressure_event,
              :track_backpressure_recovery,
              :track_backpressure_status_history
            ],
       do: r == :ok

  defp shape?(@router, :get_backpressure_events, r),
    do:
      is_list(r) and
        Enum.all?(
          r,
          &(is_map_key(&1, :event_type) and is_integer(&1.timestamp) and is_binary(&1.subject))
        )

  defp shape?(@router, :get_backpressure_metrics, r),
    do:
      is_map(r) and non_neg?(r.total_events) and non_neg?(r.active_events) and
        non_neg?(r.warning_events) and non_neg?(r.recovery_events) and
        (r.last_event_time == :undefined or is_integer(r.last_event_time))

  defp shape?(@router, :get_backpressure_recovery_status, r),
    do:
      is_map(r) and non_neg?(r.recovery_count) and r.status in @statuses and
        is_boolean(r.recovered) and
        (r.recovery_time == :undefined or is_integer(r.recovery_time))

  defp shape?(@router, :check_backpressure_recovery, {:ok, b}), do: is_boolean(b)
  defp shape?(@router, :get_previous_backpressure_status, s), do: s in @statuses
  defp shape?(Breakwater, :cluster_status, %Breakwater.ClusterTable{nodes: [_ | _]}), do: true

  defp shape?(@router, :get_cluster_backpressure_status, %{nodes: [_ | _], rows: rows}),
    do: is_list(rows)

  defp shape?(_m, _f, _r), do: false

  defp contract_holds?({m, f, args}) do
    case run(m, f, args) do
      {:returned, r} -> shape?(m, f, r)
      {:argument_error, _} -> true
      {:other_exception, _, _} -> false
    end
  end

  defp describe_call({m, f, args}) do
    outcome =
      case run(m, f, args) do
        {:returned, r} ->
          "returned #{inspect(r, limit: 10, printable_limit: 80)}"

        {:argument_error, e} ->
          "raised #{Exception.message(e)}"

        {:other_exception, e, st} ->
          "raised #{inspect(e, limit: 10)}\n#{Exception.format_stacktrace(st)}"
      end

    "#{inspect(m)}.#{f}(#{Enum.map_join(args, ", ", &inspect(&1, limit: 6, printable_limit: 60))}) #{outcome}"
  end

  # Spools and in-flight batches the fuzz left behind go back to the pool.
  defp release_spools(subjects) do
    for s <- subjects, Breakwater.Native.exists(s), do: release_spool(s)
  end

  defp release_spool(s) do
    Breakwater.Native.nack_all(s)

    case Breakwater.drain(s, 10_000) do
      {:ok, id, _} ->
        :ok = Breakwater.ack(s, id)
        release_spool(s)

      _ ->
        :ok
    end
  end

  defp application_alive!(sup) do
    assert Process.whereis(Breakwater.Supervisor) == sup
    assert Process.alive?(sup)
    assert is_pid(Process.whereis(Breakwater.Ticker))
    assert Breakwater.Ticker.tick() == :ok
    assert %{segments: 64} = Breakwater.Native.pool_info()
    s = T.unique("fuzz-alive")
    assert @router.check_backpressure(s) == {:backpressure_inactive, 0}
    assert Breakwater.admit(s) == :ok
  end

  # ---- tests ----------------------------------------------------------------------------------

  test "the table covers every documented public function" do
    ctx = context()
    covered = MapSet.new(ctx.table, fn {m, f, types} -> {m, f, length(types)} end)
    documented = MapSet.union(documented(Breakwater), documented(@router))

    # Functions documented after this file was written are fuzzed by the generic test
    # below; the router API's list must be covered here with argument types of its own.
    spec = [
      {Breakwater, :configure, 2},
      {Breakwater, :admit, 1},
      {Breakwater, :admit, 2},
      {Breakwater, :record, 2},
      {Breakwater, :record, 3},
      {Breakwater, :call, 2},
      {Breakwater, :call, 3},
      {Breakwater, :report_depth, 2},
      {Breakwater, :report_latency, 2},
      {Breakwater, :report_inflight, 2},
      {Breakwater, :enqueue, 2},
      {Breakwater, :enqueue, 3},
      {Breakwater, :drain, 2},
      {Breakwater, :ack, 2},
      {Breakwater, :nack, 2},
      {Breakwater, :status, 0},
      {Breakwater, :status, 1},
      {Breakwater, :reset, 1},
      {Breakwater, :force_open, 1},
      {Breakwater, :disable, 1},
      {Breakwater, :enable, 1},
      {Breakwater, :attach_ledger, 2},
      {Breakwater, :attach_ledger, 3},
      {Breakwater, :detach_ledger, 1},
      {Breakwater, :remove, 1},
      {@router, :check_backpressure, 1},
      {@router, :get_backpressure_status, 1},
      {@router, :get_detailed_backpressure_status, 1},
      {@router, :get_jetstream_pending, 1},
      {@router, :get_processing_latency_p95, 1},
      {@router, :get_inflight_count, 1},
      {@router, :get_backpressure_policy, 1},
      {@router, :get_default_backpressure_policy, 0},
      {@router, :validate_backpressure_policy, 1},
      {@router, :apply_backpressure_policy, 2},
      {@router, :apply_backpressure_policy, 3},
      {@router, :track_backpressure_event, 2},
      {@router, :get_backpressure_events, 1},
      {@router, :get_backpressure_metrics, 1},
      {@router, :get_backpressure_recovery_status, 1},
      {@router, :check_backpressure_recovery, 1},
      {@router, :get_previous_backpressure_status, 1},
      {@router, :track_backpressure_recovery, 1},
      {@router, :track_backpressure_status_history, 2},
      {Breakwater, :cluster_status, 0},
      {Breakwater, :cluster_status, 1},
      {Breakwater, :cluster_status, 2},
      {@router, :get_cluster_backpressure_status, 0},
      {@router, :get_cluster_backpressure_status, 1}
    ]

    for mfa <- spec, do: assert(mfa in covered, "#{inspect(mfa)} is not fuzzed")

    for mfa <- covered do
      assert mfa in documented or function_exported?(elem(mfa, 0), elem(mfa, 1), elem(mfa, 2))
    end
  end

  test "every public function returns its documented shape, an error tuple, or (Elixir API) raises ArgumentError" do
    sup = Process.whereis(Breakwater.Supervisor)
    ctx = context()
    prop = :proper.forall(call_type(ctx.table), &contract_holds?/1)

    result =
      :proper.quickcheck(prop, [:quiet, :long_result, {:numtests, @numtests}, {:max_size, 12}])

    release_spools(["fuzz-spool", "fuzz-call"])

    case result do
      true -> :ok
      [call] -> flunk("bad input broke the contract:\n" <> describe_call(call))
      other -> flunk("PropEr returned #{inspect(other, limit: 20)}")
    end

    application_alive!(sup)
  end

  test "documented functions outside the router API list reject an invalid subject cleanly" do
    sup = Process.whereis(Breakwater.Supervisor)
    ctx = context()
    listed = MapSet.new(ctx.table, fn {m, f, types} -> {m, f, length(types)} end)

    extra =
      MapSet.union(documented(Breakwater), documented(@router))
      |> Enum.reject(fn {_, _, a} = mfa -> mfa in listed or a == 0 end)

    {:ok, subjects} = pick(:proper_types.vector(30, ctx.invalid), 8, {7, 7, 7})
    {:ok, rest} = pick(:proper_types.vector(30, ctx.any), 8, {8, 8, 8})
    before = length(Breakwater.Native.subjects())

    for {m, f, a} <- extra, {s, x} <- Enum.zip(subjects, rest) do
      args = [s | List.duplicate(x, a - 1)]

      case run(m, f, args) do
        {:argument_error, _} -> :ok
        {:returned, {:error, _}} -> :ok
        _ -> flunk("invalid subject accepted: " <> describe_call({m, f, args}))
      end
    end

    assert length(Breakwater.Native.subjects()) == before
    application_alive!(sup)
  end

  test "a bad call changes nothing" do
    ctx = context()
    s = T.subject([warning_threshold: 100, critical_threshold: 200], "fuzz-unchanged")
    :ok = Breakwater.report_depth(s, 150)
    :ok = Breakwater.record(s, :failure)
    :ok = @router.track_backpressure_event(s, :before)

    # every function that takes a subject, on `s`, with arbitrary other arguments
    calls =
      for {m, f, rest} <- with_subject(ctx.table) do
        :proper_types.bind(rest, fn args -> {m, f, [s | args]} end, false)
      end

    {:ok, batch} = pick(:proper_types.vector(800, :proper_types.oneof(calls)), 10, {1, 2, 3})

    snapshot = fn ->
      {Breakwater.status(s), Breakwater.policy(s), @router.get_backpressure_events(s),
       Breakwater.History.history(s), @router.get_backpressure_recovery_status(s)}
    end

    # The timer keeps the signals current in the background (the latency window's p95
    # and sample count, and the flags they lead to, from the latencies the good calls
    # recorded): hold it, so that only the calls change the subject.
    :ok = :sys.suspend(Breakwater.Ticker)

    bad =
      try do
        check_unchanged(batch, snapshot)
      after
        :sys.resume(Breakwater.Ticker)
      end

    release_spools([s])
    # most random arguments are bad ones
    assert bad > 200
  end

  defp check_unchanged(batch, snapshot) do
    Enum.count(batch, fn {m, f, args} = call ->
      before = snapshot.()

      bad? =
        case run(m, f, args) do
          {:argument_error, _} -> true
          # {:error, _} from call/3 is the outcome of a call that ran
          {:returned, {:error, _}} -> f != :call
          {:returned, _} -> false
          {:other_exception, _, _} -> flunk(describe_call(call))
        end

      if bad?, do: assert(snapshot.() == before, "changed by: " <> describe_call(call))
      bad?
    end)
  end

  test "invalid subjects create no subject, and bad input creates no atom" do
    sup = Process.whereis(Breakwater.Supervisor)
    ctx = context()

    invalid_calls =
      for {m, f, rest} <- with_subject(ctx.table) do
        :proper_types.bind([ctx.invalid | rest], fn args -> {m, f, args} end, false)
      end

    {:ok, invalid_batch} =
      pick(:proper_types.vector(500, :proper_types.oneof(invalid_calls)), 8, {4, 5, 6})

    {:ok, batch} = pick(:proper_types.vector(800, call_type(ctx.table)), 8, {3, 2, 1})

    before = Breakwater.Native.subjects() |> MapSet.new()

    for {m, f, args} = call <- invalid_batch do
      case run(m, f, args) do
        {:argument_error, _} -> :ok
        {:returned, {:error, _}} -> :ok
        _ -> flunk("invalid subject accepted: " <> describe_call(call))
      end
    end

    assert MapSet.new(Breakwater.Native.subjects()) == before

    run_all = fn calls ->
      for {m, f, args} <- calls, do: run(m, f, args)
      release_spools(["fuzz-spool", "fuzz-call"])
      :ok = Breakwater.Ticker.tick()
      :erlang.system_info(:atom_count)
    end

    # Loading a module creates its atoms: load every module these calls may reach
    # first. Then an identical second run must create no atom at all, and neither may
    # a run on new random input.
    for app <- [:kernel, :stdlib, :compiler, :elixir, :logger, :ex_unit, :proper, :breakwater],
        module <- Application.spec(app, :modules) || [],
        do: Code.ensure_loaded(module)

    first = run_all.(invalid_batch ++ batch)
    second = run_all.(invalid_batch ++ batch)
    assert second == first

    {:ok, fresh} = pick(:proper_types.vector(500, call_type(ctx.table)), 8, {9, 9, 9})
    assert run_all.(fresh) == first

    application_alive!(sup)
  end
end
