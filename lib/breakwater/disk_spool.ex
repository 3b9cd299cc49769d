defmodule Breakwater.DiskSpool do
  @moduledoc """
  The disk spool: where events go when the memory pool has no room for a
  subject whose policy says `overflow: :disk`, and where the memory spool goes when
  the application stops.

  ## Layout

  Each subject has a directory under `spool_dir`, named by the SHA-256 of the subject
  (any binary is a valid subject; file names are not), holding a `subject` file with
  the subject's name and *generations*: OTP `disk_log` halt logs in internal format
  (checksummed, repaired on open), one event per item, named by a 16-digit
  generation number. At most one generation is open for writing; it is closed and a
  new one opened when it reaches `disk_file_bytes`. A subject may hold at most
  `disk_max_bytes` of generations; beyond that, writes fail (counted, logged).

  ## Order

  Delivery is FIFO per subject. Once a subject has overflowed, every new event goes to
  disk after the older ones until the disk spool is empty (the native flag
  `disk_pending`). Consumers only ever drain memory: when a subject's memory spool is
  empty, `refill/2` moves the oldest events on disk back into memory (as many as fit),
  so `Breakwater.drain/2` and the ledger workers see disk events in order, and a fully
  read generation is deleted. On application stop, `flush_all/0` writes each subject's
  memory spool into a generation numbered *before* every existing one (memory holds
  the oldest events), and the next start replays it first.

  ## Accounting

  Every flow is counted in the subject's native counters, so that at every moment
  `offered + disk_recovered = delivered + spooled (memory) + disk_pending + dropped`:
  `overflow_events` (to disk), `evacuated_events` (memory → disk at stop),
  `refilled_events` (disk → memory), `disk_dropped_events` (a write that failed),
  `disk_recovered_events` (events found at start that this node had not counted; a
  shortfall is counted as dropped and logged).

  A read cursor per generation (`<gen>.cursor`, the number of its events already moved
  to memory) keeps a restart from replaying them; a crash between a move and the
  cursor write can replay one chunk (at least once).
  """
  use GenServer
  require Breakwater.Log, as: Log

  alias Breakwater.Native

  @table :breakwater_disk
  @first_gen 1_000_000_000_000
  @chunk 1_000

  # ---- callers ----------------------------------------------------------------

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc """
  Appends `event` (an overflow from the memory pool) to `subject`'s disk spool. On a
  write error the event is counted as dropped and `{:reject, :pool_exhausted,
  retry_after_ms}` returned.
  """
  @spec append(binary, binary) :: :ok | {:reject, :pool_exhausted, non_neg_integer}
  def append(subject, event) do
    case write(subject, event, 3) do
      :ok ->
        :ok

      {:error, reason} ->
        Native.disk_dropped(subject, 1, byte_size(event))
        Breakwater.History.dropped(subject, 1)
        log_write_error(subject, reason)

        {:reject, :pool_exhausted,
         Breakwater.PolicyStore.get(subject).retry_after_seconds * 1_000}
    end
  end

  defp write(subject, event, attempts) do
    with {:ok, log} <- writer(subject) do
      case :disk_log.log(log, event) do
        :ok ->
          :ok

        {:error, :no_such_log} when attempts > 0 ->
          write(subject, event, attempts - 1)

        {:error, {:full, _}} when attempts > 0 ->
          with :ok <- GenServer.call(__MODULE__, {:rotate, subject, log}),
               do: write(subject, event, attempts - 1)

        {:error, reason} ->
          {:error, reason}
      end
    end
  end

  defp writer(subject) do
    case :ets.lookup(@table, {:writer, subject}) do
      [{_, log}] -> {:ok, log}
      [] -> GenServer.call(__MODULE__, {:open_writer, subject})
    end
  rescue
    # The disk spool process (and its table) is restarting: the write fails, counted.
    ArgumentError -> {:error, {:disk_spool_unavailable, :restarting}}
  catch
    :exit, reason -> {:error, {:disk_spool_unavailable, reason}}
  end

  @doc "True when `subject` has events in the disk spool."
  @spec pending?(binary) :: boolean
  def pending?(subject) do
    :ets.member(@table, {:pending, subject})
  rescue
    ArgumentError -> false
  end

  @doc """
  Moves up to `max` of `subject`'s oldest disk events into memory (as many as the pool
  takes). Returns how many moved.
  """
  @spec refill(binary, pos_integer) :: non_neg_integer
  def refill(subject, max), do: GenServer.call(__MODULE__, {:refill, subject, max}, 30_000)

  @doc "Writes every subject's memory spool to disk (application stop). Returns events written."
  @spec flush_all() :: non_neg_integer
  def flush_all, do: GenServer.call(__MODULE__, :flush_all, :infinity)

  @doc "Events and files on disk per subject: `%{subject => %{events: n, files: n}}`."
  @spec info() :: %{binary => %{events: non_neg_integer, files: non_neg_integer}}
  def info, do: GenServer.call(__MODULE__, :info)

  # ---- the server -------------------------------------------------------------------

  @impl true
  def init(opts) do
    dir = Keyword.fetch!(opts, :dir)
    file_bytes = Keyword.fetch!(opts, :file_bytes)
    max_bytes = Keyword.fetch!(opts, :max_bytes)

    with :ok <- writable(dir) do
      :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])

      state = %{
        dir: dir,
        file_bytes: file_bytes,
        max_files: max(div(max_bytes, file_bytes), 1),
        subjects: %{}
      }

      {:ok, recover(state)}
    end
  end

  defp writable(dir) do
    probe = Path.join(dir, ".breakwater-write-probe")

    with :ok <- File.mkdir_p(dir),
         :ok <- File.write(probe, "ok"),
         :ok <- File.rm(probe) do
      :ok
    else
      {:error, reason} ->
        message = "spool_dir #{inspect(dir)} is not writable: #{:file.format_error(reason)}"
        Log.error(message)
        {:stop, {:spool_dir_not_writable, dir, reason}}
    end
  end

  @impl true
  def handle_call({:open_writer, subject}, _from, state) do
    case :ets.lookup(@table, {:writer, subject}) do
      [{_, log}] ->
        {:reply, {:ok, log}, state}

      [] ->
        {reply, state} = open_writer(state, subject)
        {:reply, reply, state}
    end
  end

  def handle_call({:rotate, subject, log}, _from, state) do
    case :ets.lookup(@table, {:writer, subject}) do
      [{_, ^log}] ->
        state = close_writer(state, subject)

        case open_writer(state, subject) do
          {{:ok, _}, state} -> {:reply, :ok, state}
          {error, state} -> {:reply, error, state}
        end

      _ ->
        {:reply, :ok, state}
    end
  end

  def handle_call({:refill, subject, max}, _from, state) do
    {moved, state} = refill_loop(state, subject, max, 0)
    {:reply, moved, state}
  end

  def handle_call(:flush_all, _from, state) do
    {n, state} =
      Enum.reduce(Native.subjects(), {0, state}, fn subject, {n, state} ->
        {m, state} = flush(state, subject)
        {n + m, state}
      end)

    {:reply, n, state}
  end

  def handle_call(:info, _from, state) do
    info =
      Map.new(state.subjects, fn {subject, sub} ->
        {subject, %{events: disk_events(sub), files: length(sub.gens)}}
      end)

    {:reply, info, state}
  end

  @impl true
  def terminate(_reason, state) do
    for {_subject, sub} <- state.subjects do
      if sub.writer, do: :disk_log.close(log_name(sub, sub.writer))
      if sub.reader, do: :disk_log.close(sub.reader.log)
    end

    :ok
  end

  # ---- subjects and generations ----------------------------------------------------

  defp subject_state(state, subject) do
    case state.subjects do
      %{^subject => sub} ->
        {:ok, sub, state}

      _ ->
        dir = Path.join(state.dir, Base.encode16(:crypto.hash(:sha256, subject), case: :lower))

        with :ok <- File.mkdir_p(dir),
             :ok <- File.write(Path.join(dir, "subject"), subject) do
          sub = new_sub(subject, dir)
          {:ok, sub, put_sub(state, sub)}
        else
          {:error, reason} -> {:error, {:spool_dir, dir, reason}}
        end
    end
  end

  defp new_sub(subject, dir),
    do: %{
      subject: subject,
      dir: dir,
      gens: [],
      counts: %{},
      cursors: %{},
      writer: nil,
      reader: nil
    }

  defp put_sub(state, sub), do: put_in(state.subjects[sub.subject], sub)

  defp gen_file(sub, gen),
    do: Path.join(sub.dir, String.pad_leading(Integer.to_string(gen), 16, "0") <> ".log")

  defp cursor_file(sub, gen),
    do: Path.join(sub.dir, String.pad_leading(Integer.to_string(gen), 16, "0") <> ".cursor")

  defp log_name(sub, gen), do: {__MODULE__, sub.subject, gen}

  defp open_log(name, file, mode) do
    opts = [
      name: name,
      file: String.to_charlist(file),
      type: :halt,
      format: :internal,
      mode: mode
    ]

    case :disk_log.open(opts) do
      {:ok, log} ->
        {:ok, log}

      {:repaired, log, {:recovered, n}, {:badbytes, bad}} ->
        Log.warning(
          "breakwater disk spool #{file} was repaired: #{n} events recovered, #{bad} bytes unreadable"
        )

        {:ok, log}

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp open_writer(state, subject) do
    case subject_state(state, subject) do
      {:ok, sub, state} -> open_writer(state, subject, sub)
      {:error, _} = error -> {error, state}
    end
  end

  defp open_writer(state, subject, sub) do
    if length(sub.gens) >= state.max_files do
      {{:error, :disk_full}, state}
    else
      gen = if sub.gens == [], do: @first_gen, else: List.last(sub.gens) + 1
      name = log_name(sub, gen)
      file = gen_file(sub, gen)

      case open_log(name, file, :read_write) do
        {:ok, log} ->
          :ok = :disk_log.change_size(log, state.file_bytes)
          :ets.insert(@table, [{{:writer, subject}, log}, {{:pending, subject}, true}])
          Native.set_disk_pending(subject, true)
          sub = %{sub | gens: sub.gens ++ [gen], writer: gen, counts: Map.put(sub.counts, gen, 0)}
          {{:ok, log}, put_sub(state, sub)}

        {:error, reason} ->
          {{:error, reason}, state}
      end
    end
  end

  # Closes the writer generation, counting what was written to it.
  defp close_writer(state, subject) do
    case state.subjects[subject] do
      %{writer: gen} = sub when gen != nil ->
        name = log_name(sub, gen)
        :ets.delete(@table, {:writer, subject})
        written = written_items(name)
        :disk_log.close(name)
        put_sub(state, %{sub | writer: nil, counts: Map.put(sub.counts, gen, written)})

      _ ->
        state
    end
  end

  defp written_items(log) do
    case :disk_log.info(log) do
      info when is_list(info) -> Keyword.get(info, :no_written_items, 0)
      _ -> 0
    end
  end

  defp disk_events(sub) do
    written =
      Enum.reduce(sub.gens, 0, fn gen, acc ->
        n =
          if gen == sub.writer,
            do: written_items(log_name(sub, gen)),
            else: Map.get(sub.counts, gen, 0)

        acc + n
      end)

    max(written - Enum.sum(Map.values(sub.cursors)), 0)
  end

  # ---- refill: oldest disk events back into memory -------------------------------------

  defp refill_loop(state, _subject, max, moved) when moved >= max, do: {moved, state}

  defp refill_loop(state, subject, max, moved) do
    case state.subjects[subject] do
      nil ->
        {moved, state}

      %{reader: nil} = sub ->
        case start_reader(state, sub) do
          {:ok, state} -> refill_loop(state, subject, max, moved)
          {:empty, state} -> {moved, finish_if_empty(state, subject)}
        end

      %{reader: %{buffer: []}} = sub ->
        case next_chunk(sub) do
          {:ok, sub} ->
            refill_loop(put_sub(state, sub), subject, max, moved)

          {:eof, sub} ->
            state = state |> put_sub(sub) |> finish_generation(subject)
            refill_loop(state, subject, max, moved)
        end

      %{reader: reader} = sub ->
        {n, rest} = move(subject, reader.buffer, max - moved, 0)
        reader = %{reader | buffer: rest, moved: reader.moved + n}
        File.write!(cursor_file(sub, reader.gen), Integer.to_string(reader.moved))
        cursors = Map.put(sub.cursors, reader.gen, reader.moved)
        state = put_sub(state, %{sub | reader: reader, cursors: cursors})

        if rest == [] and n > 0,
          do: refill_loop(state, subject, max, moved + n),
          else: {moved + n, state}
    end
  end

  defp move(_subject, rest, 0, n), do: {n, rest}
  defp move(_subject, [], _left, n), do: {n, []}

  defp move(subject, [event | rest] = all, left, n) do
    case Breakwater.History.observe(subject, Native.refill(subject, event)) do
      :ok -> move(subject, rest, left - 1, n + 1)
      _full -> {n, all}
    end
  end

  # Opens the oldest generation for reading; the writer is closed first if it is the
  # oldest (an empty writer is left alone).
  defp start_reader(state, %{gens: []}), do: {:empty, state}

  defp start_reader(state, %{gens: [gen | _]} = sub) do
    cond do
      gen == sub.writer and written_items(log_name(sub, gen)) == 0 ->
        {:empty, state}

      gen == sub.writer ->
        state = close_writer(state, sub.subject)
        start_reader(state, state.subjects[sub.subject])

      true ->
        name = {__MODULE__, :reader, sub.subject, gen}

        case open_log(name, gen_file(sub, gen), :read_only) do
          {:ok, log} ->
            moved = Map.get(sub.cursors, gen, 0)
            reader = %{gen: gen, log: log, cont: :start, buffer: [], moved: moved, skip: moved}
            {:ok, put_sub(state, %{sub | reader: reader})}

          {:error, reason} ->
            Log.error(
              "breakwater disk spool #{gen_file(sub, gen)} cannot be read: #{inspect(reason)}; set aside"
            )

            set_aside(sub, gen)
            sub = %{sub | gens: tl(sub.gens)}
            start_reader(put_sub(state, sub), sub)
        end
    end
  end

  defp next_chunk(%{reader: r} = sub) do
    case :disk_log.chunk(r.log, r.cont, @chunk) do
      :eof ->
        {:eof, sub}

      {:error, reason} ->
        Log.error("breakwater disk spool #{gen_file(sub, r.gen)}: read error #{inspect(reason)}")

        {:eof, sub}

      {cont, items, bad} ->
        Log.error(
          "breakwater disk spool #{gen_file(sub, r.gen)}: #{bad} unreadable bytes skipped"
        )

        {:ok, %{sub | reader: buffer(r, cont, items)}}

      {cont, items} ->
        {:ok, %{sub | reader: buffer(r, cont, items)}}
    end
  end

  defp buffer(r, cont, items) do
    skip = min(r.skip, length(items))
    %{r | cont: cont, buffer: Enum.drop(items, skip), skip: r.skip - skip}
  end

  defp finish_generation(state, subject) do
    sub = state.subjects[subject]
    %{gen: gen, log: log} = sub.reader
    :disk_log.close(log)
    File.rm(gen_file(sub, gen))
    File.rm(cursor_file(sub, gen))

    sub = %{
      sub
      | reader: nil,
        gens: List.delete(sub.gens, gen),
        counts: Map.delete(sub.counts, gen),
        cursors: Map.delete(sub.cursors, gen)
    }

    put_sub(state, sub)
  end

  # With nothing left on disk, new events may go to memory again.
  defp finish_if_empty(state, subject) do
    sub = state.subjects[subject]

    only_empty_writer =
      case sub.gens do
        [] -> true
        [gen] -> gen == sub.writer and written_items(log_name(sub, gen)) == 0
        _ -> false
      end

    if only_empty_writer and sub.reader == nil do
      state = close_writer(state, subject)
      sub = state.subjects[subject]
      for gen <- sub.gens, do: File.rm(gen_file(sub, gen))
      :ets.delete(@table, {:pending, subject})
      Native.set_disk_pending(subject, false)
      put_sub(state, %{sub | gens: [], counts: %{}, cursors: %{}})
    else
      state
    end
  end

  defp read_cursor(sub, gen) do
    case File.read(cursor_file(sub, gen)) do
      {:ok, text} ->
        case Integer.parse(String.trim(text)) do
          {n, ""} when n >= 0 -> n
          _ -> 0
        end

      {:error, _} ->
        0
    end
  end

  defp set_aside(sub, gen) do
    file = gen_file(sub, gen)
    File.rename(file, file <> ".unreadable")
  end

  # ---- flush at stop -----------------------------------------------------------------

  defp flush(state, subject) do
    with %{counters: %{spooled_events: n}} when n > 0 <- Native.status(subject),
         _ = Native.nack_all(subject),
         {:ok, sub, state} <- subject_state(state, subject) do
      # Memory holds the oldest events: they go in a generation before every other.
      first =
        [sub.gens, if(sub.reader, do: [sub.reader.gen], else: [])]
        |> Enum.concat()
        |> Enum.min(fn -> @first_gen + 1 end)

      gen = first - 1

      case open_log(log_name(sub, {:flush, gen}), gen_file(sub, gen), :read_write) do
        {:ok, log} ->
          written = flush_batches(subject, log, 0)
          :disk_log.close(log)
          :ets.insert(@table, {{:pending, subject}, true})
          Native.set_disk_pending(subject, true)

          sub = %{
            sub
            | gens: Enum.sort([gen | sub.gens]),
              counts: Map.put(sub.counts, gen, written)
          }

          {written, put_sub(state, sub)}

        {:error, reason} ->
          flush_failed(subject, reason)
          {0, state}
      end
    else
      {:error, reason} ->
        flush_failed(subject, reason)
        {0, state}

      _nothing_spooled ->
        {0, state}
    end
  end

  defp flush_failed(subject, reason) do
    Log.error(
      "breakwater could not flush #{inspect(subject)} to disk: #{inspect(reason)}; events stay in memory"
    )
  end

  defp flush_batches(subject, log, n) do
    case Native.drain(subject, 10_000) do
      {:ok, id, events} ->
        case :disk_log.log_terms(log, events) do
          :ok ->
            :ok = :disk_log.sync(log)
            Breakwater.History.observe(subject, Native.evacuate(subject, id))
            flush_batches(subject, log, n + length(events))

          {:error, reason} ->
            Native.nack(subject, id)

            Log.error(
              "breakwater could not flush #{inspect(subject)} to disk: #{inspect(reason)}; events stay in memory"
            )

            n
        end

      _ ->
        n
    end
  end

  # ---- recovery at start -----------------------------------------------------------------

  defp recover(state) do
    case File.ls(state.dir) do
      {:ok, entries} ->
        Enum.reduce(entries, state, fn entry, state ->
          path = Path.join(state.dir, entry)

          case File.read(Path.join(path, "subject")) do
            {:ok, subject} when byte_size(subject) > 0 -> recover_subject(state, subject, path)
            _ -> state
          end
        end)

      {:error, _} ->
        state
    end
  end

  defp recover_subject(state, subject, dir) do
    sub = new_sub(subject, dir)

    # Unreadable generations are set aside (renamed) and left out.
    counts =
      for file <- File.ls!(dir),
          String.ends_with?(file, ".log"),
          {gen, ".log"} <- [Integer.parse(file)],
          n = count_items(sub, gen),
          n != nil,
          into: %{},
          do: {gen, n}

    cursors =
      for {gen, n} <- counts, c = min(read_cursor(sub, gen), n), c > 0, into: %{}, do: {gen, c}

    sub = %{sub | gens: counts |> Map.keys() |> Enum.sort(), counts: counts, cursors: cursors}
    on_disk = disk_events(sub)

    # Reads create no subject: make it (its events are on disk) before reading it.
    _ = Native.touch(subject)

    case Native.status(subject) do
      %{counters: %{disk_pending_events: known}} ->
        reconcile(subject, on_disk, known)

        if on_disk > 0 do
          :ets.insert(@table, {{:pending, subject}, true})
          Native.set_disk_pending(subject, true)
        end

        put_sub(state, sub)

      error ->
        Log.error("breakwater disk spool of #{inspect(subject)} not recovered: #{inspect(error)}")

        state
    end
  end

  defp reconcile(subject, on_disk, known) do
    cond do
      on_disk > known ->
        Native.disk_recovered(subject, on_disk - known)

      on_disk < known ->
        Log.warning(
          "breakwater: #{known - on_disk} events of #{inspect(subject)} counted on disk are missing; counted as dropped"
        )

        Native.disk_dropped(subject, known - on_disk, 0)

      true ->
        :ok
    end
  end

  defp count_items(sub, gen) do
    name = {__MODULE__, :count, sub.subject, gen}

    case open_log(name, gen_file(sub, gen), :read_only) do
      {:ok, log} ->
        n = count_chunks(log, :start, 0)
        :disk_log.close(log)
        n

      {:error, reason} ->
        Log.error(
          "breakwater disk spool #{gen_file(sub, gen)} cannot be read: #{inspect(reason)}; set aside"
        )

        set_aside(sub, gen)
        nil
    end
  end

  defp count_chunks(log, cont, n) do
    case :disk_log.chunk(log, cont, @chunk) do
      {cont, items} -> count_chunks(log, cont, n + length(items))
      {cont, items, _bad} -> count_chunks(log, cont, n + length(items))
      _ -> n
    end
  end

  defp log_write_error(subject, reason) do
    Log.error(
      "breakwater disk spool write for #{inspect(subject)} failed: #{inspect(reason)}; event dropped and counted"
    )
  end
end
