"""One module per `zoo` subcommand, each with `add_parser(subparsers)`."""
