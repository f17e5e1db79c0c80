"""MIME types by file extension, for ``type image/*`` and ``type text/css``.

The compiler expands a ``type`` predicate into the set of extensions whose
MIME type matches, and the matcher tests the normalized path's extension
(case-insensitively).  The table is fixed here rather than read from
/etc/mime.types so that a rules file means the same on every machine.
"""

from __future__ import annotations

TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": ("jpg", "jpeg", "jpe", "jfif"),
    "image/png": ("png",),
    "image/gif": ("gif",),
    "image/webp": ("webp",),
    "image/avif": ("avif",),
    "image/svg+xml": ("svg", "svgz"),
    "image/x-icon": ("ico",),
    "image/bmp": ("bmp",),
    "image/tiff": ("tif", "tiff"),
    "image/apng": ("apng",),
    "text/html": ("html", "htm", "shtml"),
    "text/css": ("css",),
    "text/plain": ("txt", "text", "log"),
    "text/csv": ("csv",),
    "text/xml": ("xml",),
    "text/markdown": ("md", "markdown"),
    "text/javascript": ("js", "mjs"),
    "application/json": ("json",),
    "application/pdf": ("pdf",),
    "application/zip": ("zip",),
    "application/gzip": ("gz", "tgz"),
    "application/x-tar": ("tar",),
    "application/wasm": ("wasm",),
    "application/xhtml+xml": ("xhtml",),
    "application/rss+xml": ("rss",),
    "application/atom+xml": ("atom",),
    "application/octet-stream": ("bin", "exe", "dll", "iso", "img"),
    "application/x-httpd-php": ("php", "php3", "php4", "php5", "phtml"),
    "application/x-httpd-cgi": ("cgi", "pl", "py", "sh"),
    "application/msword": ("doc",),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ("docx",),
    "application/vnd.ms-excel": ("xls",),
    "font/woff": ("woff",),
    "font/woff2": ("woff2",),
    "font/ttf": ("ttf",),
    "font/otf": ("otf",),
    "audio/mpeg": ("mp3",),
    "audio/ogg": ("ogg", "oga", "opus"),
    "audio/wav": ("wav",),
    "audio/flac": ("flac",),
    "audio/aac": ("aac", "m4a"),
    "video/mp4": ("mp4", "m4v"),
    "video/webm": ("webm",),
    "video/ogg": ("ogv",),
    "video/quicktime": ("mov",),
    "video/x-msvideo": ("avi",),
    "video/x-matroska": ("mkv",),
    "video/mp2t": ("ts",),
}

FAMILIES = tuple(sorted({t.split("/")[0] for t in TYPES}))


def extensions(spec: str) -> tuple[str, ...] | None:
    """Extensions (lower case, no dot) for ``family/*`` or ``family/sub``,
    or None if the type is unknown."""
    spec = spec.lower()
    if "/" not in spec:
        return None
    fam, sub = spec.split("/", 1)
    if sub == "*":
        if fam not in FAMILIES:
            return None
        return tuple(sorted({e for t, es in TYPES.items() if t.startswith(fam + "/") for e in es}))
    es = TYPES.get(spec)
    return tuple(sorted(es)) if es else None


def known() -> list[str]:
    return [f + "/*" for f in FAMILIES] + sorted(TYPES)
