defmodule Breakwater.Ledgers do
  @moduledoc """
  The ledger workers, their registry, and the list of attachments they are rebuilt
  from.

  Attachments (from the `ledgers` configuration key and from
  `Breakwater.attach_ledger/3`) are kept in the `breakwater_ledgers` table, which
  outlives every process here (see `Breakwater.Tables`): `{subject, module, opts}`.
  The processes are a supervisor of their own, `rest_for_one`:

  ```text
  Breakwater.Ledgers (rest_for_one)
  ├── Breakwater.Ledger.Names       Registry: subject → worker (what registers in it starts after it)
  ├── Breakwater.Ledger.Supervisor  DynamicSupervisor of Breakwater.Ledger.Worker
  └── Breakwater.Ledger.Attacher    starts a worker for every attachment
  ```

  A worker that dies is restarted by its supervisor. If the registry dies, the workers
  registered in it lose their names: the supervisor after it is restarted too, and the
  attacher after that starts every attached worker again. If the worker supervisor
  dies, the attacher is restarted after it and starts them again. A worker that stops
  nacks the batch it had in flight, and one that is killed has it returned by the
  native layer, so a restart loses no event: it is delivered again (counted in
  `redelivered_events`).
  """
  use Supervisor
  require Breakwater.Log, as: Log

  @table :breakwater_ledgers
  @names Breakwater.Ledger.Names

  @doc false
  def start_link(opts), do: Supervisor.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts) do
    children = [
      %{
        id: @names,
        start: {__MODULE__, :start_named, [[@names | partition_names()], Registry, [registry()]]},
        type: :supervisor
      },
      %{
        id: Breakwater.Ledger.Supervisor,
        start:
          {__MODULE__, :start_named,
           [
             [Breakwater.Ledger.Supervisor],
             DynamicSupervisor,
             [[strategy: :one_for_one, name: Breakwater.Ledger.Supervisor]]
           ]},
        type: :supervisor
      },
      %{
        id: Breakwater.Ledger.Attacher,
        start:
          {__MODULE__, :start_named,
           [[Breakwater.Ledger.Attacher], Breakwater.Ledger.Attacher, [[]]]}
      }
    ]

    # As the top supervisor: kills one after another do not exhaust it.
    Supervisor.init(children, strategy: :rest_for_one, max_restarts: 100, max_seconds: 10)
  end

  defp registry, do: [keys: :unique, name: @names, partitions: 1]

  defp partition_names,
    do: [Module.concat(@names, "PIDPartition0"), Module.concat(@names, "KeyPartition0")]

  @doc false
  # `module.start_link(args...)` once the processes registered under `names` are gone.
  # When this supervisor was killed, its children (and the registry's partitions) exit
  # on their own a moment later, still holding their names: starting before they are
  # gone would fail with `already_started`, again and again.
  def start_named(names, module, args) do
    for name <- names, pid = Process.whereis(name), is_pid(pid) do
      ref = Process.monitor(pid)

      receive do
        {:DOWN, ^ref, :process, ^pid, _} -> :ok
      after
        5_000 -> Process.demonitor(ref, [:flush])
      end
    end

    apply(module, :start_link, args)
  end

  # ---- attachments --------------------------------------------------------------------

  @doc """
  Attaches `module` to `subject` (validated by the caller): records the attachment and
  starts its worker. `{:error, :already_attached}` when the subject has one.
  """
  @spec attach(binary, module, keyword) :: :ok | {:error, term}
  def attach(subject, module, opts) do
    if :ets.insert_new(@table, {subject, module, opts}) do
      case start_worker(subject, module, opts) do
        :ok ->
          :ok

        {:error, _} = error ->
          :ets.delete(@table, subject)
          error
      end
    else
      {:error, :already_attached}
    end
  end

  @doc "Detaches `subject`'s ledger: forgets the attachment, stops the worker."
  @spec detach(binary) :: :ok | {:error, :not_attached}
  def detach(subject) do
    case :ets.take(@table, subject) do
      [_] ->
        stop_worker(subject)
        :ok

      [] ->
        {:error, :not_attached}
    end
  end

  @doc "The attachment of `subject`: `{module, opts}` or `nil`."
  @spec attachment(binary) :: {module, keyword} | nil
  def attachment(subject) do
    case :ets.lookup(@table, subject) do
      [{_, module, opts}] -> {module, opts}
      [] -> nil
    end
  end

  @doc "Every attachment: `[{subject, module}]`, sorted by subject."
  @spec list() :: [{binary, module}]
  def list do
    @table |> :ets.select([{{:"$1", :"$2", :_}, [], [{{:"$1", :"$2"}}]}]) |> Enum.sort()
  rescue
    ArgumentError -> []
  end

  @doc "Subjects with an attachment."
  @spec subjects() :: [binary]
  def subjects do
    :ets.select(@table, [{{:"$1", :_, :_}, [], [:"$1"]}])
  rescue
    ArgumentError -> []
  end

  @doc false
  # Starts a worker for every attachment that has none (the attacher, after a restart).
  # Returns the subjects whose worker could not be started, with the reason.
  @spec start_all() :: [{binary, term}]
  def start_all, do: start_each(:ets.tab2list(@table))

  @doc false
  # Starts the workers of those of `subjects` still attached; as `start_all/0`.
  @spec start_again([binary]) :: [{binary, term}]
  def start_again(subjects), do: start_each(Enum.flat_map(subjects, &:ets.lookup(@table, &1)))

  defp start_each(attachments) do
    for {subject, module, opts} <- attachments,
        {:error, reason} <- [start_worker(subject, module, opts)],
        do: {subject, reason}
  end

  defp start_worker(subject, module, opts, attempts \\ 2) do
    spec = {Breakwater.Ledger.Worker, [subject: subject, module: module] ++ opts}

    case DynamicSupervisor.start_child(Breakwater.Ledger.Supervisor, spec) do
      {:ok, _pid} ->
        :ok

      {:error, {:already_started, pid}} ->
        if pid in children() or attempts == 0 do
          :ok
        else
          # A worker of a supervisor that died is still stopping (it nacks its batch
          # in flight) and holds the name: start ours once it is gone.
          await_exit(pid)
          start_worker(subject, module, opts, attempts - 1)
        end

      {:error, reason} ->
        {:error, reason}
    end
  catch
    :exit, reason -> {:error, {:ledger_supervisor_unavailable, reason}}
  end

  defp children do
    for {_, pid, _, _} <- DynamicSupervisor.which_children(Breakwater.Ledger.Supervisor),
        do: pid
  end

  defp await_exit(pid) do
    ref = Process.monitor(pid)

    receive do
      {:DOWN, ^ref, :process, ^pid, _} -> :ok
    after
      10_000 -> Process.demonitor(ref, [:flush])
    end
  end

  @doc false
  # Stops `subject`'s worker, if it runs (its batch in flight goes back to the spool).
  @spec stop_worker(binary) :: :ok
  def stop_worker(subject) do
    case Registry.lookup(@names, subject) do
      [{pid, _}] -> DynamicSupervisor.terminate_child(Breakwater.Ledger.Supervisor, pid)
      [] -> :ok
    end

    :ok
  catch
    :exit, _ -> :ok
  end

  @doc false
  # Stops every worker (application stop: their batches in flight go back to the spool).
  @spec stop_all() :: :ok
  def stop_all do
    for {_, pid, _, _} <- DynamicSupervisor.which_children(Breakwater.Ledger.Supervisor),
        is_pid(pid) do
      DynamicSupervisor.terminate_child(Breakwater.Ledger.Supervisor, pid)
    end

    :ok
  catch
    :exit, _ -> :ok
  end
end

defmodule Breakwater.Ledger.Attacher do
  @moduledoc false
  # Starts a worker for every attachment when it starts: after the worker supervisor
  # (re)starts, since it comes after it in a rest_for_one supervisor. A worker that
  # cannot be started is tried again every 100 ms until it starts or its attachment is
  # gone: the registry may be restarting at that very moment (a kill of its partition
  # while the worker supervisor restarts: the new worker's registration links to the
  # partition that just died and fails with noproc), and an attachment must never be
  # left without a worker. Holds the subjects still to start.
  use GenServer
  require Breakwater.Log, as: Log

  @retry_ms 100

  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @impl true
  def init(_opts), do: {:ok, retry(Breakwater.Ledgers.start_all(), %{})}

  @impl true
  def handle_info(:retry, failing),
    do: {:noreply, retry(Breakwater.Ledgers.start_again(Map.keys(failing)), failing)}

  def handle_info(_other, failing), do: {:noreply, failing}

  # Logs each subject once when it starts failing, and once when its worker started.
  defp retry(failures, failing) do
    now = Map.new(failures)

    for {subject, reason} <- failures, not Map.has_key?(failing, subject) do
      Log.error(
        "breakwater could not re-attach the ledger of #{inspect(subject)}: " <>
          "#{inspect(reason)}; trying again every #{@retry_ms} ms"
      )
    end

    for subject <- Map.keys(failing), not Map.has_key?(now, subject) do
      Log.info("breakwater re-attached the ledger of #{inspect(subject)}")
    end

    if now != %{}, do: Process.send_after(self(), :retry, @retry_ms)
    now
  end
end
