"""Pipeline stages and the `plc` command-line app."""
