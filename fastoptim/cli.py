"""``python -m fastoptim`` / ``fastoptim``: compare Momentum, RMSProp and Adam on real data.

Subcommands
-----------
train (default)
    Stratified train/test split of the bundled digits (or ``--csv``), K-fold selection
    over Momentum (SGD, momentum 0.9), RMSProp and Adam at a few learning rates each,
    a table of mean +- std validation loss and accuracy, then the best setting
    refitted on all training data *and* as a K-fold majority-vote ensemble, both
    scored on the untouched test split.  Writes learning curves and Rosenbrock
    optimizer paths as PNGs when matplotlib is installed.
bench
    Times one optimizer step of fastoptim against the plain-NumPy reference.
"""

import argparse
import csv
import errno
import os
import sys
import time

import numpy as np

__all__ = ["main"]

PROG = "fastoptim"

OPTIMIZERS = {  # display name -> estimator parameters (besides the learning rate)
    "Momentum": {"solver": "sgd", "momentum": 0.9, "nesterovs_momentum": False},
    "RMSProp": {"solver": "rmsprop"},
    "Adam": {"solver": "adam"},
}

# Learning rates per optimizer: full run and --quick.
LEARNING_RATES = {
    "Momentum": (0.003, 0.01, 0.03, 0.1),
    "RMSProp": (1e-4, 3e-4, 1e-3, 3e-3),
    "Adam": (3e-4, 1e-3, 3e-3, 1e-2),
}
QUICK_LEARNING_RATES = {"Momentum": (0.03,), "RMSProp": (1e-3,), "Adam": (1e-3,)}

DEFAULTS = {"folds": 5, "epochs": 40, "hidden": 64, "batch_size": 32}
QUICK = {"folds": 3, "epochs": 3, "hidden": 16, "batch_size": 64}


class CLIError(Exception):
    """A user error: printed as one line on stderr, exit status 2."""


EXIT_BROKEN_PIPE = 128 + 13  # as a process killed by SIGPIPE (e.g. ``fastoptim | head -1``)


# --------------------------------------------------------------------------- parsing
def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _n_jobs(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if v == 0:
        raise argparse.ArgumentTypeError("n-jobs must not be 0 (use -1 for all cores)")
    return v


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"--seed must be an integer from 0 to {2**32 - 1}, "
                                         f"got {text}")
    return v


def _folds(text):
    v = _positive_int(text)
    if v < 2:
        raise argparse.ArgumentTypeError(f"need at least 2 folds, got {v}")
    return v


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage dump) with exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _train_parser():
    p = _Parser(
        prog=PROG,
        usage=f"{PROG} [train] [options]\n       {PROG} bench [--help]",
        description=(
            "Compare the Momentum (SGD with momentum 0.9), RMSProp and Adam optimizers "
            "on real data.  With no "
            "--csv, uses the bundled 8x8 handwritten digits (1,797 samples, 10 classes). "
            "Splits off a stratified test set, runs K-fold cross-validation over each "
            "optimizer at a few learning rates, prints mean +- std validation loss and "
            "accuracy, picks the setting with the lowest mean validation loss "
            "(learning rates: " + "; ".join(
                f"{n} {', '.join(f'{lr:g}' for lr in lrs)}"
                for n, lrs in LEARNING_RATES.items()) + "), then "
            "reports test accuracy of (a) that setting refitted on all training data "
            "and (b) the K fold models voting by majority.  Progress goes to stderr."),
        epilog=(
            f"'{PROG} bench' times one optimizer step of fastoptim against the NumPy "
            f"reference ('{PROG} bench --help').  Pictures need matplotlib: "
            'pip install "fastoptim[plot]".'),
    )
    d = p.add_argument_group("data")
    d.add_argument("--csv", metavar="PATH",
                   help="your own data: a CSV file with a header row, numeric feature "
                        "columns and one label column (labels may be any strings)")
    d.add_argument("--label-column", metavar="NAME",
                   help="name of the label column in --csv (default: the last column)")
    d.add_argument("--test-size", type=float, default=0.2, metavar="FRAC",
                   help="fraction of the data held out as the test split (default 0.2)")
    t = p.add_argument_group("training")
    t.add_argument("--seed", type=_seed, default=0,
                   help="seed for the split, the folds and every fit (default 0)")
    t.add_argument("--folds", type=_folds, default=None,
                   help=f"number of cross-validation folds (default {DEFAULTS['folds']}, "
                        f"--quick {QUICK['folds']})")
    t.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"training epochs per fit (default {DEFAULTS['epochs']}, "
                        f"--quick {QUICK['epochs']})")
    t.add_argument("--n-jobs", type=_n_jobs, default=-1, metavar="N",
                   help="parallel fits (joblib; -1 = all cores, the default)")
    t.add_argument("--quick", action="store_true",
                   help="tiny run (fewer folds, epochs, learning rates; small network) "
                        "for smoke tests")
    o = p.add_argument_group("output")
    o.add_argument("--output-dir", default="fastoptim-output", metavar="DIR",
                   help="where the PNGs go (default ./fastoptim-output)")
    o.add_argument("--no-plots", action="store_true", help="do not write pictures")
    o.add_argument("-q", "--quiet", action="store_true",
                   help="no per-fit progress lines on stderr")
    return p


# --------------------------------------------------------------------------- data
def load_csv(path, label_column=None):
    """Read a CSV with a header row: ``X`` float64, ``y`` (strings), feature names.

    Raises :class:`CLIError` with a one-line message on any problem.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise CLIError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise CLIError(f"{path} is a directory, not a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CLIError(f"cannot read {path}: {exc}") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise CLIError(f"{path} is empty")
    header = [h.strip() for h in rows[0]]
    if len(header) < 2:
        raise CLIError(f"{path}: need at least one feature column and a label column, "
                       f"found {len(header)} column(s) in the header")
    if label_column is None:
        label_idx = len(header) - 1
    elif label_column in header:
        label_idx = header.index(label_column)
    else:
        shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        raise CLIError(f"{path}: no column named {label_column!r} (columns: {shown})")
    data = rows[1:]
    if not data:
        raise CLIError(f"{path}: header only, no data rows")
    X = np.empty((len(data), len(header) - 1), dtype=np.float64)
    y = []
    feature_cols = [j for j in range(len(header)) if j != label_idx]
    for i, row in enumerate(data):
        if len(row) != len(header):
            raise CLIError(f"{path}, line {i + 2}: {len(row)} fields, expected "
                           f"{len(header)} as in the header")
        for jj, j in enumerate(feature_cols):
            try:
                X[i, jj] = float(row[j])
            except ValueError:
                raise CLIError(f"{path}, line {i + 2}: column {header[j]!r} is not a "
                               f"number: {row[j]!r}") from None
        y.append(row[label_idx].strip())
    if not np.all(np.isfinite(X)):
        raise CLIError(f"{path}: features contain nan or inf")
    return X, np.asarray(y), [header[j] for j in feature_cols], header[label_idx]


def _load_data(args):
    if args.csv is None:
        if args.label_column is not None:
            raise CLIError("--label-column needs --csv")
        from fastoptim.datasets import load_digits
        X, y = load_digits(return_X_y=True)
        return X, y, "digits (bundled, 8x8 handwritten digits)"
    X, y, _, label = load_csv(args.csv, args.label_column)
    return X, y, f"{args.csv} (label column {label!r})"


def _standardize(X_train, X_test):
    try:
        with np.errstate(over="raise", invalid="raise"):
            mean = X_train.mean(axis=0)
            std = X_train.std(axis=0)
            std[std == 0] = 1.0
            return (X_train - mean) / std, (X_test - mean) / std
    except FloatingPointError:
        big = np.abs(np.concatenate([X_train, X_test])).max()
        raise CLIError(f"features too large to standardize (overflow; largest magnitude "
                       f"{big:.3g}): rescale the data") from None


# --------------------------------------------------------------------------- model
def make_estimator(hidden, epochs, batch_size, seed):
    """The network every setting trains: one hidden layer, a fixed number of epochs."""
    from fastoptim.nn import MLPClassifier

    est = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=epochs,
                        batch_size=batch_size, random_state=seed)
    # float32 training, as before the estimators followed X's dtype (scikit-learn's rule
    # would train the float64 digits in float64): the main job's numbers stay comparable
    fixed = {"early_stopping": False, "shuffle": True, "alpha": 1e-4,
             "n_iter_no_change": epochs + 1, "tol": 0.0, "verbose": False,
             "dtype": np.float32}
    valid = est.get_params()
    est.set_params(**{k: v for k, v in fixed.items() if k in valid})
    return est


def param_sets(estimator, learning_rates):
    """One dict of estimator parameters per (optimizer, learning rate)."""
    valid = estimator.get_params()
    sets, names = [], []
    for name, lrs in learning_rates.items():
        for lr in lrs:
            p = {k: v for k, v in OPTIMIZERS[name].items() if k in valid}
            p["learning_rate_init"] = lr
            sets.append(p)
            names.append(name)
    return sets, names


def _convergence_warnings():
    """Every run trains a fixed number of epochs: "not converged" is expected."""
    try:
        from fastoptim.nn import ConvergenceWarning
    except ImportError:  # pragma: no cover
        return ()
    return (ConvergenceWarning,)


# --------------------------------------------------------------------------- output
def _fmt_lr(lr):
    return f"{lr:g}"


def results_table(names, cv, best_index):
    """Aligned text table of the cross-validation results; the best row is marked."""
    header = ["optimizer", "lr", "val loss (mean ± std)", "val accuracy (mean ± std)", ""]
    rows = []
    for i, name in enumerate(names):
        lr = cv["params"][i]["learning_rate_init"]
        ml, sl = cv["mean_val_loss"][i], cv["std_val_loss"][i]
        ma, sa = cv["mean_val_score"][i], cv["std_val_score"][i]
        rows.append([name, _fmt_lr(lr), f"{ml:.4f} ± {sl:.4f}", f"{ma:.4f} ± {sa:.4f}",
                     "<- best" if i == best_index else ""])
    widths = [max(len(r[j]) for r in rows + [header]) for j in range(len(header))]
    align = ["<", ">", ">", ">", "<"]

    def line(cells):
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    out = [line(header), line(["-" * w for w in widths[:-1]] + [""])]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _progress(names, total_width, stream):
    def callback(info):
        i = info["index"]
        lr = _fmt_lr(info["params"]["learning_rate_init"])
        print(f"  [{info['done']:>{total_width}}/{info['total']}] {names[i]:<8} lr={lr:<7} "
              f"fold {info['fold'] + 1}: val loss {info['loss']:.4f}, "
              f"acc {info['score']:.4f} ({info['fit_time']:.1f} s)",
              file=stream, flush=True)
    return callback


def _curves(search, names):
    """Per optimizer: the best learning rate's per-epoch curves (folds x epochs)."""
    cv = search.cv_results_
    mean = np.where(np.isfinite(cv["mean_val_loss"]), cv["mean_val_loss"], np.inf)
    curves, kind = {}, "validation"
    for name in OPTIMIZERS:
        idx = [i for i, n in enumerate(names) if n == name]
        if not idx:
            continue
        best = min(idx, key=lambda i: mean[i])
        per_fold = cv["val_loss_curves"][best]
        if any(c is None for c in per_fold):
            per_fold, kind = cv["loss_curves"][best], "training"
        if any(c is None for c in per_fold):
            continue
        n_ep = min(len(c) for c in per_fold)
        label = f"{name} lr={_fmt_lr(cv['params'][best]['learning_rate_init'])}"
        curves[label] = np.array([c[:n_ep] for c in per_fold])
    return curves, kind


def _write_plots(search, names, out_dir, folds, stream):
    from fastoptim import plotting

    if not plotting.have_matplotlib():
        print(f"\nPictures skipped: matplotlib is not installed.  To get the learning "
              f"curves and the Rosenbrock paths: {plotting.PLOT_HINT}", file=stream)
        return []
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create output directory {out_dir}: {exc}") from None
    written = []
    curves, kind = _curves(search, names)
    if curves:
        path = os.path.join(out_dir, "learning_curves.png")
        plotting.plot_learning_curves(
            curves, path,
            title=f"{kind.capitalize()} loss per epoch, best learning rate of each "
                  f"optimizer\n(mean ± std over {folds} folds)",
            ylabel=f"{kind} log-loss")
        written.append(path)
    path = os.path.join(out_dir, "rosenbrock_paths.png")
    plotting.plot_rosenbrock_paths(plotting.optimizer_paths(), path)
    written.append(path)
    return written


# --------------------------------------------------------------------------- commands
def train(args, stdout=None, stderr=None):
    from fastoptim.datasets import train_test_split
    from fastoptim.model_selection import KFoldSearch

    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    t0 = time.perf_counter()
    cfg = dict(QUICK if args.quick else DEFAULTS)
    if args.folds is not None:
        cfg["folds"] = args.folds
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    if not 0 < args.test_size < 1:
        raise CLIError(f"--test-size must be between 0 and 1, got {args.test_size}")

    X, y_raw, source = _load_data(args)
    classes, y = np.unique(y_raw, return_inverse=True)
    if len(classes) < 2:
        raise CLIError(f"need at least 2 classes, the labels have {len(classes)}")
    try:
        X_tr, X_te, y_tr, y_te = train_test_split(
            X, y, test_size=args.test_size, stratify=True, random_state=args.seed)
    except ValueError as exc:
        raise CLIError(f"cannot split the data: {exc}") from None
    counts = np.bincount(y_tr, minlength=len(classes))
    if counts.min() < cfg["folds"]:
        raise CLIError(f"class {classes[np.argmin(counts)]!r} has {counts.min()} training "
                       f"sample(s), fewer than --folds {cfg['folds']}")
    X_tr, X_te = _standardize(X_tr, X_te)

    est = make_estimator(cfg["hidden"], cfg["epochs"], cfg["batch_size"], args.seed)
    sets, names = param_sets(est, QUICK_LEARNING_RATES if args.quick else LEARNING_RATES)
    from fastoptim.model_selection import _capped_n_jobs
    n_jobs, note = _capped_n_jobs(args.n_jobs)
    if note:
        print(f"{PROG}: note: --n-jobs: {note}", file=stderr, flush=True)
    import joblib
    n_jobs = joblib.effective_n_jobs(n_jobs)
    print(f"fastoptim: {source}\n"
          f"  {len(y_tr)} training / {len(y_te)} test samples, {X.shape[1]} features, "
          f"{len(classes)} classes\n"
          f"  network: {X.shape[1]}-{cfg['hidden']}-{len(classes)}, {cfg['epochs']} epochs, "
          f"batch {cfg['batch_size']}; {cfg['folds']}-fold CV of {len(sets)} settings "
          f"= {len(sets) * cfg['folds']} fits on {n_jobs} job(s)", file=stdout, flush=True)

    callback = None if args.quiet else _progress(
        names, len(str(len(sets) * cfg["folds"])), stderr)
    search = KFoldSearch(est, sets, cv=cfg["folds"], n_jobs=n_jobs, refit="both",
                         random_state=args.seed, callback=callback,
                         val_curves=True,  # same training with or without plots
                         ignore_warnings=_convergence_warnings())
    if not args.quiet:
        print("training (one line per finished fit):", file=stderr, flush=True)
    search.fit(X_tr, y_tr)
    if not args.quiet:
        print(f"refitted the best setting on all {len(y_tr)} training samples "
              f"({search.refit_time_:.1f} s)", file=stderr, flush=True)
    cv = search.cv_results_
    best = search.best_index_

    print(f"\n{cfg['folds']}-fold cross-validation on the training split "
          f"(validation loss = log-loss):", file=stdout)
    print(results_table(names, cv, best), file=stdout)
    best_lr = _fmt_lr(search.best_params_["learning_rate_init"])
    print(f"\nbest: {names[best]} lr={best_lr} (lowest mean validation loss "
          f"{cv['mean_val_loss'][best]:.4f})", file=stdout)
    refit_acc = search.best_estimator_.score(X_te, y_te)
    ens_acc = search.ensemble_.score(X_te, y_te)
    print(f"\ntest accuracy ({len(y_te)} held-out samples):\n"
          f"  refit on all training data:        {refit_acc:.4f}\n"
          f"  {cfg['folds']}-fold majority-vote ensemble:     {ens_acc:.4f}",
          file=stdout, flush=True)

    if not args.no_plots:
        try:
            written = _write_plots(search, names, args.output_dir, cfg["folds"], stdout)
        except OSError as exc:
            raise CLIError(f"cannot write pictures to {args.output_dir}: {exc}") from None
        if written:
            print("\nwrote " + ", ".join(written), file=stdout)
    print(f"\ndone in {time.perf_counter() - t0:.1f} s", file=stdout, flush=True)
    return 0


def main(argv=None):
    """Entry point of ``python -m fastoptim`` and the ``fastoptim`` console script.

    Returns the exit status (0 ok, 2 usage or data error).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "train"
    if argv and argv[0] in ("train", "bench"):
        command = argv.pop(0)
    if command == "bench":
        from fastoptim import bench  # the benchmark report has its own parser

        parser = bench.build_parser(f"{PROG} bench", parser_class=_Parser)
    else:
        parser = _train_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status = bench.run(args) if command == "bench" else train(args)
        sys.stdout.flush()  # a full disk or closed pipe shows here, not at exit
        return status
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{PROG}: error: out of memory (smaller --sizes for bench, or less data)",
              file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away: stop quietly, like other tools
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG):
            raise
        _silence_stdout()
        print(f"{PROG}: error: cannot write the output: {exc.strerror}", file=sys.stderr)
        return 1


def _silence_stdout():
    """Point stdout at /dev/null, so that the interpreter's final flush of what is
    still buffered does not fail again with a second message."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, AttributeError, ValueError):  # stdout without a file descriptor
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
