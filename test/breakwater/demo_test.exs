defmodule Breakwater.DemoTest do
  # The end-to-end run measures wall-clock phases and drains a real spool: not beside
  # async tests.
  use ExUnit.Case, async: false

  alias Breakwater.Demo
  alias Breakwater.Demo.{Accounting, Chart}
  alias Breakwater.TestSubjects

  import ExUnit.CaptureIO

  doctest Breakwater.Demo.Accounting
  doctest Breakwater.Demo.Chart

  defp parse!(svg) do
    {doc, rest} = :xmerl_scan.string(String.to_charlist(svg), quiet: true)
    assert rest == []
    doc
  end

  defp xpath(doc, path), do: :xmerl_xpath.string(String.to_charlist(path), doc)

  defp attr(element, name) do
    {:xmlElement, _, _, _, _, _, _, attrs, _, _, _, _} = element

    Enum.find_value(attrs, fn {:xmlAttribute, n, _, _, _, _, _, _, value, _} ->
      if n == name, do: List.to_string(value)
    end)
  end

  defp texts(doc) do
    for {:xmlText, _, _, _, value, _} <- xpath(doc, "//text/text()"),
        do: IO.chardata_to_string(value)
  end

  describe "Accounting" do
    test "lost is produced - delivered - spooled (memory + disk) - dropped" do
      acc =
        Accounting.new(
          produced: 1_000,
          delivered: 900,
          spooled_memory: 40,
          spooled_disk: 50,
          dropped: 10
        )

      assert acc.lost == 0
      assert Accounting.spooled(acc) == 90
      assert Accounting.ok?(acc)
      assert Accounting.problems(acc) == []

      missing = Accounting.new(produced: 1_000, delivered: 900, spooled_disk: 50, dropped: 10)
      assert missing.lost == 40
      refute Accounting.ok?(missing)
      assert [problem] = Accounting.problems(missing)
      assert problem =~ "lost = 40"
    end

    test "more accounted for than produced shows as negative lost, and is a problem" do
      acc = Accounting.new(produced: 10, delivered: 12)
      assert acc.lost == -2
      refute Accounting.ok?(acc)
    end

    test "lost is always computed, never taken from the input" do
      assert_raise ArgumentError, fn -> Accounting.new(produced: 1, lost: 0) end
      assert_raise ArgumentError, fn -> Accounting.new(produced: -1) end
      assert_raise ArgumentError, fn -> Accounting.new(delivered: 1.5) end
    end

    test "duplicates are reported but are not a loss; mismatches with Breakwater are" do
      acc =
        Accounting.new(
          produced: 100,
          delivered: 100,
          duplicates: 7,
          delivered_breakwater: 100,
          enqueued_breakwater: 100
        )

      assert acc.lost == 0
      assert Accounting.ok?(acc)

      bad = Accounting.new(produced: 100, delivered: 100, delivered_breakwater: 99)
      assert [problem] = Accounting.problems(bad)
      assert problem =~ "99 delivered"

      stray = Accounting.new(produced: 100, delivered: 100, unexpected: 1)
      assert [problem] = Accounting.problems(stray)
      assert problem =~ "no router produced"
    end

    test "the table is aligned and shows every count" do
      acc =
        Accounting.new(
          produced: 1_234_567,
          refused: 12,
          refused_by_reason: %{circuit_open: 12, backpressure: 0},
          delivered: 1_234_560,
          spooled_memory: 3,
          spooled_disk: 4,
          dropped: 0,
          duplicates: 5,
          delivered_breakwater: 1_234_560
        )

      table = Accounting.table(acc)
      assert String.ends_with?(table, "\n")
      lines = String.split(table, "\n", trim: true)

      [rule | _] = lines
      assert rule =~ ~r/^-+$/
      assert List.last(lines) == rule

      rows = lines -- [rule, rule]
      row = fn label -> Enum.find(rows, &String.starts_with?(&1, label)) end

      assert row.("produced") =~ "1,234,567"
      assert row.("delivered") =~ "1,234,560"
      assert row.("spooled in memory") =~ ~r/\b3$/
      assert row.("spooled on disk") =~ ~r/\b4$/
      assert row.("lost = produced - delivered - spooled - dropped") =~ ~r/\s0  ok$/
      assert row.("duplicates") =~ "5"
      assert row.("    refused: circuit_open") =~ "12"
      refute Enum.any?(rows, &(&1 =~ "refused: backpressure"))
      assert row.("Breakwater: delivered") =~ "matches"

      # Numbers end in one column: the column after the padded label.
      ends =
        for r <- rows,
            [{start, len}] =
              Regex.run(~r/\d[\d,]*(?=(  \S.*)?$)/, r, return: :index, capture: :first),
            do: start + len

      assert length(Enum.uniq(ends)) == 1

      lossy = Accounting.table(Accounting.new(produced: 10, delivered: 8))
      assert lossy =~ ~r/lost = produced - delivered - spooled - dropped\s+2  LOST EVENTS/
    end

    test "format_int groups thousands" do
      assert Accounting.format_int(0) == "0"
      assert Accounting.format_int(999) == "999"
      assert Accounting.format_int(1_000) == "1,000"
      assert Accounting.format_int(12_345_678) == "12,345,678"
      assert Accounting.format_int(-1_000) == "-1,000"
    end
  end

  describe "Chart" do
    defp samples do
      for i <- 0..39 do
        breaker =
          cond do
            i < 15 -> :closed
            i < 25 -> :open
            i < 28 -> :half_open
            true -> :closed
          end

        backpressure =
          cond do
            i < 10 -> :normal
            i < 15 -> :pressure
            i < 25 -> :dropping
            i < 30 -> :recovery
            true -> :normal
          end

        by_reason =
          if breaker == :open,
            do: %{router_status_active: 50 + i, shed_low_priority: 10},
            else: %{router_status_active: 0, shed_low_priority: 0}

        %{
          t_ms: i * 100,
          depth: if(i < 25, do: i * 40, else: max(1_000 - (i - 25) * 100, 0)),
          disk: if(i in 18..26, do: 300, else: 0),
          latency_p95: if(i in 5..14, do: 80, else: 4),
          breaker: breaker,
          backpressure: backpressure,
          rejected_by_reason: by_reason,
          rejected: by_reason |> Map.values() |> Enum.sum(),
          phase: if(i < 15, do: "healthy", else: "down <&> \"quoted\"")
        }
      end
    end

    # The exact breaker history: a probe that failed within 1 ms at 1.8 s (between two
    # samples), then one at 2.5 s that closed the breaker at 2.8 s.
    @breaker_transitions [
      %{t_ms: 1_500, from: :closed, to: :open},
      %{t_ms: 1_800, from: :open, to: :half_open},
      %{t_ms: 1_801, from: :half_open, to: :open},
      %{t_ms: 2_500, from: :open, to: :half_open},
      %{t_ms: 2_800, from: :half_open, to: :closed}
    ]

    defp chart(opts \\ []) do
      Chart.svg(
        samples(),
        [
          title: "Demo <run> & 'test'",
          thresholds: %{warning: 400, critical: 900},
          latency_threshold: 30,
          interval_ms: 100,
          breaker_transitions: @breaker_transitions
        ] ++ opts
      )
    end

    defp num(element, name), do: element |> attr(name) |> Float.parse() |> elem(0)

    test "renders well-formed SVG with every panel, axis and the legend" do
      svg = chart()
      doc = parse!(svg)

      assert [root] = xpath(doc, "/svg")
      assert attr(root, :xmlns) == "http://www.w3.org/2000/svg"

      assert [line] = xpath(doc, "//polyline[@id='depth-line']")
      assert length(String.split(attr(line, :points), " ")) == 40
      assert [_] = xpath(doc, "//polyline[@id='disk-line']")
      assert [_] = xpath(doc, "//g[@id='time-axis']")
      assert [_] = xpath(doc, "//g[@id='legend']")

      texts = texts(doc)
      assert "Demo <run> & 'test'" in texts
      assert "down <&> \"quoted\"" in texts
      assert "healthy" in texts
      assert "spool depth (events)" in texts
      assert "time since start (s)" in texts
      assert "refused at intake, rejected per 100 ms, by reason" in texts

      for label <- ["closed", "half-open", "open", "half-open probe", "depth (memory + disk)"],
          do: assert(label in texts)

      for label <- ["normal", "pressure", "dropping", "recovery"], do: assert(label in texts)
      assert "router status active" in texts and "shed low priority" in texts

      # Seconds on the time axis.
      assert "0" in texts and "1" in texts

      # The raw text never appears unescaped.
      refute svg =~ "<run>"
    end

    test "phases are marked at their exact start when given" do
      doc = parse!(chart(phases: [%{t_ms: 0, name: "healthy"}, %{t_ms: 1_450, name: "down"}]))
      lines = xpath(doc, "//line[@class='phase']")
      assert length(lines) == 2
      # 1 450 ms of 3 900: between the samples at 1 400 and 1 500 ms.
      [_, down] = Enum.sort_by(lines, &num(&1, :x1))
      assert_in_delta num(down, :x1), 110 + 1_450 / 3_900 * 820, 0.1
      assert "down" in texts(doc)
    end

    test "the warning and critical thresholds are drawn at their depth" do
      doc = parse!(chart())
      assert [warning] = xpath(doc, "//line[@id='warning-threshold']")
      assert [critical] = xpath(doc, "//line[@id='critical-threshold']")
      # Higher depth is higher up: the critical line is above the warning line.
      assert num(critical, :y1) < num(warning, :y1)
      assert "warning 400" in texts(doc) and "critical 900" in texts(doc)

      # The depth axis reaches past the critical threshold even when depth does not.
      doc = parse!(Chart.svg(Enum.take(samples(), 5), thresholds: %{critical: 5_000}))
      assert [critical] = xpath(doc, "//line[@id='critical-threshold']")
      [frame | _] = xpath(doc, "//g[@id='depth']/rect")
      assert num(critical, :y1) > num(frame, :y)
    end

    test "the latency line and its threshold are drawn on a panel of their own" do
      doc = parse!(chart())
      assert [line] = xpath(doc, "//g[@id='latency']/polyline[@id='latency-line']")
      points = attr(line, :points) |> String.split(" ")
      assert length(points) == 40
      assert [threshold] = xpath(doc, "//line[@id='latency-threshold']")
      assert "latency threshold 30 ms" in texts(doc)
      assert "p95 latency (ms)" in texts(doc)
      assert "p95 latency (the latency signal's value)" in texts(doc)

      # 80 ms is above the threshold line, 4 ms below it; the panel lies between the
      # depth panel and the breaker band.
      ys = Enum.map(points, &(&1 |> String.split(",") |> List.last() |> Float.parse() |> elem(0)))
      assert Enum.at(ys, 10) < num(threshold, :y1) and Enum.at(ys, 0) > num(threshold, :y1)
      [depth_frame | _] = xpath(doc, "//g[@id='depth']/rect")
      [latency_frame | _] = xpath(doc, "//g[@id='latency']/rect")
      [breaker | _] = xpath(doc, "//g[@id='breaker']/rect")
      assert num(latency_frame, :y) > num(depth_frame, :y) + num(depth_frame, :height)
      assert num(breaker, :y) > num(latency_frame, :y) + num(latency_frame, :height)

      # Without samples or threshold the panel is empty, and no threshold is drawn.
      doc = parse!(Chart.svg([]))
      assert xpath(doc, "//line[@id='latency-threshold']") == []
      assert [_] = xpath(doc, "//g[@id='latency']")
    end

    test "the breaker band follows the exact transitions; every probe is marked" do
      doc = parse!(chart())
      band = xpath(doc, "//g[@id='breaker']/rect[starts-with(@class, 'breaker-')]")
      classes = Enum.map(band, &attr(&1, :class))

      # closed, open, half_open (1 ms), open, half_open, closed: six runs, however
      # short, each at least 2 px wide.
      assert Enum.sort(classes) ==
               Enum.sort(~w(breaker-closed breaker-open breaker-half_open breaker-open
                            breaker-half_open breaker-closed))

      assert Enum.all?(band, &(num(&1, :width) >= 2.0))

      # The 1 ms half-open run is 2 px wide and drawn last, over the wide runs around it.
      widths = Enum.map(band, &num(&1, :width))
      assert widths == Enum.sort(widths, :desc)
      assert attr(List.last(band), :class) == "breaker-half_open"
      assert num(List.last(band), :width) == 2.0

      # A probe mark for each entry into half-open, the 1 ms one included.
      assert length(xpath(doc, "//polygon[@class='probe']")) == 2

      # Without transitions, the samples give the band and the probes they saw.
      doc = parse!(Chart.svg(samples()))

      band =
        doc
        |> xpath("//g[@id='breaker']/rect[starts-with(@class, 'breaker-')]")
        |> Enum.sort_by(&num(&1, :x))

      assert Enum.map(band, &attr(&1, :class)) ==
               ~w(breaker-closed breaker-open breaker-half_open breaker-closed)

      assert Enum.map(band, &attr(&1, :fill)) == ["#2e7d32", "#c62828", "#f9a825", "#2e7d32"]
      assert length(xpath(doc, "//polygon[@class='probe']")) == 1
    end

    test "the backpressure band lies under the breaker band" do
      doc = parse!(chart())
      band = xpath(doc, "//g[@id='backpressure']/rect[starts-with(@class, 'backpressure-')]")

      assert Enum.map(band, &attr(&1, :class)) |> Enum.sort() ==
               Enum.sort(~w(backpressure-normal backpressure-pressure backpressure-dropping
                            backpressure-recovery backpressure-normal))

      [breaker | _] = xpath(doc, "//g[@id='breaker']/rect")
      [bp | _] = band
      assert num(bp, :y) >= num(breaker, :y) + num(breaker, :height)
    end

    test "refusals are stacked by reason, one bar per interval" do
      doc = parse!(chart())
      status = xpath(doc, "//g[@id='rejections']/rect[@class='rejected-router_status_active']")
      shed = xpath(doc, "//g[@id='rejections']/rect[@class='rejected-shed_low_priority']")

      # One bar of each reason per interval with refusals (the ten open samples).
      assert length(status) == 10 and length(shed) == 10

      # Stacked: at the same x, the second reason sits on top of the first.
      for {a, b} <- Enum.zip(status, shed) do
        assert num(a, :x) == num(b, :x)
        assert_in_delta num(b, :y) + num(b, :height), num(a, :y), 0.11
      end

      assert Chart.svg(Enum.take(samples(), 3))
             |> parse!()
             |> xpath("//g[@id='rejections']/rect[starts-with(@class, 'rejected-')]") == []
    end

    test "legend entries do not overlap, at their estimated widths" do
      doc = parse!(chart())
      items = xpath(doc, "//g[@id='legend']/g[@class='legend-item']")
      assert length(items) >= 12

      rows =
        items
        |> Enum.map(fn item ->
          [swatch, label] = xpath(item, "*")
          [{:xmlText, _, _, _, value, _}] = xpath(label, "text()")
          x0 = swatch_x(swatch)
          {num(label, :y), x0, num(label, :x) + Chart.text_width(List.to_string(value))}
        end)
        |> Enum.group_by(&elem(&1, 0))

      for {_y, row} <- rows do
        row
        |> Enum.sort_by(&elem(&1, 1))
        |> Enum.chunk_every(2, 1, :discard)
        |> Enum.each(fn [{_, _, right}, {_, left, _}] -> assert right < left end)
      end

      # Every entry inside the chart's width.
      for {_y, row} <- rows, {_, _, right} <- row, do: assert(right <= 960)
    end

    test "an empty sample list still renders a well-formed chart" do
      doc = parse!(Chart.svg([]))
      assert [_] = xpath(doc, "//g[@id='depth']")
      assert xpath(doc, "//g[@id='rejections']/rect[starts-with(@class, 'rejected-')]") == []
    end

    test "escape/1 covers the XML special characters and drops control characters" do
      assert Chart.escape("a<b>&\"c'\u0001") == "a&lt;b&gt;&amp;&quot;c&apos;"
    end
  end

  defp swatch_x({:xmlElement, :polygon, _, _, _, _, _, _, _, _, _, _} = polygon) do
    [first | _] = String.split(attr(polygon, :points), " ")
    {x, _} = first |> String.split(",") |> hd() |> Float.parse()
    x - 10
  end

  defp swatch_x(element) do
    {x, _} = Float.parse(attr(element, :x) || attr(element, :x1))
    x
  end

  describe "progress" do
    test "the live line fits its width, whatever the counts" do
      sample = %{
        phase: "ledger slow",
        t_ms: 1_234_567,
        produced: 123_456_789_012,
        delivered: 123_456_789_000,
        depth: 98_765_432,
        latency_p95: 123_456,
        breaker: :half_open,
        backpressure: :recovery
      }

      for width <- [79, 59, 20] do
        line = Demo.progress_line(sample, width)
        assert String.length(line) == width
        refute line =~ "\r" or line =~ "\n"
      end

      # Usual counts fit in 79 columns whole.
      usual = %{
        sample
        | t_ms: 31_000,
          produced: 99_999,
          delivered: 99_999,
          depth: 99_999,
          latency_p95: 9_999
      }

      assert Demo.progress_line(usual, 79)
             |> String.trim_trailing()
             |> String.ends_with?("recovery")
    end
  end

  describe "run/1, scaled down" do
    setup do
      subject = TestSubjects.unique("demo")

      svg =
        Path.join(
          System.tmp_dir!(),
          "breakwater-demo-test-#{System.unique_integer([:positive])}.svg"
        )

      on_exit(fn ->
        Breakwater.detach_ledger(subject)
        File.rm(svg)
      end)

      %{subject: subject, svg: svg}
    end

    @tag timeout: 60_000
    test "loses nothing, opens and closes the breaker, writes the chart", %{subject: s, svg: svg} do
      # Not a terminal (ExUnit's captured output): a line per phase and per transition.
      {report, out} =
        with_io(fn -> Demo.run(scale: 0.1, quiet: false, subject: s, svg_path: svg) end)

      assert report.problems == []
      assert report.ok?
      assert report.drained?

      acc = report.accounting
      assert acc.lost == 0
      assert acc.produced > 0
      assert acc.delivered == acc.produced - acc.dropped
      assert Accounting.spooled(acc) == 0
      # Control traffic writes to the ledger itself (and spools what fails).
      assert acc.direct > 0 and acc.direct <= acc.bypassed
      assert acc.delivered_breakwater + acc.direct == acc.delivered
      assert acc.enqueued_breakwater + acc.direct == acc.produced
      assert acc.bypassed > 0
      assert acc.refused > 0

      # Every call the routers admitted was recorded: nothing is left in flight.
      assert Breakwater.status(s).inflight == 0

      # While the ledger lags (slow, keeping up), the latency signal is what warns.
      lags = Enum.filter(report.samples, &(&1.phase == "ledger lags"))
      assert Enum.any?(lags, &(:latency in &1.overloaded and &1.status == :warning))
      assert Enum.any?(report.timeline, &(&1 =~ "+latency"))

      # The counts are the real ones: the ledger holds exactly the delivered events.
      assert length(Breakwater.Ledger.Simulated.received(s)) == acc.delivered

      assert report.breaker_opened?
      assert report.breaker_closed_again?
      assert Enum.any?(report.samples, &(&1.breaker == :open))
      assert List.last(report.samples).breaker == :closed

      assert report.svg_path == Path.expand(svg)
      assert File.exists?(svg)
      parse!(File.read!(svg))

      # Each transition says why it happened: the ledger's failures opened the breaker,
      # its probes' successes closed it again.
      assert Enum.any?(report.timeline, &(&1 =~ "breaker closed -> open: failures"))
      assert Enum.any?(report.timeline, &(&1 =~ "breaker half_open -> closed: probe_successes"))

      # The chart: no internal id in the title, the thresholds, and a probe mark for
      # every entry into half-open in the history, however short.
      doc = parse!(File.read!(svg))
      [title | _] = texts(doc)
      refute title =~ s
      assert title =~ "lost = 0"
      assert [_] = xpath(doc, "//line[@id='warning-threshold']")
      assert [_] = xpath(doc, "//line[@id='critical-threshold']")
      assert [_] = xpath(doc, "//line[@id='latency-threshold']")
      assert [_] = xpath(doc, "//polyline[@id='latency-line']")

      half_opens =
        Enum.count(
          Breakwater.History.history(s),
          &match?(%{breaker: {from, :half_open}} when from != :half_open, &1)
        )

      assert half_opens > 0
      assert length(xpath(doc, "//polygon[@class='probe']")) == half_opens
      assert xpath(doc, "//g[@id='rejections']/rect[starts-with(@class, 'rejected-')]") != []

      # The output: no carriage return; as it ran, one line per phase (6) and per
      # transition (those of the timeline), the same lines as the timeline's.
      refute out =~ "\r"
      [live, _after] = String.split(out, "\nTimeline", parts: 2)
      progress = live |> String.split("\n") |> Enum.filter(&String.starts_with?(&1, "  +"))
      assert length(progress) == length(report.timeline)
      assert Enum.count(progress, &(&1 =~ "phase    -> ")) == 6

      for line <- String.split(out, "\n"),
          String.starts_with?(line, "  "),
          do: assert(String.length(line) <= 79, line)

      # The run detached its ledger.
      assert Breakwater.detach_ledger(s) == {:error, :not_attached}
      assert report.duration_ms < 30_000
    end
  end
end
