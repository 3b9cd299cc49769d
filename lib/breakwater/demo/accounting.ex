defmodule Breakwater.Demo.Accounting do
  @moduledoc """
  The demo's final accounting: where every event the routers produced ended up.

  Pure: it only combines counts gathered elsewhere (the routers' own counts, the
  ledger's distinct events, Breakwater's `status/1` `:accounting`) and renders them.

      produced = delivered + spooled (memory + disk) + dropped + lost

  `lost` is what remains: events a router produced (handed to `Breakwater.enqueue/3`,
  or written to the ledger itself: `direct`, control traffic) that are neither in the
  ledger, nor still spooled, nor counted as dropped. It must be 0.
  Duplicates (events the ledger received more than once: at-least-once delivery) are
  reported but are not a loss.

      iex> acc = Breakwater.Demo.Accounting.new(produced: 10, delivered: 7, spooled_memory: 1, spooled_disk: 1, dropped: 1)
      iex> acc.lost
      0
      iex> Breakwater.Demo.Accounting.new(produced: 10, delivered: 7).lost
      3
  """

  @typedoc "Final counts of a demo run; `lost` is derived, never given."
  @type t :: %__MODULE__{
          produced: non_neg_integer,
          refused: non_neg_integer,
          refused_by_reason: %{optional(atom) => non_neg_integer},
          bypassed: non_neg_integer,
          direct: non_neg_integer,
          delivered: non_neg_integer,
          delivered_breakwater: non_neg_integer | nil,
          enqueued_breakwater: non_neg_integer | nil,
          spooled_memory: non_neg_integer,
          spooled_disk: non_neg_integer,
          dropped: non_neg_integer,
          duplicates: non_neg_integer,
          redelivered: non_neg_integer,
          unexpected: non_neg_integer,
          lost: integer
        }

  defstruct produced: 0,
            refused: 0,
            refused_by_reason: %{},
            bypassed: 0,
            direct: 0,
            delivered: 0,
            delivered_breakwater: nil,
            enqueued_breakwater: nil,
            spooled_memory: 0,
            spooled_disk: 0,
            dropped: 0,
            duplicates: 0,
            redelivered: 0,
            unexpected: 0,
            lost: 0

  @count_keys [
    :produced,
    :refused,
    :bypassed,
    :direct,
    :delivered,
    :spooled_memory,
    :spooled_disk,
    :dropped,
    :duplicates,
    :redelivered,
    :unexpected
  ]

  @doc """
  Builds the accounting from counts (a keyword list or map; missing counts are 0) and
  computes `lost`. Raises `ArgumentError` on a negative or non-integer count, or when
  `:lost` is given (it is always computed).
  """
  @spec new(keyword | map) :: t
  def new(counts) do
    counts = Map.new(counts)

    if Map.has_key?(counts, :lost) do
      raise ArgumentError, "lost is computed, not given"
    end

    Enum.each(@count_keys, fn key ->
      value = Map.get(counts, key, 0)

      unless non_neg_integer?(value) do
        raise ArgumentError, "#{key} must be a non-negative integer, got: #{inspect(value)}"
      end
    end)

    Enum.each([:delivered_breakwater, :enqueued_breakwater], fn key ->
      value = Map.get(counts, key)

      unless value == nil or non_neg_integer?(value) do
        raise ArgumentError,
              "#{key} must be a non-negative integer or nil, got: #{inspect(value)}"
      end
    end)

    acc = struct!(__MODULE__, Map.take(counts, Map.keys(%__MODULE__{}) -- [:__struct__]))
    %{acc | lost: lost(acc)}
  end

  defp non_neg_integer?(v), do: is_integer(v) and v >= 0

  @doc "Events spooled, in memory and on disk."
  @spec spooled(t) :: non_neg_integer
  def spooled(%__MODULE__{spooled_memory: m, spooled_disk: d}), do: m + d

  @doc "`produced - delivered - spooled - dropped`: events unaccounted for (may be negative)."
  @spec lost(t) :: integer
  def lost(%__MODULE__{} = a), do: a.produced - a.delivered - spooled(a) - a.dropped

  @doc """
  Problems with the accounting, as sentences: an empty list when `lost` is 0, the
  ledger holds no event nobody produced, and Breakwater's own counts (when given)
  agree with the routers' and the ledger's (which include the `direct` writes
  Breakwater does not spool).
  """
  @spec problems(t) :: [String.t()]
  def problems(%__MODULE__{} = a) do
    [
      a.lost != 0 &&
        "lost = #{a.lost}: produced - delivered - spooled - dropped must be 0",
      a.unexpected != 0 &&
        "the ledger holds #{a.unexpected} events no router produced",
      a.delivered_breakwater != nil and a.delivered_breakwater + a.direct != a.delivered &&
        "Breakwater counts #{a.delivered_breakwater} delivered and the routers wrote #{a.direct} themselves, the ledger holds #{a.delivered} distinct events",
      a.enqueued_breakwater != nil and a.enqueued_breakwater + a.direct != a.produced &&
        "Breakwater counts #{a.enqueued_breakwater} enqueued and the routers wrote #{a.direct} themselves, they produced #{a.produced}"
    ]
    |> Enum.filter(&is_binary/1)
  end

  @doc "True when `problems/1` finds nothing."
  @spec ok?(t) :: boolean
  def ok?(%__MODULE__{} = a), do: problems(a) == []

  @doc """
  Renders the accounting as an aligned text table (labels left-aligned, numbers
  right-aligned with thousands separators), one row per line, ending with a newline.
  """
  @spec table(t) :: String.t()
  def table(%__MODULE__{} = a) do
    reasons =
      a.refused_by_reason
      |> Enum.filter(fn {_, n} -> n > 0 end)
      |> Enum.sort()
      |> Enum.map(fn {reason, n} -> {"    refused: #{reason}", n, ""} end)

    rows =
      [
        {"produced (spooled, or written by the router)", a.produced, ""},
        {"  of which control traffic (bypass)", a.bypassed, ""},
        {"  of which written to the ledger directly", a.direct, ""},
        {"refused at intake (told to retry later)", a.refused, "not produced"}
      ] ++
        reasons ++
        [
          {"delivered (distinct events in the ledger)", a.delivered, ""},
          {"spooled in memory", a.spooled_memory, ""},
          {"spooled on disk", a.spooled_disk, ""},
          {"dropped", a.dropped, ""},
          {"lost = produced - delivered - spooled - dropped", a.lost,
           if(a.lost == 0, do: "ok", else: "LOST EVENTS")},
          {"duplicates in the ledger (at-least-once)", a.duplicates, "not a loss"},
          {"redelivered by Breakwater", a.redelivered, ""}
        ] ++
        optional_row("Breakwater: enqueued", a.enqueued_breakwater, a.produced - a.direct) ++
        optional_row("Breakwater: delivered", a.delivered_breakwater, a.delivered - a.direct) ++
        if(a.unexpected > 0,
          do: [{"unexpected events in the ledger", a.unexpected, "!"}],
          else: []
        )

    cells = Enum.map(rows, fn {label, n, note} -> {label, format_int(n), note} end)
    label_w = cells |> Enum.map(&String.length(elem(&1, 0))) |> Enum.max()
    num_w = cells |> Enum.map(&String.length(elem(&1, 1))) |> Enum.max()
    rule = String.duplicate("-", label_w + num_w + 2)

    body =
      Enum.map(cells, fn {label, num, note} ->
        line = String.pad_trailing(label, label_w) <> "  " <> String.pad_leading(num, num_w)
        if note == "", do: line, else: line <> "  " <> note
      end)

    Enum.join([rule | body] ++ [rule], "\n") <> "\n"
  end

  defp optional_row(_label, nil, _expected), do: []

  defp optional_row(label, value, expected),
    do: [{label, value, if(value == expected, do: "matches", else: "MISMATCH")}]

  @doc """
  Formats an integer with `,` thousands separators.

      iex> Breakwater.Demo.Accounting.format_int(-1234567)
      "-1,234,567"
  """
  @spec format_int(integer) :: String.t()
  def format_int(n) when is_integer(n) and n < 0, do: "-" <> format_int(-n)

  def format_int(n) when is_integer(n) do
    n
    |> Integer.to_string()
    |> String.reverse()
    |> String.graphemes()
    |> Enum.chunk_every(3)
    |> Enum.map_join(",", &Enum.join/1)
    |> String.reverse()
  end
end
