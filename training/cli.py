"""The `charzoo` command: parse arguments, call one function, print."""

import argparse
import json
import os
import sys


def quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


def cmd_models(args):
    from zoo import presets

    rows = []
    for name in presets.names():
        preset = presets.get(name)
        model = presets.build(name)
        config = preset["model"]
        rows.append([name, config["family"], str(config["units"]),
                     str(config.get("num_layers", 1)), f"{model.count_params():,}",
                     preset["description"]])
    print(format_table(["name", "family", "units", "layers", "parameters", "description"], rows))


def format_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, [("-" * w) for w in widths], *rows]]
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(prog="charzoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the presets").set_defaults(run=cmd_models)
    return parser


def main(argv=None):
    quiet_tensorflow()
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except UserError as error:
        print(f"charzoo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("charzoo: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
