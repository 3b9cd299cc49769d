defmodule Breakwater.Bench.JSON do
  @moduledoc false
  # A minimal JSON reader for criterion's estimates.json and benchmark.json (the
  # project has no hex dependencies and OTP 25 has no json module). Objects become maps
  # with binary keys; numbers become integers or floats.

  def decode!(text) do
    {value, rest} = value(skip(text))

    case skip(rest) do
      "" -> value
      other -> raise ArgumentError, "trailing JSON: #{String.slice(other, 0, 20)}"
    end
  end

  defp skip(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip(rest)
  defp skip(rest), do: rest

  defp value("{" <> rest), do: object(skip(rest), %{})
  defp value("[" <> rest), do: array(skip(rest), [])
  defp value("\"" <> rest), do: string(rest, [])
  defp value("true" <> rest), do: {true, rest}
  defp value("false" <> rest), do: {false, rest}
  defp value("null" <> rest), do: {nil, rest}
  defp value(rest), do: number(rest)

  defp object("}" <> rest, acc), do: {acc, rest}

  defp object("\"" <> rest, acc) do
    {key, rest} = string(rest, [])
    ":" <> rest = skip(rest)
    {v, rest} = value(skip(rest))
    acc = Map.put(acc, key, v)

    case skip(rest) do
      "," <> rest -> object(skip(rest), acc)
      "}" <> rest -> {acc, rest}
    end
  end

  defp array("]" <> rest, acc), do: {Enum.reverse(acc), rest}

  defp array(text, acc) do
    {v, rest} = value(text)

    case skip(rest) do
      "," <> rest -> array(skip(rest), [v | acc])
      "]" <> rest -> {Enum.reverse([v | acc]), rest}
    end
  end

  defp string("\"" <> rest, acc), do: {acc |> Enum.reverse() |> IO.iodata_to_binary(), rest}

  defp string("\\" <> <<c, rest::binary>>, acc) do
    case c do
      ?u ->
        <<hex::binary-size(4), rest::binary>> = rest
        string(rest, [<<String.to_integer(hex, 16)::utf8>> | acc])

      ?n ->
        string(rest, ["\n" | acc])

      ?t ->
        string(rest, ["\t" | acc])

      ?r ->
        string(rest, ["\r" | acc])

      ?b ->
        string(rest, ["\b" | acc])

      ?f ->
        string(rest, ["\f" | acc])

      other ->
        string(rest, [<<other>> | acc])
    end
  end

  defp string(<<c::utf8, rest::binary>>, acc), do: string(rest, [<<c::utf8>> | acc])

  defp number(text) do
    {num, rest} = take_number(text, [])

    value =
      if String.contains?(num, [".", "e", "E"]) do
        {f, ""} = Float.parse(num)
        f
      else
        String.to_integer(num)
      end

    {value, rest}
  end

  defp take_number(<<c, rest::binary>>, acc) when c in ~c"0123456789+-.eE",
    do: take_number(rest, [c | acc])

  defp take_number(rest, acc) when acc != [],
    do: {acc |> Enum.reverse() |> List.to_string(), rest}
end
