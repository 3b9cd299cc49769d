# Tests that move the native clock (Breakwater.Native.advance_clock/1) run in modules
# with `async: false`; ExUnit runs those after, never beside, the async ones.
ExUnit.start()
