defmodule Breakwater.PolicyTest do
  use ExUnit.Case, async: true

  alias Breakwater.Policy

  doctest Breakwater.Policy

  @max 281_474_976_710_655

  # {key, [{valid input, normalised value}], [invalid input]} for every policy key,
  # each tried alone over the defaults.
  @rules [
    {:warning_threshold, [{1, 1}, {10, 10}, {49_999, 49_999}],
     [0, -1, 1.5, "10", nil, :none, @max + 1]},
    {:critical_threshold, [{10_001, 10_001}, {@max, @max}],
     [0, 10_000, 5, -1, @max + 1, 5.0e4, :x]},
    {:recovery_threshold, [{0.1, 0.1}, {0.5, 0.5}, {0.99, 0.99}],
     [0, 1, 0.0, 1.0, -0.5, 1.5, "0.5", nil]},
    {:stability_ms, [{0, 0}, {1, 1}, {5_000, 5_000}, {@max, @max}], [-1, 1.0, @max + 1, nil]},
    {:low_priority_shed_ratio, [{1, 1.0}, {1.0, 1.0}, {0.5, 0.5}, {0.01, 0.01}],
     [0, 0.0, -0.1, 1.01, 2, "0.8", nil]},
    {:bypass_priority,
     [{1, 1}, {3, 3}, {9, 9}, {:critical, 9}, {:high, 7}, {:normal, 5}, {:low, 1}],
     [0, 10, -1, 8.0, :urgent, "high", nil]},
    {:low_priority_max, [{0, 0}, {7, 7}, {:low, 1}, {:normal, 5}, {:high, 7}],
     [-1, 8, 9, :critical, 10, 1.0, "low"]},
    {:priorities,
     [
       {%{}, %{}},
       {[], %{}},
       {%{"critical-alarm" => :critical, "batch-operation" => :low},
        %{"critical-alarm" => 9, "batch-operation" => 1}},
       {[{"a", 0}, {:b, 9}, {"c", :normal}], %{"a" => 0, "b" => 9, "c" => 5}},
       {%{a: :high}, %{"a" => 7}}
     ],
     [
       nil,
       "x",
       {:a, 1},
       [{"", 1}],
       [{"a", 10}],
       [{"a", -1}],
       [{"a", :urgent}],
       [{1, 2}],
       [{"a", 1} | :improper],
       [:a],
       [{"a", 1}, {:a, 2}],
       %{"a" => 1, :a => 2},
       [{:binary.copy("x", 257), 1}]
     ]},
    {:failure_threshold, [{1, 1}, {@max, @max}], [0, -3, 2.0, :x, @max + 1]},
    {:failure_rate_threshold,
     [{nil, nil}, {:none, nil}, {:undefined, nil}, {0.5, 0.5}, {1, 1.0}, {1.0, 1.0}],
     [0, 0.0, 1.5, -0.5, "0.5", :never]},
    {:window_ms, [{10, 10}, {60_000, 60_000}], [9, 0, -1, 10.0, @max + 1]},
    {:minimum_calls, [{1, 1}, {100, 100}], [0, -1, 1.0, @max + 1]},
    {:slow_call_ms, [{nil, nil}, {:none, nil}, {:undefined, nil}, {1, 1}, {@max, @max}],
     [0, -1, 1.5, @max + 1, :never]},
    {:open_timeout_ms, [{1, 1}, {30_000, 30_000}], [0, -1, 1.5, @max + 1]},
    {:max_open_timeout_ms,
     [{nil, nil}, {:none, nil}, {:undefined, nil}, {30_000, 30_000}, {60_000, 60_000}],
     [0, 29_999, -1, 1.5, @max + 1]},
    {:half_open_max_calls, [{1, 1}, {255, 255}], [0, 256, -1, 1.0]},
    {:success_threshold, [{1, 1}, {255, 255}], [0, 256, -1, 1.0]},
    {:call_timeout_ms, [{1, 1}, {@max, @max}], [0, -1, 1.0, @max + 1]},
    {:health_check_ms, [{1, 1}, {@max, @max}], [0, -1, 1.0, @max + 1]},
    {:drop_policy, [{:drop_newest, :drop_newest}, {:drop_oldest, :drop_oldest}],
     [:drop, "drop_newest", nil, 1]},
    {:max_segments, [{nil, nil}, {:none, nil}, {:undefined, nil}, {1, 1}, {64, 64}],
     [0, -1, 1.0, @max + 1, :all]},
    {:overflow, [{:drop, :drop}, {:disk, :disk}], [:memory, "disk", nil]},
    {:critical, [{true, true}, {false, false}], [nil, "true", 1, :yes]},
    {:share, [{:none, :none}, {:breaker, :breaker}], [nil, "breaker", :all, true, 1]},
    {:latency_overload_ms,
     [{nil, nil}, {:none, nil}, {:undefined, nil}, {1, 1}, {5_000, 5_000}, {@max, @max}],
     [0, -1, 1.5, @max + 1, :off]},
    {:inflight_overload, [{nil, nil}, {:none, nil}, {1, 1}, {500, 500}, {@max, @max}],
     [0, -1, 2.0, @max + 1, "500"]},
    {:latency_window_ms, [{100, 100}, {60_000, 60_000}, {@max, @max}],
     [99, 0, -1, nil, 1.0e3, @max + 1]},
    {:retry_after_seconds, [{0, 0}, {30, 30}, {div(@max, 1000), div(@max, 1000)}],
     [-1, 1.5, div(@max, 1000) + 1, @max, nil]},
    {:max_retry_attempts, [{0, 0}, {10, 10}, {@max, @max}], [-1, 1.5, @max + 1, nil]},
    {:backoff_strategy,
     [{:exponential, :exponential}, {:linear, :linear}, {:constant, :constant}],
     [:fibonacci, "linear", nil]},
    {:alert_on_active, [{true, true}, {false, false}], [nil, "false", 0]},
    {:alert_on_warning, [{true, true}, {false, false}], [nil, "false", 0]},
    {:alert_escalate_after_ms, [{1, 1}, {300_000, 300_000}], [0, -1, 1.5, @max + 1]}
  ]

  # Companion keys needed for some values to be valid alone.
  @doc false
  # For Breakwater.PolicyRobustnessTest below.
  def rules, do: @rules

  @companions %{
    {:bypass_priority, 1} => [low_priority_max: 0],
    {:bypass_priority, :low} => [low_priority_max: 0]
  }

  describe "defaults/0 and keys/0" do
    test "defaults carry every policy key with its documented value" do
      assert Policy.defaults() == %{
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
    end

    test "keys/0 lists exactly the default keys" do
      assert Enum.sort(Policy.keys()) == Enum.sort(Map.keys(Policy.defaults()))
      assert length(Policy.keys()) == length(Enum.uniq(Policy.keys()))
    end

    test "the defaults validate to themselves" do
      assert Policy.validate(%{}) == {:ok, Policy.defaults()}
      assert Policy.validate([]) == {:ok, Policy.defaults()}
      assert Policy.validate(Policy.defaults()) == {:ok, Policy.defaults()}
    end

    test "the rule table covers every key" do
      assert Enum.map(@rules, &elem(&1, 0)) == Policy.keys()
    end
  end

  describe "validate/2, one key at a time" do
    for {key, valid, invalid} <- @rules do
      @key key
      @valid valid
      @invalid invalid

      test "#{key}: valid values are accepted and normalised" do
        for {input, normalised} <- @valid do
          extra = Map.get(@companions, {@key, input}, [])

          assert {:ok, policy} = Policy.validate([{@key, input} | extra]),
                 "expected #{inspect(@key)} = #{inspect(input)} to be valid"

          assert Map.fetch!(policy, @key) === normalised
          assert Map.keys(policy) |> Enum.sort() == Enum.sort(Policy.keys())
        end
      end

      test "#{key}: invalid values are rejected with {key, value, expected}" do
        for input <- @invalid do
          assert {:error, reasons} = Policy.validate(%{@key => input}),
                 "expected #{inspect(@key)} = #{inspect(input)} to be invalid"

          assert Enum.any?(reasons, &match?({@key, _, expected} when is_binary(expected), &1)),
                 "no reason for #{inspect(@key)} in #{inspect(reasons)}"

          for {k, v, _} <- reasons, k == @key, @key != :priorities, do: assert(v === input)
        end
      end
    end
  end

  describe "validate/2, reporting" do
    test "every invalid key is reported at once, in the order of keys/0, unknown keys last" do
      bad =
        for {key, _valid, [first_invalid | _]} <- @rules, into: %{} do
          {key, first_invalid}
        end

      bad = bad |> Map.put(:zebra, 1) |> Map.put(:aardvark, 2) |> Map.put("string_key", 3)

      assert {:error, reasons} = Policy.validate(bad)

      reported = for {k, _, _} <- reasons, uniq: true, do: k
      assert reported == Policy.keys()

      assert Enum.take(reasons, -3) == [
               {:unknown_key, :aardvark},
               {:unknown_key, :zebra},
               {:unknown_key, "string_key"}
             ]
    end

    test "several independent invalid keys produce one reason each" do
      assert {:error, reasons} =
               Policy.validate(window_ms: 1, drop_policy: :random, critical: :yes)

      assert reasons == [
               {:window_ms, 1, "an integer from 10 to 281474976710655"},
               {:drop_policy, :random, "one of :drop_newest, :drop_oldest"},
               {:critical, :yes, "a boolean (true or false)"}
             ]
    end

    test "unknown atom keys are errors" do
      assert Policy.validate(colour: :blue) == {:error, [{:unknown_key, :colour}]}
    end

    test "string keys are unknown keys and no atom is created for them" do
      key = "no_such_policy_key_#{System.unique_integer([:positive])}"
      assert Policy.validate(%{key => 1}) == {:error, [{:unknown_key, key}]}
      assert_raise ArgumentError, fn -> String.to_existing_atom(key) end

      assert Policy.validate(%{"warning_threshold" => 1}) ==
               {:error, [{:unknown_key, "warning_threshold"}]}
    end

    test "a string-keyed list is not a keyword list" do
      input = [{"warning_threshold", 1}]

      assert Policy.validate(input) ==
               {:error, [{:invalid_policy, input, "a map or keyword list of policy keys"}]}
    end

    test "non-map, non-list input is an invalid policy" do
      for input <- [nil, 1, "warning_threshold", {:warning_threshold, 1}, :default, 1.5] do
        assert Policy.validate(input) ==
                 {:error, [{:invalid_policy, input, "a map or keyword list of policy keys"}]}
      end
    end

    test "lists that are not all {atom, value} tuples are invalid policies" do
      for input <- [
            [:critical],
            [{:warning_threshold, 1, 2}],
            [{:warning_threshold, 100} | :tail],
            [{1, 2}],
            [[warning_threshold: 1]]
          ] do
        assert {:error, [{:invalid_policy, ^input, _}]} = Policy.validate(input)
      end
    end

    test "an invalid base is reported like an invalid input" do
      assert {:error, [{:invalid_policy, :nope, _}]} = Policy.validate([], :nope)
    end
  end

  describe "validate/2, merging" do
    test "input is merged over the base" do
      {:ok, base} = Policy.validate(warning_threshold: 100, critical_threshold: 1_000)
      assert {:ok, policy} = Policy.validate([failure_threshold: 9], base)
      assert {policy.warning_threshold, policy.critical_threshold} == {100, 1_000}
      assert policy.failure_threshold == 9
    end

    test "a partial base is completed with the defaults" do
      assert {:ok, policy} = Policy.validate(%{}, %{window_ms: 20})
      assert policy.window_ms == 20
      assert policy.warning_threshold == 10_000
    end

    test "a base's own problems are reported" do
      assert {:error, [{:window_ms, 1, _}]} = Policy.validate(%{}, %{window_ms: 1})
    end

    test "priorities in the input replace the base's priorities" do
      {:ok, base} = Policy.validate(priorities: %{"a" => 1})
      assert {:ok, policy} = Policy.validate([priorities: %{"b" => 2}], base)
      assert policy.priorities == %{"b" => 2}
    end

    test "Erlang proplists are accepted and the first occurrence of a key wins" do
      # as built by Erlang code: [{warning_threshold, 200} | Defaults]
      proplist = [{:warning_threshold, 200}, {:critical_threshold, 400}, {:warning_threshold, 1}]
      assert {:ok, policy} = Policy.validate(proplist)
      assert {policy.warning_threshold, policy.critical_threshold} == {200, 400}

      erlang_list = :lists.keystore(:bypass_priority, 1, [], {:bypass_priority, :critical})
      assert {:ok, %{bypass_priority: 9}} = Policy.validate(erlang_list)
    end

    test "validation is idempotent" do
      {:ok, once} =
        Policy.validate(
          bypass_priority: :high,
          low_priority_max: :low,
          priorities: [{:alarm, :critical}],
          low_priority_shed_ratio: 1,
          max_segments: :none
        )

      assert Policy.validate(once) == {:ok, once}
      assert Policy.validate(%{}, once) == {:ok, once}
    end
  end

  describe "validate/2, rules relating keys" do
    test "critical_threshold must be greater than warning_threshold" do
      assert {:error, [{:critical_threshold, 50_000, expected}]} =
               Policy.validate(warning_threshold: 50_000)

      assert expected =~ "an integer greater than warning_threshold (50000)"

      assert {:error, [{:critical_threshold, 10, _}]} =
               Policy.validate(warning_threshold: 10, critical_threshold: 10)

      assert {:ok, _} = Policy.validate(warning_threshold: 10, critical_threshold: 11)
    end

    test "with an invalid warning_threshold only the critical_threshold's own range is checked" do
      assert {:error, [{:warning_threshold, 0, _}]} =
               Policy.validate(warning_threshold: 0, critical_threshold: 2)

      assert {:error, [{:warning_threshold, -5, _}, {:critical_threshold, 0, _}]} =
               Policy.validate(warning_threshold: -5, critical_threshold: 0)
    end

    test "the recovery depth stays below warning_threshold" do
      {:ok, policy} = Policy.validate(recovery_threshold: 0.9999999999999999)
      assert Policy.recovery_depth(policy) < policy.warning_threshold

      {:ok, policy} =
        Policy.validate(
          warning_threshold: @max - 1,
          critical_threshold: @max,
          recovery_threshold: 0.9999999999999999
        )

      assert Policy.recovery_depth(policy) < policy.warning_threshold

      {:ok, policy} = Policy.validate(warning_threshold: 1, critical_threshold: 2)
      assert Policy.recovery_depth(policy) == 0
    end

    test "low_priority_max must be below bypass_priority" do
      assert {:error, [{:low_priority_max, 5, expected}]} =
               Policy.validate(bypass_priority: 5, low_priority_max: 5)

      assert expected =~ "less than bypass_priority (5)"

      assert {:error, [{:low_priority_max, :high, _}]} =
               Policy.validate(bypass_priority: :normal, low_priority_max: :high)

      assert {:ok, %{bypass_priority: 1, low_priority_max: 0}} =
               Policy.validate(bypass_priority: :low, low_priority_max: 0)
    end

    test "max_open_timeout_ms must be at least open_timeout_ms" do
      assert {:error, [{:max_open_timeout_ms, 999, expected}]} =
               Policy.validate(open_timeout_ms: 1_000, max_open_timeout_ms: 999)

      assert expected =~ "open_timeout_ms (1000)"

      assert {:ok, %{max_open_timeout_ms: 1_000}} =
               Policy.validate(open_timeout_ms: 1_000, max_open_timeout_ms: 1_000)
    end
  end

  describe "priorities" do
    test "names map to their integers" do
      assert Policy.priority(:critical) == {:ok, 9}
      assert Policy.priority(:high) == {:ok, 7}
      assert Policy.priority(:normal) == {:ok, 5}
      assert Policy.priority(:low) == {:ok, 1}
    end

    test "integers 0..9 pass, anything else is :error" do
      for p <- 0..9, do: assert(Policy.priority(p, Policy.defaults()) == {:ok, p})

      for bad <- [-1, 10, 5.0, "high", :urgent, nil, [5], {5}],
          do: assert(Policy.priority(bad) == :error)
    end

    test "the event type map accepts up to 1024 entries" do
      ok = Map.new(1..1024, &{"event-#{&1}", rem(&1, 10)})
      assert {:ok, %{priorities: ^ok}} = Policy.validate(priorities: ok)

      too_many = Map.put(ok, "one-more", 1)

      assert {:error, [{:priorities, ^too_many, expected}]} =
               Policy.validate(priorities: too_many)

      assert expected =~ "at most 1024"

      as_list = Enum.to_list(too_many)
      assert {:error, [{:priorities, ^as_list, _}]} = Policy.validate(priorities: as_list)
    end

    test "event types are 1..256 bytes" do
      assert {:ok, _} = Policy.validate(priorities: [{:binary.copy("x", 256), 1}])
      assert {:ok, _} = Policy.validate(priorities: [{"x", 1}])
    end

    test "each bad entry is reported" do
      assert {:error, reasons} =
               Policy.validate(priorities: [{"ok", 1}, {"bad", 12}, {"", 1}, {"ok", 2}])

      assert [
               {:priorities, {"bad", 12}, bad},
               {:priorities, {"", 1}, empty},
               {:priorities, {"ok", 2}, dup}
             ] = reasons

      assert bad =~ "for event type \"bad\""
      assert empty =~ "1 to 256 bytes"
      assert dup =~ "given only once"
    end
  end

  describe "to_native/1" do
    test "has exactly the native keys and types" do
      {:ok, policy} =
        Policy.validate(
          priorities: %{"b" => :low, "a" => :critical, "c" => 5},
          failure_rate_threshold: 1,
          low_priority_shed_ratio: 1,
          slow_call_ms: 250,
          max_open_timeout_ms: 60_000,
          max_segments: 8,
          drop_policy: :drop_oldest,
          overflow: :disk,
          retry_after_seconds: 7
        )

      native = Policy.to_native(policy)

      assert Enum.sort(Map.keys(native)) ==
               Enum.sort([
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
                 :retry_after_ms,
                 :drop_policy,
                 :overflow,
                 :max_segments,
                 :latency_overload_ms,
                 :inflight_overload,
                 :latency_window_ms
               ])

      assert native.priorities == [{"a", 9}, {"b", 1}, {"c", 5}]
      assert native.retry_after_ms == 7_000
      assert native.failure_rate_threshold === 1.0
      assert native.low_priority_shed_ratio === 1.0
      assert native.recovery_threshold === 0.5
      assert native.slow_call_ms == 250
      assert native.max_open_timeout_ms == 60_000
      assert native.max_segments == 8
      assert native.drop_policy == :drop_oldest
      assert native.overflow == :disk
      assert native.warning_threshold == 10_000
      assert native.latency_overload_ms == 5_000
      assert native.inflight_overload == 500
      assert native.latency_window_ms == 60_000
    end

    test "none values become nil" do
      native = Policy.to_native(Policy.defaults())
      assert native.failure_rate_threshold == nil
      assert native.slow_call_ms == nil
      assert native.max_open_timeout_ms == nil
      assert native.max_segments == nil
      assert native.priorities == []
      assert native.retry_after_ms == 30_000
    end
  end

  describe "depth helpers" do
    test "recovery_depth and shed_depth" do
      assert Policy.recovery_depth(Policy.defaults()) == 5_000
      assert Policy.shed_depth(Policy.defaults()) == 40_000

      {:ok, p} =
        Policy.validate(
          warning_threshold: 7,
          critical_threshold: 9,
          recovery_threshold: 0.5,
          low_priority_shed_ratio: 0.5
        )

      assert Policy.recovery_depth(p) == 3
      assert Policy.shed_depth(p) == 5
    end
  end

  describe "retry_after/3" do
    test "inactive and warning continue" do
      for status <- [:backpressure_inactive, :backpressure_warning] do
        assert Policy.retry_after(status, Policy.defaults()) == :continue
        assert Policy.retry_after(status, Policy.defaults(), 99) == :continue
      end
    end

    test "exponential backoff" do
      p = Policy.defaults()
      assert Policy.retry_after(:backpressure_active, p) == {:reject, 30}
      assert Policy.retry_after(:backpressure_active, p, 1) == {:reject, 30}
      assert Policy.retry_after(:backpressure_active, p, 2) == {:reject, 60}
      assert Policy.retry_after(:backpressure_active, p, 3) == {:reject, 120}

      assert Policy.retry_after(:backpressure_active, p, 4) ==
               {:error, :max_retry_attempts_exceeded}
    end

    test "linear backoff" do
      {:ok, p} = Policy.validate(backoff_strategy: :linear, retry_after_seconds: 5)

      assert for(a <- 1..3, do: Policy.retry_after(:backpressure_active, p, a)) ==
               [{:reject, 5}, {:reject, 10}, {:reject, 15}]
    end

    test "constant backoff" do
      {:ok, p} = Policy.validate(backoff_strategy: :constant, max_retry_attempts: 5)

      assert for(a <- 1..5, do: Policy.retry_after(:backpressure_active, p, a)) ==
               List.duplicate({:reject, 30}, 5)

      assert Policy.retry_after(:backpressure_active, p, 6) ==
               {:error, :max_retry_attempts_exceeded}
    end

    test "max_retry_attempts of 0 allows no attempt" do
      assert Policy.retry_after(:backpressure_active, %{max_retry_attempts: 0}) ==
               {:error, :max_retry_attempts_exceeded}
    end

    test "huge attempts saturate instead of overflowing" do
      p = %{max_retry_attempts: @max}
      cap = div(@max, 1000)
      assert Policy.retry_after(:backpressure_active, p, @max) == {:reject, cap}

      assert Policy.retry_after(
               :backpressure_active,
               [backoff_strategy: :linear] ++ Map.to_list(p),
               @max
             ) ==
               {:reject, cap}

      assert Policy.retry_after(:backpressure_active, %{retry_after_seconds: 0}, 3) ==
               {:reject, 0}
    end

    test "accepts keyword policies and fills missing keys with defaults" do
      assert Policy.retry_after(:backpressure_active, [retry_after_seconds: 2], 3) ==
               {:reject, 8}
    end

    test "bad status, attempt and policy values are errors in the reason shape" do
      assert {:error, [{:status, :on_fire, _}]} = Policy.retry_after(:on_fire, %{})

      for attempt <- [0, -1, 1.0, nil, "1"] do
        assert {:error, [{:attempt, ^attempt, _}]} =
                 Policy.retry_after(:backpressure_active, %{}, attempt)
      end

      assert {:error, [{:status, "x", _}, {:attempt, 0, _}, {:backoff_strategy, :fib, _}]} =
               Policy.retry_after("x", %{backoff_strategy: :fib}, 0)

      assert {:error, [{:invalid_policy, 42, _}]} = Policy.retry_after(:backpressure_active, 42)
    end
  end

  describe "format_errors/1" do
    test "names the key, the value given and what was expected, one line per reason" do
      {:error, reasons} =
        Policy.validate(%{
          "warning_threshold" => 1,
          :critical_threshold => 5,
          :drop_policy => "oldest",
          :colour => :blue
        })

      message = Policy.format_errors(reasons)
      lines = String.split(message, "\n")
      assert length(lines) == length(reasons)

      assert Enum.at(lines, 0) ==
               "critical_threshold: got 5, expected an integer greater than " <>
                 "warning_threshold (10000) and at most 281474976710655"

      assert Enum.at(lines, 1) ==
               ~s(drop_policy: got "oldest", expected one of :drop_newest, :drop_oldest)

      assert Enum.at(lines, 2) =~ "colour: unknown key, expected one of warning_threshold"
      assert Enum.at(lines, 3) =~ ~s("warning_threshold": unknown key (keys must be atoms)
    end

    test "formats invalid policies and odd terms without raising" do
      assert Policy.format_errors([{:invalid_policy, 5, "a map or keyword list of policy keys"}]) ==
               "policy: got 5, expected a map or keyword list of policy keys"

      assert is_binary(Policy.format_errors(:weird))
      assert is_binary(Policy.format_errors([:weird | :improper]))
      assert Policy.format_errors([]) == ""
    end

    test "long values are truncated" do
      value = List.duplicate(1, 10_000)
      line = Policy.format_errors([{:priorities, value, "x"}])
      assert byte_size(line) < 500
    end
  end
end

defmodule Breakwater.PolicyRobustnessTest do
  # Counts atoms of the whole node: never beside async tests, which load modules.
  use ExUnit.Case, async: false

  alias Breakwater.{Policy, RandomTerms}

  @max 281_474_976_710_655
  @rules Breakwater.PolicyTest.rules()

  describe "robustness against random terms" do
    @atoms [
             nil,
             true,
             false,
             :none,
             :undefined,
             :critical,
             :high,
             :normal,
             :low,
             :drop_newest,
             :drop_oldest,
             :drop,
             :disk,
             :exponential,
             :linear,
             :constant,
             :foo,
             :ledger,
             :backpressure_active,
             :backpressure_inactive,
             :backpressure_warning
           ] ++ Policy.keys()

    @leaves %{
      atoms: @atoms,
      max_bytes: 300,
      strings: ["", "ledger", "warning_threshold", "none", "critical"],
      integers: [@max, @max + 1, 0, -1, 255, 256, 1_048_576]
    }

    test "validate/2 and retry_after/3 never raise and never create atoms" do
      # warm up with a different seed so module loading does not count as growth
      fuzz(200, {11, 12, 13})
      grew = RandomTerms.atom_growth([{1, 2, 3}, {4, 5, 6}, {7, 8, 9}], &fuzz(3_000, &1))

      assert Enum.any?(grew, &(&1 == 0)), "atom count grew on every run: #{inspect(grew)}"
    end

    defp fuzz(n, seed) do
      :rand.seed(:exsss, seed)

      oks =
        Enum.count(1..n, fn _ ->
          input = if :rand.uniform(2) == 1, do: policy_like(), else: random_term(3)
          base = if :rand.uniform(10) == 1, do: random_term(2), else: Policy.defaults()

          result = Policy.validate(input, base)

          case result do
            {:ok, policy} ->
              assert is_map(policy)
              assert is_map(Policy.to_native(policy))
              assert Policy.recovery_depth(policy) < policy.warning_threshold

            {:error, [_ | _] = reasons} ->
              assert is_binary(Policy.format_errors(reasons))
          end

          retry = Policy.retry_after(random_term(1), input, random_term(1))

          assert retry == :continue or match?({:reject, s} when is_integer(s), retry) or
                   match?({:error, _}, retry)

          assert Policy.priority(random_term(1)) in [:error | Enum.map(0..9, &{:ok, &1})]

          match?({:ok, _}, result)
        end)

      assert oks > 0 or n < 100
    end

    defp policy_like do
      for _ <- 1..:rand.uniform(4), into: %{} do
        case :rand.uniform(8) do
          1 ->
            {random_term(0), interesting_value()}

          n when n <= 4 ->
            {key, _valid, _invalid} = Enum.random(@rules)
            {key, interesting_value()}

          _ ->
            {key, valid, _invalid} = Enum.random(@rules)
            {key, valid |> Enum.random() |> elem(0)}
        end
      end
    end

    defp interesting_value do
      case :rand.uniform(3) do
        1 -> Enum.random([0, 1, 2, 5, 9, 10, 100, 0.5, 1.0, :none, nil, :low, :disk, true])
        2 -> Enum.random([%{"a" => 1}, [{"a", :high}], @max, @max + 1, -1, 1.0e300])
        3 -> random_term(2)
      end
    end

    defp random_term(depth), do: RandomTerms.term(depth, @leaves)
  end
end
