"""One module per ``eventferry`` subcommand (see ``eventferry.cli``)."""
