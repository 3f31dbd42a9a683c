"""``python -m tinystories.volume``: look after the Modal volume that ``--modal`` runs use.

python -m tinystories.volume ls [PATH] [-r]
python -m tinystories.volume upload LOCAL REMOTE [--force]
python -m tinystories.volume download REMOTE [LOCAL]
python -m tinystories.volume rm PATH [-r]
python -m tinystories.volume clean [--checkpoints | --all] [--yes]

Paths on the volume are relative to its root (what the containers see under /data).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..modal.settings import DEFAULT_VOLUME
from .common import add_debug_argument, fail, print_error


def build_parser(prog: str = "python -m tinystories.volume") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Look after the Modal volume that --modal runs use. Paths on the volume "
        "are relative to its root (what the containers see under /data).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"""examples:
  {prog} ls [PATH] [-r]
  {prog} upload LOCAL REMOTE [--force]
  {prog} download REMOTE [LOCAL]
  {prog} rm PATH [-r]
  {prog} clean [--checkpoints | --all] [--yes]
""",
    )
    p.add_argument(
        "--volume", default=DEFAULT_VOLUME, help=f"volume name (default: {DEFAULT_VOLUME})"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_debug_argument(p)
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("ls", help="list a folder of the volume")
    ls.add_argument("path", nargs="?", default="")
    ls.add_argument("-r", "--recursive", action="store_true")
    up = sub.add_parser("upload", help="upload a local file or folder")
    up.add_argument("local")
    up.add_argument("remote", help="destination path on the volume")
    up.add_argument("--force", action="store_true", help="overwrite existing files")
    down = sub.add_parser("download", help="download a file or folder (e.g. out/model.bin)")
    down.add_argument("remote")
    down.add_argument("local", nargs="?", default=".", help="destination (default: .)")
    rm = sub.add_parser("rm", help="remove a file (or a folder with -r)")
    rm.add_argument("path")
    rm.add_argument("-r", "--recursive", action="store_true")
    clean = sub.add_parser(
        "clean", help="remove leftovers (*.part, *.tmp); --checkpoints, --all for more"
    )
    what = clean.add_mutually_exclusive_group()
    what.add_argument("--checkpoints", action="store_true", help="also ckpt.pt files")
    what.add_argument("--all", action="store_true", help="everything on the volume")
    clean.add_argument("--yes", "-y", action="store_true", help="do not ask")
    return p


def run(args: argparse.Namespace, volume) -> int:
    """Carries out ``args`` on ``volume`` (a modal.Volume, or a stand-in in tests)."""
    from ..modal import volume as tools

    progress = not args.no_progress
    if args.command == "ls":
        entries = tools.list_entries(volume, args.path, recursive=args.recursive)
        if entries:
            print(tools.format_entries(entries))
    elif args.command == "upload":
        tools.upload(volume, args.local, args.remote, force=args.force, progress=progress)
    elif args.command == "download":
        paths = tools.download(volume, args.remote, args.local, progress=progress)
        if not paths:
            print_error(f"nothing to download at {args.remote}")
            return 1
    elif args.command == "rm":
        tools.remove(volume, args.path, recursive=args.recursive)
    elif args.command == "clean":
        return tools.clean(volume, checkpoints=args.checkpoints, everything=args.all, yes=args.yes)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m tinystories.volume") -> int:
    args = build_parser(prog).parse_args(argv)
    from ..modal.check import require_modal

    require_modal("volume " + args.command, dry_run=False)
    import modal

    volume = modal.Volume.from_name(args.volume, create_if_missing=args.command == "upload")
    try:
        return run(args, volume)
    except (OSError, ValueError, modal.exception.Error) as err:
        return fail(err, args.debug)


if __name__ == "__main__":
    sys.exit(main())
