defmodule Breakwater.HTTP do
  @moduledoc """
  The optional HTTP endpoint on OTP's `inets` `httpd`: `/metrics`,
  `/health/liveness`, `/health/readiness` and `/health` (see `Breakwater.HTTP.Handler`
  for the answers). Off unless the application environment has `http`:

      config :breakwater, http: [port: 9568]                  # 127.0.0.1:9568
      config :breakwater, http: [port: 9568, ip: {0, 0, 0, 0}] # every interface

  The server listens on `127.0.0.1` unless `ip` says otherwise. It serves only
  its four paths: `Breakwater.HTTP.Handler` is the server's only module (no file or
  directory module), and its document root is a fresh empty directory under the
  system temporary directory, removed when the server stops.

  A `Breakwater.HTTP` process owns one `httpd` instance started with
  `:inets.start(:httpd, config, :stand_alone)`: linked to it, stopped with it, and
  restarted with it by its supervisor. Port 0 picks a free port; `port/1` tells which.
  A port already in use stops the start with `{:error, {:http_port_in_use, port}}`
  (and a log message naming the address and port), after waiting up to two seconds
  for it to be released (a killed predecessor's listener closes a moment after it).

  ## Under pressure

  Clients that hold connections open must not starve the health checks. The server
  takes up to `max_connections` connections at once (default 1 024: a connection
  costs one small process), and closes a connection on which no request arrives for
  `idle_timeout_ms` (default 5 000): so `/health/liveness` keeps answering with 500
  idle connections held open, and connections held longer are closed. `/metrics` is
  rendered at most once a second and shared by concurrent scrapers
  (`Breakwater.Metrics.Scrape`).

      iex> {:ok, pid} = Breakwater.HTTP.start_link(port: 0, name: nil)
      iex> port = Breakwater.HTTP.port(pid)
      iex> is_integer(port) and port > 0
      true
      iex> Breakwater.HTTP.stop(pid)
      :ok
  """
  use GenServer
  require Breakwater.Log, as: Log

  @default_ip {127, 0, 0, 1}

  @typedoc """
  Options: `port` (0..65535, required; 0 picks a free port), `ip` (an IPv4 or IPv6
  address tuple, default `{127, 0, 0, 1}`), `max_connections` (1..65535, default
  1 024), `idle_timeout_ms` (1 000..3 600 000, default 5 000; whole seconds), `name`
  (the registered name, default `Breakwater.HTTP`; `nil` for none). A map such as the
  validated `http` configuration is accepted too.
  """
  @type option ::
          {:port, :inet.port_number()}
          | {:ip, :inet.ip_address()}
          | {:max_connections, pos_integer}
          | {:idle_timeout_ms, pos_integer}
          | {:name, atom | nil}

  @typedoc "Why the server did not start."
  @type start_error ::
          {:http_port_in_use, :inet.port_number()}
          | {:http_address_unavailable, :inet.ip_address()}
          | {:http_start_failed, term}
          | {:invalid_option, atom, term}

  @doc """
  A child spec for a supervisor; `opts` as in `start_link/1`. Its id is the
  registered name (so several servers can run side by side under different names).
  """
  @spec child_spec([option] | map) :: Supervisor.child_spec()
  def child_spec(opts) do
    opts = to_keyword(opts)

    %{
      id: Keyword.get(opts, :name, __MODULE__) || {__MODULE__, make_ref()},
      start: {__MODULE__, :start_link, [opts]},
      type: :worker,
      shutdown: 10_000
    }
  end

  @doc """
  Starts the server (see `t:option/0`). Returns `{:error, reason}` (`t:start_error/0`)
  when it cannot listen, e.g. `{:error, {:http_port_in_use, 9568}}`.
  """
  @spec start_link([option] | map) :: GenServer.on_start()
  def start_link(opts) do
    opts = to_keyword(opts)

    case Keyword.get(opts, :name, __MODULE__) do
      nil -> GenServer.start_link(__MODULE__, opts)
      name -> GenServer.start_link(__MODULE__, opts, name: name)
    end
  end

  @doc "Stops a server started with `start_link/1` (not needed under a supervisor)."
  @spec stop(GenServer.server()) :: :ok
  def stop(server \\ __MODULE__), do: GenServer.stop(server)

  @doc "The port the server listens on (the actual one when started with port 0)."
  @spec port(GenServer.server()) :: :inet.port_number()
  def port(server \\ __MODULE__), do: GenServer.call(server, :port)

  @doc "The address the server is bound to."
  @spec ip(GenServer.server()) :: :inet.ip_address()
  def ip(server \\ __MODULE__), do: GenServer.call(server, :ip)

  @doc """
  The `httpd` instance's own view of its configuration (`:httpd.info/2`): a keyword
  list with `:port`, `:bind_address`, `:modules`, `:document_root`, ...
  """
  @spec info(GenServer.server()) :: keyword
  def info(server \\ __MODULE__) do
    %{ip: ip, port: port} = GenServer.call(server, :address)
    :httpd.info(ip, port)
  end

  # ---- server ------------------------------------------------------------------------

  @impl true
  def init(opts) do
    Process.flag(:trap_exit, true)

    with {:ok, port} <- option(opts, :port, nil, &port?/1),
         {:ok, ip} <- option(opts, :ip, @default_ip, &ip?/1),
         {:ok, clients} <- option(opts, :max_connections, 1_024, &(&1 in 1..65_535)),
         {:ok, idle} <- option(opts, :idle_timeout_ms, 5_000, &(&1 in 1_000..3_600_000)),
         {:ok, root} <- make_root(Keyword.get(opts, :name, __MODULE__)) do
      limits = %{max_clients: clients, keep_alive_s: div(idle + 999, 1_000)}

      case start_httpd(ip, port, root, limits, 40) do
        {:ok, pid, actual_port} ->
          {:ok, %{httpd: pid, ip: ip, port: actual_port, root: root}}

        {:error, reason} ->
          File.rm_rf(root)
          log_start_error(reason, ip, port)
          {:stop, reason}
      end
    else
      {:error, reason} -> {:stop, reason}
    end
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}
  def handle_call(:ip, _from, state), do: {:reply, state.ip, state}
  def handle_call(:address, _from, state), do: {:reply, Map.take(state, [:ip, :port]), state}

  @impl true
  def handle_info({:EXIT, pid, reason}, %{httpd: pid} = state) do
    Log.error("Breakwater.HTTP: the httpd instance exited: #{inspect(reason)}")
    {:stop, {:httpd_exited, reason}, %{state | httpd: nil}}
  end

  def handle_info(_message, state), do: {:noreply, state}

  @impl true
  def terminate(_reason, state) do
    if state.httpd, do: stop_httpd(state.httpd)
    File.rm_rf(state.root)
    :ok
  end

  # A port still held by a killed predecessor's listener is retried every 50 ms.
  defp start_httpd(ip, port, root, limits, attempts) do
    case start_httpd(ip, port, root, limits) do
      {:error, {:http_port_in_use, _}} when attempts > 1 and port != 0 ->
        Process.sleep(50)
        start_httpd(ip, port, root, limits, attempts - 1)

      other ->
        other
    end
  end

  defp start_httpd(ip, port, root, limits) do
    root = String.to_charlist(root)

    config = [
      port: port,
      bind_address: ip,
      ipfamily: if(tuple_size(ip) == 4, do: :inet, else: :inet6),
      server_name: ~c"breakwater",
      server_root: root,
      document_root: root,
      modules: [Breakwater.HTTP.Handler],
      server_tokens: :none,
      max_clients: limits.max_clients,
      max_uri_size: 2_048,
      max_header_size: 8_192,
      max_body_size: 65_536,
      max_content_length: 65_536,
      # Also how long a new connection may wait before its first request.
      keep_alive_timeout: limits.keep_alive_s,
      max_keep_alive_request: 1_000
    ]

    case :inets.start(:httpd, config, :stand_alone) do
      {:ok, pid} ->
        {:ok, pid, actual_port(pid, port)}

      {:error, reason} ->
        # The failed start also sent us its exit; drop it.
        receive do
          {:EXIT, _pid, _} -> :ok
        after
          0 -> :ok
        end

        {:error, start_error(reason, ip, port)}
    end
  end

  # The instance supervisor's child id names the port it listens on (the chosen one
  # for port 0).
  defp actual_port(pid, requested) do
    Enum.find_value(Supervisor.which_children(pid), requested, fn
      {{:httpd_instance_sup, _ip, port, _profile}, _, _, _} when is_integer(port) -> port
      _ -> nil
    end)
  end

  defp start_error(reason, ip, port) do
    cond do
      has?(reason, :eaddrinuse) or has_already_started?(reason) -> {:http_port_in_use, port}
      has?(reason, :eaddrnotavail) -> {:http_address_unavailable, ip}
      true -> {:http_start_failed, reason}
    end
  end

  defp has?(term, atom) when is_atom(term), do: term == atom
  defp has?(term, atom) when is_tuple(term), do: has?(Tuple.to_list(term), atom)
  defp has?([h | t], atom), do: has?(h, atom) or has?(t, atom)
  defp has?(_term, _atom), do: false

  defp has_already_started?({:already_started, _}), do: true
  defp has_already_started?(t) when is_tuple(t), do: has_already_started?(Tuple.to_list(t))
  defp has_already_started?([h | t]), do: has_already_started?(h) or has_already_started?(t)
  defp has_already_started?(_), do: false

  defp log_start_error({:http_port_in_use, port}, ip, _port) do
    Log.error(
      "Breakwater.HTTP: cannot listen on #{:inet.ntoa(ip)} port #{port}: " <>
        "the port is already in use (set another :breakwater http port, or 0 for any free port)"
    )
  end

  defp log_start_error({:http_address_unavailable, ip}, _ip, port) do
    Log.error(
      "Breakwater.HTTP: cannot listen on #{:inet.ntoa(ip)} port #{port}: " <>
        "the address is not one of this host's"
    )
  end

  defp log_start_error(reason, ip, port) do
    Log.error(
      "Breakwater.HTTP: cannot listen on #{:inet.ntoa(ip)} port #{port}: #{inspect(reason)}"
    )
  end

  defp stop_httpd(pid) do
    ref = Process.monitor(pid)
    Process.exit(pid, :shutdown)

    receive do
      {:DOWN, ^ref, :process, ^pid, _} -> :ok
    after
      5_000 ->
        Process.exit(pid, :kill)

        receive do
          {:DOWN, ^ref, :process, ^pid, _} -> :ok
        end
    end
  end

  # One directory per OS process and server name: a restarted server (its predecessor
  # killed before it could remove its own) takes the same one over.
  defp make_root(name) do
    case System.tmp_dir() do
      nil ->
        {:error, {:http_start_failed, :no_tmp_dir}}

      tmp ->
        tag = if name, do: :erlang.phash2(name), else: System.unique_integer([:positive])
        root = Path.join(tmp, "breakwater_httpd_#{System.pid()}_#{tag}")
        File.rm_rf(root)

        case File.mkdir_p(root) do
          :ok -> {:ok, root}
          {:error, reason} -> {:error, {:http_start_failed, {:document_root, root, reason}}}
        end
    end
  end

  defp option(opts, key, default, valid?) do
    case Keyword.fetch(opts, key) do
      {:ok, value} -> if valid?.(value), do: {:ok, value}, else: invalid(key, value)
      :error when default != nil -> {:ok, default}
      :error -> invalid(key, nil)
    end
  end

  defp invalid(key, value), do: {:error, {:invalid_option, key, value}}

  defp port?(port), do: is_integer(port) and port >= 0 and port <= 65_535

  defp ip?({_, _, _, _} = ip), do: ip |> Tuple.to_list() |> Enum.all?(&(&1 in 0..255))

  defp ip?({_, _, _, _, _, _, _, _} = ip),
    do: ip |> Tuple.to_list() |> Enum.all?(&(&1 in 0..65_535))

  defp ip?(_ip), do: false

  defp to_keyword(opts) when is_map(opts), do: Map.to_list(opts)
  defp to_keyword(opts) when is_list(opts), do: opts
end
