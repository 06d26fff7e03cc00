"""The `dedupd` command line: argv -> settings -> a function in commands.py.

This is the one place that maps exceptions to one-line messages and exit codes:
0 ok, 1 a runtime failure, 2 usage, config, store or model-loading error. DEDUPD_DEBUG=1 shows tracebacks.
Heavy libraries (torch, transformers, faiss, lancedb) are imported only inside the commands, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dedupd import __version__
from dedupd.errors import DedupdError
from dedupd.model.settings import PRECISIONS

POLICIES = ("lexi", "smallest", "largest", "newest", "oldest", "resolution", "protected", "format")
BATCH_HELP = "images per model batch and device (default: model.batch_size, else 128 per GPU, 16 on the CPU)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dedupd", description="Find and safely remove duplicate and near-duplicate photos."
    )
    parser.add_argument("--version", action="version", version=f"dedupd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _scan_parser(sub)
    _report_parser(sub)
    _purge_parser(sub)
    _common(sub.add_parser("status", help="what the store holds: files, embedded, unreadable, groups"))
    decide = _common(sub.add_parser("decide", help="decisions that stick across rescans and renames"))
    decide.add_argument(
        "action",
        choices=["keep-all", "not-duplicate", "keep", "list", "undo"],
        help="keep-all GROUP_OR_PATH...; not-duplicate A B; keep PATH; list; undo ID...",
    )
    decide.add_argument("targets", nargs="*", help="group ids (from the report) or paths; ids for undo")
    trash = _common(sub.add_parser("trash", help="manage the trash of earlier purges"))
    trash.add_argument("action", choices=["empty"], help="empty: remove trashed files for good")
    trash.add_argument("--older-than", default="30d", metavar="AGE", help="only files trashed before AGE (30d, 12h)")
    _preset(_common(sub.add_parser("run", help="the watching service (systemd: Type=notify)")))
    _bench_parser(sub)
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file", nargs="?", help="YAML config (default: built-in defaults)")
    return parser


def _common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", metavar="FILE", help="YAML config file (CLI flags override it)")
    p.add_argument("--store", metavar="DIR", help="store directory (default: the user's data dir)")
    p.add_argument("--model", help="hub id or local folder of the embedding model")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    return p


def _preset(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        choices=("default", "fast"),
        help="fast: max_patches 64 plus int8 (or bf16 where the CPU or GPU has it), vectors under their own key "
        "(default: model.preset)",
    )


def _grouping(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, help="cosine similarity for a duplicate (default 0.985)")
    p.add_argument(
        "--keep-policy",
        metavar="P[,P...]",
        help=f"which copy to keep: {', '.join(POLICIES)} (default lexi); a comma list is tried in order",
    )


def _scan_parser(sub) -> None:
    p = _common(sub.add_parser("scan", help="index FOLDER, group duplicates, write the report (one shot)"))
    p.add_argument("folder", help="the photo folder to scan")
    _grouping(p)
    _preset(p)
    p.add_argument("--k", type=int, help="neighbours searched per image (default 10)")
    p.add_argument("--batch-size", type=int, help=BATCH_HELP)
    p.add_argument("--gpus", type=int, help="number of GPUs to use (default: all; 0 = CPU)")
    p.add_argument("--gpu-memory-fraction", type=float, help="share of each GPU's memory to use (default 0.9)")
    p.add_argument("--inplace", action="store_true", help="delete the duplicates (default: report only)")
    p.add_argument("--trash", metavar="DIR", help="with --inplace: move duplicates under DIR instead of deleting")
    p.add_argument("--report", metavar="PATH", help="report path (default FOLDER/dedup_report.json)")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="embed on a Ray cluster: local, auto or HOST:PORT (default: cluster.ray_address; needs the ray extra)",
    )


def _report_parser(sub) -> None:
    p = _common(sub.add_parser("report", help="write a report from the store (no embedding)"))
    _grouping(p)
    p.add_argument(
        "--out",
        metavar="PATH",
        help="output file, or - for stdout (default: report.path or -); with --format html, a folder",
    )
    p.add_argument(
        "--format",
        choices=("json", "html"),
        default="json",
        help="json (the report) or html (a static gallery with thumbnails)",
    )


def _purge_parser(sub) -> None:
    p = _common(sub.add_parser("purge", help="remove duplicates (dry run unless --inplace)"))
    p.add_argument("--report", metavar="PATH", help="act on this report (default: plan from the store)")
    p.add_argument("--keep-policy", metavar="P[,P...]", help="policy when planning from the store")
    p.add_argument("--threshold", type=float, help="threshold when planning from the store")
    p.add_argument("--inplace", action="store_true", help="really act (default: print what would happen)")
    p.add_argument("--trash", metavar="DIR", help="move victims under DIR, keeping their path below the root")
    p.add_argument("--undo", metavar="JOURNAL", help="put the files a purge trashed back in their places")
    p.add_argument(
        "--forget",
        metavar="FOLDER",
        help="close the interrupted acts in FOLDER, a folder you removed yourself, that no purge can settle",
    )


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure decode, model, end-to-end, hash and search speed on this machine")
    p.add_argument("folder", nargs="?", help="photos to measure on (default: generated camera-like 12 MP JPEGs)")
    p.add_argument("--images", type=int, metavar="N", help="images to generate (default 32), or at most N from FOLDER")
    p.add_argument(
        "--model",
        help="hub id or local folder (default: model.name), or random:siglip2-base: the "
        "SigLIP2-base naflex architecture with random weights, measured instead of the default model "
        "when that cannot be loaded",
    )
    p.add_argument("--size", metavar="WxH", help="size of the generated JPEGs (default 4000x3000, 12 MP)")
    p.add_argument(
        "--vectors",
        type=int,
        default=20_000,
        metavar="V",
        help="vectors for the all-vs-all search timing (default 20000; 0 skips it)",
    )
    p.add_argument("--batch-size", type=int, help=BATCH_HELP)
    p.add_argument(
        "--workers",
        type=int,
        metavar="W",
        help="decode worker processes (default: scan.decode_workers, else half the cores, at least 2, with the model "
        "on the CPU; cores - 1 with it on a GPU)",
    )
    p.add_argument(
        "--threads",
        type=int,
        metavar="T",
        help="torch CPU threads (default: model.threads, else every core)",
    )
    p.add_argument(
        "--max-patches",
        type=int,
        metavar="P",
        help="naflex patch budget (default: model.max_patches, else the checkpoint's)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="int8: dynamic int8 quantisation of the Linear layers, CPU only; float: never int8, even under the fast "
        "preset (default: model.precision)",
    )
    _preset(p)
    p.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive-loop baseline")
    p.add_argument(
        "--no-store",
        dest="use_store",
        action="store_false",
        help="end to end without the LanceDB commit and pair search (where lancedb is not installed)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="R",
        help="rounds of model only, end to end and naive, taken in turns; the best of each is shown",
    )
    p.add_argument(
        "--knobs", action="store_true", help="also measure max_patches 128/64, int8 and the fast preset with agreement"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--config", metavar="FILE", help="YAML config file (scan and dedup settings)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")


_OVERRIDES = {
    "store": "store",
    "model": "model.name",
    "threshold": "dedup.threshold",
    "keep_policy": "dedup.keep_policy",
    "k": "dedup.k",
    "batch_size": "model.batch_size",
    "gpus": "model.gpus",
    "gpu_memory_fraction": "model.gpu_memory_fraction",
    "preset": "model.preset",
    "ray": "cluster.ray_address",
}


def _config(args: argparse.Namespace):
    from dedupd.config import load_config

    overrides = {dotted: getattr(args, name, None) for name, dotted in _OVERRIDES.items()}
    return load_config(args.config, overrides)


def dispatch(args: argparse.Namespace) -> int:
    from dedupd import commands

    if args.command == "check-config":
        return commands.check_config(args.file)
    config = _config(args)
    _setup_logging("debug" if args.verbose else config.log_level)
    if args.command == "scan":
        return commands.scan(args.folder, config, args.report, args.inplace, args.trash)
    if args.command == "report":
        return commands.report(config, args.out, fmt=args.format)
    if args.command == "purge" and args.undo:
        return commands.undo_purge(config, args.undo)
    if args.command == "purge" and args.forget:
        return commands.forget_purge(config, args.forget)
    if args.command == "purge":
        return commands.purge(config, args.report, args.inplace, args.trash)
    if args.command == "decide":
        return commands.decide(config, args.action, args.targets)
    if args.command == "trash":
        return commands.empty_trash(config, args.older_than)
    if args.command == "status":
        return commands.status(config)
    if args.command == "bench":
        from dedupd.bench import bench_command, settings_from_args

        return bench_command(settings_from_args(args), config, args.json)
    if args.command == "run":
        from dedupd.service.daemon import run

        return run(args.config, config)
    raise AssertionError(args.command)


def _setup_logging(level: str) -> None:
    from dedupd.logs import setup_logging

    setup_logging(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return dispatch(args)
    except KeyboardInterrupt:
        print("dedupd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors become messages
        return _fail(exc)


def _fail(exc: Exception) -> int:
    if os.environ.get("DEDUPD_DEBUG"):
        import traceback

        traceback.print_exc()
    code, message = classify(exc)
    print(f"dedupd: error: {message}", file=sys.stderr)
    return code


def classify(exc: Exception) -> tuple[int, str]:
    if isinstance(exc, DedupdError):
        return exc.exit_code, str(exc)
    from dedupd.store import LockBusy, StoreError

    if isinstance(exc, (StoreError, LockBusy)):
        return 2, str(exc)
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return 1, f"{where}{exc.strerror or exc}"
    return 1, f"unexpected {type(exc).__name__}: {exc} (DEDUPD_DEBUG=1 shows the traceback)"
