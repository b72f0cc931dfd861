"""What each `cvtool convcalc` mode computes, one module a mode: plain data (the document its --json prints).

The CLI (cvtool/cli/convcalc*.py) parses the options, calls one of these and renders the result. Modules that
run a layer take backend objects already resolved by the CLI: nothing here imports `backends`.
"""
