defmodule Breakwater.Application do
  @moduledoc """
  Starts Breakwater: validates the application environment (an invalid `sys.config`
  stops the start with a message naming each key, value and expectation), creates or
  reconfigures the native registry, then starts the supervision tree:

  ```text
  Breakwater.Supervisor (rest_for_one)
  ├── Breakwater.Tables             ETS owner; does nothing else
  ├── Breakwater.Alerts             alert manager (alarm_handler, Logger)
  ├── Breakwater.DiskSpool          disk overflow and replay (disk_log per subject)
  ├── Breakwater.Ticker             breaker timer: time-based transitions without traffic
  ├── Breakwater.TaskSupervisor     runs call/3 functions and ledger calls under a timeout
  ├── Breakwater.Ledger.Names       Registry: subject → ledger worker
  └── Breakwater.Ledger.Supervisor  DynamicSupervisor of Breakwater.Ledger.Worker
  ```

  then applies the per-subject policies of the `subjects` key and attaches the
  ledgers of the `ledgers` key. On stop, the ledger workers are stopped first (their
  batches in flight go back to the spool) and every memory spool is written to the
  disk spool, to be replayed on the next start (R-D3).
  """
  use Application
  require Logger

  alias Breakwater.{Config, Native, Policy, PolicyStore}

  @impl true
  def start(_type, _args) do
    with {:ok, config} <- load_config(),
         :ok <- init_native(config),
         {:ok, sup} <- start_tree(config) do
      case configure_subjects(config) do
        :ok ->
          {:ok, sup}

        {:error, _} = error ->
          Supervisor.stop(sup)
          error
      end
    end
  end

  defp load_config do
    case Config.load(Application.get_all_env(:breakwater)) do
      {:ok, config} ->
        {:ok, config}

      {:error, reasons} ->
        message = "invalid :breakwater configuration:\n" <> Config.format_errors(reasons)
        Logger.error(message)
        {:error, {:invalid_configuration, message}}
    end
  end

  defp init_native(config) do
    native = %{
      max_subjects: config.max_subjects,
      ring_pool: Map.new(config.ring_pool),
      default_policy: Policy.to_native(config.default_policy)
    }

    case Native.init(native) do
      :ok ->
        :ok

      {:error, reasons} ->
        message = "invalid :breakwater configuration: #{inspect(reasons)}"
        Logger.error(message)
        {:error, {:invalid_configuration, message}}
    end
  end

  defp start_tree(config) do
    :persistent_term.put({Breakwater, :limits}, %{
      history_limit: config.history_limit,
      events_limit: config.events_limit
    })

    :persistent_term.put({Breakwater, :config}, config)

    children = [
      Breakwater.Tables,
      Breakwater.Alerts,
      {Breakwater.DiskSpool,
       dir: config.spool_dir, file_bytes: config.disk_file_bytes, max_bytes: config.disk_max_bytes},
      {Breakwater.Ticker, tick_ms: config.tick_ms},
      {Task.Supervisor, name: Breakwater.TaskSupervisor},
      {Registry, keys: :unique, name: Breakwater.Ledger.Names},
      {DynamicSupervisor, strategy: :one_for_one, name: Breakwater.Ledger.Supervisor}
    ]

    Supervisor.start_link(children, strategy: :rest_for_one, name: Breakwater.Supervisor)
  end

  defp configure_subjects(config) do
    PolicyStore.put(:default, config.default_policy)

    Enum.reduce_while(config.subjects, :ok, fn {subject, policy}, :ok ->
      case Breakwater.put_policy(subject, policy) do
        :ok ->
          {:cont, :ok}

        {:error, reasons} ->
          {:halt,
           {:error, {:invalid_configuration, "subjects.#{inspect(subject)}: #{inspect(reasons)}"}}}
      end
    end)
  end
end
