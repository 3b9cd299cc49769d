defmodule Breakwater.Config do
  @moduledoc """
  Validation of the `:breakwater` application environment (`sys.config` or
  `config/*.exs`).

  `load/1` takes the environment (a keyword list such as
  `Application.get_all_env(:breakwater)`, or a map), checks every key, and returns
  `{:ok, config}` with every key present and normalised, or `{:error, reasons}` listing
  every problem. It is pure: it starts nothing and creates no atom from input.

      iex> {:ok, config} = Breakwater.Config.load(subjects: [ledger: [warning_threshold: 100, critical_threshold: 500]])
      iex> config.subjects["ledger"].critical_threshold
      500
      iex> config.ring_pool
      %{segments: 256, segment_capacity: 1024, segment_bytes: 262144, max_event_bytes: 65536}
      iex> {:error, reasons} = Breakwater.Config.load(ring_pool: [segments: 0])
      iex> Breakwater.Config.format_errors(reasons)
      "ring_pool.segments: got 0, expected an integer from 1 to 1048576"

  ## Keys

    * `default_policy` - policy overrides over `Breakwater.Policy.defaults/0`;
    * `subjects` - subject → policy overrides (over the validated `default_policy`);
    * `ring_pool` - `segments` (256), `segment_capacity` (1024), `segment_bytes`
      (262_144), `max_event_bytes` (65_536);
    * `max_subjects` (10_000), `spool_dir` (nil = `default_spool_dir/0`, a directory
      of the application's own), `http` (nil = off; `port`, `ip`), `ledgers`
      (subject → module or `{module, opts}`), `tick_ms` (100), `history_limit` and
      `events_limit` (1_000);
    * `durability` (`:crash`: what `enqueue/3` accepted survives a crash of the VM;
      `{:fsync, interval_ms}`: also a power cut, up to the interval; `:memory`: the
      pool is memory only, opt-in), `spool_owner` (nil = `"<node>/<application>"`:
      written into every spool file; files of another owner are never replayed),
      `spool_adopt` (owners whose spool files this node takes over, `[]`);
    * `disk_max_bytes` (1 GiB: overflow files per subject), `depth_escalate_after_ms`
      (120_000: how long the depth may stay above critical before the alert
      escalates);
    * `subject_idle_ms` (nil: subjects never expire), `metrics_max_subjects` (1_000:
      subjects shown in detail by `/metrics`), `log_interval_ms` (1_000: at most one
      transition line per subject per interval), `reclaim_grace_ms` (10_000: how long a
      removed subject's memory is kept before it is freed);
    * in `http`: `max_connections` (1_024) and `idle_timeout_ms` (5_000).

  See `docs/configuration.md` for the rules of every key.

  ## Errors

  Each reason is `{path, value, expected}` (a bad value at the key path `path`, a list
  of atoms and subject binaries such as `[:subjects, "ledger", :warning_threshold]`)
  or `{:unknown_key, path}`. `format_errors/1` renders them one per line as
  `subjects."ledger".warning_threshold: got 0, expected ...`.
  """

  import Bitwise
  alias Breakwater.Policy

  @keys [
    :default_policy,
    :subjects,
    :ring_pool,
    :max_subjects,
    :spool_dir,
    :http,
    :ledgers,
    :tick_ms,
    :history_limit,
    :events_limit,
    :durability,
    :spool_owner,
    :spool_adopt,
    :disk_max_bytes,
    :depth_escalate_after_ms,
    :subject_idle_ms,
    :metrics_max_subjects,
    :log_interval_ms,
    :reclaim_grace_ms
  ]

  @ring_pool_keys [:segments, :segment_capacity, :segment_bytes, :max_event_bytes]
  @ring_pool_defaults %{
    segments: 256,
    segment_capacity: 1024,
    segment_bytes: 262_144,
    max_event_bytes: 65_536
  }
  @http_keys [:port, :ip, :max_connections, :idle_timeout_ms]
  @default_ip {127, 0, 0, 1}

  @max_subjects_limit 1_048_576
  @max_int_text "281474976710655"
  @max_subject_bytes 1024
  @max_path_bytes 4096

  @subject_expected "a subject: a binary of 1 to #{@max_subject_bytes} bytes " <>
                      "or an atom other than nil, true and false"

  @typedoc "A subject after normalisation."
  @type subject :: binary

  @typedoc "A key path: atoms for keys, binaries for subjects."
  @type path :: [atom | binary | term]

  @typedoc "A configuration problem."
  @type reason :: {path, term, String.t()} | {:unknown_key, path}

  @typedoc "The validated configuration."
  @type t :: %{
          default_policy: Policy.t(),
          subjects: %{optional(subject) => Policy.t()},
          ring_pool: %{
            segments: pos_integer,
            segment_capacity: pos_integer,
            segment_bytes: pos_integer,
            max_event_bytes: pos_integer
          },
          max_subjects: pos_integer,
          spool_dir: String.t(),
          http:
            nil
            | %{
                port: 0..65535,
                ip: :inet.ip_address(),
                max_connections: pos_integer,
                idle_timeout_ms: pos_integer
              },
          ledgers: %{optional(subject) => {module, keyword}},
          tick_ms: pos_integer,
          history_limit: pos_integer,
          events_limit: pos_integer,
          durability: :crash | :memory | {:fsync, pos_integer},
          spool_owner: nil | String.t(),
          spool_adopt: [String.t()],
          disk_max_bytes: pos_integer,
          depth_escalate_after_ms: pos_integer,
          subject_idle_ms: nil | pos_integer,
          metrics_max_subjects: pos_integer,
          log_interval_ms: pos_integer,
          reclaim_grace_ms: pos_integer
        }

  @doc """
  The valid top-level keys, in the order used to report errors.
  """
  @spec keys() :: [atom]
  def keys, do: @keys

  @doc """
  The spool directory used when `spool_dir` is not set: `var/breakwater_spool` under
  the root of the tree Breakwater's code was loaded from, so that it belongs to this
  application and no other project on the machine shares it.

  The root is the directory above the `lib/` that holds Breakwater's application
  directory (`:code.lib_dir(:breakwater)`):

    * in a release (`mix release`, relx), the release root, e.g.
      `/opt/myapp/var/breakwater_spool` (`RELEASE_ROOT`);
    * in a Mix project (Breakwater itself or a dependency), the build path, e.g.
      `_build/dev/var/breakwater_spool`;
    * in the OTP library tree of `make dist` on `ERL_LIBS`, the tree's root.

  When the application directory is not in a `lib/` directory (code added with
  `-pa` from elsewhere), the application directory itself is the root. Returns
  `:error` when Breakwater's code is not loaded from a directory at all.

      iex> {:ok, dir} = Breakwater.Config.default_spool_dir()
      iex> Path.basename(dir)
      "breakwater_spool"
  """
  @spec default_spool_dir() :: {:ok, String.t()} | :error
  def default_spool_dir do
    case :code.lib_dir(:breakwater) do
      lib_dir when is_list(lib_dir) ->
        lib_dir = List.to_string(lib_dir)
        parent = Path.dirname(lib_dir)
        root = if Path.basename(parent) == "lib", do: Path.dirname(parent), else: lib_dir
        {:ok, Path.join([root, "var", "breakwater_spool"])}

      {:error, _} ->
        :error
    end
  end

  @doc """
  Validates and normalises the `:breakwater` application environment.

  `env` is a keyword list (the first occurrence of a key wins) or a map with atom
  keys. Every key is optional; unknown keys are errors. Returns `{:ok, config}` with
  every key of `keys/0` present, `subjects` as a map of binary → full validated
  policy and `ledgers` as a map of binary → `{module, opts}`; or `{:error, reasons}`
  with every problem found.

      iex> {:ok, config} = Breakwater.Config.load([])
      iex> {config.max_subjects, config.tick_ms, config.http, config.subjects}
      {10000, 100, nil, %{}}
  """
  @spec load(keyword | map | term) :: {:ok, t} | {:error, [reason, ...]}
  def load(env) do
    case to_map(env) do
      {:ok, map} ->
        load_map(map)

      :error ->
        {:error, [{[], env, "a keyword list or map of :breakwater application settings"}]}
    end
  end

  @doc """
  Formats the reasons returned by `load/1`, one line per problem naming the key path,
  the value given and what was expected.

      iex> Breakwater.Config.format_errors([{[:subjects, "ledger", :window_ms], 1, "an integer from 10 to 281474976710655"}])
      ~s(subjects."ledger".window_ms: got 1, expected an integer from 10 to 281474976710655)
  """
  @spec format_errors([reason] | term) :: String.t()
  def format_errors(reasons) do
    case Policy.proper_list(reasons) do
      {:ok, list} -> Enum.map_join(list, "\n", &format_reason/1)
      :error -> format_reason(reasons)
    end
  end

  ## Loading

  defp load_map(env) do
    default_policy = load_default_policy(Map.get(env, :default_policy, []))

    base =
      case default_policy do
        {:ok, policy} -> policy
        {:error, _} -> Policy.defaults()
      end

    {subject_names, subjects} = load_subjects(Map.fetch(env, :subjects), base)
    ring_pool = load_ring_pool(Map.fetch(env, :ring_pool))
    {ledger_names, ledgers} = load_ledgers(Map.fetch(env, :ledgers))
    configured = (subject_names ++ ledger_names) |> Enum.uniq() |> length()
    max_subjects = load_max_subjects(Map.get(env, :max_subjects, 10_000), configured)

    results = [
      default_policy: default_policy,
      subjects: subjects,
      ring_pool: ring_pool,
      max_subjects: max_subjects,
      spool_dir: load_spool_dir(Map.get(env, :spool_dir)),
      http: load_http(Map.get(env, :http)),
      ledgers: ledgers,
      tick_ms: int([:tick_ms], Map.get(env, :tick_ms, 100), 10, 60_000),
      history_limit: int([:history_limit], Map.get(env, :history_limit, 1_000), 1, 1_000_000),
      events_limit: int([:events_limit], Map.get(env, :events_limit, 1_000), 1, 1_000_000),
      durability: load_durability(Map.get(env, :durability, :crash)),
      spool_owner: load_owner(Map.get(env, :spool_owner)),
      spool_adopt: load_adopt(Map.get(env, :spool_adopt, [])),
      disk_max_bytes:
        int([:disk_max_bytes], Map.get(env, :disk_max_bytes, 1024 * 1024 * 1024), 4_096, 1 <<< 50),
      depth_escalate_after_ms:
        int(
          [:depth_escalate_after_ms],
          Map.get(env, :depth_escalate_after_ms, 120_000),
          1,
          Policy.max_integer()
        ),
      subject_idle_ms: load_idle(Map.get(env, :subject_idle_ms)),
      metrics_max_subjects:
        int(
          [:metrics_max_subjects],
          Map.get(env, :metrics_max_subjects, 1_000),
          1,
          @max_subjects_limit
        ),
      log_interval_ms:
        int([:log_interval_ms], Map.get(env, :log_interval_ms, 1_000), 100, 3_600_000),
      reclaim_grace_ms:
        int([:reclaim_grace_ms], Map.get(env, :reclaim_grace_ms, 10_000), 1_000, 3_600_000)
    ]

    unknown =
      env
      |> Map.drop(@keys)
      |> Map.keys()
      |> Enum.sort()
      |> Enum.map(&{:unknown_key, [&1]})

    errors = Enum.flat_map(results, fn {_k, r} -> errors_of(r) end) ++ unknown

    case errors do
      [] -> {:ok, Map.new(results, fn {k, {:ok, v}} -> {k, v} end)}
      _ -> {:error, errors}
    end
  end

  defp errors_of({:ok, _}), do: []
  defp errors_of({:error, reasons}), do: reasons

  defp load_default_policy(overrides) do
    case Policy.validate(overrides, Policy.defaults()) do
      {:ok, policy} -> {:ok, policy}
      {:error, reasons} -> {:error, prefix_policy_reasons(reasons, [:default_policy])}
    end
  end

  defp prefix_policy_reasons(reasons, prefix) do
    Enum.map(reasons, fn
      {:unknown_key, key} -> {:unknown_key, prefix ++ [key]}
      {:invalid_policy, value, expected} -> {prefix, value, expected}
      {key, value, expected} -> {prefix ++ [key], value, expected}
    end)
  end

  ## subjects

  # Returns {subject names, result} so that max_subjects can count the configured
  # subjects even when some of their policies are invalid.
  defp load_subjects(:error, _base), do: {[], {:ok, %{}}}

  defp load_subjects({:ok, value}, base) do
    case subject_entries(value, [:subjects], "policy overrides") do
      {:ok, entries} ->
        {named, name_errors} = subject_names(entries, [:subjects])

        {subjects, errors} =
          Enum.reduce(named, {%{}, []}, fn {name, overrides}, {acc, errors} ->
            case Policy.validate(overrides, base) do
              {:ok, policy} ->
                {Map.put(acc, name, policy), errors}

              {:error, reasons} ->
                {acc, [prefix_policy_reasons(reasons, [:subjects, name]) | errors]}
            end
          end)

        {Enum.map(named, &elem(&1, 0)), result(subjects, name_errors, errors)}

      {:error, _} = error ->
        {[], error}
    end
  end

  # `chunks` is a reversed list of lists of reasons.
  defp result(value, first_errors, chunks) do
    case first_errors ++ Enum.concat(Enum.reverse(chunks)) do
      [] -> {:ok, value}
      errors -> {:error, errors}
    end
  end

  # A map (entries sorted for a deterministic order) or a proper list of 2-tuples.
  defp subject_entries(map, _path, _what) when is_map(map) do
    if map_size(map) > @max_subjects_limit,
      do: {:error, [{[:subjects], map, "at most #{@max_subjects_limit} subjects"}]},
      else: {:ok, map |> Map.to_list() |> Enum.sort()}
  end

  defp subject_entries(list, path, what) when is_list(list) do
    case pair_list(list, @max_subjects_limit + 1, []) do
      {:ok, entries} when length(entries) > @max_subjects_limit ->
        {:error, [{path, list, "at most #{@max_subjects_limit} subjects"}]}

      {:ok, entries} ->
        {:ok, entries}

      :error ->
        {:error, [{path, list, "a map or list of {subject, #{what}} pairs"}]}
    end
  end

  defp subject_entries(other, path, what),
    do: {:error, [{path, other, "a map or list of {subject, #{what}} pairs"}]}

  defp pair_list(_list, 0, acc), do: {:ok, Enum.reverse(acc)}
  defp pair_list([], _limit, acc), do: {:ok, Enum.reverse(acc)}
  defp pair_list([{_, _} = h | t], limit, acc), do: pair_list(t, limit - 1, [h | acc])
  defp pair_list(_other, _limit, _acc), do: :error

  # Normalises subject names; returns the valid {name, value} entries (in order) and
  # the errors for bad or duplicate names.
  defp subject_names(entries, path) do
    {named, _seen, errors} =
      Enum.reduce(entries, {[], %{}, []}, fn {subject, value}, {named, seen, errors} ->
        case subject_name(subject) do
          {:ok, name} when is_map_key(seen, name) ->
            error =
              {path ++ [name], subject,
               "a subject given only once (#{inspect(name)} is already configured; " <>
                 "atom subjects are converted to binaries)"}

            {named, seen, [error | errors]}

          {:ok, name} ->
            {[{name, value} | named], Map.put(seen, name, true), errors}

          :error ->
            {named, seen, [{path, subject, @subject_expected} | errors]}
        end
      end)

    {Enum.reverse(named), Enum.reverse(errors)}
  end

  defp subject_name(subject) when subject in [nil, true, false], do: :error
  defp subject_name(subject) when is_atom(subject), do: subject_name(Atom.to_string(subject))

  defp subject_name(subject)
       when is_binary(subject) and byte_size(subject) >= 1 and
              byte_size(subject) <= @max_subject_bytes,
       do: {:ok, subject}

  defp subject_name(_subject), do: :error

  ## ring_pool

  defp load_ring_pool(:error), do: {:ok, @ring_pool_defaults}

  defp load_ring_pool({:ok, value}) do
    with {:ok, map} <- section(value, [:ring_pool], @ring_pool_keys) do
      get = fn key -> Map.get(map, key, Map.fetch!(@ring_pool_defaults, key)) end

      segments = int([:ring_pool, :segments], get.(:segments), 1, 1_048_576)

      capacity = int([:ring_pool, :segment_capacity], get.(:segment_capacity), 1, 1_048_576)

      bytes = int([:ring_pool, :segment_bytes], get.(:segment_bytes), 64, 1_073_741_824)

      # Each event takes a 16-byte record header and up to 7 bytes of padding.
      max_event =
        case bytes do
          {:ok, b} ->
            int(
              [:ring_pool, :max_event_bytes],
              get.(:max_event_bytes),
              1,
              b - 24,
              "an integer from 1 to segment_bytes - 24 (#{b - 24})"
            )

          {:error, _} ->
            int([:ring_pool, :max_event_bytes], get.(:max_event_bytes), 1, 1_073_741_824)
        end

      collect(
        [
          segments: segments,
          segment_capacity: capacity,
          segment_bytes: bytes,
          max_event_bytes: max_event
        ],
        unknown_keys(map, [:ring_pool], @ring_pool_keys)
      )
    end
  end

  ## max_subjects

  defp load_max_subjects(value, configured) do
    with {:ok, max} <- int([:max_subjects], value, 1, @max_subjects_limit) do
      if configured > max do
        {:error,
         [
           {[:max_subjects], value,
            "an integer from 1 to #{@max_subjects_limit}, at least the number of " <>
              "configured subjects and ledgers (#{configured})"}
         ]}
      else
        {:ok, max}
      end
    end
  end

  ## subject_idle_ms

  @idle_expected "nil (subjects never expire) or an integer from 1000 to #{@max_int_text}"

  defp load_idle(value) when value in [nil, :none, :undefined], do: {:ok, nil}

  defp load_idle(value) when is_integer(value) and value >= 1_000,
    do: int([:subject_idle_ms], value, 1_000, Policy.max_integer(), @idle_expected)

  defp load_idle(value), do: {:error, [{[:subject_idle_ms], value, @idle_expected}]}

  ## spool_dir

  @spool_dir_expected "nil (default) or a directory path: a string or charlist " <>
                        "of 1 to #{@max_path_bytes} bytes without NUL bytes"

  defp load_spool_dir(nil) do
    case default_spool_dir() do
      {:ok, dir} ->
        {:ok, dir}

      :error ->
        {:error,
         [
           {[:spool_dir], nil,
            "a directory path (the application's code is not in a lib/ directory, " <>
              "so there is no default)"}
         ]}
    end
  end

  defp load_spool_dir(value) when is_binary(value) do
    if valid_path?(value),
      do: {:ok, value},
      else: {:error, [{[:spool_dir], value, @spool_dir_expected}]}
  end

  defp load_spool_dir(value) when is_list(value) do
    with {:ok, chars} <- bounded_charlist(value, @max_path_bytes, []),
         binary when is_binary(binary) <- :unicode.characters_to_binary(chars),
         true <- valid_path?(binary) do
      {:ok, binary}
    else
      _ -> {:error, [{[:spool_dir], value, @spool_dir_expected}]}
    end
  end

  defp load_spool_dir(value), do: {:error, [{[:spool_dir], value, @spool_dir_expected}]}

  defp valid_path?(path) do
    byte_size(path) >= 1 and byte_size(path) <= @max_path_bytes and String.valid?(path) and
      not String.contains?(path, <<0>>)
  end

  defp bounded_charlist([], _limit, acc), do: {:ok, Enum.reverse(acc)}
  defp bounded_charlist(_list, 0, _acc), do: :error

  defp bounded_charlist([c | rest], limit, acc)
       when is_integer(c) and c >= 0 and c <= 0x10FFFF,
       do: bounded_charlist(rest, limit - 1, [c | acc])

  defp bounded_charlist(_other, _limit, _acc), do: :error

  ## durability, spool owner

  @durability_expected ":crash, :memory or {:fsync, interval_ms} with interval_ms " <>
                         "an integer from 1 to 3600000"

  defp load_durability(d) when d in [:crash, :memory], do: {:ok, d}

  defp load_durability({:fsync, ms} = d) when is_integer(ms) and ms >= 1 and ms <= 3_600_000,
    do: {:ok, d}

  defp load_durability(other), do: {:error, [{[:durability], other, @durability_expected}]}

  @owner_expected "nil (default: \"<node>/<application>\") or a string of 1 to 512 bytes"

  defp load_owner(none) when none in [nil, :none, :undefined], do: {:ok, nil}

  defp load_owner(owner) when is_binary(owner) do
    if byte_size(owner) in 1..512 and String.valid?(owner),
      do: {:ok, owner},
      else: {:error, [{[:spool_owner], owner, @owner_expected}]}
  end

  defp load_owner(other), do: {:error, [{[:spool_owner], other, @owner_expected}]}

  @adopt_expected "a list of at most 64 spool owners (strings of 1 to 512 bytes, " <>
                    "as other nodes' spool_owner)"

  defp load_adopt(list) when is_list(list) do
    case Policy.proper_list(list) do
      {:ok, owners} when length(owners) <= 64 ->
        if Enum.all?(owners, &(is_binary(&1) and byte_size(&1) in 1..512)),
          do: {:ok, owners},
          else: {:error, [{[:spool_adopt], list, @adopt_expected}]}

      _ ->
        {:error, [{[:spool_adopt], list, @adopt_expected}]}
    end
  end

  defp load_adopt(other), do: {:error, [{[:spool_adopt], other, @adopt_expected}]}

  ## http

  defp load_http(value) when value in [nil, false], do: {:ok, nil}

  defp load_http(value) do
    with {:ok, map} <- section(value, [:http], @http_keys, "nil or false (off), or a ") do
      port =
        case Map.fetch(map, :port) do
          {:ok, port} -> int([:http, :port], port, 0, 65_535)
          :error -> {:error, [{[:http, :port], nil, "an integer from 0 to 65535 (required)"}]}
        end

      ip = load_ip(Map.get(map, :ip, @default_ip))

      max_connections =
        int([:http, :max_connections], Map.get(map, :max_connections, 1_024), 1, 65_535)

      idle_timeout =
        int([:http, :idle_timeout_ms], Map.get(map, :idle_timeout_ms, 5_000), 1_000, 3_600_000)

      collect(
        [port: port, ip: ip, max_connections: max_connections, idle_timeout_ms: idle_timeout],
        unknown_keys(map, [:http], @http_keys)
      )
    end
  end

  defp load_ip({a, b, c, d} = ip)
       when a in 0..255 and b in 0..255 and c in 0..255 and d in 0..255,
       do: {:ok, ip}

  defp load_ip({_, _, _, _, _, _, _, _} = ip) do
    if ip |> Tuple.to_list() |> Enum.all?(&(is_integer(&1) and &1 >= 0 and &1 <= 65_535)),
      do: {:ok, ip},
      else: ip_error(ip)
  end

  defp load_ip(ip), do: ip_error(ip)

  defp ip_error(ip) do
    {:error,
     [
       {[:http, :ip], ip,
        "an IP address tuple: 4 integers from 0 to 255 or 8 integers from 0 to 65535"}
     ]}
  end

  ## ledgers

  @ledger_expected "a ledger module (an atom other than nil, true and false) " <>
                     "or {module, opts} with opts a keyword list"

  defp load_ledgers(:error), do: {[], {:ok, %{}}}

  defp load_ledgers({:ok, value}) do
    case subject_entries(value, [:ledgers], "module") do
      {:ok, entries} ->
        {named, name_errors} = subject_names(entries, [:ledgers])

        {ledgers, errors} =
          Enum.reduce(named, {%{}, []}, fn {name, spec}, {acc, errors} ->
            case ledger_spec(spec) do
              {:ok, ledger} -> {Map.put(acc, name, ledger), errors}
              :error -> {acc, [[{[:ledgers, name], spec, @ledger_expected}] | errors]}
            end
          end)

        {Enum.map(named, &elem(&1, 0)), result(ledgers, name_errors, errors)}

      {:error, _} = error ->
        {[], error}
    end
  end

  defp ledger_spec({module, opts}) do
    with true <- ledger_module?(module),
         true <- keyword?(opts) do
      {:ok, {module, opts}}
    else
      _ -> :error
    end
  end

  defp ledger_spec(module) do
    if ledger_module?(module), do: {:ok, {module, []}}, else: :error
  end

  defp ledger_module?(module), do: is_atom(module) and module not in [nil, true, false]

  defp keyword?([]), do: true
  defp keyword?([{key, _} | rest]) when is_atom(key), do: keyword?(rest)
  defp keyword?(_other), do: false

  ## Helpers

  # A keyword list / map section with known keys; returns the map of its entries.
  defp section(value, path, keys, prefix \\ "a ") do
    case to_map(value) do
      {:ok, map} ->
        {:ok, map}

      :error ->
        {:error,
         [{path, value, prefix <> "keyword list or map with keys " <> Enum.join(keys, ", ")}]}
    end
  end

  defp unknown_keys(map, path, keys) do
    map
    |> Map.drop(keys)
    |> Map.keys()
    |> Enum.sort()
    |> Enum.map(&{:unknown_key, path ++ [&1]})
  end

  defp collect(results, unknown) do
    case Enum.flat_map(results, fn {_k, r} -> errors_of(r) end) ++ unknown do
      [] -> {:ok, Map.new(results, fn {k, {:ok, v}} -> {k, v} end)}
      errors -> {:error, errors}
    end
  end

  defp to_map(map) when is_map(map), do: {:ok, map}
  defp to_map(list) when is_list(list), do: pairs_to_map(list, %{})
  defp to_map(_other), do: :error

  defp pairs_to_map([], acc), do: {:ok, acc}

  defp pairs_to_map([{key, value} | rest], acc) when is_atom(key),
    do: pairs_to_map(rest, Map.put_new(acc, key, value))

  defp pairs_to_map(_other, _acc), do: :error

  defp int(path, value, min, max),
    do: int(path, value, min, max, "an integer from #{min} to #{max}")

  defp int(_path, value, min, max, _expected)
       when is_integer(value) and value >= min and value <= max,
       do: {:ok, value}

  defp int(path, value, _min, _max, expected), do: {:error, [{path, value, expected}]}

  ## Formatting

  defp format_reason({:unknown_key, path} = reason) do
    case Policy.proper_list(path) do
      {:ok, [_ | _] = segments} ->
        {parent, _} = Enum.split(segments, -1)

        keys = valid_keys(parent)

        "#{format_path(segments)}: unknown key#{atom_hint(List.last(segments), keys)}, " <>
          "expected one of " <> Enum.map_join(keys, ", ", &Atom.to_string/1)

      _ ->
        Policy.inspect_value(reason)
    end
  end

  defp format_reason({path, value, expected}) when is_list(path) and is_binary(expected),
    do: "#{format_path(path)}: got #{Policy.inspect_value(value)}, expected #{expected}"

  defp format_reason(other), do: Policy.inspect_value(other)

  # A string spelling of a valid key: keys must be atoms (no atom is made from input).
  defp atom_hint(key, keys) when is_binary(key) do
    if key in Enum.map(keys, &Atom.to_string/1), do: " (keys must be atoms: :#{key})", else: ""
  end

  defp atom_hint(_key, _keys), do: ""

  defp valid_keys([]), do: @keys
  defp valid_keys([:ring_pool]), do: @ring_pool_keys
  defp valid_keys([:http]), do: @http_keys
  defp valid_keys(_policy_path), do: Policy.keys()

  defp format_path([]), do: "breakwater"

  defp format_path(path) do
    case Policy.proper_list(path) do
      {:ok, segments} -> Enum.map_join(segments, ".", &format_segment/1)
      :error -> Policy.inspect_value(path)
    end
  end

  defp format_segment(segment) when is_atom(segment), do: Atom.to_string(segment)
  defp format_segment(segment), do: Policy.inspect_value(segment)
end
