defmodule Breakwater.DemoTest do
  # The end-to-end run measures wall-clock phases and drains a real spool: not beside
  # async tests.
  use ExUnit.Case, async: false

  alias Breakwater.Demo
  alias Breakwater.Demo.{Accounting, Chart}
  alias Breakwater.TestSubjects

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

        %{
          t_ms: i * 100,
          depth: if(i < 25, do: i * 40, else: max(1_000 - (i - 25) * 100, 0)),
          disk: if(i in 18..26, do: 300, else: 0),
          breaker: breaker,
          rejected: if(breaker == :open, do: 50 + i, else: 0),
          phase: if(i < 15, do: "healthy", else: "down <&> \"quoted\"")
        }
      end
    end

    test "renders well-formed SVG with the depth line, breaker band, bars, axes and legend" do
      svg = Chart.svg(samples(), title: "Demo <run> & 'test'")
      doc = parse!(svg)

      assert [root] = xpath(doc, "/svg")
      assert attr(root, :xmlns) == "http://www.w3.org/2000/svg"

      assert [line] = xpath(doc, "//polyline[@id='depth-line']")
      assert length(String.split(attr(line, :points), " ")) == 40
      assert [_] = xpath(doc, "//polyline[@id='disk-line']")

      # One band segment per run of a breaker state: closed, open, half_open, closed.
      band = xpath(doc, "//g[@id='breaker']/rect[starts-with(@class, 'breaker-')]")

      assert Enum.map(band, &attr(&1, :class)) ==
               ~w(breaker-closed breaker-open breaker-half_open breaker-closed)

      assert Enum.map(band, &attr(&1, :fill)) == ["#2e7d32", "#c62828", "#f9a825", "#2e7d32"]

      # One bar per interval with rejections (the open samples).
      assert length(xpath(doc, "//rect[@class='rejections']")) == 10

      assert [_] = xpath(doc, "//g[@id='time-axis']")
      assert [_] = xpath(doc, "//g[@id='legend']")

      texts = texts(doc)
      assert "Demo <run> & 'test'" in texts
      assert "down <&> \"quoted\"" in texts
      assert "healthy" in texts
      assert "spool depth (events)" in texts
      assert "time since start (s)" in texts
      assert "rejected / interval" in texts

      for label <- ["closed", "half-open", "open", "depth (memory + disk)"],
          do: assert(label in texts)

      # Seconds on the time axis.
      assert "0" in texts and "1" in texts

      # The raw text never appears unescaped.
      refute svg =~ "<run>"
    end

    test "an empty sample list still renders a well-formed chart" do
      doc = parse!(Chart.svg([]))
      assert [_] = xpath(doc, "//g[@id='depth']")
      assert xpath(doc, "//rect[@class='rejections']") == []
    end

    test "escape/1 covers the XML special characters and drops control characters" do
      assert Chart.escape("a<b>&\"c'\u0001") == "a&lt;b&gt;&amp;&quot;c&apos;"
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
      report = Demo.run(scale: 0.1, quiet: true, subject: s, svg_path: svg)

      assert report.problems == []
      assert report.ok?
      assert report.drained?

      acc = report.accounting
      assert acc.lost == 0
      assert acc.produced > 0
      assert acc.delivered == acc.produced - acc.dropped
      assert Accounting.spooled(acc) == 0
      assert acc.delivered_breakwater == acc.delivered
      assert acc.enqueued_breakwater == acc.produced
      assert acc.bypassed > 0
      assert acc.refused > 0

      # The counts are the real ones: the ledger holds exactly the delivered events.
      assert length(Breakwater.Ledger.Simulated.received(s)) == acc.delivered

      assert report.breaker_opened?
      assert report.breaker_closed_again?
      assert Enum.any?(report.samples, &(&1.breaker == :open))
      assert List.last(report.samples).breaker == :closed

      assert report.svg_path == Path.expand(svg)
      assert File.exists?(svg)
      parse!(File.read!(svg))

      assert Enum.any?(report.timeline, &(&1 =~ "breaker closed -> open"))
      assert Enum.any?(report.timeline, &(&1 =~ "-> closed"))

      # The run detached its ledger.
      assert Breakwater.detach_ledger(s) == {:error, :not_attached}
      assert report.duration_ms < 30_000
    end
  end
end
