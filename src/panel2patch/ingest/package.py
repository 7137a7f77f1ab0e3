"""Safe extraction of article packages (PMC OA ``.tar.gz``, ``.tar``, ``.zip``).

Only regular files are written, each under the target folder: absolute paths, ``..`` components,
links, devices and members over the size limits are refused and reported, never extracted.
"""

from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

PACKAGE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


class PackageError(ValueError):
    """The package cannot be opened at all."""


@dataclass
class Extracted:
    files: list[Path] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (member name, why)


def is_package(path: Path) -> bool:
    return path.name.lower().endswith(PACKAGE_SUFFIXES)


def _safe_relpath(name: str) -> PurePosixPath | None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or not p.parts or any(part in ("..", "") for part in p.parts) or ":" in p.parts[0]:
        return None
    return p


def extract_package(path: str | Path, dest: str | Path, max_member_bytes: int, max_total_bytes: int, max_members: int) -> Extracted:
    """Extract the safe members of ``path`` into ``dest``; raise :class:`PackageError` if unreadable."""
    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = Extracted()
    total = 0

    def accept(name: str, size: int, is_file: bool, why_not_file: str) -> PurePosixPath | None:
        nonlocal total
        rel = _safe_relpath(name)
        if rel is None:
            out.refused.append((name, "unsafe path (absolute or '..')"))
        elif not is_file:
            if why_not_file:
                out.refused.append((name, why_not_file))
            return None
        elif size > max_member_bytes:
            out.refused.append((name, f"{size} bytes > max_member_bytes {max_member_bytes}"))
        elif total + size > max_total_bytes:
            out.refused.append((name, f"package exceeds max_package_bytes {max_total_bytes}"))
        else:
            total += size
            return rel
        return None

    def write(rel: PurePosixPath, stream, size: int) -> None:
        target = dest.joinpath(*rel.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with open(target, "wb") as fh:
            while block := stream.read(1 << 20):
                written += len(block)
                if written > size:  # the header lied about the size
                    raise PackageError(f"{rel}: more data than its declared size")
                fh.write(block)
        out.files.append(target)

    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
                if len(infos) > max_members:
                    raise PackageError(f"{len(infos)} members > max_members {max_members}")
                for info in infos:
                    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                    rel = accept(info.filename, info.file_size, not info.is_dir() and not is_link,
                                 "symbolic link" if is_link else "")
                    if rel is not None:
                        with zf.open(info) as stream:
                            write(rel, stream, info.file_size)
        else:
            with tarfile.open(path, "r:*") as tf:
                for n, member in enumerate(tf):
                    if n >= max_members:
                        raise PackageError(f"more than max_members {max_members} members")
                    why = "" if member.isdir() else (
                        "link" if (member.issym() or member.islnk()) else "not a regular file")
                    rel = accept(member.name, member.size, member.isfile(), why)
                    if rel is not None:
                        stream = tf.extractfile(member)
                        if stream is not None:
                            write(rel, stream, member.size)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise PackageError(f"{path.name}: {type(exc).__name__}: {exc}") from None
    return out


def extract_members(path: str | Path, wanted: set[str], dest: str | Path, max_member_bytes: int) -> dict[str, Path | str]:
    """Stream the ``.tar.gz`` archive ``path`` once and write each member named in ``wanted`` (a
    PMC OA bulk archive's XML files) to ``dest/<n>.xml``; stop as soon as all are found. Returns
    {member: written path, or why it was not}; a member never met is absent. Member names are
    matched, never used as paths, and only regular files within ``max_member_bytes`` are written.
    Raises :class:`PackageError` when the archive cannot be read."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path | str] = {}
    try:
        with tarfile.open(path, "r|*") as tf:
            for member in tf:
                if member.name not in wanted or member.name in out:
                    continue
                if not member.isfile():
                    out[member.name] = "not a regular file"
                elif member.size > max_member_bytes:
                    out[member.name] = f"{member.size} bytes > max_member_bytes {max_member_bytes}"
                else:
                    target = dest / f"{len(out)}.xml"
                    stream = tf.extractfile(member)
                    target.write_bytes(stream.read(member.size + 1) if stream is not None else b"")
                    out[member.name] = target
                if len(out) == len(wanted):
                    break
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PackageError(f"{Path(path).name}: {type(exc).__name__}: {exc}") from None
    return out
