"""Never the last copy, as a property: random sequences of what users do to a photo tree, interleaved with scans,
reports and purges (fresh, stale, to a trash inside the root, killed with SIGKILL mid-act) and trash expiry.

After every step, every picture that ever existed still has a copy outside the trash (a resized copy counts as a
copy of its original; so does a purge's half-done `.dedupd-purge-*` rename, since a user sees it in the tree).
The random user never removes the last copy of a picture itself. After a final scan, the store equals a fresh
scan's of the same tree into a new store.

Deterministic (seeded generators, a fixed number of seeds) and bounded; the embedder is the PixelEmbedder seam.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import imagegen
import pytest
import support
from PIL import Image
from support import PixelEmbedder

from dedupd import commands
from dedupd.config import Config, load_config
from dedupd.errors import PurgeFailures
from dedupd.model.loader import LazyEmbedder
from dedupd.store import Store

QUIET = lambda line: None  # noqa: E731
SEEDS = range(4)
STEPS = 12
PICTURES = 3
FAULTS = ("after-intent", "after-aside", "before-done")


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _shrunk(data: bytes, divisor: int, quality: int) -> bytes:
    """A smaller re-encode of the JPEG `data`: the same picture, other bytes."""
    with Image.open(io.BytesIO(data)) as im:
        small = im.convert("RGB").resize((im.width // divisor, im.height // divisor), Image.Resampling.LANCZOS)
    return _jpeg(small, quality)


@dataclass
class World:
    """The tree, what each content is a copy of, and the reports kept from earlier steps."""

    tmp: Path
    rng: random.Random
    picture_of: dict[bytes, int] = field(default_factory=dict)  # file bytes -> picture id
    reports: list[Path] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    counter: int = 0

    @property
    def root(self) -> Path:
        return self.tmp / "t"

    @property
    def trash(self) -> Path:
        return self.root / "Trash"

    @property
    def cfg(self) -> Config:
        return load_config(None, {"store": str(self.tmp / "store")})

    def fresh_name(self, suffix: str = ".jpg") -> str:
        self.counter += 1
        return f"f{self.counter}{suffix}"

    # --- the tree as a user sees it ------------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """Every file under the root outside the trash (a purge's aside names included)."""
        return sorted(p for p in self.root.rglob("*") if p.is_file() and self.trash not in p.parents)

    def user_files(self) -> list[Path]:
        return [p for p in self.files() if p.suffix == ".jpg" and not p.name.startswith(".dedupd-purge-")]

    def dirs(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_dir() and p != self.trash and self.trash not in p.parents)

    def copies(self) -> dict[int, list[Path]]:
        out: dict[int, list[Path]] = {i: [] for i in range(PICTURES)}
        for path in self.files():
            picture = self.picture_of.get(path.read_bytes())
            if picture is not None:
                out[picture].append(path)
        return out

    def spare(self) -> list[Path]:
        """Files the user may delete or overwrite: their picture has another copy outside the trash."""
        copies = self.copies()
        return [p for p in self.user_files() if len(copies[self.picture_of.get(p.read_bytes(), -1)] or [p]) > 1]

    def check(self, step: str) -> None:
        lost = [i for i, paths in self.copies().items() if not paths]
        assert not lost, f"picture(s) {lost} lost after step {step!r}; steps so far:\n" + "\n".join(self.log)


def make_world(tmp: Path, seed: int) -> World:
    world = World(tmp, random.Random(seed))
    for folder in ("a", "b", "c"):
        (world.root / folder).mkdir(parents=True)
    for picture in range(PICTURES):
        data = _jpeg(imagegen.photo(100 * seed + picture, (320, 240)), 92)
        world.picture_of[data] = picture
        (world.root / ("a", "b", "c")[picture] / world.fresh_name()).write_bytes(data)
        (world.root / "b" / world.fresh_name()).write_bytes(data)  # every picture starts with one exact copy
    return world


# --- user steps --------------------------------------------------------------------------------------------------


def copy_file(w: World) -> str:
    src = w.rng.choice(w.user_files())
    dst = w.rng.choice(w.dirs()) / w.fresh_name()
    shutil.copy2(src, dst)
    return f"copy {src} {dst}"


def resized_copy(w: World) -> str:
    src = w.rng.choice(w.user_files())
    original = src.read_bytes()
    picture = w.picture_of.get(original)
    data = _shrunk(original, 2, 85)
    if picture is not None:
        w.picture_of[data] = picture
    dst = w.rng.choice(w.dirs()) / w.fresh_name()
    dst.write_bytes(data)
    return f"resized copy {src} {dst}"


def overwrite_in_place(w: World) -> str:
    """Another picture, zero-padded to the same size, the mtime put back: size, mtime and inode all unchanged."""
    spare = w.spare()
    if not spare:
        return "overwrite: nothing spare"
    target = w.rng.choice(spare)
    old = w.picture_of.get(target.read_bytes())
    picture = w.rng.choice([i for i in range(PICTURES) if i != old])
    original = next(data for data, i in w.picture_of.items() if i == picture)
    small = _shrunk(original, 4, 80)
    st = target.stat()
    if len(small) >= st.st_size:
        return f"overwrite: {target} too small"
    data = small + b"\0" * (st.st_size - len(small))
    w.picture_of[data] = picture
    with open(target, "r+b") as handle:  # in place: the inode stays
        handle.write(data)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    return f"overwrite {target} with picture {picture}"


def move_file(w: World) -> str:
    src = w.rng.choice(w.user_files())
    dst = w.rng.choice(w.dirs()) / w.fresh_name()
    os.rename(src, dst)
    return f"move {src} {dst}"


def rename_folder(w: World) -> str:
    dirs = w.dirs()
    src = w.rng.choice(dirs)
    dst = w.root / f"d{w.fresh_name('')}"
    os.rename(src, dst)
    return f"rename folder {src} {dst}"


def delete_file(w: World) -> str:
    spare = w.spare()
    if not spare:
        return "delete: nothing spare"
    victim = w.rng.choice(spare)
    victim.unlink()
    return f"delete {victim}"


# --- dedupd steps ---------------------------------------------------------------------------------------------


def scan(w: World) -> str:
    out = w.tmp / "reports" / f"scan{w.fresh_name('.json')}"
    out.parent.mkdir(exist_ok=True)
    commands.scan(str(w.root), w.cfg, str(out), False, None, echo=QUIET, embedder=LazyEmbedder(w.cfg, PixelEmbedder()))
    w.reports.append(out)
    return f"scan -> {out.name}"


def write_report(w: World) -> Path:
    out = w.tmp / "reports" / f"report{w.fresh_name('.json')}"
    out.parent.mkdir(exist_ok=True)
    commands.report(w.cfg, str(out), echo=QUIET, model=PixelEmbedder.model_id)
    w.reports.append(out)
    return out


def report(w: World) -> str:
    return f"report -> {write_report(w).name}"


def _purge(w: World, report: Path | None, trash: bool) -> str:
    rc, lines = support.purge_lines(w.cfg, str(report) if report else None, True, str(w.trash) if trash else None)
    acted = [line for line in lines if line.startswith(("deleted", "trashed", "recovered"))]
    return f"rc {rc}: " + "; ".join(acted)


def purge_fresh(w: World) -> str:
    report = write_report(w)
    return f"purge --inplace {report.name}: " + _purge(w, report, trash=False)


def purge_old(w: World) -> str:
    if not w.reports:
        return "purge old: no report yet"
    report = w.rng.choice(w.reports)
    return f"purge --inplace OLD {report.name}: " + _purge(w, report, trash=False)


def purge_trash(w: World) -> str:
    report = w.rng.choice([None, *w.reports])
    return f"purge --inplace --trash {report.name if report else '(store)'}: " + _purge(w, report, trash=True)


def purge_hand_written(w: World) -> str:
    """A report a user wrote: random keepers and duplicates, no content hashes, chains and cycles allowed."""
    files = w.user_files()
    groups = []
    for _ in range(w.rng.randint(1, 3)):
        keep = w.rng.choice(files)
        duplicates = w.rng.sample(files, min(len(files), w.rng.randint(1, 2)))
        groups.append({"keep": str(keep), "duplicates": [str(d) for d in duplicates if d != keep]})
    out = w.tmp / "reports" / f"hand{w.fresh_name('.json')}"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"groups": groups}))
    return f"purge --inplace HAND {out.name}: " + _purge(w, out, trash=w.rng.random() < 0.3)


def empty_trash(w: World) -> str:
    lines: list[str] = []
    try:
        commands.empty_trash(w.cfg, "0", echo=lines.append)
    except PurgeFailures as exc:
        lines.append(str(exc))
    return "trash empty: " + "; ".join(lines)


def kill_purge(w: World) -> str:
    """A real `dedupd purge` process killed with SIGKILL at a fault point inside its act."""
    report = w.rng.choice(w.reports) if w.reports and w.rng.random() < 0.5 else write_report(w)
    fault = f"{w.rng.choice(FAULTS)}:{w.rng.randint(1, 2)}"
    trash = ["--trash", str(w.trash)] if w.rng.random() < 0.5 else []
    args = ["purge", "--store", str(w.cfg.store_path()), "--report", str(report), "--inplace", *trash]
    env = {**os.environ, "DEDUPD_FAULT": fault}
    done = subprocess.run([sys.executable, "-m", "dedupd", *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode in (0, 1, -signal.SIGKILL), done.stdout + done.stderr
    return f"kill -9 at {fault} {' '.join(trash)} {report.name}: rc {done.returncode}"


USER = [copy_file, resized_copy, overwrite_in_place, move_file, rename_folder, delete_file]
DEDUPD = [scan, report, purge_fresh, purge_old, purge_old, purge_trash, purge_hand_written, empty_trash]


def store_view(cfg: Config) -> tuple[dict, list]:
    """What a store says about the tree: each file's content, size and status, and the groups of a report."""
    store = Store.open(cfg.store_path(), create=False)
    files = {p: (f.content, f.size, f.status, f.frames) for p, f in store.files().items()}
    out = cfg.store_path().parent / f"view-{cfg.store_path().name}.json"
    commands.report(cfg, str(out), echo=QUIET, model=PixelEmbedder.model_id)
    groups = [
        (g["keep"], sorted(g["duplicates"]), sorted(m["path"] for m in g["similar"]))
        for g in json.loads(out.read_bytes())["groups"]
    ]
    return files, sorted(groups)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sequences_never_lose_a_picture_and_converge(tmp_path, seed):
    w = make_world(tmp_path, seed)
    w.log.append(f"start: {scan(w)}")
    w.check("start")
    kill_at = w.rng.randrange(2, STEPS)  # one real kill -9 per sequence keeps the run short
    for number in range(STEPS):
        step = kill_purge if number == kill_at else w.rng.choice(USER if w.rng.random() < 0.5 else DEDUPD)
        w.log.append(f"{number}: {step(w)}")
        w.check(w.log[-1])
    scan(w)
    w.check("final scan")
    fresh = load_config(None, {"store": str(tmp_path / "fresh"), "purge.trash_dir": str(w.trash)})
    commands.scan(
        str(w.root),
        fresh,
        str(tmp_path / "fresh.json"),
        False,
        None,
        echo=QUIET,
        embedder=LazyEmbedder(fresh, PixelEmbedder()),
    )
    assert store_view(w.cfg) == store_view(fresh), "\n".join(w.log)
