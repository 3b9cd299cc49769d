defmodule Breakwater.MetricsTest do
  # Not async: samples are read back from the whole registry, and readiness is global.
  use ExUnit.Case, async: false

  alias Breakwater.{History, Metrics}
  alias Breakwater.TestSubjects

  @moduletag :capture_log

  doctest Breakwater.Metrics

  defmodule Exposition do
    @moduledoc false
    # A strict parser of the text exposition format 0.0.4 as Breakwater writes it:
    # every family has `# HELP` then `# TYPE` before its samples, samples of a family
    # are contiguous, every sample line is `name{label="value",...} number`, label
    # values use only the escapes \\, \" and \n, and no series appears twice.
    # Returns %{name => %{type:, help:, samples: [{[{label, value}], value}]}} (label
    # values unescaped, in order of appearance) and the family names in order.

    @name ~r/\A[a-zA-Z_:][a-zA-Z0-9_:]*\z/
    @label_name ~r/\A[a-zA-Z_][a-zA-Z0-9_]*\z/
    @value ~r/\A(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)\z/
    @types ~w(counter gauge histogram summary untyped)

    def parse!(text) do
      unless String.valid?(text), do: raise("the exposition is not valid UTF-8")
      unless text == "" or String.ends_with?(text, "\n"), do: raise("no final line feed")

      lines = text |> String.split("\n") |> Enum.drop(-1) |> Enum.with_index(1)
      init = %{families: %{}, order: [], current: nil, series: MapSet.new()}

      state =
        Enum.reduce(lines, init, fn {line, n}, state ->
          try do
            line(line, state)
          rescue
            e in RuntimeError -> reraise "line #{n}: #{e.message}: #{inspect(line)}", []
          end
        end)

      families =
        Map.new(state.families, fn {name, f} ->
          unless f.type, do: raise("family #{name} has HELP but no TYPE")
          {name, %{f | samples: Enum.reverse(f.samples)}}
        end)

      {families, Enum.reverse(state.order)}
    end

    defp line("# HELP " <> rest, state) do
      [name, help] = split_once(rest)
      name!(name)
      if Map.has_key?(state.families, name), do: raise("second HELP for #{name}")
      if help == "", do: raise("empty HELP text")
      family = %{help: help, type: nil, samples: []}

      %{
        state
        | families: Map.put(state.families, name, family),
          order: [name | state.order],
          current: name
      }
    end

    defp line("# TYPE " <> rest, state) do
      [name, type] = split_once(rest)

      case state.families do
        %{^name => %{type: nil} = f} when state.current == name ->
          unless type in @types, do: raise("unknown type #{inspect(type)}")
          %{state | families: Map.put(state.families, name, %{f | type: type})}

        %{^name => _} ->
          raise "TYPE for #{name} out of place"

        _ ->
          raise "TYPE for #{name} before its HELP"
      end
    end

    defp line("#" <> _, _state), do: raise("unexpected comment")
    defp line("", _state), do: raise("unexpected empty line")

    defp line(line, state) do
      {name, labels, value} = sample!(line)

      case state.families do
        %{^name => %{type: type} = f} when state.current == name and type != nil ->
          series = {name, Enum.sort(labels)}
          if MapSet.member?(state.series, series), do: raise("duplicate series")
          f = %{f | samples: [{labels, value} | f.samples]}

          %{
            state
            | families: Map.put(state.families, name, f),
              series: MapSet.put(state.series, series)
          }

        %{^name => _} ->
          raise "sample of #{name} outside its family's block"

        _ ->
          raise "sample of #{name} without HELP and TYPE"
      end
    end

    defp split_once(text) do
      case String.split(text, " ", parts: 2) do
        [a, b] -> [a, b]
        _ -> raise "expected a name and a text"
      end
    end

    defp name!(name), do: unless(name =~ @name, do: raise("bad metric name #{inspect(name)}"))

    # name, optional {labels}, one space, value, optional timestamp.
    defp sample!(line) do
      {name, rest} = take_while(line, &(&1 not in [?{, ?\s]))
      name!(name)

      {labels, rest} =
        case rest do
          "{" <> rest -> labels!(rest, [])
          _ -> {[], rest}
        end

      case String.split(rest, " ") do
        ["", value] ->
          {name, labels, value!(value)}

        ["", value, ts] ->
          unless ts =~ ~r/\A-?\d+\z/, do: raise("bad timestamp")
          {name, labels, value!(value)}

        _ ->
          raise "expected one space then a value"
      end
    end

    defp value!(value) do
      unless value =~ @value, do: raise("bad value #{inspect(value)}")

      case Integer.parse(value) do
        {n, ""} -> n
        _ -> value
      end
    end

    defp labels!("}" <> rest, acc), do: {Enum.reverse(acc), rest}

    defp labels!(text, acc) do
      {lname, rest} = take_while(text, &(&1 != ?=))
      unless lname =~ @label_name, do: raise("bad label name #{inspect(lname)}")
      if List.keymember?(acc, lname, 0), do: raise("label #{lname} twice")

      rest =
        case rest do
          "=\"" <> rest -> rest
          _ -> raise "expected =\" after label #{lname}"
        end

      {value, rest} = label_value!(rest, [])
      acc = [{lname, value} | acc]

      case rest do
        "," <> rest -> labels!(rest, acc)
        "}" <> _ -> labels!(rest, acc)
        _ -> raise "expected , or } after a label value"
      end
    end

    defp label_value!("\"" <> rest, acc), do: {acc |> Enum.reverse() |> List.to_string(), rest}
    defp label_value!("\\\\" <> rest, acc), do: label_value!(rest, [?\\ | acc])
    defp label_value!("\\\"" <> rest, acc), do: label_value!(rest, [?" | acc])
    defp label_value!("\\n" <> rest, acc), do: label_value!(rest, [?\n | acc])
    defp label_value!("\\" <> _, _acc), do: raise("invalid escape in a label value")
    defp label_value!("", _acc), do: raise("unterminated label value")
    defp label_value!(<<c::utf8, rest::binary>>, acc), do: label_value!(rest, [c | acc])

    defp take_while(text, fun) do
      len = text |> :binary.bin_to_list() |> Enum.take_while(fun) |> length()
      {binary_part(text, 0, len), binary_part(text, len, byte_size(text) - len)}
    end
  end

  # The exposition with `subjects` in detail (by default only the worst
  # metrics_max_subjects are, and these tests look at subjects at rest).
  defp scrape(subjects), do: Metrics.prometheus(subjects: subjects) |> parse_local!() |> elem(0)

  # Parses an exposition of this node: every sample's first label must be
  # `node="<this node>"`, which is then left out, so the assertions below name the
  # labels that differ between samples.
  defp parse_local!(text) do
    {families, order} = Exposition.parse!(text)
    node = Atom.to_string(node())

    families =
      Map.new(families, fn {name, f} ->
        samples =
          for {labels, v} <- f.samples do
            assert [{"node", ^node} | rest] = labels, "#{name}: no node label first"
            {rest, v}
          end

        {name, %{f | samples: samples}}
      end)

    {families, order}
  end

  defp value(families, name, labels) do
    samples = Map.fetch!(families, name).samples

    case Enum.filter(samples, fn {l, _} -> Map.new(l) == labels end) do
      [{_, v}] -> v
      [] -> nil
    end
  end

  # Subjects whose names need every kind of escape.
  defp odd_subjects(base \\ TestSubjects.unique("odd")) do
    [
      base <> ~S( quote" backslash\ ),
      base <> " new\nline",
      base <> ~S( \n literal and \" literal),
      base <> " {brace},comma=eq",
      base <> " unicodé ✓",
      base <> <<" invalid ", 0xFF, 0xC3, " utf8 ", 0xED, 0xA0, 0x80>>
    ]
  end

  @required [
    {"router_backpressure_events_total", "counter"},
    {"router_backpressure_recovery_total", "counter"},
    {"breakwater_circuit_state", "gauge"},
    {"breakwater_queue_depth", "gauge"},
    {"breakwater_rejected_total", "counter"},
    {"breakwater_bypassed_total", "counter"},
    {"breakwater_dropped_events_total", "counter"},
    {"breakwater_ring_pool_free_segments", "gauge"}
  ]

  describe "prometheus/0" do
    test "is valid exposition text with HELP and TYPE for every family, sorted" do
      subjects = odd_subjects()
      for s <- subjects, do: :ok = Breakwater.configure(s, [])
      Breakwater.force_open(hd(subjects))
      on_exit(fn -> Breakwater.reset(hd(subjects)) end)

      text = Metrics.prometheus()
      {families, order} = parse_local!(text)

      assert order == Enum.sort(order)
      assert order == Enum.map(Metrics.metric_names(), &elem(&1, 0))

      for {name, type} <- @required do
        assert %{type: ^type} = families[name], "#{name} missing or not a #{type}"
      end

      for {name, type, help} <- Metrics.metric_names() do
        assert families[name].type == Atom.to_string(type)
        assert families[name].help == help
        # Counters end in _total.
        assert type == :gauge or String.ends_with?(name, "_total")
      end

      # Samples of every family are sorted by their label values.
      for {_name, %{samples: samples}} <- families do
        values = for {labels, _} <- samples, do: Enum.map(labels, &elem(&1, 1))
        assert values == Enum.sort(values)
      end
    end

    test "subject label values round-trip through escaping, whatever the subject's bytes" do
      base = TestSubjects.unique("odd")
      subjects = odd_subjects(base)
      for s <- subjects, do: :ok = Breakwater.configure(s, [])
      :ok = Breakwater.report_depth(Enum.at(subjects, 1), 42)

      families = scrape(subjects)
      states = Map.fetch!(families, "breakwater_circuit_state").samples
      labels = for {[{"subject", s}], _} <- states, do: s

      for s <- subjects do
        assert Metrics.safe_text(s) in labels, "no sample for #{inspect(s)}"
      end

      # Valid UTF-8 names come back byte for byte.
      for s <- Enum.take(subjects, 5), do: assert(s in labels)

      # Invalid bytes are shown as \xNN text.
      assert Metrics.safe_text(List.last(subjects)) ==
               base <> ~S( invalid \xFF\xC3 utf8 \xED\xA0\x80)

      assert value(families, "breakwater_queue_depth", %{"subject" => Enum.at(subjects, 1)}) == 42
    end

    test "breaker, backpressure and depth gauges follow the subject's state" do
      # The open time passes on the native clock, not the wall clock: no race with the timer.
      s = TestSubjects.subject(failure_threshold: 1, open_timeout_ms: 60_000)
      families = scrape([s])
      assert value(families, "breakwater_circuit_state", %{"subject" => s}) == 0
      assert value(families, "breakwater_backpressure_state", %{"subject" => s}) == 0

      :ok = Breakwater.record(s, :failure)
      assert value(scrape([s]), "breakwater_circuit_state", %{"subject" => s}) == 2
      assert value(scrape([s]), "breakwater_circuit_opens_total", %{"subject" => s}) == 1

      TestSubjects.advance(60_000)
      # three probes (half_open_max_calls), each answered: success_threshold is 3
      for _ <- 1..3, do: :ok = Breakwater.admit(s)
      families = scrape([s])
      assert value(families, "breakwater_circuit_state", %{"subject" => s}) == 1
      assert value(families, "breakwater_recovery_attempts_total", %{"subject" => s}) == 1

      :ok = Breakwater.record(s, :success)
      :ok = Breakwater.record(s, :success)
      :ok = Breakwater.record(s, :success)
      families = scrape([s])
      assert value(families, "breakwater_circuit_state", %{"subject" => s}) == 0
      assert value(families, "breakwater_successful_recoveries_total", %{"subject" => s}) == 1
      assert value(families, "breakwater_successes_total", %{"subject" => s}) == 3
      assert value(families, "breakwater_failures_total", %{"subject" => s}) == 1
      assert value(families, "breakwater_probe_successes_total", %{"subject" => s}) == 3
      assert value(families, "breakwater_probe_failures_total", %{"subject" => s}) == 0
      assert value(families, "breakwater_stale_probes_total", %{"subject" => s}) == 0
      # a success recorded now, with no admission waiting, is an ordinary closed outcome
      :ok = Breakwater.record(s, :success)
      assert value(scrape([s]), "breakwater_late_outcomes_total", %{"subject" => s}) == 0

      b = TestSubjects.subject(warning_threshold: 10, critical_threshold: 100)
      :ok = Breakwater.report_depth(b, 50)
      families = scrape([b])
      assert value(families, "breakwater_backpressure_state", %{"subject" => b}) == 1
      assert value(families, "breakwater_backpressure_status", %{"subject" => b}) == 1
      assert value(families, "breakwater_queue_depth", %{"subject" => b}) == 50

      :ok = Breakwater.report_depth(b, 100)
      families = scrape([b])
      assert value(families, "breakwater_backpressure_state", %{"subject" => b}) == 2
      assert value(families, "breakwater_backpressure_status", %{"subject" => b}) == 2
      assert value(families, "breakwater_high_watermark", %{"subject" => b}) == 100

      :ok = Breakwater.report_depth(b, 0)
      families = scrape([b])
      assert value(families, "breakwater_backpressure_state", %{"subject" => b}) == 3
      assert value(families, "breakwater_queue_depth", %{"subject" => b}) == 0
    end

    test "the overload signals: their values and a flag per signal" do
      s =
        TestSubjects.subject(
          warning_threshold: 10,
          critical_threshold: 100,
          latency_overload_ms: 200,
          inflight_overload: 5
        )

      overloaded = fn families, signal ->
        value(families, "breakwater_overloaded", %{"subject" => s, "signal" => signal})
      end

      # Before any latency or admission, only the depth signal has series.
      families = scrape([s])
      assert overloaded.(families, "depth") == 0
      assert overloaded.(families, "latency") == nil
      assert overloaded.(families, "inflight") == nil
      assert value(families, "breakwater_latency_p95_ms", %{"subject" => s}) == nil
      assert value(families, "breakwater_latency_samples", %{"subject" => s}) == nil
      assert value(families, "breakwater_inflight", %{"subject" => s}) == nil
      assert value(families, "breakwater_queue_depth", %{"subject" => s}) == 0

      :ok = Breakwater.report_depth(s, 11)
      :ok = Breakwater.report_latency(s, 250)
      for _ <- 1..3, do: :ok = Breakwater.admit(s, priority: :critical)
      assert {:reject, :overloaded, _} = Breakwater.admit(s)

      families = scrape([s])
      assert overloaded.(families, "depth") == 1
      assert overloaded.(families, "latency") == 1
      assert overloaded.(families, "inflight") == 0
      assert value(families, "breakwater_latency_p95_ms", %{"subject" => s}) == 250
      assert value(families, "breakwater_inflight", %{"subject" => s}) == 3
      assert value(families, "breakwater_backpressure_status", %{"subject" => s}) == 2

      assert value(families, "breakwater_rejected_total", %{
               "subject" => s,
               "reason" => "overloaded"
             }) ==
               1

      # Back to calm with latencies recorded: the series stay (the subject has measured
      # latencies, and admitted calls), at zero.
      :ok = Breakwater.report_latency(s, 0)
      for _ <- 1..3, do: :ok = Breakwater.record(s, :success, latency_ms: 0)
      :ok = Breakwater.Ticker.tick()
      families = scrape([s])
      assert overloaded.(families, "latency") == 0
      assert overloaded.(families, "inflight") == 0
      assert value(families, "breakwater_latency_p95_ms", %{"subject" => s}) == 0
      assert value(families, "breakwater_latency_samples", %{"subject" => s}) == 3
      assert value(families, "breakwater_inflight", %{"subject" => s}) == 0
    end

    test "rejections are counted by reason, bypasses on their own" do
      s = TestSubjects.subject(warning_threshold: 10, critical_threshold: 100, max_segments: 1)
      reasons = ~w(backpressure circuit_open half_open_limit pool_exhausted shed_low_priority)

      families = scrape([s])

      for r <- reasons do
        assert value(families, "breakwater_rejected_total", %{"subject" => s, "reason" => r}) ==
                 0
      end

      :ok = Breakwater.report_depth(s, 90)
      assert {:reject, :shed_low_priority, _} = Breakwater.admit(s, priority: :low)
      :ok = Breakwater.report_depth(s, 100)
      assert {:reject, :backpressure, _} = Breakwater.admit(s)
      assert {:reject, :backpressure, _} = Breakwater.admit(s)
      :ok = Breakwater.report_depth(s, 0)
      :ok = Breakwater.force_open(s)
      assert {:reject, :circuit_open, _} = Breakwater.admit(s)
      assert :ok = Breakwater.admit(s, priority: :critical)
      :ok = Breakwater.reset(s)

      capacity = Breakwater.Native.pool_info().segment_capacity
      results = for _ <- 1..(capacity + 3), do: Breakwater.enqueue(s, "event")
      assert Enum.count(results, &match?({:reject, :pool_exhausted, _}, &1)) == 3
      {:ok, batch, _} = Breakwater.drain(s, capacity)
      :ok = Breakwater.ack(s, batch)

      families = scrape([s])

      rejected = fn r ->
        value(families, "breakwater_rejected_total", %{"subject" => s, "reason" => r})
      end

      assert rejected.("shed_low_priority") == 1
      assert rejected.("backpressure") == 2
      assert rejected.("circuit_open") == 1
      assert rejected.("half_open_limit") == 0
      assert rejected.("pool_exhausted") == 3
      assert value(families, "breakwater_bypassed_total", %{"subject" => s}) == 1
      assert value(families, "breakwater_dropped_events_total", %{"subject" => s}) == 3
      assert value(families, "breakwater_dropped_bytes_total", %{"subject" => s}) == 15
      assert value(families, "breakwater_enqueued_events_total", %{"subject" => s}) == capacity
      assert value(families, "breakwater_delivered_events_total", %{"subject" => s}) == capacity
      assert value(families, "breakwater_spooled_events", %{"subject" => s}) == 0
    end

    test "event and recovery totals come from history, event types as text" do
      s = TestSubjects.subject(warning_threshold: 10, critical_threshold: 100)
      :ok = Breakwater.report_depth(s, 100)
      :ok = Breakwater.report_depth(s, 0)
      :ok = History.event(s, "custom-type")
      :ok = History.event(s, <<"odd\"type", 0xFE>>)

      families = scrape([s])

      events = fn t ->
        value(families, "router_backpressure_events_total", %{"subject" => s, "event_type" => t})
      end

      assert events.("backpressure_active") == 1
      assert events.("recovery") == 1
      assert events.("custom-type") == 1
      assert events.(~S(odd"type\xFE)) == 1
      assert value(families, "router_backpressure_recovery_total", %{"subject" => s}) == 1
    end

    test "remote opens are counted per subject; the cluster's nodes and opens sent per node" do
      s = TestSubjects.subject(share: :breaker, open_timeout_ms: 60_000)
      assert value(scrape([s]), "breakwater_remote_opens_total", %{"subject" => s}) == 0
      assert Breakwater.Cluster.remote_open(s, :peer@host, 0)
      families = scrape([s])
      assert value(families, "breakwater_remote_opens_total", %{"subject" => s}) == 1
      assert value(families, "breakwater_circuit_opens_total", %{"subject" => s}) == 1
      assert value(families, "breakwater_circuit_state", %{"subject" => s}) == 2
      assert [{[], total}] = families["breakwater_subjects_remote_opens_total"].samples
      assert total >= 1
      assert value(families, "breakwater_cluster_nodes", %{"state" => "up"}) >= 1

      for result <- ~w(sent busy not_connected) do
        n = value(families, "breakwater_cluster_opens_sent_total", %{"result" => result})
        assert is_integer(n) and n >= 0
      end

      :ok = Breakwater.reset(s)
    end

    test "ring pool and registry gauges have no label but node" do
      TestSubjects.subject()
      families = scrape([])
      info = Breakwater.Native.pool_info()
      assert [{[], free}] = families["breakwater_ring_pool_free_segments"].samples
      assert free in 0..info.segments
      assert [{[], segments}] = families["breakwater_ring_pool_segments"].samples
      assert segments == info.segments
      assert [{[], bytes}] = families["breakwater_ring_pool_footprint_bytes"].samples
      assert bytes == info.footprint_bytes
      assert [{[], n}] = families["breakwater_subjects"].samples
      assert n >= 1
      assert [{[], alerts}] = families["breakwater_alerts"].samples
      assert is_integer(alerts)
    end

    test "the same state gives the same text" do
      subjects = for _ <- 1..3, do: TestSubjects.subject()
      # Totals over the node change with the traffic of other processes; the detail of
      # subjects at rest must not. Equal reads must come quickly.
      detail = fn ->
        Metrics.prometheus(subjects: subjects)
        |> String.split("\n")
        |> Enum.reject(&String.starts_with?(&1, "breakwater_subjects"))
      end

      assert Enum.any?(1..5, fn _ -> detail.() == detail.() end)
    end

    test "details at most max_subjects subjects, the worst first, and totals all of them" do
      calm = for _ <- 1..3, do: TestSubjects.subject()
      active = TestSubjects.subject(warning_threshold: 10, critical_threshold: 20)
      :ok = Breakwater.report_depth(active, 25)
      {families, _} = parse_local!(Metrics.prometheus(max_subjects: 1))
      assert [{[{"subject", shown}], 2}] = families["breakwater_backpressure_status"].samples
      # The worst subject of the node: active (this one, or another test's).
      assert shown == active or Breakwater.status(shown).status == :active
      assert [{[], 1}] = families["breakwater_subjects_detailed"].samples
      assert [{[], total}] = families["breakwater_subjects_accepted_total"].samples
      assert total >= 0
      [{[], n}] = families["breakwater_subjects"].samples

      counts =
        Map.new(families["breakwater_subjects_by_status"].samples, fn {[{_, k}], v} -> {k, v} end)

      assert counts["active"] >= 1
      # (No other test runs meanwhile: the node's subjects are all counted, once.)
      assert Enum.sum(Map.values(counts)) == n
      assert n >= length(calm) + 1

      assert_raise ArgumentError, ~r/max_subjects/, fn -> Metrics.prometheus(max_subjects: -1) end
      assert_raise ArgumentError, ~r/options/, fn -> Metrics.prometheus(:bad) end
      :ok = Breakwater.report_depth(active, 0)
    end
  end

  describe "the test's exposition parser" do
    test "rejects what the format forbids" do
      ok = "# HELP a_total Help.\n# TYPE a_total counter\na_total{s=\"x\\\\y\\\"z\\n\"} 1\n"

      assert {%{"a_total" => %{samples: [{[{"s", "x\\y\"z\n"}], 1}]}}, ["a_total"]} =
               Exposition.parse!(ok)

      bad = [
        "a 1\n",
        "# TYPE a gauge\na 1\n",
        "# HELP a h\na 1\n",
        "# HELP a h\n# TYPE a gauge\na{s=\"\\x\"} 1\n",
        "# HELP a h\n# TYPE a gauge\na{s=\"x} 1\n",
        "# HELP a h\n# TYPE a gauge\na{s=x} 1\n",
        "# HELP a h\n# TYPE a gauge\na{s=\"x\"} one\n",
        "# HELP a h\n# TYPE a gauge\na{s=\"x\"}  1\n",
        "# HELP a h\n# TYPE a gauge\na{s=\"x\"} 1\na{s=\"x\"} 2\n",
        "# HELP a h\n# TYPE a gauge\n# HELP b h\n# TYPE b gauge\na 1\n",
        "# HELP a h\n# TYPE a wrong\na 1\n",
        "# HELP 1a h\n# TYPE 1a gauge\n",
        "# HELP a h\n# TYPE a gauge\na 1",
        "# HELP a h\n# TYPE a gauge\na{s=\"\xFF\"} 1\n"
      ]

      for text <- bad do
        assert_raise RuntimeError, fn -> Exposition.parse!(text) end
      end
    end
  end

  describe "label_value/1 and safe_text/1" do
    test "escape backslash, double quote and line feed only" do
      assert Metrics.label_value(~S(a\b"c) <> "\nd\te") == ~S(a\\b\"c\nd) <> "\te"
      assert Metrics.label_value("plain") == "plain"
      assert Metrics.label_value(:circuit_open) == "circuit_open"
      assert Metrics.label_value("") == ""
    end

    test "write invalid UTF-8 bytes as \\xNN text, keeping valid characters" do
      assert Metrics.safe_text(<<0xFF>>) == ~S(\xFF)
      assert Metrics.safe_text(<<"é", 0x80, "ü", 0x0A>>) == "é" <> ~S(\x80) <> "ü\n"
      assert Metrics.safe_text(<<0xE2, 0x9C>>) == ~S(\xE2\x9C)
      assert Metrics.label_value(<<0xFF>>) == ~S(\\xFF)

      for bin <- [<<0xC0, 0x80>>, <<0xED, 0xA0, 0x80>>, :crypto.strong_rand_bytes(64)] do
        assert String.valid?(Metrics.safe_text(bin))
        assert String.valid?(Metrics.label_value(bin))
      end
    end

    test "other terms become their inspected text" do
      assert Metrics.safe_text(42) == "42"
      assert Metrics.safe_text({:a, "b"}) == ~S({:a, "b"})
    end
  end

  describe "health/0 and critical_open/0" do
    test "summarises every subject with its critical flag" do
      critical = TestSubjects.subject(critical: true)
      plain = TestSubjects.subject()
      on_exit(fn -> Breakwater.reset(critical) end)

      health = Metrics.health(subjects: [critical, plain])
      assert health.status in ["ok", "degraded"]
      assert is_boolean(health.ready)
      assert %{free_segments: free, segments: total} = health.pool
      assert free <= total
      assert is_integer(health.alerts)

      entry = Enum.find(health.subjects, &(&1.subject == critical))

      assert entry == %{
               subject: critical,
               status: "inactive",
               breaker: "closed",
               backpressure: "normal",
               queue_depth: 0,
               critical: true
             }

      assert %{critical: false} = Enum.find(health.subjects, &(&1.subject == plain))
      assert health.subjects == Enum.sort_by(health.subjects, & &1.subject)
      refute critical in Metrics.critical_open()

      :ok = Breakwater.force_open(plain)
      refute plain in Metrics.critical_open()

      :ok = Breakwater.force_open(critical)
      assert critical in Metrics.critical_open()
      health = Metrics.health(subjects: [critical, plain])
      assert health.status == "degraded"
      refute health.ready

      assert %{breaker: "open", status: "active"} =
               Enum.find(health.subjects, &(&1.subject == critical))

      :ok = Breakwater.reset(critical)
      :ok = Breakwater.reset(plain)
      refute critical in Metrics.critical_open()
    end

    test "the application is alive" do
      assert Metrics.alive?()
    end
  end
end
