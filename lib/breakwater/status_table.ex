defmodule Breakwater.StatusTable do
  @moduledoc """
  Every subject's state, as `Breakwater.status/0` returns it. `iex` shows it as an
  aligned table; `:rows` holds the maps of `Breakwater.status/1`.

      iex> Breakwater.status()
      subject  status    breaker  backpressure  depth  p95 ms  inflight  overloaded  rejected  dropped
      ledger   inactive  closed   normal            0       0         0  -                  0        0

  `p95 ms` and `inflight` are the values the latency and in-flight signals are judged
  by; `overloaded` lists the overloaded signals (`-` for none).
  """
  defstruct rows: []

  @type t :: %__MODULE__{rows: [map]}

  @columns [
    {"subject", :left},
    {"status", :left},
    {"breaker", :left},
    {"backpressure", :left},
    {"depth", :right},
    {"p95 ms", :right},
    {"inflight", :right},
    {"overloaded", :left},
    {"rejected", :right},
    {"dropped", :right}
  ]

  @doc "The table as text lines (header first)."
  @spec lines(t) :: [String.t()]
  def lines(%__MODULE__{rows: rows}) do
    cells =
      Enum.map(rows, fn r ->
        [
          printable(r.subject),
          Atom.to_string(r.status),
          Atom.to_string(r.breaker),
          Atom.to_string(r.backpressure),
          Integer.to_string(r.queue_depth),
          Integer.to_string(Map.get(r, :latency_p95_ms, 0)),
          Integer.to_string(Map.get(r, :inflight, 0)),
          overloaded(Map.get(r, :overloaded, [])),
          Integer.to_string(r.counters.rejected),
          Integer.to_string(r.counters.dropped_events)
        ]
      end)

    header = Enum.map(@columns, &elem(&1, 0))

    widths =
      Enum.map(0..(length(@columns) - 1), fn i ->
        [header | cells] |> Enum.map(&String.length(Enum.at(&1, i))) |> Enum.max()
      end)

    aligns = Enum.map(@columns, &elem(&1, 1))

    Enum.map([header | cells], fn row ->
      row
      |> Enum.zip(widths)
      |> Enum.zip(aligns)
      |> Enum.map(fn
        {{cell, w}, :left} -> String.pad_trailing(cell, w)
        {{cell, w}, :right} -> String.pad_leading(cell, w)
      end)
      |> Enum.join("  ")
      |> String.trim_trailing()
    end)
  end

  defp overloaded([]), do: "-"
  defp overloaded(signals), do: Enum.map_join(signals, ",", &Atom.to_string/1)

  # Subject names are binaries of any content: show printable ones as they are and
  # others inspected, so a name can never break the table.
  defp printable(subject) do
    if String.printable?(subject) and not String.contains?(subject, ["\n", "\r", "\t"]),
      do: subject,
      else: inspect(subject)
  end

  defimpl Inspect do
    def inspect(%{rows: []}, _opts), do: "#Breakwater.StatusTable<no subjects>"
    def inspect(table, _opts), do: Enum.join(Breakwater.StatusTable.lines(table), "\n")
  end
end
