"""The `vlcam` subcommands, one module per group (train, eval, data, import); `vlcam.cli`
assembles them. Each command is a thin shell over a library function that tests call too."""
