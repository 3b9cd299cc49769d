defmodule Breakwater.Metrics.Scrape do
  @moduledoc """
  The bodies of `/metrics` and `/health`, each rendered at most once a second and
  shared by every client.

  `body/1` answers from the last rendering when it is less than a second old: a read
  of one ETS entry holding the body (a reference-counted binary, so no client copies
  it). Otherwise this process renders a new one, in a process of its own, one
  rendering of each kind at a time: a client that comes while a rendering runs waits
  for it, as many as come, and all get the same body. If a rendering fails, or takes
  longer than the client waits, the client gets the last body rendered.

  So N concurrent scrapes cost one rendering (bounded by `metrics_max_subjects`, see
  `Breakwater.Metrics`), not N. If this process is killed, the next request renders
  anew.
  """
  use GenServer
  require Breakwater.Log, as: Log

  @table :breakwater_metrics
  @max_age_ms 1_000
  @wait_ms 10_000

  @typedoc "What is rendered: the Prometheus exposition, or the health summary as JSON."
  @type kind :: :metrics | :health

  @doc false
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts, name: __MODULE__)

  @doc """
  The body of `kind`: at most a second old, rendered once for every client of that
  second.
  """
  @spec body(kind) :: binary
  def body(kind \\ :metrics) when kind in [:metrics, :health] do
    case cached(kind) do
      {body, at} ->
        if now() - at < @max_age_ms, do: body, else: fresh(kind, body)

      nil ->
        fresh(kind, nil)
    end
  end

  defp fresh(kind, previous) do
    GenServer.call(__MODULE__, {:body, kind}, @wait_ms)
  catch
    :exit, reason ->
      # Slow or gone: the last body, if there is one.
      if previous, do: previous, else: exit(reason)
  end

  defp cached(kind) do
    case :ets.lookup(@table, kind) do
      [{^kind, body, at}] -> {body, at}
      [] -> nil
    end
  rescue
    ArgumentError -> nil
  end

  defp render(:metrics), do: Breakwater.Metrics.prometheus()

  defp render(:health),
    do: IO.iodata_to_binary([Breakwater.HTTP.JSON.encode!(Breakwater.Metrics.health()), ?\n])

  # ---- server ------------------------------------------------------------------------

  @impl true
  def init(_opts), do: {:ok, %{rendering: %{}, waiting: %{}}}

  @impl true
  def handle_call({:body, kind}, from, state) do
    case cached(kind) do
      {body, at} when is_binary(body) ->
        if now() - at < @max_age_ms,
          do: {:reply, body, state},
          else: {:noreply, wait(state, kind, from)}

      nil ->
        {:noreply, wait(state, kind, from)}
    end
  end

  defp wait(state, kind, from) do
    state = update_in(state.waiting, &Map.update(&1, kind, [from], fn w -> [from | w] end))
    if Map.has_key?(state.rendering, kind), do: state, else: start(state, kind)
  end

  @impl true
  def handle_info({:rendered, kind, pid, body, at}, state) do
    case state.rendering do
      %{^kind => {^pid, ref}} ->
        Process.demonitor(ref, [:flush])
        put(kind, body, at)
        {:noreply, reply_all(state, kind, body)}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:DOWN, ref, :process, _, reason}, state) do
    case Enum.find(state.rendering, fn {_, {_, r}} -> r == ref end) do
      {kind, _} ->
        Log.error(
          "Breakwater.Metrics.Scrape: a rendering of #{kind} failed: #{inspect(reason, limit: 20)}"
        )

        # The last body if there is one; else the clients' calls time out (a 500).
        case cached(kind) do
          {body, _} -> {:noreply, reply_all(state, kind, body)}
          nil -> {:noreply, %{state | rendering: Map.delete(state.rendering, kind)}}
        end

      nil ->
        {:noreply, state}
    end
  end

  def handle_info(_other, state), do: {:noreply, state}

  defp reply_all(state, kind, body) do
    Enum.each(Map.get(state.waiting, kind, []), &GenServer.reply(&1, body))

    %{
      state
      | rendering: Map.delete(state.rendering, kind),
        waiting: Map.delete(state.waiting, kind)
    }
  end

  defp start(state, kind) do
    me = self()

    # Not linked: a rendering that crashes is reported by its monitor, and one that
    # outlives this process (killed meanwhile) finishes and goes.
    {pid, ref} =
      spawn_monitor(fn ->
        at = now()
        send(me, {:rendered, kind, self(), render(kind), at})
      end)

    put_in(state.rendering[kind], {pid, ref})
  end

  defp put(kind, body, at) do
    :ets.insert(@table, {kind, body, at})
  rescue
    ArgumentError -> :ok
  end

  defp now, do: System.monotonic_time(:millisecond)
end
