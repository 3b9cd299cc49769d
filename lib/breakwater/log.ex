defmodule Breakwater.Log do
  @moduledoc false
  # Breakwater's log lines go straight to OTP's `:logger`, as Erlang's `?LOG_*` macros
  # do: the level is checked first (the primary level and module levels set with
  # `:logger.set_module_level/2` or `Logger.put_module_level/2`), the message is built
  # only when the event passes, and the event carries the caller's `mfa`, `file` and
  # `line`. Elixir's `Logger` would do the same but needs Elixir's `:logger`
  # application, whose start takes over the formatting of every log event of the node;
  # Breakwater does not depend on it (see "Logging" in docs/operations.md).
  #
  #     require Breakwater.Log, as: Log
  #     Log.warning("breakwater ...", %{breakwater_subject: subject})

  for level <- [:error, :warning, :notice, :info, :debug] do
    @doc false
    defmacro unquote(level)(message, metadata \\ quote(do: %{})) do
      log_ast(unquote(level), message, metadata, __CALLER__)
    end
  end

  @doc false
  defmacro log(level, message, metadata \\ quote(do: %{})) do
    log_ast(level, message, metadata, __CALLER__)
  end

  defp log_ast(level, message, metadata, caller) do
    {fun, arity} = caller.function || {:"(module)", 0}

    location = %{
      mfa: {caller.module, fun, arity},
      file: String.to_charlist(caller.file),
      line: caller.line
    }

    quote do
      level = unquote(level)

      if :logger.allow(level, unquote(caller.module)) do
        :logger.macro_log(
          unquote(Macro.escape(location)),
          level,
          unquote(message),
          unquote(metadata)
        )
      else
        :ok
      end
    end
  end
end
