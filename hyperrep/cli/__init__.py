"""The `hyperrep` command: the same API the app uses, from a terminal.

Each command imports what it needs inside its function, so that `hyperrep --help` and argument
errors answer at once instead of after importing torch and the rest of the package."""


from __future__ import annotations

import sys

from hyperrep.cli.common import Parser
from hyperrep.cli.model_commands import GUIDED_FLAGS, add_sample_command, add_train_command
from hyperrep.cli.report_commands import add_finetune_study_command, add_report_command, add_transfer_command
from hyperrep.cli.zoo_commands import add_zoo_commands
from hyperrep.io.files import ArtifactError

__all__ = ["GUIDED_FLAGS", "build_parser", "main"]


def build_parser() -> Parser:
    parser = Parser(prog="hyperrep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (add_zoo_commands, add_train_command, add_sample_command, add_report_command, add_transfer_command,
                add_finetune_study_command):
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ArtifactError, ValueError, KeyError, ModuleNotFoundError) as err:  # the last: a missing optional dependency
        print(f"hyperrep: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
