"""`scalesearch data`: build, describe and verify the image store of a folder (data/store.py)."""

from __future__ import annotations

from typing import Optional

import typer

from ..report.formatting import table

data_app = typer.Typer(no_args_is_help=True, help="Build, describe and verify an image folder's on-disk store.")

DATA_HELP = "An image folder: PATH/train/<class>/*.jpg|*.png and PATH/val/<class>/ (or test/)."
CACHE_HELP = "Where stores are kept (default ~/.cache/scalesearch)."


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


@data_app.command()
def build(
    data: str = typer.Argument(..., help=DATA_HELP),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="S: the stored square's side in px "
                                             "(default 74: trials up to 64 px; a run picks its own)."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help=CACHE_HELP),
) -> None:
    """Decode every image once into the store: short side resized to S, center-cropped to S x S."""
    from ..report.formatting import duration
    from .common import user_errors
    from ..data import DEFAULT_STORE_RESOLUTION, check_positive
    from ..data.folders import build_tree_store, estimate_build_seconds, tree_info

    with user_errors():
        if resolution is not None:
            check_positive("--resolution", resolution)
        info = tree_info(data, cache_dir)
        ready = [h for _, h in info.stores if info.current(h) and getattr(h, "resolution", 0) == resolution]
        if not ready:
            n, seconds = estimate_build_seconds(data, resolution or DEFAULT_STORE_RESOLUTION)
            typer.echo(f"{n:,} images: about {duration(seconds)} to build (timed on a sample)", err=True)
        store = build_tree_store(data, resolution, cache_dir)
    _describe(store)


@data_app.command()
def info(
    data: str = typer.Argument(..., help=DATA_HELP),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help=CACHE_HELP),
) -> None:
    """Images, classes and per-class counts, and every store of the folder: S, size and where it is."""
    from .common import user_errors
    from ..data.folders import tree_info

    with user_errors():
        found = tree_info(data, cache_dir)
    typer.echo(f"{found.root}: {len(found.classes)} classes, {sum(found.counts['train']):,} training and "
               f"{sum(found.counts['val']):,} held-out images")
    typer.echo(table([{"class": c, "train": found.counts["train"][i], "held-out": found.counts["val"][i]}
                      for i, c in enumerate(found.classes)], ["class", "train", "held-out"]))
    if not found.stores:
        typer.echo("no store yet: `scalesearch data build` (or any grid or reproduce run) builds one")
    rows = []
    for path, header in found.stores:
        if not hasattr(header, "resolution"):
            rows.append({"S": "?", "images": "", "left out": "", "upsampled": "", "size": "",
                         "state": f"unusable: {header}", "path": str(path)})
            continue
        rows.append({"S": header.resolution, "images": f"{header.n - header.skipped:,}",
                     "left out": header.skipped, "upsampled": header.upsampled,
                     "size": _gb(sum(f.stat().st_size for f in path.iterdir() if f.is_file())),
                     "state": "current" if found.current(header) else "another listing (a subset, or older files)",
                     "path": str(path)})
    if rows:
        typer.echo(table(rows, ["S", "images", "left out", "upsampled", "size", "state", "path"]))
    if found.old_caches:
        size = sum(p.stat().st_size for p in found.old_caches)
        typer.echo(f"note: {len(found.old_caches)} decoded-image cache file(s) of scalesearch 0.2 ({_gb(size)}) are "
                   f"no longer read; delete them: rm {' '.join(str(p) for p in found.old_caches)}")


@data_app.command()
def verify(
    data: str = typer.Argument(..., help=DATA_HELP),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help=CACHE_HELP),
) -> None:
    """Read back every byte of the folder's stores against their checksums; exit 1 if any is damaged."""
    from .common import user_errors
    from ..data import verify_store
    from ..data.folders import tree_info

    with user_errors():
        found = tree_info(data, cache_dir)
        damaged = 0
        for path, header in found.stores:
            problems = verify_store(path, progress=True)
            stale = "" if found.current(header) else " (of another listing: not used for the folder as it is)"
            if problems:
                damaged += 1
                typer.echo(f"DAMAGED {path}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
            else:
                typer.echo(f"ok {path}{stale}")
        if not found.stores:
            typer.echo("no store of this folder to verify")
    if damaged:
        typer.echo(f"{damaged} damaged store(s): the next run that needs one rebuilds it", err=True)
        raise typer.Exit(1)


def _describe(store) -> None:  # noqa: ANN001 - store.ImageStore
    from ..data.folders import store_summary

    header = store.header
    typer.echo(f"store {store.path}: {header.n - header.skipped:,} images ({header.splits['train']:,} training, "
               f"{header.splits['val']:,} held-out) of {len(header.classes)} classes at {header.resolution} px, "
               f"{_gb(store.nbytes())}, built in {header.build_seconds:g} s")
    if header.skipped or header.upsampled:
        typer.echo(store_summary(header))
