"""Build the l7ctl C extensions from the shared pure-C core in kmod/core.

The same core sources are compiled into ktcpvs.ko by kmod/Kbuild, so what the
extension answers is exactly what the kernel does.  Each extension is built
only once its sources exist.
"""

from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
CFLAGS = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

EXTENSIONS = {
    "l7ctl._http": ["l7ctl/ext/http_ext.c", "kmod/core/http.c"],
    "l7ctl._match": ["l7ctl/ext/match_ext.c", "kmod/core/match.c"],
}

ext_modules = [
    Extension(name, sources=srcs, include_dirs=["kmod/core"], extra_compile_args=CFLAGS)
    for name, srcs in EXTENSIONS.items()
    if all((HERE / s).exists() for s in srcs)
]
# The TLS daemon's handshakes (l7ctl tlsd): OpenSSL, the module's netlink numbers.
ext_modules.append(
    Extension(
        "l7ctl._tlsloop",
        sources=["l7ctl/ext/tlsloop_ext.c"],
        include_dirs=["kmod/uapi"],
        libraries=["ssl", "crypto"],
        extra_compile_args=CFLAGS,
    )
)

setup(ext_modules=ext_modules)
