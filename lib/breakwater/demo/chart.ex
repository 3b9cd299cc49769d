defmodule Breakwater.Demo.Chart do
  @moduledoc """
  Renders the demo's samples as a self-contained SVG chart. Pure: samples (and
  optionally the exact transitions) in, an SVG document (a binary) out.

  Five rows share the time axis:

  - the spool depth over time as a line (and the events waiting on disk, dashed), with
    the warning and critical thresholds as horizontal lines and the phases of the
    scenario marked above;
  - the p95 latency the latency signal is judged by, with its threshold;
  - the breaker state as a band: closed (green), half-open (amber), open (red), with a
    tick above it for every half-open probe, however short it was;
  - the backpressure state as a band: normal, pressure, dropping, recovery;
  - the intake refusals of each sampling interval as bars stacked by reason;

  with axis labels, a legend (one row per panel, laid out so that no two entries
  overlap) and a title. Every piece of text put into the document is XML-escaped.

  A sample is a map with `:t_ms` (time since the start), `:depth`, `:breaker`
  (`:closed | :half_open | :open`) and `:rejected` (refusals since the previous
  sample); optional: `:disk` (events on disk), `:latency_p95` (ms), `:phase` (a name),
  `:backpressure` (`:normal | :pressure | :dropping | :recovery`) and
  `:rejected_by_reason` (reason → refusals since the previous sample).

  The bands come from the samples unless the exact transitions are given
  (`breaker_transitions:`, `backpressure_transitions:`, lists of
  `%{t_ms: t, from: state, to: state}`): sampling every 100 ms misses a half-open
  state that lasts 1 ms, the transitions do not.
  """

  @typedoc "One sample of the demo."
  @type sample :: %{
          required(:t_ms) => non_neg_integer,
          required(:depth) => non_neg_integer,
          required(:breaker) => atom,
          required(:rejected) => non_neg_integer,
          optional(:disk) => non_neg_integer,
          optional(:latency_p95) => non_neg_integer,
          optional(:phase) => String.t() | atom,
          optional(:backpressure) => atom,
          optional(:rejected_by_reason) => %{optional(atom) => non_neg_integer}
        }

  @typedoc "A state change at `t_ms`."
  @type transition :: %{t_ms: integer, from: atom, to: atom}

  @width 960
  @left 110
  @right 30
  @depth_top 86
  @depth_h 240
  @latency_top 346
  @latency_h 80
  @breaker_top 446
  @band_h 20
  @bp_top 472
  @bars_top 524
  @bars_h 110
  @axis_y @bars_top + @bars_h
  @legend_top @axis_y + 62
  @legend_row 20

  # Estimated advance of a character of the 12 px sans-serif text (generous, so that
  # laid-out text does not overlap in common fonts).
  @char_w 7.2

  @breaker_colours %{closed: "#2e7d32", half_open: "#f9a825", open: "#c62828"}
  @breaker_labels %{closed: "closed", half_open: "half-open", open: "open"}
  @bp_colours %{
    normal: "#c8e6c9",
    pressure: "#ffe082",
    dropping: "#ef9a9a",
    recovery: "#90caf9"
  }
  @bp_order [:normal, :pressure, :dropping, :recovery]
  @reason_colours [
    router_status_active: "#6a1b9a",
    shed_low_priority: "#00acc1",
    circuit_open: "#d81b60",
    half_open_limit: "#f06292",
    backpressure: "#3949ab",
    pool_exhausted: "#6d4c41",
    other: "#9e9e9e"
  ]
  @unknown_colour "#bdbdbd"
  @depth_colour "#1565c0"
  @disk_colour "#64b5f6"
  @warning_colour "#ef6c00"
  @critical_colour "#b71c1c"
  @probe_colour "#e65100"
  @latency_colour "#6a1b9a"
  @latency_threshold_colour "#ad1457"

  @doc """
  The SVG document for `samples`. Options:

  - `title:` (default "Breakwater demo");
  - `thresholds:` `%{warning: n, critical: n}`, drawn on the depth panel;
  - `latency_threshold:` the latency signal's threshold (ms; `nil`: none), drawn on the
    latency panel;
  - `interval_ms:` the sampling interval, named in the refusals' axis label (100);
  - `breaker_transitions:`, `backpressure_transitions:` the exact state changes;
  - `phases:` the exact start of each phase, `[%{t_ms: t, name: name}]` (by default,
    the first sample of each `:phase`).

  Samples need not be sorted; an empty list gives a chart with empty panels.
  """
  @spec svg([sample], keyword) :: String.t()
  def svg(samples, opts \\ []) do
    title = Keyword.get(opts, :title, "Breakwater demo")
    thresholds = Keyword.get(opts, :thresholds, %{})
    latency_threshold = Keyword.get(opts, :latency_threshold)
    interval = Keyword.get(opts, :interval_ms, 100)
    samples = Enum.sort_by(samples, & &1.t_ms)

    t_max = samples |> Enum.map(& &1.t_ms) |> Enum.max(fn -> 0 end) |> max(1)

    depth_max =
      samples
      |> Enum.flat_map(&[&1.depth, Map.get(&1, :disk, 0)])
      |> Enum.concat(Map.values(thresholds))
      |> Enum.max(fn -> 0 end)
      |> Kernel.*(1.05)
      |> ceil()
      |> nice_ceiling()

    x = fn t -> @left + min(max(t, 0), t_max) / t_max * plot_w() end

    breaker = runs(samples, Keyword.get(opts, :breaker_transitions), :breaker, :closed, t_max)

    backpressure =
      runs(samples, Keyword.get(opts, :backpressure_transitions), :backpressure, :normal, t_max)

    probes = probes(samples, Keyword.get(opts, :breaker_transitions))
    reasons = reasons(samples)
    {legend, legend_rows} = legend(thresholds, latency_threshold, reasons)
    height = @legend_top + legend_rows * @legend_row + 16

    IO.iodata_to_binary([
      ~s(<?xml version="1.0" encoding="UTF-8"?>\n),
      ~s(<svg xmlns="http://www.w3.org/2000/svg" width="#{@width}" height="#{height}" ),
      ~s(viewBox="0 0 #{@width} #{height}" font-family="sans-serif" font-size="12">\n),
      ~s(<rect x="0" y="0" width="#{@width}" height="#{height}" fill="#ffffff"/>\n),
      text(@width / 2, 28, title, ~s(text-anchor="middle" font-size="18" font-weight="bold")),
      phases(Keyword.get_lazy(opts, :phases, fn -> phase_starts(samples) end), x),
      depth_panel(samples, x, depth_max, thresholds),
      latency_panel(samples, x, latency_threshold),
      band("breaker", "breaker", @breaker_top, breaker, x, @breaker_colours),
      probe_marks(probes, x),
      band("backpressure", "backpressure", @bp_top, backpressure, x, @bp_colours),
      bars_panel(samples, x, t_max, reasons, interval),
      time_axis(t_max, x),
      legend,
      "</svg>\n"
    ])
  end

  defp plot_w, do: @width - @left - @right

  # ---- depth ------------------------------------------------------------------------

  defp depth_panel(samples, x, depth_max, thresholds) do
    y = fn v -> @depth_top + @depth_h - v / depth_max * @depth_h end

    ticks =
      for i <- 0..4 do
        v = div(depth_max * i, 4)
        yy = fmt(y.(v))

        [
          ~s(<line x1="#{@left}" y1="#{yy}" x2="#{@width - @right}" y2="#{yy}" stroke="#e0e0e0"/>\n),
          text(@left - 6, y.(v) + 4, group(v), ~s(text-anchor="end"))
        ]
      end

    [
      ~s(<g id="depth">\n),
      frame(@depth_top, @depth_h),
      ticks,
      vertical_label(24, @depth_top + @depth_h / 2, "spool depth (events)"),
      threshold(:warning, thresholds, y, @warning_colour),
      threshold(:critical, thresholds, y, @critical_colour),
      polyline(
        samples,
        x,
        y,
        & &1.depth,
        ~s(stroke="#{@depth_colour}" stroke-width="2"),
        "depth-line"
      ),
      polyline(
        samples,
        x,
        y,
        &Map.get(&1, :disk, 0),
        ~s(stroke="#{@disk_colour}" stroke-width="2" stroke-dasharray="6 3"),
        "disk-line"
      ),
      "</g>\n"
    ]
  end

  # ---- latency ----------------------------------------------------------------------

  defp latency_panel(samples, x, threshold) do
    top =
      samples
      |> Enum.map(&Map.get(&1, :latency_p95, 0))
      |> Enum.concat(if is_integer(threshold), do: [threshold * 2], else: [])
      |> Enum.max(fn -> 0 end)
      |> Kernel.*(1.05)
      |> ceil()
      |> nice_ceiling()

    y = fn v -> @latency_top + @latency_h - min(v, top) / top * @latency_h end

    threshold_line =
      if is_integer(threshold) and threshold >= 0 do
        yy = y.(threshold)

        [
          ~s(<line id="latency-threshold" class="threshold" x1="#{@left}" y1="#{fmt(yy)}" ),
          ~s(x2="#{@width - @right}" y2="#{fmt(yy)}" stroke="#{@latency_threshold_colour}" ),
          ~s(stroke-width="1.5" stroke-dasharray="8 4"/>
),
          text(
            @width - @right - 4,
            yy - 4,
            "latency threshold #{group(threshold)} ms",
            ~s(text-anchor="end" fill="#{@latency_threshold_colour}")
          )
        ]
      else
        []
      end

    [
      ~s(<g id="latency">
),
      frame(@latency_top, @latency_h),
      text(@left - 6, @latency_top + 10, group(top), ~s(text-anchor="end")),
      text(@left - 6, @latency_top + @latency_h, "0", ~s(text-anchor="end")),
      vertical_label(24, @latency_top + @latency_h / 2, "p95 latency (ms)"),
      threshold_line,
      polyline(
        samples,
        x,
        y,
        &Map.get(&1, :latency_p95, 0),
        ~s(stroke="#{@latency_colour}" stroke-width="2"),
        "latency-line"
      ),
      "</g>
"
    ]
  end

  defp threshold(kind, thresholds, y, colour) do
    case Map.fetch(thresholds, kind) do
      {:ok, v} when is_integer(v) and v >= 0 ->
        yy = y.(v)

        [
          ~s(<line id="#{kind}-threshold" class="threshold" x1="#{@left}" y1="#{fmt(yy)}" ),
          ~s(x2="#{@width - @right}" y2="#{fmt(yy)}" stroke="#{colour}" stroke-width="1.5" ),
          ~s(stroke-dasharray="8 4"/>\n),
          text(
            @width - @right - 4,
            yy - 4,
            "#{kind} #{group(v)}",
            ~s(text-anchor="end" fill="#{colour}")
          )
        ]

      _ ->
        []
    end
  end

  defp polyline([], _x, _y, _get, _style, _id), do: []

  defp polyline(samples, x, y, get, style, id) do
    points = Enum.map_join(samples, " ", fn s -> "#{fmt(x.(s.t_ms))},#{fmt(y.(get.(s)))}" end)
    ~s(<polyline id="#{id}" fill="none" #{style} points="#{points}"/>\n)
  end

  # ---- bands ------------------------------------------------------------------------

  # [{from_ms, until_ms, state}]: from the exact transitions when given, else from the
  # samples (a state holds from its sample to the next).
  defp runs([], nil, _key, _initial, _t_max), do: []

  defp runs(samples, nil, key, initial, t_max) do
    samples
    |> Enum.chunk_every(2, 1)
    |> Enum.map(fn
      [a, b] -> {a.t_ms, b.t_ms, Map.get(a, key, initial)}
      [a] -> {a.t_ms, max(t_max, a.t_ms), Map.get(a, key, initial)}
    end)
    |> Enum.chunk_by(&elem(&1, 2))
    |> Enum.map(fn [{from, _, state} | _] = run -> {from, elem(List.last(run), 1), state} end)
  end

  defp runs(samples, transitions, key, initial, t_max) do
    transitions = Enum.sort_by(transitions, & &1.t_ms)

    first =
      case {transitions, samples} do
        {[%{from: from} | _], _} -> from
        {[], [s | _]} -> Map.get(s, key, initial)
        {[], []} -> initial
      end

    starts = [{0, first} | Enum.map(transitions, &{&1.t_ms, &1.to})]

    starts
    |> Enum.chunk_every(2, 1)
    |> Enum.map(fn
      [{t0, state}, {t1, _}] -> {t0, t1, state}
      [{t0, state}] -> {t0, max(t_max, t0), state}
    end)
  end

  defp band(id, label, top, runs, x, colours) do
    # Wide runs first, so that a run narrower than its minimum width (a 1 ms half-open)
    # is drawn over its neighbours rather than under them.
    rects =
      runs
      |> Enum.map(fn {from, until, state} ->
        x0 = x.(from)
        {x0, max(x.(until) - x0, 2.0), state}
      end)
      |> Enum.sort_by(fn {_x0, w, _} -> -w end)
      |> Enum.map(fn {x0, w, state} ->
        colour = Map.get(colours, state, @unknown_colour)

        ~s(<rect class="#{id}-#{escape(to_string(state))}" x="#{fmt(x0)}" y="#{top}" ) <>
          ~s(width="#{fmt(w)}" height="#{@band_h}" fill="#{colour}"/>\n)
      end)

    [
      ~s(<g id="#{id}">\n),
      rects,
      frame(top, @band_h),
      text(@left - 6, top + 14, label, ~s(text-anchor="end")),
      "</g>\n"
    ]
  end

  # The times the breaker went half-open (each a probe of the ledger).
  defp probes(samples, nil) do
    samples
    |> Enum.chunk_every(2, 1, :discard)
    |> Enum.filter(fn [a, b] -> a.breaker != :half_open and b.breaker == :half_open end)
    |> Enum.map(fn [_, b] -> b.t_ms end)
  end

  defp probes(_samples, transitions),
    do: for(%{to: :half_open, t_ms: t} <- transitions, do: t)

  defp probe_marks(probes, x) do
    marks =
      for t <- probes do
        xx = x.(t)
        tip = @breaker_top - 1

        ~s(<polygon class="probe" points="#{fmt(xx)},#{tip} #{fmt(xx - 4)},#{tip - 7} ) <>
          ~s(#{fmt(xx + 4)},#{tip - 7}" fill="#{@probe_colour}"/>\n)
      end

    [~s(<g id="probes">\n), marks, "</g>\n"]
  end

  # ---- refusals ---------------------------------------------------------------------

  defp rejected_by_reason(sample) do
    case Map.fetch(sample, :rejected_by_reason) do
      {:ok, by_reason} -> by_reason
      :error -> %{other: sample.rejected}
    end
  end

  # The reasons with refusals, in the legend's order.
  defp reasons(samples) do
    seen =
      samples
      |> Enum.flat_map(fn s -> for {r, n} <- rejected_by_reason(s), n > 0, do: r end)
      |> MapSet.new()

    known = for {r, _} <- @reason_colours, r in seen, do: r
    known ++ (seen |> MapSet.to_list() |> Enum.reject(&(&1 in known)) |> Enum.sort())
  end

  defp reason_colour(reason), do: Keyword.get(@reason_colours, reason, @unknown_colour)

  defp bars_panel(samples, x, t_max, reasons, interval) do
    totals =
      Enum.map(samples, fn s -> s |> rejected_by_reason() |> Map.values() |> Enum.sum() end)

    rej_max = totals |> Enum.max(fn -> 0 end) |> nice_ceiling()
    # One bar per sampling interval, 80 % of its width.
    bar_w = max(interval / t_max * plot_w() * 0.8, 1.0)

    bars =
      for s <- samples,
          by_reason = rejected_by_reason(s),
          Enum.any?(by_reason, &(elem(&1, 1) > 0)) do
        {rects, _} =
          Enum.map_reduce(reasons, @bars_top + @bars_h, fn reason, bottom ->
            n = Map.get(by_reason, reason, 0)
            h = n / rej_max * @bars_h

            rect =
              if n > 0,
                do:
                  ~s(<rect class="rejected-#{escape(to_string(reason))}" ) <>
                    ~s(x="#{fmt(x.(s.t_ms) - bar_w / 2)}" y="#{fmt(bottom - h)}" ) <>
                    ~s(width="#{fmt(bar_w)}" height="#{fmt(h)}" fill="#{reason_colour(reason)}"/>\n),
                else: []

            {rect, bottom - h}
          end)

        rects
      end

    [
      ~s(<g id="rejections">\n),
      frame(@bars_top, @bars_h),
      bars,
      text(@left - 6, @bars_top + 10, group(rej_max), ~s(text-anchor="end")),
      text(@left - 6, @bars_top + @bars_h, "0", ~s(text-anchor="end")),
      text(@left, @bars_top - 6, "refused at intake, rejected per #{interval} ms, by reason", ""),
      "</g>\n"
    ]
  end

  # ---- phases and axis --------------------------------------------------------------

  # A dashed line and a label per phase; a label that would overlap the previous one
  # goes one row up.
  defp phase_starts(samples) do
    samples
    |> Enum.filter(&Map.has_key?(&1, :phase))
    |> Enum.chunk_by(& &1.phase)
    |> Enum.map(fn [first | _] -> %{t_ms: first.t_ms, name: first.phase} end)
  end

  defp phases(starts, x) do
    starts
    |> Enum.sort_by(& &1.t_ms)
    |> Enum.map(fn %{t_ms: t, name: name} -> {x.(t), to_string(name)} end)
    |> Enum.map_reduce({-1.0e9, -1.0e9}, fn {xx, label}, {end_row0, end_row1} ->
      w = text_width(label)
      {x0, anchor} = if xx + 3 + w > @width - @right, do: {xx - 3 - w, "end"}, else: {xx + 3, ""}
      row = if x0 < end_row0 + 6 and x0 >= end_row1 + 6, do: 1, else: 0
      y = @depth_top - 6 - row * 14
      label_x = if anchor == "end", do: xx - 3, else: xx + 3

      attrs =
        if anchor == "end", do: ~s(font-size="11" text-anchor="end"), else: ~s(font-size="11")

      line = [
        ~s(<line class="phase" x1="#{fmt(xx)}" y1="#{y - 10}" x2="#{fmt(xx)}" y2="#{@axis_y}" ),
        ~s(stroke="#757575" stroke-dasharray="3 3"/>\n),
        text(label_x, y, label, attrs)
      ]

      ends = if row == 0, do: {x0 + w, end_row1}, else: {end_row0, x0 + w}
      {line, ends}
    end)
    |> elem(0)
  end

  defp time_axis(t_max, x) do
    step = nice_step(t_max / 1000 / 8)

    ticks =
      for i <- 0..trunc(t_max / 1000 / step), sec = i * step, sec * 1000 <= t_max do
        xx = x.(sec * 1000)

        [
          ~s(<line x1="#{fmt(xx)}" y1="#{@axis_y}" x2="#{fmt(xx)}" y2="#{@axis_y + 5}" stroke="#000"/>\n),
          text(xx, @axis_y + 18, format_seconds(sec), ~s(text-anchor="middle"))
        ]
      end

    [
      ~s(<g id="time-axis">\n),
      ~s(<line x1="#{@left}" y1="#{@axis_y}" x2="#{@width - @right}" y2="#{@axis_y}" stroke="#000"/>\n),
      ticks,
      text(@left + plot_w() / 2, @axis_y + 36, "time since start (s)", ~s(text-anchor="middle")),
      "</g>\n"
    ]
  end

  # ---- legend -----------------------------------------------------------------------

  # One row per panel, entries laid out left to right by their estimated width (a row
  # too long wraps). Returns the markup and the number of rows.
  defp legend(thresholds, latency_threshold, reasons) do
    groups = [
      {"depth",
       [
         {:line, @depth_colour, "depth (memory + disk)"},
         {:dash, @disk_colour, "of which on disk"}
       ] ++
         for(
           {kind, colour} <- [warning: @warning_colour, critical: @critical_colour],
           Map.has_key?(thresholds, kind),
           do: {:threshold, colour, "#{kind} threshold"}
         )},
      {"latency",
       [{:line, @latency_colour, "p95 latency (the latency signal's value)"}] ++
         if(is_integer(latency_threshold),
           do: [{:threshold, @latency_threshold_colour, "latency threshold"}],
           else: []
         )},
      {"breaker",
       for(s <- [:closed, :half_open, :open], do: {:box, @breaker_colours[s], @breaker_labels[s]}) ++
         [{:probe, @probe_colour, "half-open probe"}]},
      {"backpressure", for(s <- @bp_order, do: {:box, @bp_colours[s], Atom.to_string(s)})},
      {"refused", for(r <- reasons, do: {:box, reason_colour(r), reason_label(r)})}
    ]

    {items, rows} =
      Enum.reduce(groups, {[], 0}, fn
        {_caption, []}, acc ->
          acc

        {caption, entries}, {items, row} ->
          {placed, rows_used} = place(entries, row)
          caption_y = @legend_top + row * @legend_row
          caption = text(@left - 6, caption_y, caption, ~s(text-anchor="end" font-weight="bold"))
          {[items, caption, placed], row + rows_used}
      end)

    {[~s(<g id="legend">\n), items, "</g>\n"], rows}
  end

  defp place(entries, row) do
    {placed, {_x, last_row}} =
      Enum.map_reduce(entries, {@left, row}, fn {kind, colour, label}, {x0, r} ->
        w = 26 + text_width(label)
        {x0, r} = if x0 > @left and x0 + w > @width - @right, do: {@left, r + 1}, else: {x0, r}
        y = @legend_top + r * @legend_row

        entry = [
          ~s(<g class="legend-item">\n),
          swatch(kind, colour, x0, y),
          text(x0 + 26, y, label, ""),
          "</g>\n"
        ]

        {entry, {x0 + w + 18, r}}
      end)

    {placed, last_row - row + 1}
  end

  defp swatch(:line, colour, x0, y),
    do:
      ~s(<line x1="#{x0}" y1="#{y - 4}" x2="#{x0 + 20}" y2="#{y - 4}" stroke="#{colour}" stroke-width="2"/>\n)

  defp swatch(:dash, colour, x0, y),
    do:
      ~s(<line x1="#{x0}" y1="#{y - 4}" x2="#{x0 + 20}" y2="#{y - 4}" stroke="#{colour}" stroke-width="2" stroke-dasharray="6 3"/>\n)

  defp swatch(:threshold, colour, x0, y),
    do:
      ~s(<line x1="#{x0}" y1="#{y - 4}" x2="#{x0 + 20}" y2="#{y - 4}" stroke="#{colour}" stroke-width="1.5" stroke-dasharray="8 4"/>\n)

  defp swatch(:box, colour, x0, y),
    do: ~s(<rect x="#{x0}" y="#{y - 11}" width="20" height="12" fill="#{colour}"/>\n)

  defp swatch(:probe, colour, x0, y),
    do:
      ~s(<polygon points="#{x0 + 10},#{y} #{x0 + 5},#{y - 9} #{x0 + 15},#{y - 9}" fill="#{colour}"/>\n)

  defp reason_label(reason), do: reason |> to_string() |> String.replace("_", " ")

  # ---- helpers ----------------------------------------------------------------------

  @doc """
  The estimated width in pixels of `text` at the chart's 12 px font size: the measure
  the legend and the phase labels are laid out with.

      iex> Breakwater.Demo.Chart.text_width("open")
      28.8
  """
  @spec text_width(String.t()) :: float
  def text_width(text), do: String.length(text) * @char_w

  defp frame(top, h),
    do:
      ~s(<rect x="#{@left}" y="#{top}" width="#{plot_w()}" height="#{h}" fill="none" stroke="#000"/>\n)

  defp text(x, y, content, ""),
    do: ~s(<text x="#{fmt(x)}" y="#{fmt(y)}">#{escape(content)}</text>\n)

  defp text(x, y, content, attrs),
    do: ~s(<text x="#{fmt(x)}" y="#{fmt(y)}" #{attrs}>#{escape(content)}</text>\n)

  defp vertical_label(x, y, content) do
    ~s|<text x="#{fmt(x)}" y="#{fmt(y)}" text-anchor="middle" transform="rotate(-90 #{fmt(x)} #{fmt(y)})">| <>
      escape(content) <> "</text>\n"
  end

  @doc """
  Escapes `text` for XML character data and attribute values.

      iex> Breakwater.Demo.Chart.escape(~s(<a href="x">&'</a>))
      "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
  """
  @spec escape(String.t()) :: String.t()
  def escape(text) when is_binary(text) do
    text
    |> String.replace("&", "&amp;")
    |> String.replace("<", "&lt;")
    |> String.replace(">", "&gt;")
    |> String.replace("\"", "&quot;")
    |> String.replace("'", "&apos;")
    # Control characters other than tab, newline and carriage return are not XML.
    |> String.replace(~r/[\x00-\x08\x0B\x0C\x0E-\x1F]/u, "")
  end

  defp fmt(v) when is_integer(v), do: Integer.to_string(v)
  defp fmt(v) when is_float(v), do: :erlang.float_to_binary(v, decimals: 1)

  defp group(n), do: Breakwater.Demo.Accounting.format_int(n)

  # The smallest of 1, 2, 5 × 10^k that is >= v (at least 1).
  defp nice_ceiling(v) when v <= 1, do: 1

  defp nice_ceiling(v) do
    mag = Integer.pow(10, trunc(:math.log10(v)))
    Enum.find([mag, 2 * mag, 5 * mag, 10 * mag], &(&1 >= v))
  end

  defp nice_step(s) when s <= 0.5, do: 0.5
  defp nice_step(s), do: Enum.find([1, 2, 5, 10, 15, 30, 60], 120, &(&1 >= s))

  defp format_seconds(sec) when is_float(sec) and sec == trunc(sec),
    do: format_seconds(trunc(sec))

  defp format_seconds(sec) when is_float(sec), do: :erlang.float_to_binary(sec, decimals: 1)
  defp format_seconds(sec), do: Integer.to_string(sec)
end
