"""The ``distloop`` command line: :mod:`.main` parses and maps errors to exit codes; one module per subcommand."""
