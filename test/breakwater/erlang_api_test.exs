defmodule Breakwater.ErlangApiTest do
  # What Erlang callers of router_intake_backpressure get back: `undefined` for "none"
  # everywhere (never Elixir's `nil`), and policies they read back are accepted again.
  use ExUnit.Case, async: true

  alias Breakwater.TestSubjects, as: T

  @router :router_intake_backpressure

  # Every term inside `term` (maps' keys and values, list and tuple elements).
  defp terms(term) when is_map(term),
    do: [term | Enum.flat_map(term, fn {k, v} -> terms(k) ++ terms(v) end)]

  defp terms(term) when is_list(term), do: [term | Enum.flat_map(term, &terms/1)]

  defp terms(term) when is_tuple(term),
    do: [term | term |> Tuple.to_list() |> Enum.flat_map(&terms/1)]

  defp terms(term), do: [term]

  test "maps returned to Erlang say undefined, never nil, at any depth" do
    # A subject with every "none" policy value, a history and no recovery yet.
    s = T.subject(slow_call_ms: nil, max_open_timeout_ms: :none, failure_rate_threshold: nil)
    :ok = @router.track_backpressure_event(s, :probe)

    results = [
      @router.get_detailed_backpressure_status(s),
      @router.get_backpressure_policy(s),
      @router.get_default_backpressure_policy(),
      @router.get_backpressure_events(s),
      @router.get_backpressure_metrics(s),
      @router.get_backpressure_recovery_status(s),
      @router.check_backpressure_recovery(s)
    ]

    for result <- results do
      refute nil in terms(result), "nil in #{inspect(result)}"
    end

    # The values that are "none" for this subject are there, as undefined.
    policy = @router.get_backpressure_policy(s)
    assert policy.slow_call_ms == :undefined
    assert policy.max_open_timeout_ms == :undefined
    assert @router.get_backpressure_recovery_status(s).last_recovery_at == :undefined
    assert @router.get_detailed_backpressure_status(s).policy.slow_call_ms == :undefined

    # The Elixir API keeps nil.
    assert Breakwater.policy(s).slow_call_ms == nil
  end

  test "a policy read back from Erlang is accepted as it is" do
    s = T.subject(slow_call_ms: nil)
    policy = @router.get_backpressure_policy(s)

    assert @router.validate_backpressure_policy(policy) == :ok

    assert {:reject, _} = @router.apply_backpressure_policy(:backpressure_active, policy, 1)
  end
end
