[
  inputs: ["{mix,.formatter}.exs", "{config,lib,test,benches,mix}/**/*.{ex,exs}"]
]
