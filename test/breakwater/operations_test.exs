defmodule Breakwater.OperationsTest do
  # Operations under pressure: /metrics with 10 000 subjects is bounded (the worst
  # metrics_max_subjects in detail, totals over all), rendered at most once a second
  # and shared by concurrent scrapers, with bounded memory; /health/liveness answers
  # 200 while 500 idle connections are held open and 64 scrapes run. Counts the node's
  # memory: async: false.
  use ExUnit.Case, async: false

  alias Breakwater.HTTP
  alias Breakwater.TestSubjects, as: T

  @moduletag :capture_log
  @moduletag timeout: 300_000

  setup_all do
    {:ok, server} = HTTP.start_link(port: 0, name: nil)

    on_exit(fn ->
      try do
        HTTP.stop(server)
      catch
        # Linked to the setup_all process, it may have gone with it.
        :exit, _ -> :ok
      end
    end)

    # 10 000 subjects of this test: 50 active (open breakers), 100 warning (depth over
    # the warning threshold), the rest at rest with small depths.
    prefix = T.unique("ops")
    subjects = for i <- 1..10_000, do: "#{prefix}-#{i}"

    for {s, i} <- Enum.with_index(subjects, 1) do
      :ok = Breakwater.report_depth(s, rem(i, 97))

      cond do
        i <= 50 -> :ok = Breakwater.force_open(s)
        i <= 150 -> :ok = Breakwater.report_depth(s, 10_000 + i)
        true -> :ok
      end
    end

    on_exit(fn ->
      for s <- Enum.take(subjects, 50), do: Breakwater.reset(s)
    end)

    %{port: HTTP.port(server), subjects: subjects}
  end

  # A raw HTTP/1.0 GET on a connection of its own: {status, body bytes}. The body is
  # counted, not kept, so scrapers hold no copy of it.
  defp get(port, path) do
    {:ok, sock} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 10_000)
    :ok = :gen_tcp.send(sock, "GET #{path} HTTP/1.0\r\nHost: localhost\r\n\r\n")
    read(sock, "", nil)
  end

  defp get_body(port, path) do
    {:ok, sock} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 10_000)
    :ok = :gen_tcp.send(sock, "GET #{path} HTTP/1.0\r\nHost: localhost\r\n\r\n")
    {:ok, all} = recv_all(sock, [])
    [head, body] = :binary.split(all, "\r\n\r\n")
    [_, code | _] = String.split(head, " ", parts: 3)
    {String.to_integer(code), body}
  end

  defp recv_all(sock, acc) do
    case :gen_tcp.recv(sock, 0, 30_000) do
      {:ok, data} -> recv_all(sock, [acc, data])
      {:error, :closed} -> {:ok, IO.iodata_to_binary(acc)}
    end
  end

  defp read(sock, head, status) do
    case :gen_tcp.recv(sock, 0, 30_000) do
      {:ok, data} when status == nil ->
        buffered = head <> data

        case :binary.split(buffered, "\r\n\r\n") do
          [h, rest] ->
            [_, code | _] = String.split(h, " ", parts: 3)
            read(sock, byte_size(rest), String.to_integer(code))

          [_] ->
            read(sock, buffered, nil)
        end

      {:ok, data} ->
        read(sock, head + byte_size(data), status)

      {:error, :closed} ->
        :gen_tcp.close(sock)
        {status, if(is_integer(head), do: head, else: 0)}
    end
  end

  defp rss_kb do
    "/proc/self/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn
      "VmRSS:" <> rest -> rest |> String.split() |> hd() |> String.to_integer()
      _ -> nil
    end)
  end

  test "/metrics details the worst metrics_max_subjects subjects and totals every subject", %{
    port: port,
    subjects: subjects
  } do
    max = :persistent_term.get({Breakwater, :config}).metrics_max_subjects
    assert max == 1_000
    {200, body} = get_body(port, "/metrics")
    n = Regex.escape(~s(node="#{node()}"))

    detailed =
      ~r/^breakwater_queue_depth\{#{n},subject="((?:[^"\\]|\\.)*)"\}/m
      |> Regex.scan(body)
      |> Enum.map(fn [_, s] -> s end)

    assert length(detailed) <= max
    assert body =~ ~r/^breakwater_subjects_detailed\{#{n}\} #{length(detailed)}$/m

    # Worst first: every active and warning subject of this test is in the detail
    # (the node holds fewer than a thousand restless subjects of other tests).
    for s <- Enum.take(subjects, 150), do: assert(s in detailed, "#{s} not detailed")

    # Totals cover every subject, not only the detailed ones.
    totals = Breakwater.Native.totals()
    assert totals.subjects >= 10_000

    assert body =~
             ~r/^breakwater_subjects_by_status\{#{n},status="active"\} #{totals.by_status.active}$/m

    assert totals.by_status.active >= 50
    assert body =~ ~r/^breakwater_subjects_queue_depth\{#{n}\} \d+$/m
    assert body =~ ~r/^breakwater_subjects_rejected_total\{#{n},reason="circuit_open"\} \d+$/m
    assert body =~ ~r/^# TYPE breakwater_subjects_events_total counter$/m

    # Subjects fed only depth reports have no series of the signals they never measured.
    quiet = subjects |> Enum.drop(150) |> Enum.find(&(&1 in detailed))
    assert quiet != nil
    refute body =~ ~s(breakwater_latency_p95_ms{node="#{node()}",subject="#{quiet}"})
    refute body =~ ~s(breakwater_inflight{node="#{node()}",subject="#{quiet}"})
    assert body =~ ~s(breakwater_overloaded{node="#{node()}",subject="#{quiet}",signal="depth"} 0)

    # Bounded by the detailed subjects: about 3.7 KB each here (some 50 series of
    # 70-80 bytes, node label included), so 1 000 of them stay under 4 MB.
    assert byte_size(body) < 4_000_000
  end

  test "/metrics is rendered at most once a second and shared", %{port: port, subjects: [s | _]} do
    {200, first} = get_body(port, "/metrics")
    # A change inside the second is not in the next scrape...
    :ok = Breakwater.reset(s)
    :ok = Breakwater.force_open(s)
    {200, second} = get_body(port, "/metrics")

    if second != first do
      # ...unless the second had just ended: then the next one is shared again.
      {200, third} = get_body(port, "/metrics")
      assert third == second
    end

    Process.sleep(1_100)
    {200, later} = get_body(port, "/metrics")
    refute later == first
  end

  test "64 concurrent scrapes with 500 idle connections held: bounded memory, liveness always 200",
       %{port: port} do
    held =
      for _ <- 1..500 do
        {:ok, sock} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 10_000)
        sock
      end

    on_exit(fn -> Enum.each(held, &:gen_tcp.close/1) end)
    Process.sleep(100)

    # Liveness with the connections held, before any scrape.
    for _ <- 1..5, do: assert({200, _} = get(port, "/health/liveness"))

    :erlang.garbage_collect()
    base_binary = :erlang.memory(:binary)
    base_total = :erlang.memory(:total)
    base_rss = rss_kb()
    parent = self()

    # Memory sampled every 5 ms while the scrapes run; liveness probed every 50 ms.
    sampler =
      spawn_link(fn ->
        loop = fn loop, peak ->
          receive do
            :stop -> send(parent, {:peak, peak})
          after
            5 ->
              loop.(loop, %{
                binary: max(peak.binary, :erlang.memory(:binary)),
                total: max(peak.total, :erlang.memory(:total)),
                rss: max(peak.rss, rss_kb())
              })
          end
        end

        loop.(loop, %{binary: 0, total: 0, rss: 0})
      end)

    prober =
      spawn_link(fn ->
        loop = fn loop, codes ->
          receive do
            :stop -> send(parent, {:probes, codes})
          after
            50 ->
              {code, _} = get(port, "/health/liveness")
              loop.(loop, [code | codes])
          end
        end

        loop.(loop, [])
      end)

    # Three waves of 64 concurrent scrapes, a second apart: each wave shares renders.
    {micros, results} =
      :timer.tc(fn ->
        for _wave <- 1..3 do
          Process.sleep(1_000)

          1..64
          |> Task.async_stream(fn _ -> get(port, "/metrics") end,
            max_concurrency: 64,
            timeout: 60_000
          )
          |> Enum.map(fn {:ok, r} -> r end)
        end
        |> Enum.concat()
      end)

    send(sampler, :stop)
    send(prober, :stop)
    assert_receive {:peak, peak}, 5_000
    assert_receive {:probes, probes}, 30_000

    sizes = for {200, bytes} <- results, do: bytes

    assert length(sizes) == 192,
           "every scrape answered 200: #{inspect(Enum.frequencies_by(results, &elem(&1, 0)))}"

    body_bytes = Enum.max(sizes)

    IO.puts(
      "\n[operations] 10 000+ subjects, 500 idle connections held, 3 waves of 64 concurrent scrapes " <>
        "in #{div(micros, 1_000)} ms: body #{body_bytes} B; peak over the start: binary " <>
        "#{div(peak.binary - base_binary, 1_024)} KiB, total #{div(peak.total - base_total, 1_024)} KiB, " <>
        "RSS #{div(peak.rss - base_rss, 1_024)} MiB (peak RSS #{div(peak.rss, 1_024)} MiB); " <>
        "liveness probes: #{inspect(Enum.frequencies(probes))}"
    )

    assert probes != [] and Enum.all?(probes, &(&1 == 200))
    # Shared renders: memory grows by a few bodies, not 64 of them.
    assert peak.binary - base_binary < 16 * body_bytes
    assert peak.total - base_total < 64 * 1_024 * 1_024
  end
end
