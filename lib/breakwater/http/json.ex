defmodule Breakwater.HTTP.JSON do
  @moduledoc """
  A small JSON encoder for the health endpoints (no JSON library is available).

  Encodes maps (keys: atoms, binaries or integers; written in sorted order, so the
  output is deterministic), lists, binaries, integers, floats, `true`, `false`, `nil`
  (`null`) and other atoms (as strings). Strings are escaped per RFC 8259: `"`, `\\`
  and control characters (`\\n`, `\\t`, ... or `\\u00XX`), plus U+2028 and U+2029;
  bytes that are not valid UTF-8 become U+FFFD. Anything else (tuples, pids,
  functions) raises `ArgumentError`.

      iex> Breakwater.HTTP.JSON.encode!(%{status: "ok", subjects: [%{name: "a\\"b", depth: 3}], ready: true, error: nil})
      ~S({"error":null,"ready":true,"status":"ok","subjects":[{"depth":3,"name":"a\\"b"}]})
  """

  @typedoc "A term the encoder accepts."
  @type json ::
          %{optional(atom | binary | integer) => json}
          | [json]
          | binary
          | number
          | boolean
          | nil
          | atom

  @doc "Encodes `term` as a JSON binary; raises `ArgumentError` for terms JSON cannot hold."
  @spec encode!(json) :: binary
  def encode!(term), do: term |> value() |> IO.iodata_to_binary()

  defp value(nil), do: "null"
  defp value(true), do: "true"
  defp value(false), do: "false"
  defp value(atom) when is_atom(atom), do: string(Atom.to_string(atom))
  defp value(bin) when is_binary(bin), do: string(bin)
  defp value(int) when is_integer(int), do: Integer.to_string(int)
  defp value(float) when is_float(float), do: :erlang.float_to_binary(float, [:short])

  defp value(map) when is_map(map) do
    pairs =
      map
      |> Enum.map(fn {k, v} -> {key(k), v} end)
      |> Enum.sort_by(&elem(&1, 0))
      |> Enum.map(fn {k, v} -> [string(k), ?:, value(v)] end)
      |> Enum.intersperse(?,)

    [?{, pairs, ?}]
  end

  defp value(list) when is_list(list), do: [?[, elements(list, []), ?]]

  defp value(other) do
    raise ArgumentError, "cannot encode as JSON: #{inspect(other, limit: 5)}"
  end

  defp elements([], acc), do: Enum.reverse(acc)
  defp elements([h], acc), do: elements([], [value(h) | acc])
  defp elements([h | t], acc) when is_list(t), do: elements(t, [?,, value(h) | acc])

  defp elements(_improper, _acc),
    do: raise(ArgumentError, "cannot encode an improper list as JSON")

  defp key(k) when is_atom(k) and k not in [nil, true, false], do: Atom.to_string(k)
  defp key(k) when is_binary(k), do: k
  defp key(k) when is_integer(k), do: Integer.to_string(k)

  defp key(k) do
    raise ArgumentError, "cannot encode as a JSON object key: #{inspect(k, limit: 5)}"
  end

  defp string(bin), do: [?", escape(bin, bin, 0, 0, []), ?"]

  # Walks `bin`, copying runs of characters that need no escape as sub-binaries of
  # `orig` (from `start`, `len` bytes long).
  defp escape(<<>>, orig, start, len, acc), do: Enum.reverse([part(orig, start, len) | acc])

  defp escape(<<c, rest::binary>>, orig, start, len, acc)
       when c < 0x20 or c == ?" or c == ?\\ do
    acc = [escaped(c), part(orig, start, len) | acc]
    escape(rest, orig, start + len + 1, 0, acc)
  end

  defp escape(<<c, rest::binary>>, orig, start, len, acc) when c < 0x80,
    do: escape(rest, orig, start, len + 1, acc)

  defp escape(<<c::utf8, rest::binary>>, orig, start, len, acc) when c in [0x2028, 0x2029] do
    acc = [escaped(c), part(orig, start, len) | acc]
    escape(rest, orig, start + len + 3, 0, acc)
  end

  defp escape(<<c::utf8, rest::binary>>, orig, start, len, acc),
    do: escape(rest, orig, start, len + byte_size(<<c::utf8>>), acc)

  # Not valid UTF-8: one byte becomes U+FFFD.
  defp escape(<<_, rest::binary>>, orig, start, len, acc) do
    acc = ["\\ufffd", part(orig, start, len) | acc]
    escape(rest, orig, start + len + 1, 0, acc)
  end

  defp part(_orig, _start, 0), do: []
  defp part(orig, start, len), do: binary_part(orig, start, len)

  defp escaped(?"), do: "\\\""
  defp escaped(?\\), do: "\\\\"
  defp escaped(?\n), do: "\\n"
  defp escaped(?\r), do: "\\r"
  defp escaped(?\t), do: "\\t"
  defp escaped(?\b), do: "\\b"
  defp escaped(?\f), do: "\\f"

  defp escaped(c) do
    hex = c |> Integer.to_string(16) |> String.downcase() |> String.pad_leading(4, "0")
    ["\\u", hex]
  end
end
