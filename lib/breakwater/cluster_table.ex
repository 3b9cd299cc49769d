defmodule Breakwater.ClusterTable do
  @moduledoc """
  Every node's state, as `Breakwater.cluster_status/0,1` returns it. `iex` shows it as
  an aligned table: one line per node and subject, then one line per node that did not
  answer (or has no subject to show). `:nodes` holds one map per node (`node`, `state`:
  `:up | :down | :stopped | :timeout | :error`, `since`, `reason`, `subject_count`);
  `:rows` one map per node and subject (`node`, `subject`, `status`, `breaker`,
  `backpressure`, `queue_depth`, the node's overload signals when it reports them
  (`latency_p95_ms`, `inflight`, `overloaded`: the list of signals overloaded),
  `opened_by`, `remote_opens`, `circuit_opens`, `shared`).

      iex> Breakwater.cluster_status("ledger")
      node        subject  status  breaker  backpressure  depth  remote_opens  opened_by
      a@host      ledger   active  open     normal           12             0
      b@host      ledger   active  open     normal            0             1  a@host
      c@host      -        down
  """
  defstruct nodes: [], rows: [], subject: nil

  @type t :: %__MODULE__{nodes: [map], rows: [map], subject: binary | nil}

  # {header, alignment, how to read a row}; signal columns appear when a row has them.
  @columns [
    {"node", :left, :node},
    {"subject", :left, :subject},
    {"status", :left, :status},
    {"breaker", :left, :breaker},
    {"backpressure", :left, :backpressure},
    {"depth", :right, :queue_depth},
    {"p95 ms", :right, :latency_p95_ms},
    {"inflight", :right, :inflight},
    {"overloaded", :left, :overloaded},
    {"remote_opens", :right, :remote_opens},
    {"opened_by", :left, :opened_by}
  ]
  # The overload signals beside depth: shown once a node reports them.
  @optional [:latency_p95_ms, :inflight, :overloaded]

  @doc "The table as text lines (header first)."
  @spec lines(t) :: [String.t()]
  def lines(%__MODULE__{nodes: nodes, rows: rows, subject: asked}) do
    columns =
      Enum.filter(@columns, fn {_, _, key} ->
        key not in @optional or Enum.any?(rows, &Map.has_key?(&1, key))
      end)

    with_rows = MapSet.new(rows, & &1.node)

    node_lines =
      for %{node: n, state: state} = entry <- nodes, not MapSet.member?(with_rows, n) do
        # A node without a row: did not answer, or has nothing to show.
        Enum.map(columns, fn
          {_, _, :node} -> text(n)
          {_, _, :subject} -> "-"
          {_, _, :status} -> node_state(state, entry, asked)
          _ -> ""
        end)
      end

    cells =
      Enum.map(rows, fn r ->
        Enum.map(columns, fn {_, _, key} -> text(Map.get(r, key)) end)
      end) ++ node_lines

    header = Enum.map(columns, &elem(&1, 0))

    widths =
      Enum.map(0..(length(columns) - 1), fn i ->
        [header | cells] |> Enum.map(&String.length(Enum.at(&1, i))) |> Enum.max()
      end)

    aligns = Enum.map(columns, &elem(&1, 1))

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

  defp node_state(:up, _entry, nil), do: "up, no subjects"
  defp node_state(:up, _entry, _asked), do: "up, unknown subject"
  defp node_state(:error, %{reason: r}, _asked) when r != nil, do: "error #{text(r)}"
  defp node_state(state, _entry, _asked), do: Atom.to_string(state)

  defp text(nil), do: ""
  # The overloaded signals (`[:depth, :latency]`), `-` for none.
  defp text([]), do: "-"

  defp text([signal | _] = signals) when is_atom(signal),
    do: Enum.map_join(signals, ",", &Atom.to_string/1)

  defp text(value) when is_binary(value), do: printable(value)
  defp text(value) when is_atom(value), do: Atom.to_string(value)
  defp text(value) when is_integer(value), do: Integer.to_string(value)
  defp text(value) when is_float(value), do: :erlang.float_to_binary(value, decimals: 1)
  defp text(value), do: inspect(value, limit: 5, printable_limit: 80)

  # Subject names are binaries of any content: show printable ones as they are and
  # others inspected, so a name can never break the table.
  defp printable(subject) do
    if String.printable?(subject) and not String.contains?(subject, ["\n", "\r", "\t"]),
      do: subject,
      else: inspect(subject)
  end

  defimpl Inspect do
    def inspect(%{nodes: [], rows: []}, _opts), do: "#Breakwater.ClusterTable<no nodes>"
    def inspect(table, _opts), do: Enum.join(Breakwater.ClusterTable.lines(table), "\n")
  end
end
