defmodule Breakwater.ClusterTableTest do
  # The iex table of cluster_status/0,1, from tables built by hand: the columns, the
  # nodes that did not answer, the overload signals once a node reports them.
  use ExUnit.Case, async: true

  alias Breakwater.ClusterTable

  defp row(node, fields) do
    Map.merge(
      %{
        node: node,
        subject: "ledger",
        status: :active,
        breaker: :open,
        backpressure: :normal,
        queue_depth: 12,
        opened_by: nil,
        remote_opens: 0,
        circuit_opens: 1,
        shared: true
      },
      Map.new(fields)
    )
  end

  defp node_entry(node, state, reason \\ nil),
    do: %{node: node, state: state, since: 0, reason: reason, subject_count: nil}

  test "one line per node and subject, then the nodes without a row, aligned" do
    table = %ClusterTable{
      subject: "ledger",
      nodes: [
        node_entry(:a@h, :up),
        node_entry(:b@h, :up),
        node_entry(:c@h, :down),
        node_entry(:d@h, :timeout),
        node_entry(:e@h, :error, {:error, "boom"})
      ],
      rows: [row(:a@h, []), row(:b@h, remote_opens: 1, opened_by: :a@h, queue_depth: 3)]
    }

    [header | lines] = ClusterTable.lines(table)

    assert String.split(header) ==
             ~w(node subject status breaker backpressure depth remote_opens opened_by)

    assert [a, b, c, d, e] = Enum.map(lines, &String.split/1)
    assert a == ~w(a@h ledger active open normal 12 0)
    assert b == ~w(b@h ledger active open normal 3 1 a@h)
    assert c == ~w(c@h - down)
    assert d == ~w(d@h - timeout)
    assert hd(e) == "e@h" and Enum.at(e, 2) == "error"
    # Right-aligned numbers: each depth ends where its header does.
    {at, len} = :binary.match(header, "depth")

    for {l, depth} <- Enum.zip(Enum.take(lines, 2), ["12", "3"]) do
      assert binary_part(l, at + len - byte_size(depth), byte_size(depth)) == depth
    end

    assert inspect(table) == Enum.join([header | lines], "\n")
  end

  test "the overload signals appear once a node reports them" do
    table = %ClusterTable{
      nodes: [node_entry(:a@h, :up), node_entry(:b@h, :up)],
      rows: [
        row(:a@h, latency_p95_ms: 6_000, inflight: 12, overloaded: [:depth, :latency]),
        # A node of an older release: no signals; its cells stay empty.
        row(:b@h, [])
      ]
    }

    [header | lines] = ClusterTable.lines(table)

    assert String.split(header) ==
             ~w(node subject status breaker backpressure depth p95 ms inflight overloaded remote_opens opened_by)

    assert [a, b] = Enum.map(lines, &String.split/1)
    assert a == ~w(a@h ledger active open normal 12 6000 12 depth,latency 0)
    assert b == ~w(b@h ledger active open normal 12 0)

    none = %{table | rows: [row(:a@h, latency_p95_ms: 1, inflight: 0, overloaded: [])]}
    assert [_, line, _b_without_rows] = ClusterTable.lines(none)
    assert String.split(line) == ~w(a@h ledger active open normal 12 1 0 - 0)
  end

  test "a node up with nothing to show, and a table with no nodes" do
    table = %ClusterTable{nodes: [node_entry(:a@h, :up)], rows: []}
    assert [_, line] = ClusterTable.lines(table)
    assert line =~ "up, no subjects"

    assert [_, line] = ClusterTable.lines(%{table | subject: "x"})
    assert line =~ "up, unknown subject"

    assert inspect(%ClusterTable{}) == "#Breakwater.ClusterTable<no nodes>"
  end
end
