defmodule Breakwater.Demo.Chart do
  @moduledoc """
  Renders the demo's samples as a self-contained SVG chart. Pure: a list of samples
  in, an SVG document (a binary) out.

  Three panels share the time axis:

  - the spool depth over time as a line (and the events waiting on disk, dashed);
  - the breaker state as a coloured band: closed (green), half-open (amber), open
    (red);
  - the intake rejections per sampling interval as bars;

  with axis labels, phase markers, a legend and a title. Every piece of text put into
  the document is XML-escaped.

  A sample is a map with `:t_ms` (time since the start), `:depth`, `:breaker`
  (`:closed | :half_open | :open`) and `:rejected` (rejections since the previous
  sample); `:disk` (events on disk) and `:phase` (a name) are optional.
  """

  @typedoc "One sample of the demo."
  @type sample :: %{
          required(:t_ms) => non_neg_integer,
          required(:depth) => non_neg_integer,
          required(:breaker) => atom,
          required(:rejected) => non_neg_integer,
          optional(:disk) => non_neg_integer,
          optional(:phase) => String.t() | atom
        }

  @width 960
  @left 80
  @right 30
  @depth_top 70
  @depth_h 250
  @band_top 345
  @band_h 22
  @bars_top 395
  @bars_h 110
  @axis_y 505
  @height 600

  @breaker_colours %{closed: "#2e7d32", half_open: "#f9a825", open: "#c62828"}
  @unknown_colour "#9e9e9e"

  @doc """
  The SVG document for `samples`. Options: `title:` (default "Breakwater demo").
  Samples need not be sorted; an empty list gives a chart with empty panels.
  """
  @spec svg([sample], keyword) :: String.t()
  def svg(samples, opts \\ []) do
    title = Keyword.get(opts, :title, "Breakwater demo")
    samples = Enum.sort_by(samples, & &1.t_ms)
    t_max = samples |> Enum.map(& &1.t_ms) |> Enum.max(fn -> 0 end) |> max(1)

    depth_max =
      samples
      |> Enum.flat_map(&[&1.depth, Map.get(&1, :disk, 0)])
      |> Enum.max(fn -> 0 end)
      |> nice_ceiling()

    rej_max = samples |> Enum.map(& &1.rejected) |> Enum.max(fn -> 0 end) |> nice_ceiling()
    x = fn t -> @left + t / t_max * plot_w() end

    IO.iodata_to_binary([
      ~s(<?xml version="1.0" encoding="UTF-8"?>\n),
      ~s(<svg xmlns="http://www.w3.org/2000/svg" width="#{@width}" height="#{@height}" ),
      ~s(viewBox="0 0 #{@width} #{@height}" font-family="sans-serif" font-size="12">\n),
      ~s(<rect x="0" y="0" width="#{@width}" height="#{@height}" fill="#ffffff"/>\n),
      text(@width / 2, 28, title, ~s(text-anchor="middle" font-size="18" font-weight="bold")),
      phases(samples, x),
      depth_panel(samples, x, depth_max),
      breaker_band(samples, x, t_max),
      bars_panel(samples, x, rej_max),
      time_axis(t_max, x),
      legend(),
      "</svg>\n"
    ])
  end

  defp plot_w, do: @width - @left - @right

  # ---- panels -----------------------------------------------------------------------

  defp depth_panel(samples, x, depth_max) do
    y = fn v -> @depth_top + @depth_h - v / depth_max * @depth_h end

    ticks =
      for i <- 0..4 do
        v = div(depth_max * i, 4)
        yy = fmt(y.(v))

        [
          ~s(<line x1="#{@left}" y1="#{yy}" x2="#{@width - @right}" y2="#{yy}" stroke="#e0e0e0"/>\n),
          text(@left - 6, y.(v) + 4, Integer.to_string(v), ~s(text-anchor="end"))
        ]
      end

    [
      ~s(<g id="depth">\n),
      frame(@depth_top, @depth_h),
      ticks,
      vertical_label(22, @depth_top + @depth_h / 2, "spool depth (events)"),
      polyline(samples, x, y, & &1.depth, ~s(stroke="#1565c0" stroke-width="2"), "depth-line"),
      polyline(
        samples,
        x,
        y,
        &Map.get(&1, :disk, 0),
        ~s(stroke="#ef6c00" stroke-width="1.5" stroke-dasharray="6 3"),
        "disk-line"
      ),
      "</g>\n"
    ]
  end

  defp polyline([], _x, _y, _get, _style, _id), do: []

  defp polyline(samples, x, y, get, style, id) do
    points = Enum.map_join(samples, " ", fn s -> "#{fmt(x.(s.t_ms))},#{fmt(y.(get.(s)))}" end)
    ~s(<polyline id="#{id}" fill="none" #{style} points="#{points}"/>\n)
  end

  defp breaker_band(samples, x, t_max) do
    rects =
      samples
      |> Enum.chunk_every(2, 1)
      |> Enum.map(fn
        [a, b] -> {a, b.t_ms}
        [a] -> {a, max(t_max, a.t_ms)}
      end)
      |> Enum.chunk_by(fn {s, _} -> s.breaker end)
      |> Enum.map(fn [{first, _} | _] = run ->
        {_, until} = List.last(run)
        x0 = x.(first.t_ms)
        w = max(x.(until) - x0, 1.0)
        colour = Map.get(@breaker_colours, first.breaker, @unknown_colour)

        ~s(<rect class="breaker-#{escape(to_string(first.breaker))}" x="#{fmt(x0)}" y="#{@band_top}" ) <>
          ~s(width="#{fmt(w)}" height="#{@band_h}" fill="#{colour}"/>\n)
      end)

    [
      ~s(<g id="breaker">\n),
      rects,
      frame(@band_top, @band_h),
      text(@left - 6, @band_top + 15, "breaker", ~s(text-anchor="end")),
      "</g>\n"
    ]
  end

  defp bars_panel(samples, x, rej_max) do
    n = max(length(samples), 1)
    bar_w = max(plot_w() / n * 0.8, 1.0)

    bars =
      for s <- samples, s.rejected > 0 do
        h = s.rejected / rej_max * @bars_h

        ~s(<rect class="rejections" x="#{fmt(x.(s.t_ms) - bar_w / 2)}" y="#{fmt(@bars_top + @bars_h - h)}" ) <>
          ~s(width="#{fmt(bar_w)}" height="#{fmt(h)}" fill="#6a1b9a"/>\n)
      end

    [
      ~s(<g id="rejections">\n),
      frame(@bars_top, @bars_h),
      bars,
      text(@left - 6, @bars_top + 10, Integer.to_string(rej_max), ~s(text-anchor="end")),
      text(@left - 6, @bars_top + @bars_h, "0", ~s(text-anchor="end")),
      vertical_label(22, @bars_top + @bars_h / 2, "rejected / interval"),
      "</g>\n"
    ]
  end

  defp phases(samples, x) do
    samples
    |> Enum.filter(&Map.has_key?(&1, :phase))
    |> Enum.chunk_by(& &1.phase)
    |> Enum.map(fn [first | _] ->
      xx = fmt(x.(first.t_ms))

      [
        ~s(<line class="phase" x1="#{xx}" y1="#{@depth_top - 14}" x2="#{xx}" y2="#{@axis_y}" ),
        ~s(stroke="#757575" stroke-dasharray="3 3"/>\n),
        phase_label(x.(first.t_ms), to_string(first.phase))
      ]
    end)
  end

  # Labels right of their marker, or left of it near the right edge.
  defp phase_label(x, label) do
    if x > @width - @right - 110,
      do: text(x - 3, @depth_top - 4, label, ~s(font-size="11" text-anchor="end")),
      else: text(x + 3, @depth_top - 4, label, ~s(font-size="11"))
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

  defp legend do
    y = @height - 30

    items = [
      {:line, "#1565c0", "depth (memory + disk)"},
      {:dash, "#ef6c00", "of which on disk"},
      {:box, @breaker_colours.closed, "closed"},
      {:box, @breaker_colours.half_open, "half-open"},
      {:box, @breaker_colours.open, "open"},
      {:box, "#6a1b9a", "rejected at intake"}
    ]

    entries =
      items
      |> Enum.with_index()
      |> Enum.map(fn {{kind, colour, label}, i} ->
        x0 = @left + i * 140

        mark =
          case kind do
            :line ->
              ~s(<line x1="#{x0}" y1="#{y - 4}" x2="#{x0 + 20}" y2="#{y - 4}" stroke="#{colour}" stroke-width="2"/>\n)

            :dash ->
              ~s(<line x1="#{x0}" y1="#{y - 4}" x2="#{x0 + 20}" y2="#{y - 4}" stroke="#{colour}" stroke-width="1.5" stroke-dasharray="6 3"/>\n)

            :box ->
              ~s(<rect x="#{x0}" y="#{y - 11}" width="20" height="12" fill="#{colour}"/>\n)
          end

        [mark, text(x0 + 26, y, label, "")]
      end)

    [~s(<g id="legend">\n), entries, "</g>\n"]
  end

  # ---- helpers ----------------------------------------------------------------------

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
