defmodule Breakwater.FaultChild do
  @moduledoc false
  # The child VM of the fault-matrix tests (test/breakwater/fault_matrix_test.exs),
  # started as a plain `erl` OS process so that the test can kill it with SIGKILL.
  #
  # It is told what to do by environment variables:
  #
  #   * BW_DIR: the spool_dir; BW_DURABILITY: crash | memory;
  #   * BW_ROLE: `load` (start, recover, produce and maybe deliver until killed) or
  #     `drain` (start, recover, deliver everything, write the final status, halt);
  #   * BW_SCENARIO: memory | overflow | ledger (see `policy/1` and `load/2`);
  #   * BW_ROUND: the round number, part of every event id (ids never repeat);
  #   * BW_POOL_SEGMENTS: the pool's size (default 64 segments of 64 events);
  #   * BW_OUT: a directory for what must survive the child's death: one file per
  #     producer of the ids whose enqueue returned :ok (written after the :ok), the
  #     ids the ledger was handed (written before the ledger returns :ok, so before
  #     the ack), and the final status (`drain` only).
  #
  # Everything it writes goes through raw files, one write(2) per line: once a write
  # returns, the line is in the page cache and survives the VM.

  @subject "fault"
  @producers 4

  def main do
    role = System.fetch_env!("BW_ROLE")
    out = System.fetch_env!("BW_OUT")
    scenario = System.fetch_env!("BW_SCENARIO")
    round = System.fetch_env!("BW_ROUND")
    File.mkdir_p!(out)

    Application.put_env(:breakwater, :spool_dir, System.fetch_env!("BW_DIR"))

    Application.put_env(
      :breakwater,
      :durability,
      String.to_existing_atom(System.fetch_env!("BW_DURABILITY"))
    )

    Application.put_env(:breakwater, :ring_pool,
      segments: String.to_integer(System.get_env("BW_POOL_SEGMENTS", "64")),
      segment_capacity: 64,
      segment_bytes: 64 * 136,
      max_event_bytes: 120
    )

    Application.put_env(:breakwater, :tick_ms, 20)
    Application.put_env(:breakwater, :subjects, [{@subject, policy(scenario)}])
    Application.put_env(:logger, :level, :warning)
    {:ok, _} = Application.ensure_all_started(:breakwater)

    case role do
      "load" -> load(scenario, round, out)
      "drain" -> drain(out)
      "script" -> script(out)
    end
  end

  defp policy("memory"),
    do: [max_segments: 64, warning_threshold: 100_000, critical_threshold: 200_000]

  defp policy(_overflowing),
    do: [
      max_segments: 4,
      overflow: :disk,
      warning_threshold: 100_000,
      critical_threshold: 200_000,
      open_timeout_ms: 50
    ]

  # Produces until killed, and delivers meanwhile: `memory` with a drainer slower
  # than the producers (the pool fills up but not at once), `ledger` through a ledger
  # worker; `overflow` delivers nothing (events spill into overflow files).
  defp load(scenario, round, out) do
    delivered = Path.join(out, "delivered")

    case scenario do
      "ledger" ->
        :persistent_term.put({__MODULE__, :delivered}, delivered)
        :ok = Breakwater.attach_ledger(@subject, Breakwater.FaultChild.Ledger, batch_size: 50)

      "memory" ->
        spawn_link(fn -> slow_drainer(open(delivered)) end)

      "overflow" ->
        :ok
    end

    # Sleep 1 ms every `every` events: some thousands of events per second each.
    every = if scenario == "memory", do: 1, else: 16

    for p <- 1..@producers do
      spawn_link(fn -> produce(round, p, out, every) end)
    end

    IO.puts("ready")
    Process.sleep(:infinity)
  end

  defp slow_drainer(delivered) do
    Process.sleep(50)

    case Breakwater.drain(@subject, 100) do
      {:ok, id, events} ->
        :ok = :file.write(delivered, Enum.map(events, &[id_of(&1), ?\n]))
        :ok = Breakwater.ack(@subject, id)

      :empty ->
        :ok
    end

    slow_drainer(delivered)
  end

  defp produce(round, p, out, every) do
    acks = open(Path.join(out, "acks-r#{round}-p#{p}"))
    produce(round, p, acks, every, 0)
  end

  defp produce(round, p, acks, every, seq) do
    id = "r#{round}p#{p}:#{seq}"
    # 100-byte events: the id, padded.
    event = id <> ":" <> String.duplicate(".", 99 - byte_size(id))

    case Breakwater.enqueue(@subject, event) do
      :ok -> :ok = :file.write(acks, [id, ?\n])
      {:reject, _, _} -> Process.sleep(1)
    end

    if rem(seq, every) == 0, do: Process.sleep(1)
    produce(round, p, acks, every, seq + 1)
  end

  # Delivers everything, then writes the final status and halts.
  defp drain(out) do
    delivered = open(Path.join(out, "delivered"))
    drain_loop(delivered)
    status = Breakwater.status(@subject)
    File.write!(Path.join(out, "status"), :erlang.term_to_binary(Map.delete(status, :ledger)))
    IO.puts("done")
    System.halt(0)
  end

  defp drain_loop(delivered) do
    case Breakwater.drain(@subject, 500) do
      {:ok, id, events} ->
        :ok = :file.write(delivered, Enum.map(events, &[id_of(&1), ?\n]))
        :ok = Breakwater.ack(@subject, id)
        drain_loop(delivered)

      :empty ->
        :ok
    end
  end

  # Commands from stdin, one per line, each answered by one line on stdout:
  #   enqueue FROM TO  ->  "enqueued ok=N spool_unavailable=N pool_exhausted=N"
  #   drain            ->  "drained N"
  #   status           ->  "status" (the status term written to BW_OUT/status)
  #   maintain         ->  "maintained" (the keeper's upkeep, run now)
  #   halt             ->  exits
  defp script(out) do
    acks = open(Path.join(out, "acks"))
    delivered = open(Path.join(out, "delivered"))
    IO.puts("ready")
    script_loop(out, acks, delivered)
  end

  defp script_loop(out, acks, delivered) do
    case IO.gets("") |> to_string() |> String.split() do
      ["enqueue", from, to] ->
        counts =
          Enum.reduce(String.to_integer(from)..(String.to_integer(to) - 1)//1, %{}, fn i, acc ->
            id = "n#{i}"

            key =
              case Breakwater.enqueue(@subject, id <> ":" <> String.duplicate(".", 90)) do
                :ok ->
                  :ok = :file.write(acks, [id, ?\n])
                  :ok

                {:reject, reason, _} ->
                  reason
              end

            Map.update(acc, key, 1, &(&1 + 1))
          end)

        IO.puts(
          "enqueued ok=#{counts[:ok] || 0} spool_unavailable=#{counts[:spool_unavailable] || 0} " <>
            "pool_exhausted=#{counts[:pool_exhausted] || 0}"
        )

      ["drain"] ->
        before = Breakwater.status(@subject).accounting.delivered
        drain_loop(delivered)
        IO.puts("drained #{Breakwater.status(@subject).accounting.delivered - before}")

      ["status"] ->
        status = Breakwater.status(@subject) |> Map.delete(:ledger)
        status = Map.put(status, :spool, Breakwater.Native.spool_info())
        File.write!(Path.join(out, "status"), :erlang.term_to_binary(status))
        IO.puts("status")

      ["maintain"] ->
        :ok = Breakwater.Spool.Keeper.run_now()
        IO.puts("maintained")

      ["halt"] ->
        System.halt(0)

      _ ->
        System.halt(0)
    end

    script_loop(out, acks, delivered)
  end

  @doc false
  def id_of(event), do: event |> :binary.split(":.") |> hd()

  defp open(path) do
    {:ok, f} = :file.open(String.to_charlist(path), [:append, :raw, :binary])
    f
  end

  defmodule Ledger do
    @moduledoc false
    # The ledger of the `ledger` scenario: writes the ids it is handed to the
    # `delivered` file, then answers :ok (the worker acks after).
    @behaviour Breakwater.Ledger

    @impl true
    def write_batch(_subject, events) do
      # Opened per batch: a raw file belongs to the process that opened it, and each
      # batch is written by a task of its own.
      path = :persistent_term.get({Breakwater.FaultChild, :delivered})
      {:ok, f} = :file.open(String.to_charlist(path), [:append, :raw, :binary])
      :ok = :file.write(f, Enum.map(events, &[Breakwater.FaultChild.id_of(&1), ?\n]))
      :file.close(f)
    end

    @impl true
    def health_check(_subject), do: :ok
  end
end
