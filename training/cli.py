"""The `charzoo` command: parse arguments, call one function, print."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from training import classify_cli
from training.errors import UserError


def quiet_tensorflow():
    """Imports TensorFlow with its native start-up chatter (CUDA probing, oneDNN) muted."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # Those lines are written by C++ before any Python setting applies, so mute the fd.
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
    print("\nclassifier presets (charzoo classify train NAME):")
    print(format_table(["name", "family", "units", "embedding"],
                       [[name, preset["model"]["family"], str(preset["model"]["units"]),
                         str(preset["model"]["embedding_size"])]
                        for name, preset in presets.CLASSIFIERS.items()]))


TRAINING_FLAGS = ("data", "normalize", "batch_size", "unrollings", "learning_rate", "steps", "epochs",
                  "max_time", "seed", "strategy", "init_from", "init_optimizer")


def training_overrides(args):
    """The command line's settings as typed Config overrides: the named flags, then `--set`."""
    from training.config import parse_settings

    flags = {k: getattr(args, k) for k in TRAINING_FLAGS if getattr(args, k) is not None}
    return {**flags, **parse_settings(args.set)}


def cmd_train(args):
    from training import config as configuration, data
    from training.loop import TrainingError, train
    from training.run_dir import RunDir

    run_dir = Path(args.run_dir or Path("runs") / args.preset.lower())
    run = RunDir(run_dir)
    try:
        if run.has_config() and run.has_checkpoint():  # resume: the run's own settings, then the flags
            values = run.config_values()
            if values["preset"] != args.preset.lower():
                raise UserError(f"{run_dir} holds a {values['preset']} run; choose another --run-dir")
            config = configuration.override(values, training_overrides(args))
        else:  # new, or a run that never reached a checkpoint: nothing to keep
            config = configuration.resolve(args.preset, with_source_defaults(training_overrides(args)))
        print(f"charzoo: training {config.preset} into {run_dir} on {config.data}", flush=True)
        metrics = train(config, run_dir)
    except (ValueError, data.DataError, TrainingError) as error:
        raise UserError(str(error)) from None
    if metrics.get("finished"):
        print(f"charzoo: {run_dir} is finished ({metrics['steps']:,} steps; validation "
              f"{metrics['valid_bpc']:.3f} bpc, test {metrics['test_bpc']:.3f}): nothing to do. "
              f"`charzoo export {run_dir}` exports it again; a larger --steps or --epochs trains on.")
    elif "interrupted" not in metrics:
        print(f"charzoo: {metrics['steps']} steps, {metrics['chars_per_second']:,.0f} chars/s; "
              f"validation {metrics['valid_bpc']:.3f} bpc, test {metrics['test_bpc']:.3f} bpc "
              f"(uniform {metrics['uniform_bpc']:.3f})")
    return None


def with_source_defaults(overrides):
    """With `--init-from`, the source's model and normalisation unless the command line sets them."""
    if not overrides.get("init_from"):
        return overrides
    from training import finetune

    source = finetune.find_source(overrides["init_from"])
    merged = {**overrides, "model": {**source.model, **overrides.get("model", {})}}
    if source.normalize and "normalize" not in overrides:
        merged["normalize"] = source.normalize
    return merged


def cmd_eval(args):
    from training import data
    from training.run_dir import load_run_model
    from training.step import Trainer, make_optimizer

    try:
        config, alphabet, model = load_run_model(Path(args.run))
        corpus = data.load(args.data or config.data, args.normalize or config.normalize)
    except (ValueError, data.DataError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    if corpus.alphabet != alphabet:
        raise UserError(f"{args.data}: its alphabet differs from the one {args.run} was trained on")
    trainer = Trainer(model, make_optimizer(config), config.clip_norm)
    started = time.monotonic()
    metrics = trainer.evaluate(corpus.split(args.split), config.eval_streams)
    result = {"bpc": metrics["bpc"], "split": args.split, "characters": metrics["characters"],
              "loss_nats": metrics["loss"], "corpus": corpus.name, "run": str(args.run),
              "seconds": time.monotonic() - started}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.split}: {result['bpc']:.4f} bits per character over "
              f"{result['characters']:,} characters of {corpus.name}")


def cmd_export(args):
    from training.export import export_run

    try:
        path = export_run(Path(args.run), args.out, args.name, args.which)
    except ValueError as error:
        raise UserError(str(error)) from None
    except OSError as error:
        raise UserError(f"cannot write the export to {error.filename or args.out}: "
                        f"{error.strerror or error}") from None
    print(path)


def cmd_sample(args):
    import dataclasses

    from serving.model import sample
    from serving.settings import Settings

    # Flags left out are absent from `args`, so the defaults stay `Settings`'s alone.
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if hasattr(args, f.name)}
    if "stop" in settings:
        settings["stop"] = tuple(settings["stop"])
    try:
        samples, seed = sample(args.model, args.prime, seed=args.seed, **settings)
    except (ValueError, OSError) as error:
        raise UserError(str(error)) from None
    for text in samples:
        print(args.prime + text)
    print(f"(seed {seed})", file=sys.stderr)


def cmd_score(args):
    from serving.model import ExportedModel

    try:
        text = args.text if args.file is None else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {args.file}: {getattr(error, 'strerror', None) or error}") from None
    try:
        scored = ExportedModel(args.model).score(text)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.json:
        print(json.dumps(scored))
        return
    if sys.stdout.isatty():
        print_heat_map(scored["text"], scored["surprisal"])
    print(f"{scored['bpc']:.4f} bits per character over {scored['characters']:,} characters "
          f"({scored['bits']:,.1f} bits)")


def print_heat_map(text, surprisal, console=None):
    """The text on a background from white (expected) to red (8 bits or more of surprise)."""
    from rich.console import Console
    from rich.text import Text

    shaded = Text()
    for char, bits in zip(text, surprisal):
        level = round(255 - 191 * min(bits, 8.0) / 8.0)  # as the page shades it
        shaded.append(char, style=f"black on rgb(255,{level},{level})")
    (console or Console(highlight=False)).print(shaded)


SERVICE_OPTIONS = ("max_body", "request_timeout", "body_timeout", "stream_threads", "rescan_interval")


def cmd_serve(args):
    try:
        import dataclasses

        from serving.app import LIMITS, serve
    except ImportError as error:
        raise UserError(f"serving needs the `serve` extra: pip install 'charzoo[serve]' ({error})")
    given = {k: v for k, v in vars(args).items() if v is not None}
    limits = {f.name: given[f.name] for f in dataclasses.fields(LIMITS) if f.name in given}
    options = {k: given[k] for k in SERVICE_OPTIONS if k in given}
    try:
        serve(args.models, host=args.host, port=args.port, max_connections=args.max_connections,
              limits=dataclasses.replace(LIMITS, **limits), **options)
    except (ValueError, OSError) as error:
        raise UserError(str(error)) from None


def cmd_zoo_build(args):
    from training import data, zoo_build
    from training.config import parse_settings
    from training.loop import TrainingError

    names = [n.strip().lower() for n in args.presets.split(",")] if args.presets else None
    try:
        rows = zoo_build.build(args.models, args.runs, args.data or "text8", args.normalize,
                               args.max_time, args.steps, names, parse_settings(args.set))
    except (ValueError, data.DataError, TrainingError) as error:
        raise UserError(str(error)) from None
    print(zoo_build.markdown_table(rows, args.data or "text8"))


def check_bench_inputs(args):
    """Rejects the inputs that would otherwise fail, or hang, only after minutes of benchmarking."""
    for flag, seconds in (("--seconds", args.seconds), ("--names-seconds", args.names_seconds)):
        if seconds is not None and not 0 < seconds < float("inf"):
            raise UserError(f"{flag} {seconds:g}: give a positive number of seconds")
    if args.plot:
        plot = Path(args.plot)
        if plot.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise UserError(f"--plot {args.plot}: give a .png, .pdf or .svg file")
        if not plot.parent.is_dir() or not os.access(plot.parent, os.W_OK):
            raise UserError(f"--plot {args.plot}: {plot.parent} is not a writable directory")
    if args.names_data:
        from training import labelled
        try:
            labelled.read_classes(args.names_data)
        except ValueError as error:
            raise UserError(f"--names-data: {error}") from None


def cmd_bench(args):
    from benchmarks import bench, names, quality
    from training import data

    check_bench_inputs(args)
    sections = (args.only.split(",") if args.only else
                bench.QUICK_SECTIONS if args.quick else bench.SECTIONS)
    unknown = set(sections) - set(bench.SECTIONS)
    if unknown:
        raise UserError(f"--only {','.join(sorted(unknown))}: valid sections: {', '.join(bench.SECTIONS)}")
    if args.quality:
        sections = ("quality",)
    options = {key: value for key, value in (
        ("names", args.rows and args.rows.split(",")), ("corpus_spec", args.data),
        ("normalize", args.normalize), ("seconds", args.seconds), ("plot", args.plot)) if value}
    if args.seed is not None:  # 0 is a seed
        options["seed"] = args.seed
    if args.normalize == "none":
        options["normalize"] = None
    unknown = set(options.get("names", ())) - set(quality.ROWS)
    if unknown:
        raise UserError(f"--rows {','.join(sorted(unknown))}: valid rows: {', '.join(quality.ROWS)}")
    if options and "quality" not in sections:
        raise UserError("--rows, --data, --normalize, --seconds, --seed and --plot are the "
                        "quality section's: add --quality (or --only quality)")
    names_options = {"directory": args.names_data, "seconds": args.names_seconds,
                     "rows": args.names_rows and args.names_rows.split(",")}
    names_options = {key: value for key, value in names_options.items() if value}
    unknown = set(names_options.get("rows", ())) - set(names.ROWS)
    if unknown:
        raise UserError(f"--names-rows {','.join(sorted(unknown))}: valid rows: {', '.join(names.ROWS)}")
    if "names" in sections and not args.names_data:
        print("charzoo: bench: the names section needs --names-data DIR; skipped", file=sys.stderr)
    try:
        result = bench.run(quick=args.quick, sections=sections, quality_options=options,
                           names_options=names_options)
    except data.DataError as error:  # the quality section's corpus, read before any training
        raise UserError(str(error)) from None
    print(json.dumps(result, indent=2) if args.json else bench.format_table(result))


def format_table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in [header, [("-" * w) for w in widths], *rows]]
    return "\n".join(lines)


def add_data_arguments(parser):
    parser.add_argument("--data", help="text8 (default), builtin, tinyshakespeare (both downloaded "
                                       "on first use), or a path to text8.zip / a text file")
    parser.add_argument("--normalize", choices=["text8"], help="map the text to text8's alphabet")


def build_parser():
    parser = argparse.ArgumentParser(prog="charzoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the presets").set_defaults(handler=cmd_models)

    train = commands.add_parser("train", help="train a preset (resumes an existing run)")
    train.add_argument("preset", help="preset name (see `charzoo models`)")
    train.add_argument("--run-dir", help="run directory (default runs/PRESET)")
    add_data_arguments(train)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--unrollings", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--steps", type=int, help="stop after this many steps in all")
    train.add_argument("--epochs", type=float, help="stop after this many epochs")
    train.add_argument("--max-time", type=float,
                       help="train for SECONDS, validations and checkpoints included (start-up "
                            "and the final evaluation are not), then evaluate")
    train.add_argument("--seed", type=int)
    train.add_argument("--strategy", choices=["none", "mirrored", "multiworker"],
                       help="tf.distribute: all local devices, or workers from TF_CONFIG")
    train.add_argument("--init-from", metavar="RUN_OR_EXPORT",
                       help="start from the weights of a run or export (fine-tuning): its model, "
                            "alphabet and normalisation; a fresh optimizer, cursor and schedule")
    train.add_argument("--init-optimizer", action="store_const", const=True,
                       help="with --init-from RUN: also carry its optimizer and step count, so the "
                            "learning-rate schedule goes on where it stopped (weights of its last checkpoint)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config field, or model.ARGUMENT (repeatable)")
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("eval", help="bits per character of a run on a split")
    evaluate.add_argument("run", help="run directory")
    add_data_arguments(evaluate)
    evaluate.add_argument("--split", choices=["valid", "test", "train"], default="valid")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=cmd_eval)

    export = commands.add_parser("export", help="write a run's model as a versioned SavedModel")
    export.add_argument("run", help="run directory")
    export.add_argument("--out", help="models directory (default RUN/export)")
    export.add_argument("--name", help="model name (default the preset)")
    export.add_argument("--which", choices=["best", "last"], default="best",
                        help="the best validation's weights (default) or the last ones")
    export.set_defaults(handler=cmd_export)

    sample = commands.add_parser("sample", help="sample from an exported model")
    sample.add_argument("model", help="an export: MODELS/NAME or MODELS/NAME/VERSION")
    sample.add_argument("--prime", default="", help="text to continue")
    sample.add_argument("--length", type=int, default=argparse.SUPPRESS, help="default 200")
    sample.add_argument("--temperature", type=float, default=argparse.SUPPRESS, help="0 is greedy")
    sample.add_argument("--top-k", type=int, default=argparse.SUPPRESS, help="0 (default) is off")
    sample.add_argument("--top-p", type=float, default=argparse.SUPPRESS, help="1.0 (default) is off")
    sample.add_argument("--seed", type=int, help="default: random, printed to stderr")
    sample.add_argument("--num-samples", type=int, default=argparse.SUPPRESS)
    sample.add_argument("--stop", action="append", default=argparse.SUPPRESS, metavar="TEXT",
                        help="end a sample at the first of these it generates (repeatable)")
    sample.add_argument("--include-stop", action="store_true", default=argparse.SUPPRESS,
                        help="keep the stop text at the end of the sample")
    sample.add_argument("--beam-width", type=int, default=argparse.SUPPRESS,
                        help="> 1: the most likely continuations by beam search, not samples")
    sample.set_defaults(handler=cmd_sample)

    score = commands.add_parser("score", help="how surprised an exported model is by a text")
    score.add_argument("model", help="an export: MODELS/NAME or MODELS/NAME/VERSION")
    source = score.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to score")
    source.add_argument("--file", help="a UTF-8 file to score")
    score.add_argument("--json", action="store_true",
                       help="one JSON object: text, surprisal per character, bits, bpc")
    score.set_defaults(handler=cmd_score)

    zoo = commands.add_parser("zoo", help="the saved zoo").add_subparsers(dest="action", required=True)
    build = zoo.add_parser("build", help="train and export every preset into one models directory")
    add_data_arguments(build)
    build.add_argument("--models", default="models", help="models directory (default models/)")
    build.add_argument("--runs", default="runs/zoo", help="run directories (default runs/zoo/)")
    build.add_argument("--max-time", type=float, help="training seconds per preset")
    build.add_argument("--steps", type=int, help="training steps per preset")
    build.add_argument("--presets", help="comma-separated presets (default all)")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a config override for every preset (repeatable)")
    build.set_defaults(handler=cmd_zoo_build)

    bench = commands.add_parser("bench", help="throughput against the peers, on this machine")
    bench.add_argument("--quick", action="store_true", help="a run of about a minute")
    bench.add_argument("--json", action="store_true", help="one JSON object: machine and rows")
    bench.add_argument("--only", metavar="SECTION,...",
                       help="train, widths, variants, pipeline, sampling, service, soak, memory, "
                            "quality, names (default all; with --quick: train to soak, without "
                            "widths and variants)")
    quality = bench.add_argument_group(
        "quality: charzoo and the PyTorch reference trained for the same time, one after the other")
    quality.add_argument("--quality", action="store_true", help="only the quality section")
    quality.add_argument("--rows", metavar="ROW,...",
                         help="lstm-256, lstm-512, gru-512, arch1-tuned, ... (an unknown row lists them all; "
                              "default: all in a full run, lstm-256 and arch1 with --quick)")
    quality.add_argument("--data", help="corpus (default tinyshakespeare)")
    quality.add_argument("--normalize", choices=["text8", "none"],
                         help="text8 (default) or none")
    quality.add_argument("--seconds", type=float,
                         help="training budget of each side (default 300; 60 with --quick)")
    quality.add_argument("--seed", type=int,
                         help="seed of both sides' initialisation (default 0); single runs differ "
                              "by ~0.01-0.02 bpc")
    quality.add_argument("--plot", metavar="FILE.png", help="draw the validation curves")
    names = bench.add_argument_group("names: classifiers of names by language, charzoo and PyTorch "
                                     "at equal time")
    names.add_argument("--names-data", metavar="DIR", help="a class directory (PyTorch's names/)")
    names.add_argument("--names-seconds", type=float, help="training budget of each side (default 120)")
    names.add_argument("--names-rows", metavar="ROW,...",
                       help="gru, gru-bi, lstm, lstm-bi, arch1, lstm-peephole, lstm-cifg, lstm-ln "
                            "(default all)")
    bench.set_defaults(handler=cmd_bench)

    classify_cli.add_parser(commands)

    serve = commands.add_parser("serve", help="the HTTP sampling service")
    serve.add_argument("--models", required=True, help="models directory (MODELS/NAME/VERSION)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    limits = serve.add_argument_group("limits (over them: 413 for the body, 422 otherwise)")
    limits.add_argument("--max-length", type=int, help="longest sample (default 2000)")
    limits.add_argument("--max-samples", type=int, help="most samples per request (default 16)")
    limits.add_argument("--max-prime", type=int, help="longest prime, in characters (default 4000)")
    limits.add_argument("--max-characters", type=int,
                        help="most length x num_samples per request (default 32000)")
    limits.add_argument("--max-text", type=int,
                        help="longest text to score, in characters (default 20000)")
    limits.add_argument("--max-body", type=int, help="largest request body, bytes (default 65536)")
    limits.add_argument("--request-timeout", type=float,
                        help="seconds before a request is cancelled with 504 (default 30)")
    limits.add_argument("--body-timeout", type=float,
                        help="seconds to wait for a stalled request body, then 408 (default 10)")
    limits.add_argument("--max-connections", type=int, default=512,
                        help="open connections before new ones get 503 (default 512)")
    serve.add_argument("--stream-threads", type=int, help="threads generating streams (default 4)")
    serve.add_argument("--rescan-interval", type=float,
                       help="seconds between looks for new, changed or deleted versions (default 2)")
    serve.set_defaults(handler=cmd_serve)
    return parser


def main(argv=None):
    quiet_tensorflow()
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
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
