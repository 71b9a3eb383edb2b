#!/bin/sh
# slim VENV: shrink an installed virtual environment for the final image, then compile it.
# - removes what nothing imports at run time: the dependencies' own test suites, C sources and
#   headers, type stubs, and debug symbols in extension modules (uvloop alone
#   loses 12 MB);
# - ships the dependencies as bytecode only (`compileall -b` puts each .pyc where its .py was,
#   which Python imports without the source): 50 MB less, at the price of tracebacks that show
#   a dependency's file and line but not the line's text. CTAFleet's own package keeps its
#   source, so its frames read in full;
# - compiles everything once, so a read-only container never tries to write bytecode.
set -eu
venv=$1
site=$(echo "$venv"/lib/python3*/site-packages)
find "$venv" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find "$venv" -type f \( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.c' \
  -o -name '*.h' -o -name '*.cpp' \) -delete
# Not the libraries auditwheel vendored into *.libs/: patchelf rewrote those, and strip then
# leaves them unloadable ("ELF load command address/offset not page-aligned").
find "$venv" -path '*.libs' -prune -o -type f -name '*.so*' -exec strip --strip-unneeded {} +
"$venv/bin/python" -m compileall -q -j 0 "$site/ctafleet"
find "$site" -mindepth 1 -maxdepth 1 ! -name ctafleet ! -name '*.dist-info' -print0 \
  | xargs -0 "$venv/bin/python" -m compileall -q -j 0 -b
find "$site" -path "$site/ctafleet" -prune -o -type f -name '*.py' -exec sh -c \
  'for f; do if [ -f "${f}c" ]; then rm -f "$f"; fi; done' sh {} +
