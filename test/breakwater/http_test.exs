defmodule Breakwater.HTTPTest do
  # Not async: readiness reflects every subject of the node.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias Breakwater.HTTP
  alias Breakwater.HTTP.JSON
  alias Breakwater.TestSubjects

  @moduletag :capture_log

  doctest Breakwater.HTTP.JSON
  doctest Breakwater.HTTP.Handler
  doctest Breakwater.HTTP

  defmodule Decoder do
    @moduledoc false
    # A minimal strict JSON decoder (RFC 8259) for checking what the server writes:
    # objects become maps with string keys.

    def decode!(text) do
      {value, rest} = value(ws(text))
      if ws(rest) != "", do: raise("trailing data: #{inspect(rest)}")
      value
    end

    defp ws(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: ws(rest)
    defp ws(text), do: text

    defp value("null" <> rest), do: {nil, rest}
    defp value("true" <> rest), do: {true, rest}
    defp value("false" <> rest), do: {false, rest}
    defp value("\"" <> rest), do: string(rest, [])
    defp value("{" <> rest), do: object(ws(rest), %{})
    defp value("[" <> rest), do: array(ws(rest), [])

    defp value(text) do
      case Regex.run(~r/\A-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/, text) do
        [number] ->
          rest = binary_part(text, byte_size(number), byte_size(text) - byte_size(number))

          value =
            case Integer.parse(number) do
              {n, ""} -> n
              _ -> String.to_float(number)
            end

          {value, rest}

        nil ->
          raise "unexpected: #{inspect(text)}"
      end
    end

    defp object("}" <> rest, acc), do: {acc, rest}

    defp object("\"" <> rest, acc) do
      {key, rest} = string(rest, [])
      ":" <> rest = ws(rest)
      {value, rest} = value(ws(rest))
      if Map.has_key?(acc, key), do: raise("duplicate key #{key}")
      acc = Map.put(acc, key, value)

      case ws(rest) do
        "," <> rest -> object(ws(rest), acc)
        "}" <> rest -> {acc, rest}
      end
    end

    defp array("]" <> rest, []), do: {[], rest}

    defp array(text, acc) do
      {value, rest} = value(text)

      case ws(rest) do
        "," <> rest -> array(ws(rest), [value | acc])
        "]" <> rest -> {Enum.reverse([value | acc]), rest}
      end
    end

    defp string("\"" <> rest, acc), do: {acc |> Enum.reverse() |> List.to_string(), rest}
    defp string("\\\"" <> rest, acc), do: string(rest, [?" | acc])
    defp string("\\\\" <> rest, acc), do: string(rest, [?\\ | acc])
    defp string("\\/" <> rest, acc), do: string(rest, [?/ | acc])
    defp string("\\n" <> rest, acc), do: string(rest, [?\n | acc])
    defp string("\\r" <> rest, acc), do: string(rest, [?\r | acc])
    defp string("\\t" <> rest, acc), do: string(rest, [?\t | acc])
    defp string("\\b" <> rest, acc), do: string(rest, [?\b | acc])
    defp string("\\f" <> rest, acc), do: string(rest, [?\f | acc])

    defp string(<<"\\u", hex::binary-size(4), rest::binary>>, acc),
      do: string(rest, [String.to_integer(hex, 16) | acc])

    defp string(<<c::utf8, rest::binary>>, _acc) when c < 0x20,
      do: raise("raw control character #{c} in a string: #{inspect(rest)}")

    defp string(<<c::utf8, rest::binary>>, acc), do: string(rest, [c | acc])
  end

  setup_all do
    {:ok, _} = Application.ensure_all_started(:inets)
    :ok
  end

  setup do
    pid = start_supervised!({HTTP, port: 0, name: nil}, id: :server)
    %{server: pid, port: HTTP.port(pid)}
  end

  defp request(port, method, path, body \\ nil) do
    url = ~c"http://127.0.0.1:#{port}#{path}"

    req =
      if body,
        do: {url, [], ~c"text/plain", body},
        else: {url, []}

    {:ok, {{_, status, _}, headers, body}} =
      :httpc.request(method, req, [timeout: 10_000], body_format: :binary)

    headers = Map.new(headers, fn {k, v} -> {List.to_string(k), List.to_string(v)} end)
    {status, headers, body}
  end

  defp get(port, path), do: request(port, :get, path)

  describe "server" do
    test "listens on an ephemeral loopback port by default", %{server: server, port: port} do
      assert port > 0
      assert HTTP.ip(server) == {127, 0, 0, 1}
      info = HTTP.info(server)
      assert info[:port] == port
      assert info[:bind_address] == {127, 0, 0, 1}
      assert info[:modules] == [Breakwater.HTTP.Handler]
    end

    test "cannot be reached through a non-loopback address of this host", %{port: port} do
      {:ok, ifaddrs} = :inet.getifaddrs()

      others =
        for {_name, opts} <- ifaddrs,
            {:addr, {a, _, _, _} = addr} <- opts,
            a != 127,
            do: addr

      # Nothing to try on a host with no other IPv4 address.
      for addr <- others do
        assert {:error, _} = :gen_tcp.connect(addr, port, [], 1_000)
      end

      # ... while a server configured for every interface is reachable there.
      if others != [] do
        any = start_supervised!({HTTP, port: 0, ip: {0, 0, 0, 0}, name: nil}, id: :any)
        assert {:ok, socket} = :gen_tcp.connect(hd(others), HTTP.port(any), [], 1_000)
        :gen_tcp.close(socket)
      end
    end

    test "listens on IPv6 loopback when asked" do
      case start_supervised({HTTP, port: 0, ip: {0, 0, 0, 0, 0, 0, 0, 1}, name: nil}, id: :v6) do
        {:ok, server} ->
          assert HTTP.info(server)[:bind_address] == {0, 0, 0, 0, 0, 0, 0, 1}

          {:ok, socket} =
            :gen_tcp.connect({0, 0, 0, 0, 0, 0, 0, 1}, HTTP.port(server), [:binary, active: false])

          :ok = :gen_tcp.send(socket, "GET /health/liveness HTTP/1.0\r\n\r\n")
          assert {:ok, "HTTP/1.0 200 " <> _} = :gen_tcp.recv(socket, 0, 5_000)
          :gen_tcp.close(socket)

        # A host without IPv6.
        {:error, {{:http_address_unavailable, _}, _}} ->
          :ok
      end
    end

    test "a port in use is a clear error", %{port: port} do
      log =
        capture_log(fn ->
          assert {:error, {{:http_port_in_use, ^port}, _}} =
                   start_supervised({HTTP, port: port, name: nil}, id: :second)
        end)

      assert log =~ "port #{port}"
      assert log =~ "already in use"

      # The same for a port held by another program.
      {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
      {:ok, taken} = :inet.port(socket)

      capture_log(fn ->
        assert {:error, {{:http_port_in_use, ^taken}, _}} =
                 start_supervised({HTTP, port: taken, name: nil}, id: :third)
      end)

      :gen_tcp.close(socket)
    end

    test "invalid options are refused" do
      assert {:error, {{:invalid_option, :port, 70_000}, _}} =
               start_supervised({HTTP, port: 70_000, name: nil}, id: :bad_port)

      assert {:error, {{:invalid_option, :port, nil}, _}} =
               start_supervised({HTTP, name: nil}, id: :no_port)

      assert {:error, {{:invalid_option, :ip, "localhost"}, _}} =
               start_supervised({HTTP, port: 0, ip: "localhost", name: nil}, id: :bad_ip)
    end

    test "stopping releases the port and removes the document root",
         %{server: server, port: port} do
      root = server |> HTTP.info() |> Keyword.fetch!(:document_root) |> List.to_string()
      assert File.dir?(root)
      assert String.starts_with?(root, System.tmp_dir!())

      :ok = stop_supervised(:server)
      refute File.exists?(root)
      assert {:error, :econnrefused} = :gen_tcp.connect({127, 0, 0, 1}, port, [])

      # The same port can be taken again at once.
      again = start_supervised!({HTTP, port: port, name: nil}, id: :again)
      assert HTTP.port(again) == port
    end

    test "runs under a supervisor from the validated http configuration, registered" do
      {:ok, config} = Breakwater.Config.load(http: [port: 0])
      name = :"breakwater_http_test_#{System.unique_integer([:positive])}"
      spec = Supervisor.child_spec({HTTP, Map.put(config.http, :name, name)}, [])
      assert spec.id == name
      start_supervised!(spec)
      port = HTTP.port(name)
      assert {200, _, _} = get(port, "/health/liveness")
    end

    test "the server stops when its httpd instance dies, to be restarted", %{server: server} do
      ref = Process.monitor(server)
      httpd = :sys.get_state(server).httpd
      Process.exit(httpd, :kill)
      assert_receive {:DOWN, ^ref, :process, ^server, {:httpd_exited, :killed}}
    end
  end

  describe "routes" do
    test "/metrics is the Prometheus exposition", %{port: port} do
      # /metrics details the worst metrics_max_subjects subjects: a depth well above the
      # resting ones of other tests (and below the warning threshold) puts this one in.
      # The body is rendered at most once a second and shared: wait for one rendered
      # after the depth was reported.
      s = TestSubjects.subject()
      :ok = Breakwater.report_depth(s, 9_002)
      series = ~s(breakwater_queue_depth{node="#{node()}",subject="#{s}"} 9002\n)
      {200, headers, body} = metrics_with(port, series, 40)
      assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
      assert String.to_integer(headers["content-length"]) == byte_size(body)
      assert String.starts_with?(body, "# HELP ")
      assert body =~ "# TYPE breakwater_circuit_state gauge\n"
      assert body =~ series

      # The query string is ignored.
      assert {200, _, _} = get(port, "/metrics?a=1&b=2")
    end

    test "/health/liveness answers while the application runs", %{port: port} do
      {200, headers, body} = get(port, "/health/liveness")
      assert headers["content-type"] == "application/json"
      assert Decoder.decode!(body) == %{"status" => "alive"}
    end

    test "/health/readiness fails while a critical subject's breaker is open", %{port: port} do
      critical = TestSubjects.subject(critical: true)
      plain = TestSubjects.subject()

      on_exit(fn ->
        Breakwater.reset(critical)
        Breakwater.reset(plain)
      end)

      # Other critical subjects of the node could be open; compare with what it says.
      before = Breakwater.Metrics.critical_open()
      expected = if before == [], do: 200, else: 503
      assert {^expected, _, _} = get(port, "/health/readiness")

      :ok = Breakwater.force_open(plain)
      assert {^expected, _, _} = get(port, "/health/readiness")

      :ok = Breakwater.force_open(critical)
      {503, headers, body} = get(port, "/health/readiness")
      assert headers["content-type"] == "application/json"
      assert %{"status" => "not_ready", "critical_open" => open} = Decoder.decode!(body)
      assert critical in open

      :ok = Breakwater.reset(critical)
      {status, _, body} = get(port, "/health/readiness")
      assert status == expected

      if status == 200, do: assert(Decoder.decode!(body) == %{"status" => "ready"})
    end

    # GET /health until the body mentions every one of `texts` (at most `tries` times,
    # 100 ms apart); the last answer.
    defp health_with(port, texts, tries) do
      {200, _, body} = reply = get(port, "/health")

      if tries <= 1 or Enum.all?(texts, &String.contains?(body, &1)) do
        reply
      else
        Process.sleep(100)
        health_with(port, texts, tries - 1)
      end
    end

    # GET /metrics until the body has `text` (at most `tries` times, 100 ms apart); the
    # last answer.
    defp metrics_with(port, text, tries) do
      {200, _, body} = reply = get(port, "/metrics")

      if tries <= 1 or String.contains?(body, text) do
        reply
      else
        Process.sleep(100)
        metrics_with(port, text, tries - 1)
      end
    end

    test "/health is the JSON summary", %{port: port} do
      # /health details the worst metrics_max_subjects subjects: depths well above the
      # resting ones of other tests (and below the warning threshold) put these in.
      critical = TestSubjects.subject(critical: true)
      :ok = Breakwater.report_depth(critical, 9_000)
      odd = TestSubjects.unique("odd") <> <<" \"q\" \\ \n ", 0xFF>>
      :ok = Breakwater.configure(odd, [])
      :ok = Breakwater.report_depth(odd, 9_001)

      # The body is rendered at most once a second and shared: wait for one that was
      # rendered after these subjects were.
      text = Breakwater.Metrics.safe_text(odd)

      {200, headers, body} = health_with(port, [text, critical], 40)

      assert headers["content-type"] == "application/json"

      assert %{
               "status" => status,
               "ready" => ready,
               "alerts" => alerts,
               "pool" => %{"free_segments" => free, "segments" => segments},
               "subjects" => subjects,
               "subject_count" => count
             } = Decoder.decode!(body)

      assert count >= 2 and length(subjects) <= 1_000

      assert status in ["ok", "degraded"]
      assert is_boolean(ready)
      assert is_integer(alerts) and alerts >= 0
      assert free <= segments

      assert %{
               "breaker" => "closed",
               "backpressure" => "normal",
               "status" => "inactive",
               "queue_depth" => 9_000,
               "critical" => true
             } = Enum.find(subjects, &(&1["subject"] == critical))

      assert %{"queue_depth" => 9_001, "critical" => false} =
               Enum.find(subjects, &(&1["subject"] == text))
    end

    test "unknown paths are 404, and no file is ever served", %{server: server, port: port} do
      root = server |> HTTP.info() |> Keyword.fetch!(:document_root) |> List.to_string()
      File.write!(Path.join(root, "index.html"), "secret")
      File.write!(Path.join(root, "secret.txt"), "secret")

      for path <-
            ~w(/ /index.html /secret.txt /metrics/ /health/ /health/other /HEALTH /favicon.ico
               /../../etc/passwd /%2e%2e/etc/passwd /metrics%00) do
        assert {404, headers, body} = get(port, path), "#{path} was served"
        assert headers["content-type"] == "text/plain; charset=utf-8"
        refute body =~ "secret"
      end
    end

    test "HEAD has the headers of GET and no body", %{port: port} do
      {200, get_headers, get_body} = get(port, "/health/liveness")
      {200, headers, body} = request(port, :head, "/health/liveness")
      assert body == ""
      assert headers["content-type"] == get_headers["content-type"]
      assert headers["content-length"] == Integer.to_string(byte_size(get_body))

      assert {404, _, ""} = request(port, :head, "/nope")
    end

    test "other methods get 405 with Allow on known paths, 404 elsewhere", %{port: port} do
      for method <- [:post, :put] do
        {405, headers, _} = request(port, method, "/metrics", "x")
        assert headers["allow"] == "GET, HEAD"
        assert {404, _, _} = request(port, method, "/elsewhere", "x")
      end

      {405, headers, _} = request(port, :delete, "/health")
      assert headers["allow"] == "GET, HEAD"
    end

    test "route/2 matches methods and paths as strings" do
      assert {200, [{"content-type", "application/json"} | _], _} =
               Breakwater.HTTP.Handler.route("HEAD", "/health/liveness")

      assert {404, _, _} = Breakwater.HTTP.Handler.route("GET", "/nope")
      assert {405, headers, _} = Breakwater.HTTP.Handler.route("PATCH", "/health")
      assert {"allow", "GET, HEAD"} in headers
      # Methods are case-sensitive (RFC 9110 9.1).
      assert {405, _, _} = Breakwater.HTTP.Handler.route("get", "/health")
    end
  end

  describe "JSON" do
    test "encodes maps with sorted keys, lists, numbers, booleans and null" do
      assert JSON.encode!(%{b: 1, a: [true, false, nil], c: %{"x" => 1.5, 2 => "two"}}) ==
               ~S({"a":[true,false,null],"b":1,"c":{"2":"two","x":1.5}})

      assert JSON.encode!([]) == "[]"
      assert JSON.encode!(%{}) == "{}"
      assert JSON.encode!(:closed) == ~S("closed")
      assert JSON.encode!(-12) == "-12"
    end

    test "escapes strings as RFC 8259 asks and replaces invalid UTF-8" do
      assert JSON.encode!(~S(q" b\ ) <> "\n\r\t\b\f" <> <<1, 31>>) ==
               ~S("q\" b\\ \n\r\t\b\f\u0001\u001f")

      assert JSON.encode!("é ✓ \u2028") == ~S("é ✓ \u2028")

      assert JSON.encode!(<<"a", 0xFF, "b", 0xED, 0xA0, 0x80>>) ==
               ~S("a\ufffdb\ufffd\ufffd\ufffd")

      for s <- ["", "plain", ~S(a\"b), "tab\tnew\nline", <<0, 127>>, "日本"] do
        assert Decoder.decode!(JSON.encode!(s)) == s
        assert Decoder.decode!(JSON.encode!(%{s => [s]})) == %{s => [s]}
      end
    end

    test "refuses terms JSON cannot hold" do
      for term <- [{1, 2}, self(), make_ref(), [1 | 2], %{{:a} => 1}, %{nil => 1}] do
        assert_raise ArgumentError, fn -> JSON.encode!(term) end
      end
    end
  end
end
