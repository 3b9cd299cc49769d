import Config

# Production settings belong to the application that runs Breakwater (its own
# `config/runtime.exs` or `sys.config`); Breakwater's defaults apply to every key left
# out (docs/configuration.md). This file exists so that `MIX_ENV=prod` builds of this
# project (`make dist`, `mix release`) compile.
