defmodule Breakwater.HTTP.Handler do
  @moduledoc """
  The `httpd` callback module of `Breakwater.HTTP` (OTP's `httpd` module API: `do/1`
  receives the request as a `mod` record and returns the response). It is the only
  module of the server, so nothing else (no file, no directory) is ever served.

  | path | answer |
  |---|---|
  | `/metrics` | 200, `text/plain; version=0.0.4; charset=utf-8`, `Breakwater.Metrics.prometheus/1` as rendered at most a second ago, shared by every scraper (`Breakwater.Metrics.Scrape`) |
  | `/health/liveness` | 200 `{"status":"alive"}` while the application runs, else 503 |
  | `/health/readiness` | 200 `{"status":"ready"}`; 503 `{"status":"not_ready","critical_open":[...]}` while a subject with `critical: true` has its breaker open |
  | `/health` | 200, `Breakwater.Metrics.health/1` as JSON, rendered at most a second ago and shared like `/metrics` |
  | any other path | 404 |

  Only `GET` and `HEAD` are answered (`HEAD` without a body); other methods on a known
  path get 405 with `Allow: GET, HEAD`. Paths are matched as strings (the query string
  is ignored); no atom is created from a request. A failure while building an answer
  gives 500 and is logged.

      iex> {status, _headers, _body} = Breakwater.HTTP.Handler.route("GET", "/health/liveness")
      iex> status
      200
      iex> {404, _headers, _body} = Breakwater.HTTP.Handler.route("GET", "/etc/passwd")
  """

  require Breakwater.Log, as: Log
  require Record

  alias Breakwater.HTTP.JSON
  alias Breakwater.Metrics

  Record.defrecordp(:mod, Record.extract(:mod, from_lib: "inets/include/httpd.hrl"))

  @paths ["/metrics", "/health", "/health/liveness", "/health/readiness"]
  @json "application/json"
  @text "text/plain; charset=utf-8"
  @prometheus "text/plain; version=0.0.4; charset=utf-8"

  @typedoc "An HTTP status code, response headers (name, value) and body."
  @type response :: {100..599, [{String.t(), String.t()}], iodata}

  @doc """
  The `httpd` callback: answers the request in `mod_data` (an `httpd` `mod` record).
  Returns `{:proceed, [{:response, {:response, head, body}}]}`.
  """
  @spec unquote(:do)(tuple) :: {:proceed, [{:response, {:response, list, iodata}}]}
  def unquote(:do)(mod_data) do
    method = mod_data |> mod(:method) |> to_text()
    path = mod_data |> mod(:request_uri) |> to_text() |> strip_query()
    {status, headers, body} = route(method, path)
    # HEAD: the headers of GET, Content-Length included (RFC 9110 9.3.2), no body
    # (httpd would send one).
    length = IO.iodata_length(body)
    body = if method == "HEAD", do: "", else: body

    head =
      [code: status, content_length: Integer.to_charlist(length)] ++
        Enum.map(headers, fn
          {"content-type", v} -> {:content_type, String.to_charlist(v)}
          {"allow", v} -> {:allow, String.to_charlist(v)}
          {"cache-control", v} -> {:cache_control, String.to_charlist(v)}
        end)

    {:proceed, [{:response, {:response, head, body}}]}
  end

  @doc """
  The answer to `method` on `path` (both strings, the path without its query string):
  `{status, headers, body}` with lower-case header names (`HEAD` gets the body of
  `GET`; `do/1` leaves it out).
  """
  @spec route(String.t(), String.t()) :: response
  def route(method, path) when method in ["GET", "HEAD"] do
    answer(path)
  rescue
    e ->
      Log.error(
        "Breakwater.HTTP: #{inspect(path)} failed: " <>
          Exception.format(:error, e, __STACKTRACE__)
      )

      {500, text_headers(), "internal server error\n"}
  end

  def route(_method, path) when path in @paths,
    do: {405, [{"allow", "GET, HEAD"} | text_headers()], "method not allowed\n"}

  def route(_method, _path), do: not_found()

  defp answer("/metrics"), do: {200, headers(@prometheus), Metrics.Scrape.body(:metrics)}

  defp answer("/health/liveness") do
    if Metrics.alive?(),
      do: json(200, %{status: "alive"}),
      else: json(503, %{status: "down"})
  end

  defp answer("/health/readiness") do
    case Metrics.critical_open() do
      [] ->
        json(200, %{status: "ready"})

      subjects ->
        json(503, %{status: "not_ready", critical_open: Enum.map(subjects, &Metrics.safe_text/1)})
    end
  end

  defp answer("/health"), do: {200, headers(@json), Metrics.Scrape.body(:health)}
  defp answer(_path), do: not_found()

  defp not_found, do: {404, text_headers(), "not found\n"}

  defp json(status, term), do: {status, headers(@json), [JSON.encode!(term), ?\n]}

  defp text_headers, do: headers(@text)
  defp headers(type), do: [{"content-type", type}, {"cache-control", "no-store"}]

  # httpd gives the request line as a charlist of bytes.
  defp to_text(chars) when is_list(chars) do
    :erlang.list_to_binary(chars)
  rescue
    ArgumentError -> ""
  end

  defp to_text(_other), do: ""

  defp strip_query(uri) do
    case :binary.match(uri, ["?", "#"]) do
      {at, _} -> binary_part(uri, 0, at)
      :nomatch -> uri
    end
  end
end
