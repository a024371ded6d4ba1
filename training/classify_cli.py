"""`charzoo classify train | eval | predict`: the many-to-one task on the command line."""

import json

from training.errors import UserError


def cmd_train(args):
    from training import classify
    from training.config import parse_settings

    try:
        overrides = parse_settings(args.set, classify.FIELD_TYPES, classify.SETTABLE)
        for flag in ("max_time", "epochs", "seed"):
            if getattr(args, flag) is not None:
                overrides[flag] = getattr(args, flag)
        if args.balanced:
            overrides["balanced"] = True
        config = classify.resolve(args.preset, args.data, overrides)
        run_dir = args.run_dir or f"runs/classify-{config.preset}"
        metrics = classify.train(config, run_dir, log=lambda line: print(line, flush=True))
    except ValueError as error:
        raise UserError(str(error)) from None
    print(f"charzoo: {metrics['steps']:,} steps in {metrics['seconds']:,.0f} s; accuracy: "
          f"validation {metrics['valid']['accuracy']:.3f}, test {metrics['test']['accuracy']:.3f} "
          f"(mean recall per class {metrics['test']['balanced_accuracy']:.3f}; majority class "
          f"{metrics['majority']:.3f})"
          + (f"; exported {metrics['export']}" if "export" in metrics else ""))


def confusion_table(classes, matrix):
    """The confusion matrix as text: a row per true class, a column per predicted class
    (by the first three letters of its name), then the row's accuracy."""
    short = [name[:3] for name in classes]
    width = max(3, max(len(str(v)) for row in matrix for v in row))
    label = max(map(len, classes))
    lines = [" " * label + "  " + " ".join(s.rjust(width) for s in short) + "  accuracy"]
    for name, row in zip(classes, matrix):
        total = sum(row)
        right = row[classes.index(name)] / total if total else 0.0
        lines.append(name.ljust(label) + "  " + " ".join(str(v).rjust(width) for v in row)
                     + f"  {right:8.3f}")
    return "\n".join(lines)


def cmd_eval(args):
    from training import classify

    try:
        result = classify.evaluate_run(args.run, args.split, args.data)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.split} accuracy {result['accuracy']:.4f}, mean recall per class "
          f"{result['balanced_accuracy']:.4f}, loss {result['loss']:.4f} "
          f"({sum(map(sum, result['confusion'])):,} examples)\n")
    print(confusion_table(result["classes"], result["confusion"]))


def cmd_predict(args):
    from training import classify

    if not all(text.strip() for text in args.texts):
        raise UserError("every text must have at least one character")
    try:
        answers = classify.predict(args.run, args.texts, args.top)
    except ValueError as error:
        raise UserError(str(error)) from None
    for text, best in zip(args.texts, answers):
        print(f"{text}: " + ", ".join(f"{name} {p:.3f}" for name, p in best))


def add_parser(commands):
    classify = commands.add_parser("classify", help="classify strings (many-to-one): train, eval, predict")
    actions = classify.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a classifier preset on a directory of classes")
    train.add_argument("preset", help="gru, lstm, arch1, lstm-peephole, lstm-cifg or lstm-ln")
    train.add_argument("--data", required=True,
                       help="a directory with one UTF-8 <class>.txt per class, one example per line")
    train.add_argument("--run-dir", help="where the run goes (default runs/classify-PRESET)")
    train.add_argument("--max-time", type=float, help="training seconds (default 120)")
    train.add_argument("--epochs", type=float, help="passes over the training split")
    train.add_argument("--seed", type=int, help="seeds the split, the weights and the batches")
    train.add_argument("--balanced", action="store_true", help="draw classes uniformly")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a setting or model.<argument> (bidirectional, pooling, dropout, ...)")
    train.set_defaults(handler=cmd_train)
    evaluate = actions.add_parser("eval", help="accuracy and confusion matrix of a finished run")
    evaluate.add_argument("run", help="a finished classifier run directory")
    evaluate.add_argument("--split", choices=["train", "valid", "test"], default="test")
    evaluate.add_argument("--data", help="the class directory (default the run's)")
    evaluate.add_argument("--json", action="store_true", help="one JSON object")
    evaluate.set_defaults(handler=cmd_eval)
    predict = actions.add_parser("predict", help="the likeliest classes of each text")
    predict.add_argument("run", help="a finished classifier run directory")
    predict.add_argument("texts", nargs="+", metavar="TEXT")
    predict.add_argument("--top", type=int, default=3, help="classes shown per text (default 3)")
    predict.set_defaults(handler=cmd_predict)
