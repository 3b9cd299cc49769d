defmodule Breakwater.ConfigTest do
  use ExUnit.Case, async: true

  alias Breakwater.{Config, Policy}

  doctest Breakwater.Config

  defp errors(env) do
    assert {:error, [_ | _] = reasons} = Config.load(env)
    reasons
  end

  defp paths(env), do: Enum.map(errors(env), &reason_path/1)

  defp reason_path({:unknown_key, path}), do: {:unknown_key, path}
  defp reason_path({path, _value, expected}) when is_binary(expected), do: path

  describe "defaults" do
    test "an empty environment gives every key with its default" do
      assert {:ok, config} = Config.load([])
      assert Config.load(%{}) == {:ok, config}

      assert config == %{
               default_policy: Policy.defaults(),
               subjects: %{},
               ring_pool: %{
                 segments: 256,
                 segment_capacity: 1024,
                 segment_bytes: 262_144,
                 max_event_bytes: 65_536
               },
               max_subjects: 10_000,
               spool_dir: Path.join(Mix.Project.build_path(), "var/breakwater_spool"),
               http: nil,
               ledgers: %{},
               tick_ms: 100,
               history_limit: 1_000,
               events_limit: 1_000,
               durability: :crash,
               spool_owner: nil,
               spool_adopt: [],
               disk_max_bytes: 1_073_741_824,
               depth_escalate_after_ms: 120_000,
               subject_idle_ms: nil,
               metrics_max_subjects: 1_000,
               log_interval_ms: 1_000,
               reclaim_grace_ms: 10_000
             }

      assert Enum.sort(Map.keys(config)) == Enum.sort(Config.keys())
    end

    test "the environment as returned by Application.get_all_env/1 is accepted" do
      env = [tick_ms: 50, http: [port: 9_568], ring_pool: [segments: 16]]
      assert {:ok, config} = Config.load(env)
      assert config.tick_ms == 50

      assert config.http == %{
               port: 9_568,
               ip: {127, 0, 0, 1},
               max_connections: 1_024,
               idle_timeout_ms: 5_000
             }

      assert config.ring_pool.segments == 16
      assert config.ring_pool.segment_capacity == 1024
    end

    test "the first occurrence of a key wins in a list" do
      assert {:ok, %{tick_ms: 20}} = Config.load(tick_ms: 20, tick_ms: 1)
    end
  end

  describe "top level" do
    test "unknown keys are errors, reported last" do
      assert errors(bogus: 1, tick_ms: 1) == [
               {[:tick_ms], 1, "an integer from 10 to 60000"},
               {:unknown_key, [:bogus]}
             ]
    end

    test "string keys are unknown keys and create no atom" do
      key = "no_such_config_key_#{System.unique_integer([:positive])}"
      assert errors(%{key => 1}) == [{:unknown_key, [key]}]
      assert_raise ArgumentError, fn -> String.to_existing_atom(key) end
    end

    test "an environment that is not a keyword list or map is an error" do
      for env <- [nil, 1, "x", {:tick_ms, 1}, [:tick_ms], [{"tick_ms", 1}], [{:a, 1} | :b]] do
        assert [{[], ^env, expected}] = errors(env)
        assert expected =~ "keyword list or map"
      end
    end

    test "every problem is reported at once" do
      env = [
        default_policy: [window_ms: 1],
        subjects: [ledger: [success_threshold: 0]],
        ring_pool: [segments: 0],
        max_subjects: 0,
        spool_dir: 5,
        http: [port: -1],
        ledgers: [ledger: "NotAModule"],
        tick_ms: 9,
        history_limit: 0,
        events_limit: 0,
        extra: true
      ]

      assert paths(env) == [
               [:default_policy, :window_ms],
               [:subjects, "ledger", :success_threshold],
               [:ring_pool, :segments],
               [:max_subjects],
               [:spool_dir],
               [:http, :port],
               [:ledgers, "ledger"],
               [:tick_ms],
               [:history_limit],
               [:events_limit],
               {:unknown_key, [:extra]}
             ]
    end
  end

  describe "default_policy" do
    test "overrides are merged over Policy.defaults()" do
      assert {:ok, config} =
               Config.load(default_policy: [warning_threshold: 5, critical_threshold: 6])

      assert config.default_policy.warning_threshold == 5
      assert config.default_policy.failure_threshold == 5
    end

    test "errors carry the default_policy key path" do
      assert errors(default_policy: %{warning_threshold: 0, colour: 1}) == [
               {[:default_policy, :warning_threshold], 0, "an integer from 1 to 281474976710655"},
               {:unknown_key, [:default_policy, :colour]}
             ]

      assert [{[:default_policy], :fast, "a map or keyword list of policy keys"}] =
               errors(default_policy: :fast)
    end
  end

  describe "subjects" do
    test "subjects get their overrides over the validated default_policy" do
      env = [
        default_policy: [failure_threshold: 7, warning_threshold: 100, critical_threshold: 200],
        subjects: [{:ledger, [critical_threshold: 300]}, {"beamline.router.v1.decide", %{}}]
      ]

      assert {:ok, config} = Config.load(env)
      assert Map.keys(config.subjects) |> Enum.sort() == ["beamline.router.v1.decide", "ledger"]

      ledger = config.subjects["ledger"]
      assert {ledger.failure_threshold, ledger.warning_threshold} == {7, 100}
      assert ledger.critical_threshold == 300
      assert config.subjects["beamline.router.v1.decide"] == config.default_policy
    end

    test "a map of subjects is accepted" do
      assert {:ok, %{subjects: subjects}} =
               Config.load(subjects: %{"a" => [], b: [bypass_priority: :critical]})

      assert subjects["b"].bypass_priority == 9
      assert Map.keys(subjects) |> Enum.sort() == ["a", "b"]
    end

    test "policy errors carry the subject in the key path" do
      assert [
               {[:subjects, "ledger", :warning_threshold], 0, _},
               {[:subjects, "ledger", :drop_policy], :random, _},
               {:unknown_key, [:subjects, "ledger", :colour]}
             ] =
               errors(subjects: [ledger: [warning_threshold: 0, drop_policy: :random, colour: 1]])

      assert [{[:subjects, "ledger"], 5, _}] = errors(subjects: [ledger: 5])
    end

    test "cross-key rules apply to the merged policy" do
      env = [
        default_policy: [critical_threshold: 20_000],
        subjects: [s: [warning_threshold: 20_000]]
      ]

      assert [{[:subjects, "s", :critical_threshold], 20_000, expected}] = errors(env)
      assert expected =~ "greater than warning_threshold (20000)"
    end

    test "duplicate subjects after atom conversion are errors" do
      assert [{[:subjects, "ledger"], "ledger", expected}] =
               errors(subjects: [{:ledger, []}, {"ledger", []}])

      assert expected =~ "given only once"

      # map entries are taken in term order: atoms before binaries
      assert [{[:subjects, "x"], "x", _}] = errors(subjects: %{:x => [], "x" => []})
      assert [{[:subjects, "x"], :x, _}] = errors(subjects: [x: [], x: []])
    end

    test "subject names are binaries of 1..1024 bytes or atoms" do
      assert {:ok, _} = Config.load(subjects: [{:binary.copy("s", 1024), []}])

      for bad <- [nil, true, false, 1, "", :binary.copy("s", 1025), {:a}, ~c"ledger"] do
        assert [{[:subjects], ^bad, expected}] = errors(subjects: [{bad, []}])
        assert expected =~ "a subject"
      end
    end

    test "subjects must be a map or list of pairs" do
      for bad <- [:ledger, "ledger", [:ledger], [{:a, [], 1}], [{:a, []} | :b]] do
        assert [{[:subjects], ^bad, _}] = errors(subjects: bad)
      end
    end

    test "with an invalid default_policy, subjects are still checked over the defaults" do
      assert [{[:default_policy, :window_ms], 1, _}, {:unknown_key, [:subjects, "s", :tick]}] =
               errors(default_policy: [window_ms: 1], subjects: [s: %{tick: 1}])
    end
  end

  describe "ring_pool" do
    test "valid geometry" do
      env = [
        ring_pool: %{
          segments: 1_048_576,
          segment_capacity: 1,
          segment_bytes: 1_073_741_824,
          max_event_bytes: 1_073_741_824 - 24
        }
      ]

      assert {:ok, %{ring_pool: pool}} = Config.load(env)
      assert pool.segments == 1_048_576
      assert {:ok, %{ring_pool: %{segments: 1}}} = Config.load(ring_pool: [segments: 1])
    end

    test "each key has its range" do
      for {key, bad} <- [
            segments: 0,
            segments: 1_048_577,
            segments: 2.0,
            segment_capacity: 0,
            segment_capacity: 1_048_577,
            segment_bytes: 0,
            segment_bytes: 63,
            segment_bytes: 1_073_741_825,
            max_event_bytes: 0,
            max_event_bytes: :big
          ] do
        assert [{[:ring_pool, ^key], ^bad, _}] = errors(ring_pool: [{key, bad}])
      end
    end

    test "max_event_bytes must fit in a segment with its record header" do
      assert [
               {[:ring_pool, :max_event_bytes], 2_048,
                "an integer from 1 to segment_bytes - 24 (1000)"}
             ] = errors(ring_pool: [segment_bytes: 1_024, max_event_bytes: 2_048])

      assert [{[:ring_pool, :max_event_bytes], 262_121, _}] =
               errors(ring_pool: [max_event_bytes: 262_121])

      assert [{[:ring_pool, :max_event_bytes], 1_024, _}] =
               errors(ring_pool: [segment_bytes: 1_024, max_event_bytes: 1_024])

      assert {:ok, _} = Config.load(ring_pool: [segment_bytes: 1_024, max_event_bytes: 1_000])
    end

    test "unknown keys and wrong shapes" do
      assert errors(ring_pool: [segments: 4, size: 1]) == [{:unknown_key, [:ring_pool, :size]}]
      assert [{[:ring_pool], 16, _}] = errors(ring_pool: 16)
    end
  end

  describe "max_subjects" do
    test "range" do
      assert {:ok, %{max_subjects: 1}} = Config.load(max_subjects: 1)
      assert {:ok, %{max_subjects: 1_048_576}} = Config.load(max_subjects: 1_048_576)

      for bad <- [0, -1, 1_048_577, 1.0, nil] do
        assert [{[:max_subjects], ^bad, _}] = errors(max_subjects: bad)
      end
    end

    test "must cover the configured subjects and ledgers, each counted once" do
      env = [subjects: [a: [], b: []], ledgers: [b: SomeLedger, c: SomeLedger]]
      assert {:ok, _} = Config.load([max_subjects: 3] ++ env)

      assert [{[:max_subjects], 2, expected}] = errors([max_subjects: 2] ++ env)
      assert expected =~ "configured subjects and ledgers (3)"
    end

    test "subjects with invalid policies still count" do
      reasons = errors(max_subjects: 1, subjects: [a: [window_ms: 1], b: []])
      assert Enum.any?(reasons, &match?({[:max_subjects], 1, _}, &1))
    end
  end

  describe "durability, spool_owner, spool_adopt" do
    test "valid values" do
      for d <- [:crash, :memory, {:fsync, 1}, {:fsync, 3_600_000}] do
        assert {:ok, %{durability: ^d}} = Config.load(durability: d)
      end

      assert {:ok, %{spool_owner: "n@h/app"}} = Config.load(spool_owner: "n@h/app")
      assert {:ok, %{spool_owner: nil}} = Config.load(spool_owner: :undefined)
      assert {:ok, %{spool_adopt: ["a@h/x", "b"]}} = Config.load(spool_adopt: ["a@h/x", "b"])
    end

    test "bad values name the key, the value and what is expected" do
      for bad <- [:disk, {:fsync, 0}, {:fsync, 3_600_001}, {:fsync, :often}, "crash", nil] do
        assert [{[:durability], ^bad, expected}] = errors(durability: bad)
        assert expected =~ "{:fsync, interval_ms}"
      end

      for bad <- ["", :node, String.duplicate("x", 513), <<255>>] do
        assert [{[:spool_owner], ^bad, _}] = errors(spool_owner: bad)
      end

      too_many = for i <- 1..65, do: "n#{i}"

      for bad <- [:all, ["ok", :atom], [""], too_many, ["a" | "b"]] do
        assert [{[:spool_adopt], ^bad, _}] = errors(spool_adopt: bad)
      end

      assert Config.format_errors(errors(durability: :disk)) ==
               "durability: got :disk, expected :crash, :memory or {:fsync, interval_ms} " <>
                 "with interval_ms an integer from 1 to 3600000"
    end

    test "disk_file_bytes is gone: overflow files are segments" do
      assert [{:unknown_key, [:disk_file_bytes]}] = errors(disk_file_bytes: 4_096)
    end
  end

  describe "spool_dir" do
    test "nil means var/breakwater_spool under the build path, never a shared directory" do
      assert {:ok, %{spool_dir: dir}} = Config.load(spool_dir: nil)
      # `_build/test/lib/breakwater` holds the code: the spool is `_build/test/var/...`.
      assert dir == Path.join(Mix.Project.build_path(), "var/breakwater_spool")
      assert {:ok, ^dir} = Config.default_spool_dir()
      refute dir == Path.join(System.tmp_dir!(), "breakwater_spool")
    end

    test "strings and charlists are accepted and normalised to strings" do
      assert {:ok, %{spool_dir: "/var/lib/bw"}} = Config.load(spool_dir: "/var/lib/bw")
      assert {:ok, %{spool_dir: "/var/lib/bw"}} = Config.load(spool_dir: ~c"/var/lib/bw")
      assert {:ok, %{spool_dir: "/données"}} = Config.load(spool_dir: ~c"/données")
    end

    test "bad values" do
      for bad <- [1, :tmp, "", ~c"", "a\0b", [:a], [-1], <<255>>, String.duplicate("a", 4097)] do
        assert [{[:spool_dir], ^bad, _}] = errors(spool_dir: bad)
      end
    end
  end

  describe "subject lifecycle and operations keys" do
    test "subject_idle_ms is nil (never) or at least 1000 ms" do
      for none <- [nil, :none, :undefined],
          do: assert({:ok, %{subject_idle_ms: nil}} = Config.load(subject_idle_ms: none))

      assert {:ok, %{subject_idle_ms: 1_000}} = Config.load(subject_idle_ms: 1_000)
      assert {:ok, %{subject_idle_ms: 86_400_000}} = Config.load(subject_idle_ms: 86_400_000)

      for bad <- [0, 999, -1, 1.5e3, "1000", :never, 281_474_976_710_656] do
        assert [{[:subject_idle_ms], ^bad, expected}] = errors(subject_idle_ms: bad)
        assert expected =~ "nil (subjects never expire) or an integer from 1000"
      end
    end

    test "metrics_max_subjects, log_interval_ms and reclaim_grace_ms are bounded integers" do
      assert {:ok, %{metrics_max_subjects: 1, log_interval_ms: 100, reclaim_grace_ms: 1_000}} =
               Config.load(metrics_max_subjects: 1, log_interval_ms: 100, reclaim_grace_ms: 1_000)

      for {key, bad, expected} <- [
            {:metrics_max_subjects, 0, "an integer from 1 to 1048576"},
            {:metrics_max_subjects, 1_048_577, "an integer from 1 to 1048576"},
            {:log_interval_ms, 99, "an integer from 100 to 3600000"},
            {:log_interval_ms, nil, "an integer from 100 to 3600000"},
            {:reclaim_grace_ms, 999, "an integer from 1000 to 3600000"},
            {:reclaim_grace_ms, "10s", "an integer from 1000 to 3600000"}
          ] do
        assert errors([{key, bad}]) == [{[key], bad, expected}]
      end

      assert Config.format_errors(errors(log_interval_ms: 5)) ==
               "log_interval_ms: got 5, expected an integer from 100 to 3600000"
    end
  end

  describe "http" do
    test "off by default, with nil or false" do
      assert {:ok, %{http: nil}} = Config.load(http: nil)
      assert {:ok, %{http: nil}} = Config.load(http: false)
    end

    test "port with the loopback default ip, or a given ip" do
      assert {:ok, %{http: %{port: 0, ip: {127, 0, 0, 1}}}} = Config.load(http: [port: 0])

      assert {:ok, %{http: %{port: 65_535, ip: {0, 0, 0, 0}}}} =
               Config.load(http: %{port: 65_535, ip: {0, 0, 0, 0}})

      assert {:ok, %{http: %{ip: {0, 0, 0, 0, 0, 0, 0, 1}}}} =
               Config.load(http: [port: 80, ip: {0, 0, 0, 0, 0, 0, 0, 1}])
    end

    test "port is required and ranged" do
      assert [{[:http, :port], nil, expected}] = errors(http: [ip: {127, 0, 0, 1}])
      assert expected =~ "required"

      for bad <- [-1, 65_536, "80", 80.0] do
        assert [{[:http, :port], ^bad, _}] = errors(http: [port: bad])
      end
    end

    test "bad ips, unknown keys and shapes" do
      for bad <- [{127, 0, 0}, {256, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 0, 65_536}, "127.0.0.1", :any] do
        assert [{[:http, :ip], ^bad, _}] = errors(http: [port: 1, ip: bad])
      end

      assert errors(http: [port: 1, path: "/"]) == [{:unknown_key, [:http, :path]}]

      assert {:ok, %{http: %{max_connections: 10, idle_timeout_ms: 2_000}}} =
               Config.load(http: [port: 1, max_connections: 10, idle_timeout_ms: 2_000])

      for bad <- [0, 65_536, -1, 1.0, "10", nil] do
        assert [{[:http, :max_connections], ^bad, "an integer from 1 to 65535"}] =
                 errors(http: [port: 1, max_connections: bad])
      end

      for bad <- [999, 3_600_001, :infinity, nil] do
        assert [{[:http, :idle_timeout_ms], ^bad, "an integer from 1000 to 3600000"}] =
                 errors(http: [port: 1, idle_timeout_ms: bad])
      end

      assert [{[:http], true, _}] = errors(http: true)
      assert [{[:http], 8080, _}] = errors(http: 8080)
    end
  end

  describe "ledgers" do
    test "module or {module, opts}, subjects normalised to binaries" do
      env = [ledgers: [{:ledger, MyLedger}, {"audit", {:audit_ledger, [url: "x"]}}]]
      assert {:ok, %{ledgers: ledgers}} = Config.load(env)
      assert ledgers == %{"ledger" => {MyLedger, []}, "audit" => {:audit_ledger, [url: "x"]}}

      assert {:ok, %{ledgers: %{"a" => {M, []}}}} = Config.load(ledgers: %{a: M})
    end

    test "bad shapes" do
      for bad <- [nil, true, "Mod", 1, {M, :opts}, {M, [1]}, {M, [], 1}, {"M", []}] do
        assert [{[:ledgers, "x"], ^bad, _}] = errors(ledgers: [x: bad])
      end

      assert [{[:ledgers], :all, _}] = errors(ledgers: :all)
      assert [{[:ledgers, "x"], "x", _}] = errors(ledgers: [{:x, M}, {"x", M}])
    end
  end

  describe "timers and limits" do
    test "tick_ms is 10..60000" do
      assert {:ok, %{tick_ms: 10}} = Config.load(tick_ms: 10)
      assert {:ok, %{tick_ms: 60_000}} = Config.load(tick_ms: 60_000)

      for bad <- [9, 60_001, 100.0, nil],
          do: assert([{[:tick_ms], ^bad, _}] = errors(tick_ms: bad))
    end

    test "history_limit and events_limit are 1..1000000" do
      for key <- [:history_limit, :events_limit] do
        assert {:ok, %{^key => 1}} = Config.load([{key, 1}])
        assert {:ok, %{^key => 1_000_000}} = Config.load([{key, 1_000_000}])

        for bad <- [0, 1_000_001, :infinity],
            do: assert([{[^key], ^bad, _}] = errors([{key, bad}]))
      end
    end
  end

  describe "format_errors/1" do
    test "one line per problem naming the key path, the value and what was expected" do
      reasons =
        errors(
          subjects: [ledger: [warning_threshold: -1]],
          ring_pool: [segments: 0, colour: 1],
          http: [port: 1, ip: "0.0.0.0"],
          default_policy: %{"window_ms" => 10}
        )

      lines = reasons |> Config.format_errors() |> String.split("\n")
      assert length(lines) == length(reasons)

      prefix =
        ~s|default_policy."window_ms": unknown key (keys must be atoms: :window_ms), | <>
          "expected one of warning_threshold, critical_threshold"

      assert Enum.any?(lines, &String.starts_with?(&1, prefix))

      assert ~s(subjects."ledger".warning_threshold: got -1, expected an integer from 1 to 281474976710655) in lines

      assert "ring_pool.segments: got 0, expected an integer from 1 to 1048576" in lines

      assert ("ring_pool.colour: unknown key, expected one of segments, segment_capacity, " <>
                "segment_bytes, max_event_bytes") in lines

      assert (~s(http.ip: got "0.0.0.0", expected an IP address tuple: 4 integers from 0 to 255 ) <>
                "or 8 integers from 0 to 65535") in lines
    end

    test "the whole environment and odd terms" do
      assert Config.format_errors(errors(42)) ==
               "breakwater: got 42, expected a keyword list or map of :breakwater application settings"

      assert Config.format_errors([]) == ""
      assert is_binary(Config.format_errors(:odd))
      assert is_binary(Config.format_errors([{:unknown_key, :odd} | :improper]))
    end
  end
end

defmodule Breakwater.ConfigRobustnessTest do
  # Counts atoms of the whole node: never beside async tests, which load modules.
  use ExUnit.Case, async: false

  alias Breakwater.{Config, Policy, RandomTerms}

  describe "robustness against random terms" do
    @atoms [
             nil,
             true,
             false,
             :none,
             :undefined,
             :critical,
             :low,
             :drop_oldest,
             :disk,
             :linear,
             :foo,
             :ledger,
             :segments,
             :segment_capacity,
             :segment_bytes,
             :max_event_bytes,
             :port,
             :ip,
             MyLedger
           ] ++ Config.keys() ++ Policy.keys()

    @leaves %{
      atoms: @atoms,
      max_bytes: 1_100,
      strings: ["", "ledger", "tick_ms", "none", "critical"],
      integers: [281_474_976_710_656, 0, -1, 65_536, 1_048_577]
    }

    test "load/1 never raises and never creates atoms" do
      # warm up with a different seed so module loading does not count as growth
      fuzz(200, {21, 22, 23})
      grew = RandomTerms.atom_growth([{31, 32, 33}, {41, 42, 43}, {51, 52, 53}], &fuzz(3_000, &1))

      assert Enum.any?(grew, &(&1 == 0)), "atom count grew on every run: #{inspect(grew)}"
    end

    defp fuzz(n, seed) do
      :rand.seed(:exsss, seed)

      oks =
        Enum.count(1..n, fn _ ->
          env = if :rand.uniform(3) == 1, do: random_term(3), else: config_like()

          case Config.load(env) do
            {:ok, config} ->
              assert Enum.sort(Map.keys(config)) == Enum.sort(Config.keys())
              true

            {:error, [_ | _] = reasons} ->
              assert is_binary(Config.format_errors(reasons))
              false
          end
        end)

      assert oks > 0 or n < 100
    end

    defp config_like do
      for _ <- 1..:rand.uniform(3) do
        key = if :rand.uniform(10) == 1, do: random_term(0), else: Enum.random(Config.keys())
        {key, config_value(key)}
      end
      |> Enum.filter(&is_atom(elem(&1, 0)))
    end

    defp config_value(key) do
      if :rand.uniform(3) == 1 do
        random_term(3)
      else
        case key do
          :default_policy -> policy_like()
          :subjects -> for _ <- 0..:rand.uniform(3), do: {subject(), policy_like()}
          :ring_pool -> [segments: small(), max_event_bytes: small(), segment_bytes: small()]
          :http -> Enum.random([nil, false, [port: small()], %{port: 80, ip: random_term(1)}])
          :ledgers -> for _ <- 0..:rand.uniform(3), do: {subject(), Enum.random([M, {M, []}])}
          :spool_dir -> Enum.random([nil, "/tmp/x", ~c"/tmp/y", random_term(1)])
          _ -> small()
        end
      end
    end

    defp subject, do: Enum.random([:a, "a", :ledger, "b", random_term(0)])

    defp small, do: Enum.random([0, 1, 10, 100, 1_000, 70_000, -1, nil])

    defp policy_like do
      for _ <- 0..:rand.uniform(3), into: %{} do
        {Enum.random(Policy.keys()), Enum.random([0, 1, 5, 100, 0.5, :none, :high, true])}
      end
    end

    defp random_term(depth), do: RandomTerms.term(depth, @leaves)
  end
end
