import Config

# Breakwater's defaults apply to every key left out; see docs/configuration.md.
config :breakwater,
  max_subjects: 10_000

import_config "#{config_env()}.exs"
